package io.pscluster.server.table;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import java.util.Arrays;
import org.agrona.collections.IntArrayList;
import org.agrona.concurrent.UnsafeBuffer;

/**
 * The rows of one table in one partition: fixed-size records off-heap and an open-addressing index from key to
 * record, written by the partition's single writer thread and read by any number of threads without locks.
 *
 * <p>Record layout (byte offsets, native little-endian, 8-byte aligned): {@code 0} int sequence (odd while the
 * writer changes the record), {@code 4} int touch (seconds since the table began, plus one; 0 marks a free record),
 * {@code 8} long key, {@code 16} the values, optimizer slots and counters ({@link Optimizer}). Records live in chunks
 * of {@link #RECORDS_PER_CHUNK} allocated on demand and never moved, so a record id stays valid for the store's life.
 *
 * <p>Index: {@code int[]} entries, 0 empty, -1 deleted, otherwise a 5-bit fingerprint of the key's hash above
 * record id + 1 in the low {@link #ID_BITS} bits (so a probe skips the record of a different key 31 times in 32
 * without touching it), linear probing on a mixed hash of
 * the key; the key itself is read from the record, which keeps the index at 4 bytes per entry. The writer fills a
 * record before it publishes the entry with release semantics; readers load entries with acquire semantics. A grown
 * index is built aside and published through a volatile field; a reader still probing the old one finds every key
 * that was there when it started.
 *
 * <p>Reads are seqlocked: a reader loads the sequence (acquire), copies the record, issues a load-load fence and
 * loads the sequence again; an odd or changed sequence means the writer was there, and the reader retries. The
 * writer stores the odd sequence, a store-store fence, the data, then the even sequence with release semantics.
 * A reader that finds a record reused for another key (after eviction) reports the key as absent.
 */
final class PartitionStore {
    private static final org.slf4j.Logger LOG = org.slf4j.LoggerFactory.getLogger(PartitionStore.class);
    static final int HEADER_BYTES = 16;
    static final int RECORDS_PER_CHUNK = 4096;
    private static final int CHUNK_SHIFT = 12;
    private static final int SEQUENCE = 0;
    private static final int TOUCH = 4;
    private static final int KEY = 8;
    private static final int EMPTY = 0;
    private static final int DELETED = -1;
    static final int ID_BITS = 26;
    private static final int ID_MASK = (1 << ID_BITS) - 1;
    private static final VarHandle ENTRY = MethodHandles.arrayElementVarHandle(int[].class);

    private final int dim;
    private final int recordBytes;
    private final Optimizer optimizer;
    private final Initializer initializer;
    private final RowBudget budget;

    private volatile UnsafeBuffer[] chunks = new UnsafeBuffer[0];
    private volatile int[] index = new int[16];
    private volatile int liveRows;
    // Writer-only state.
    private int highWater;
    private int usedEntries;
    private final IntArrayList freeRecords = new IntArrayList();
    private int[] scratch = new int[0];
    private boolean warnedFull;

    PartitionStore(final int dim, final Optimizer optimizer, final Initializer initializer, final RowBudget budget) {
        this.dim = dim;
        this.optimizer = optimizer;
        this.initializer = initializer;
        this.budget = budget;
        final int payload = 4 * (dim * (1 + optimizer.slotCount()) + optimizer.counterCount());
        this.recordBytes = (HEADER_BYTES + payload + 7) & ~7;
    }

    static int recordBytes(final int dim, final Optimizer optimizer) {
        return (HEADER_BYTES + 4 * (dim * (1 + optimizer.slotCount()) + optimizer.counterCount()) + 7) & ~7;
    }

    // ---- readers (any thread)

