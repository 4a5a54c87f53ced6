package io.pscluster.worker;

import io.pscluster.proto.v1.RoutingTable;
import io.pscluster.wire.Protocol;
import io.pscluster.wire.Slots;

/**
 * An immutable copy of the proxy's routing table: {@code ownerOfSlot[s]} indexes {@code addresses}, or is -1 when no
 * live shard owns slot {@code s}; {@code protocols[i]} is the data-plane protocol shard {@code i} reported
 * ({@link Protocol}; 0: not reported).
 */
record Routing(long epoch, String[] addresses, int[] ownerOfSlot, int[] protocols) {
    static final Routing EMPTY = new Routing(-1, new String[0], filled(-1));

    /** A table whose shards all speak this build's protocol. */
    Routing(final long epoch, final String[] addresses, final int[] ownerOfSlot) {
        this(epoch, addresses, ownerOfSlot, current(addresses.length));
    }

    static Routing of(final RoutingTable table) {
        final String[] addresses = new String[table.getShardsCount()];
        final int[] protocols = new int[addresses.length];
        for (int i = 0; i < addresses.length; i++) {
            addresses[i] = table.getShards(i).getAddress();
            protocols[i] = table.getShards(i).getProtocolVersion();
        }
        final int[] owners = filled(-1);
        for (int slot = 0; slot < table.getSlotOwnerCount() && slot < owners.length; slot++) {
            owners[slot] = table.getSlotOwner(slot);
        }
        return new Routing(table.getEpoch(), addresses, owners, protocols);
    }

    /**
     * Why this SDK sends nothing to shard {@code owner}, or null when it may: a shard older than {@link
     * Protocol#OLDEST_SHARD} could take a request for something else and answer success.
     */
    String tooOld(final int owner) {
        final int protocol = protocols[owner];
        if (protocol >= Protocol.OLDEST_SHARD) {
            return null;
        }
        return "the shard at " + addresses[owner] + " speaks data-plane protocol " + protocol
                + (protocol == 0 ? " (not reported: a shard, or a proxy, of an older PSCluster)" : "")
                + "; this SDK needs " + Protocol.OLDEST_SHARD + " or later and sends it nothing: upgrade the proxy"
                + " and the shards before the SDKs";
    }

    private static int[] filled(final int value) {
        final int[] owners = new int[Slots.SLOT_COUNT];
        java.util.Arrays.fill(owners, value);
        return owners;
    }

    private static int[] current(final int shards) {
        final int[] protocols = new int[shards];
        java.util.Arrays.fill(protocols, Protocol.VERSION);
        return protocols;
    }
}
