package io.pscluster.wire;

import java.nio.charset.StandardCharsets;

/**
 * Maps a (table, key) pair to one of {@link #SLOT_COUNT} slots. The function is part of the wire contract: the
 * SDK routes with it, shards check ownership with it and checkpoints index rows by it, so it must never change for
 * a cluster's life. It lives beside the generated protocol because the SDK may depend on nothing else.
 *
 * <p>The key is mixed with a hash of the table name (so two tables spread their rows differently) through the
 * SplitMix64 finalizer, whose top 12 bits give the slot; consecutive dense keys land in unrelated slots.
 */
public final class Slots {
    /** Number of slots in every cluster. */
    public static final int SLOT_COUNT = 4096;

    private static final int SLOT_BITS = 12;

    private Slots() {}

    /** A stable 64-bit hash of a table name (FNV-1a over its UTF-8 bytes), computed once per table. */
    public static long tableHash(final String table) {
        long hash = 0xcbf29ce484222325L;
        for (final byte b : table.getBytes(StandardCharsets.UTF_8)) {
            hash ^= b & 0xff;
            hash *= 0x100000001b3L;
        }
        return hash;
    }

    /** The slot of {@code key} in the table whose {@link #tableHash(String)} is {@code tableHash}. */
    public static int slotOf(final long tableHash, final long key) {
        long z = key + tableHash + 0x9e3779b97f4a7c15L;
        z = (z ^ (z >>> 30)) * 0xbf58476d1ce4e5b9L;
        z = (z ^ (z >>> 27)) * 0x94d049bb133111ebL;
        z = z ^ (z >>> 31);
        return (int) (z >>> (64 - SLOT_BITS));
    }
}