    /**
     * Copies the {@code dim} values of {@code key} to {@code target} at {@code targetOffset} (bytes, little-endian
     * float32) and returns true, or returns false if the key has no row. {@code foundId} is the record id a previous
     * {@link #find} gave (or -1), so that a caller can look up a whole batch before copying it; it is checked against
     * the record's key and looked up again if the record was freed or reused meanwhile. Lock-free; retries while the
     * writer is changing the record.
     */
    boolean readValues(final long key, final int foundId, final byte[] target, final int targetOffset) {
        int id = foundId;
        int misses = 0;
        while (true) {
            if (id < 0) {
                return false;
            }
            final UnsafeBuffer chunk = chunks[id >>> CHUNK_SHIFT];
            final int at = (id & (RECORDS_PER_CHUNK - 1)) * recordBytes;
            final int before = chunk.getIntVolatile(at + SEQUENCE);
            if ((before & 1) != 0) {
                Thread.onSpinWait();
                continue;
            }
            final long recordKey = chunk.getLong(at + KEY);
            final int touch = chunk.getInt(at + TOUCH);
            chunk.getBytes(at + HEADER_BYTES, target, targetOffset, 4 * dim);
            VarHandle.loadLoadFence();
            if (chunk.getIntVolatile(at + SEQUENCE) != before) {
                continue;
            }
            if (recordKey == key && touch != 0) {
                return true;
            }
            // The record was freed or reused for another key after it was found: look the key up again, once.
            if (++misses > 1) {
                return false;
            }
            id = find(key);
        }
    }

    /**
     * Loads the index entry and record key that a lookup of {@code key} will need first, and nothing else. Java has
     * no prefetch instruction; calling this for a block of keys before looking them up makes the cache misses of
     * independent keys overlap instead of following one another. The result means nothing; the caller keeps it (in
     * {@link #prefetchSink}) only so that the loads are not optimized away. Safe from any thread.
     */
    int prefetch(final long key) {
        final int[] entries = index;
        final int entry = entries[hash(key) & (entries.length - 1)];
        if (entry <= 0) {
            return entry;
        }
        final UnsafeBuffer[] directory = chunks;
        final int id = (entry & ID_MASK) - 1;
        final int chunk = id >>> CHUNK_SHIFT;
        // A reader's directory may predate the entry: skip what it cannot reach, it is only a prefetch.
        if (chunk >= directory.length) {
            return 0;
        }
        // The key's line and the record's last line: a record of more than 64 bytes straddles two or more.
        final int at = (id & (RECORDS_PER_CHUNK - 1)) * recordBytes;
        return (int) directory[chunk].getLong(at + KEY) + directory[chunk].getInt(at + recordBytes - 4);
    }

    /** Keys per prefetch block: their index lines and records stay in cache until they are used. */
    static final int PREFETCH_BLOCK = 256;

    /** Where prefetch results go so that the loads stay; read by nobody. */
    static int prefetchSink;

    /** The record id of {@code key}, or -1. Lock-free. */
    int find(final long key) {
        final int[] entries = index;
        final int mask = entries.length - 1;
        final int hash = hash(key);
        final int fingerprint = fingerprint(hash);
        int i = hash & mask;
        while (true) {
            final int entry = (int) ENTRY.getAcquire(entries, i);
            if (entry == EMPTY) {
                return -1;
            }
            // The chunk directory is read after the entry (acquire), so it already holds the entry's record.
            if (entry != DELETED && (entry & ~ID_MASK) == fingerprint && keyOf((entry & ID_MASK) - 1) == key) {
                return (entry & ID_MASK) - 1;
            }
            i = (i + 1) & mask;
        }
    }

    int size() {
        return liveRows;
    }

    /** Bytes held off-heap for records plus the index. */
    long bytes() {
        return (long) chunks.length * RECORDS_PER_CHUNK * recordBytes + 4L * index.length;
    }

    // ---- writer (the partition's thread only)

    /**
     * Applies a batch: first finds (or creates) every row, then updates them. Two passes let the processor overlap
     * the cache misses of many independent lookups instead of waiting for each before its update; the records are
     * then in cache for the second pass. Returns the number of rows not created because of the cap.
     */
    int applyBatch(
            final long[] keys, final int[] rowsOfBatch, final int count, final float[] gradients, final int touch) {
        if (scratch.length < count) {
            scratch = new int[Math.max(count, 2 * scratch.length)];
        }
        final int[] ids = scratch;
        for (int from = 0; from < count; from += PREFETCH_BLOCK) {
            final int to = Math.min(count, from + PREFETCH_BLOCK);
            int sink = 0;
            for (int i = from; i < to; i++) {
                sink += prefetch(keys[rowsOfBatch[i]]);
            }
            prefetchSink = sink;
            for (int i = from; i < to; i++) {
                ids[i] = findOrCreate(keys[rowsOfBatch[i]], touch, true);
            }
        }
        int dropped = 0;
        for (int i = 0; i < count; i++) {
            if (ids[i] < 0) {
                dropped++;
            } else {
                applyAt(ids[i], gradients, rowsOfBatch[i] * dim, touch);
            }
        }
        return dropped;
    }

    private void applyAt(final int id, final float[] gradients, final int offset, final int touch) {
        final UnsafeBuffer chunk = chunks[id >>> CHUNK_SHIFT];
        final int at = (id & (RECORDS_PER_CHUNK - 1)) * recordBytes;
        beginWrite(chunk, at);
        optimizer.apply(chunk, at + HEADER_BYTES, dim, gradients, offset);
        chunk.putInt(at + TOUCH, touch);
        endWrite(chunk, at);
    }

    /** Creates the row of {@code key} with its initial values if it has none (outside the row cap). */
    void ensure(final long key, final int touch) {
        findOrCreate(key, touch, false);
    }

    /** Replaces (or creates) the whole record of {@code key} from {@code record} (values, slots, counter bits). */
    void put(final long key, final float[] record, final int touch) {
        final int id = findOrCreate(key, touch, false);
        if (id < 0) {
            throw new IllegalStateException("no off-heap memory left to restore key " + key);
        }
        final UnsafeBuffer chunk = chunks[id >>> CHUNK_SHIFT];
        final int at = (id & (RECORDS_PER_CHUNK - 1)) * recordBytes;
        beginWrite(chunk, at);
        final int floats = record.length;
        for (int i = 0; i < floats; i++) {
            chunk.putInt(at + HEADER_BYTES + 4 * i, Float.floatToRawIntBits(record[i]));
        }
        chunk.putInt(at + TOUCH, touch);
        endWrite(chunk, at);
    }

    /** Removes the row of {@code key}, if any; its record is reused later. */
    void remove(final long key) {
        final int[] entries = index;
        final int mask = entries.length - 1;
        final int hash = hash(key);
        final int fingerprint = fingerprint(hash);
        int i = hash & mask;
        while (true) {
            final int entry = entries[i];
            if (entry == EMPTY) {
                return;
            }
            if (entry != DELETED && (entry & ~ID_MASK) == fingerprint && keyOf((entry & ID_MASK) - 1) == key) {
                ENTRY.setRelease(entries, i, DELETED);
                free((entry & ID_MASK) - 1);
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /** Visits every live record: its id, key and touch. */
    void forEach(final RecordVisitor visitor) {
        for (int id = 0; id < highWater; id++) {
            final UnsafeBuffer chunk = chunks[id >>> CHUNK_SHIFT];
            final int at = (id & (RECORDS_PER_CHUNK - 1)) * recordBytes;
            final int touch = chunk.getInt(at + TOUCH);
            if (touch != 0) {
                visitor.visit(id, chunk.getLong(at + KEY), touch);
            }
        }
    }

    /** What {@link #forEach} calls for each live record. */
    @FunctionalInterface
    interface RecordVisitor {
        void visit(int id, long key, int touch);
    }

    /** Copies record {@code id}'s values, slots and counter bits into {@code target} at {@code offset}. */
    void copyRecord(final int id, final float[] target, final int offset, final int floats) {
        final UnsafeBuffer chunk = chunks[id >>> CHUNK_SHIFT];
        final int at = (id & (RECORDS_PER_CHUNK - 1)) * recordBytes + HEADER_BYTES;
        for (int i = 0; i < floats; i++) {
            target[offset + i] = Float.intBitsToFloat(chunk.getInt(at + 4 * i));
        }
    }

    /**
     * The record of {@code key}, created with its initial values if it has none; -1 if a new row was needed and the
     * table's cap (when {@code capped}) or off-heap memory refused it.
     */
    private int findOrCreate(final long key, final int touch, final boolean capped) {
        final int[] entries = index;
        final int mask = entries.length - 1;
        final int hash = hash(key);
        final int fingerprint = fingerprint(hash);
        int i = hash & mask;
        int firstDeleted = -1;
        while (true) {
            final int entry = entries[i];
            if (entry == EMPTY) {
                break;
            }
            if (entry == DELETED) {
                if (firstDeleted < 0) {
                    firstDeleted = i;
                }
            } else if ((entry & ~ID_MASK) == fingerprint && keyOf((entry & ID_MASK) - 1) == key) {
                return (entry & ID_MASK) - 1;
            }
            i = (i + 1) & mask;
        }
        if (!budget.reserve(capped)) {
            return -1;
        }
        final int id;
        try {
            id = allocate();
        } catch (OutOfMemoryError full) {
            budget.release();
            // Off-heap memory (-XX:MaxDirectMemorySize) is used up: refuse the row like a cap, keep serving.
            if (!warnedFull) {
                warnedFull = true;
                LOG.error("cannot allocate rows off-heap ({}); new rows are dropped", full.getMessage());
            }
            return -1;
        }
        final UnsafeBuffer chunk = chunks[id >>> CHUNK_SHIFT];
        final int at = (id & (RECORDS_PER_CHUNK - 1)) * recordBytes;
        beginWrite(chunk, at);
        chunk.putLong(at + KEY, key);
        chunk.putInt(at + TOUCH, touch);
        initializer.fill(key, chunk, at + HEADER_BYTES, dim);
        optimizer.init(chunk, at + HEADER_BYTES, dim);
        endWrite(chunk, at);
        if (firstDeleted >= 0) {
            ENTRY.setRelease(entries, firstDeleted, fingerprint | (id + 1));
        } else {
            ENTRY.setRelease(entries, i, fingerprint | (id + 1));
            usedEntries++;
        }
        liveRows = liveRows + 1;
        if (usedEntries * 10L > entries.length * 7L) {
            rehash();
        }
        return id;
    }

    private int allocate() {
        if (!freeRecords.isEmpty()) {
            return freeRecords.popInt();
        }
        if (highWater == ID_MASK - 1) {
            throw new OutOfMemoryError("a partition holds at most " + (ID_MASK - 1) + " rows; add partitions");
        }
        final int id = highWater;
        final int chunk = id >>> CHUNK_SHIFT;
        if (chunk == chunks.length) {
            // Allocate first: if memory is short nothing has changed, and the id is not used up.
            final UnsafeBuffer fresh = new UnsafeBuffer(ByteBuffer.allocateDirect(RECORDS_PER_CHUNK * recordBytes));
            final UnsafeBuffer[] grown = Arrays.copyOf(chunks, chunk + 1);
            grown[chunk] = fresh;
            chunks = grown;
        }
        highWater = id + 1;
        return id;
    }

    private void free(final int id) {
        final UnsafeBuffer chunk = chunks[id >>> CHUNK_SHIFT];
        final int at = (id & (RECORDS_PER_CHUNK - 1)) * recordBytes;
        beginWrite(chunk, at);
        chunk.putInt(at + TOUCH, 0);
        endWrite(chunk, at);
        freeRecords.addInt(id);
        liveRows = liveRows - 1;
        budget.release();
    }

    /** Rebuilds the index without deleted entries, doubling it when live rows fill more than a third of it. */
    private void rehash() {
        final int[] old = index;
        final int capacity = liveRows * 3L > old.length ? old.length * 2 : old.length;
        final int[] entries = new int[capacity];
        final int mask = capacity - 1;
        int used = 0;
        for (final int entry : old) {
            if (entry > 0) {
                int i = hash(keyOf((entry & ID_MASK) - 1)) & mask;
                while (entries[i] != EMPTY) {
                    i = (i + 1) & mask;
                }
                entries[i] = entry;
                used++;
            }
        }
        usedEntries = used;
        index = entries;
    }

    private long keyOf(final int id) {
        return chunks[id >>> CHUNK_SHIFT].getLong((id & (RECORDS_PER_CHUNK - 1)) * recordBytes + KEY);
    }

    private static void beginWrite(final UnsafeBuffer chunk, final int at) {
        chunk.putInt(at + SEQUENCE, chunk.getInt(at + SEQUENCE) + 1);
        VarHandle.storeStoreFence();
    }

    private static void endWrite(final UnsafeBuffer chunk, final int at) {
        chunk.putIntOrdered(at + SEQUENCE, chunk.getInt(at + SEQUENCE) + 1);
    }

    /** The top 5 bits of the hash, in place: the bucket uses the low bits, at most {@link #ID_BITS} of them. */
    private static int fingerprint(final int hash) {
        return (hash >>> 27) << ID_BITS;
    }

    private static int hash(final long key) {
        final long z = key * 0x9e3779b97f4a7c15L;
        return (int) (z ^ (z >>> 32));
    }
}
