package io.pscluster.server.table;

import io.pscluster.wire.Slots;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.BitSet;
import java.util.concurrent.ThreadLocalRandom;
import java.util.function.LongPredicate;
import org.agrona.UnsafeApi;
import org.agrona.collections.Int2IntHashMap;
import org.agrona.collections.IntArrayList;
import org.agrona.concurrent.UnsafeBuffer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The rows of one table in one partition: fixed-size records off-heap and an index from key to record, written by
 * the partition's single writer thread and read by any number of threads without locks.
 *
 * <p>Record layout (byte offsets, native little-endian, 8-byte aligned): {@code 0} int sequence (odd while the
 * writer changes the record), {@code 4} int touch (seconds since the table began, plus one; 0 marks a free record),
 * {@code 8} long key, {@code 16} the values, optimizer slots and counters ({@link Optimizer}). Records live in chunks
 * of a power of two records (at most {@link #MAX_RECORDS_PER_CHUNK}, fewer for wide rows so that a chunk stays near
 * {@link #CHUNK_BYTES}) allocated on demand and never moved, so a record id stays valid for the store's life.
 *
 * <p>Index: extendible hashing. A directory of {@code 2^depth} references, chosen by the top bits of a 64-bit hash of
 * the key (the index of the key's slot in this partition, then seeded bits: see {@link #hash}), points to segments; a segment is an {@code int[]} of entries with linear probing on the hash's
 * low bits. An entry is 0 (empty), -1 (deleted) or a 5-bit fingerprint of the hash above record id + 1 in the low
 * {@link #ID_BITS} bits, so a probe skips the record of a different key 31 times in 32 without reading it. A segment
 * that would pass {@link #MAX_LOAD_PERCENT} is rebuilt aside, doubled up to {@link #MAX_SEGMENT} entries and split in
 * two beyond that, then published with a new directory: growth reads the records of one segment only, never of the
 * whole index, so no write stalls for longer than one segment's worth of lookups however large the table. Every
 * allocation comes before anything is published: when memory runs out the row is refused and the index is as it was.
 *
 * <p>The writer fills a record before it publishes the entry with release semantics; readers load entries with
 * acquire semantics. A reader still probing a replaced segment finds every key that was there when it started.
 * Reads are seqlocked: a reader loads the sequence (acquire), copies the record, issues a load-load fence and loads
 * the sequence again; an odd or changed sequence means the writer was there, and the reader retries. The writer
 * stores the odd sequence, a store-store fence, the data, then the even sequence with release semantics, in a
 * {@code finally} so that a write that throws leaves the record readable. A reader that finds a record freed or
 * reused for another key looks the key up again once, then reports it absent.
 */
final class PartitionStore {
    private static final Logger LOG = LoggerFactory.getLogger(PartitionStore.class);
    static final int HEADER_BYTES = 16;
    static final int MAX_RECORDS_PER_CHUNK = 4096;
    static final int CHUNK_BYTES = 1 << 20;
    private static final int SEQUENCE = 0;
    private static final int TOUCH = 4;
    private static final int KEY = 8;
    private static final int EMPTY = 0;
    private static final int DELETED = -1;
    static final int ID_BITS = 26;
    private static final int ID_MASK = (1 << ID_BITS) - 1;
    /** The most rows one partition holds: ids are {@link #ID_BITS} wide and 0 marks an empty entry. */
    static final int MAX_ROWS = ID_MASK - 1;

    static final int MIN_SEGMENT = 16;
    /** Entries of the largest segment: a split reads at most 80% of this many records (about 2 ms). */
    static final int MAX_SEGMENT = 1 << 15;
    /** Removals one partition logs for the next delta before it gives up on them (12 bytes each). */
    static final int MAX_LOGGED_REMOVALS = 1 << 20;
    /** A segment is grown before an insert would fill more than this share of it. */
    static final int MAX_LOAD_PERCENT = 80;
    /** Directory depth beyond which segments grow instead of splitting (unreachable below {@link #MAX_ROWS}). */
    private static final int MAX_DEPTH = 20;
    /** Keys per stage of a batch: their index entries, then their records, are loaded together before use. */
    static final int BLOCK = 64;

    private static final long FAILURE_LOG_INTERVAL_NANOS = 10_000_000_000L;
    private static final VarHandle ENTRY = MethodHandles.arrayElementVarHandle(int[].class);
    private static final VarHandle LIVE_ROWS;

    static {
        try {
            LIVE_ROWS = MethodHandles.lookup().findVarHandle(PartitionStore.class, "liveRows", int.class);
        } catch (ReflectiveOperationException e) {
            throw new ExceptionInInitializerError(e);
        }
    }

    private static final VarHandle LONG_LE =
            MethodHandles.byteArrayViewVarHandle(long[].class, ByteOrder.LITTLE_ENDIAN);
    private static final VarHandle INT_LE = MethodHandles.byteArrayViewVarHandle(int[].class, ByteOrder.LITTLE_ENDIAN);
    /** Records are in native order; rows from and to files are little-endian: a plain copy when the two agree. */
    static final boolean NATIVE_LITTLE_ENDIAN = ByteOrder.nativeOrder() == ByteOrder.LITTLE_ENDIAN;

    private final int dim;
    private final int recordBytes;
    private final int chunkShift;
    private final int chunkMask;
    private final Optimizer optimizer;
    private final Initializer initializer;
    private final RowBudget budget;
    /**
     * Rows the push being applied was promised against the table's cap in this partition ({@link RowBudget#promise}),
     * not yet created; the writer's alone, set and taken back around each push ({@link #promiseRows},
     * {@link #takeUnusedPromise}).
     */
    private int promisedRows;
    /**
     * Whether the push being applied creates its rows beyond {@link #promisedRows} past the table's cap (an admitted
     * push: see {@link ParameterTable.RowPromise#createsPastCap}); the writer's alone.
     */
    private boolean createsPastCap;
    /**
     * Records the push being applied claimed in this partition when it was admitted ({@link #claimAhead}), not yet
     * created; the writer's alone, like {@link #promisedRows} ({@link #useClaims}, {@link #releaseUnusedClaims}).
     */
    private int claimedRecords;

    private final OffHeapBudget memory;
    private final RecordRoom room;

    private final long seed = ThreadLocalRandom.current().nextLong();
    /** The table's slot hash, for {@link #hash}. */
    private final long tableHash;
    /** This partition's slots ({@code slot % partitions} is the partition, {@code slot / partitions} the index). */
    private final int localSlots;
    /** {@code ceil(2^32 / partitions)}: {@code (slot * slotReciprocal) >>> 32} is {@code slot / partitions}. */
    private final long slotReciprocal;
    /** The bits of a slot's index in this partition: the top bits of {@link #hash}. */
    private final int slotBits;

    private TableFaults faults = TableFaults.NONE;
    /** Floats a record holds after its header: values, optimizer slots, counters. */
    private final int recordFloats;
    /** The snapshot being taken, or null; writer-only. */
    private Snapshot snapshot;
    /**
     * The epochs in which each record was written (writer-only): a delta since cut {@code p} holds the records written
     * above {@code p}.
     */
    private final ChangeMarks marks = new ChangeMarks(1);
    /** Keys removed, with the epoch of their removal, once a cut has been taken (writer-only); see {@link #free}. */
    private long[] removedKeys = new long[0];

    private int[] removedEpochs = new int[0];
    private int removals;
    private boolean logRemovals;
    /**
     * The cut from which every removal is still in the log: deltas since an older cut cannot be served. It moves up
     * when the log restarts (first cut, overflow) and when pruning drops removals (a checkpoint that prunes may fail,
     * and the next one may ask for a delta since an older cut the shard still remembers).
     */
    private int loggingSince = Integer.MAX_VALUE;

    /** Chunks by index; entries past the last allocated one are null. They keep the memory of {@link #addresses}. */
    private volatile UnsafeBuffer[] chunks = new UnsafeBuffer[0];

    /**
     * The address of each chunk's first record, parallel to {@link #chunks} (0 past the last allocated one): lookups
     * reach a record through this one array instead of a buffer object per chunk, one dependent load fewer per key.
     * Valid while the store is reachable: {@link #chunks} holds the memory, and chunks are never freed or moved.
     */
    private volatile long[] addresses = new long[0];

    private static final long BYTE_ARRAY_BASE = UnsafeApi.arrayBaseOffset(byte[].class);
    /** Rows up to this many floats are read by a loop of loads and stores, wider ones by a bulk copy. */
    private static final int SMALL_COPY_FLOATS = 8;

    /** A few bytes of their own, held for the JVM's life: what a prefetch of no record loads instead of branching. */
    private static final UnsafeBuffer NOWHERE_BUFFER = new UnsafeBuffer(ByteBuffer.allocateDirect(64));
    /** The address a lookup stage gives for a key whose first entry names no record of it: see {@link #candidate}. */
    static final long NOWHERE = NOWHERE_BUFFER.addressOffset();

    private volatile Segment[] directory = {new Segment(MIN_SEGMENT, 0)};
    private volatile int liveRows;
    private volatile long indexEntries = MIN_SEGMENT;
    private volatile int chunkCount;
    // Writer-only state.
    private int highWater;
    private final IntArrayList freeRecords = new IntArrayList();
    private final long[] blockHashes = new long[BLOCK];
    private final int[] blockEntries = new int[BLOCK];
    private final int[][] blockSegments = new int[BLOCK][];
    private final long[] blockFirsts = new long[BLOCK];
    private final long[] blockLasts = new long[BLOCK];
    // Growth's own scratch: it runs in the middle of a batch's block, whose scratch is in use.
    private final long[] growthKeys = new long[BLOCK];
    private final int[] growthEntries = new int[BLOCK];
    private String lastRefusal = "";
    private boolean warnedRefusal;
    private long lastRefusalLogNanos;
    private long failedWrites;
    /** The longest the index took to grow once (a rebuild, doubling or split of one segment); read by anyone. */
    private volatile long longestGrowthNanos;

    private long lastFailureLogNanos;

    PartitionStore(final int dim, final Optimizer optimizer, final Initializer initializer, final RowBudget budget) {
        this(dim, optimizer, initializer, budget, OffHeapBudget.JVM);
    }

    PartitionStore(
            final int dim,
            final Optimizer optimizer,
            final Initializer initializer,
            final RowBudget budget,
            final OffHeapBudget memory) {
        this(dim, optimizer, initializer, budget, memory, Slots.tableHash(""), 1);
    }

    /**
     * @param tableHash the table's {@link Slots#tableHash}, and {@code partitions} the shard's partition count: the
     *     index keeps the keys of each of this partition's slots together (see {@link #hash}).
     */
    PartitionStore(
            final int dim,
            final Optimizer optimizer,
            final Initializer initializer,
            final RowBudget budget,
            final OffHeapBudget memory,
            final long tableHash,
            final int partitions) {
        this.tableHash = tableHash;
        this.localSlots = (Slots.SLOT_COUNT + partitions - 1) / partitions;
        this.slotReciprocal = ((1L << 32) + partitions - 1) / partitions;
        this.slotBits = 32 - Integer.numberOfLeadingZeros(localSlots - 1);
        this.dim = dim;
        this.memory = memory;
        this.optimizer = optimizer;
        this.initializer = initializer;
        this.budget = budget;
        this.recordBytes = recordBytes(dim, optimizer);
        this.recordFloats = dim * (1 + optimizer.slotCount()) + optimizer.counterCount();
        final int perChunk =
                Math.min(MAX_RECORDS_PER_CHUNK, Integer.highestOneBit(Math.max(1, CHUNK_BYTES / recordBytes)));
        this.chunkShift = Integer.numberOfTrailingZeros(perChunk);
        this.chunkMask = perChunk - 1;
        this.room = new RecordRoom(memory, perChunk, (long) perChunk * recordBytes);
    }

    static int recordBytes(final int dim, final Optimizer optimizer) {
        return (HEADER_BYTES + 4 * (dim * (1 + optimizer.slotCount()) + optimizer.counterCount()) + 7) & ~7;
    }

    /** Sets the faults tests inject; the writer's thread must not be running a task meanwhile. */
    void injectFaults(final TableFaults value) {
        faults = value;
    }

    // ---- readers (any thread)

    /** The seeded hash this store indexes {@code key} by; pass it to the lookups that take one. */
    long hash(final long key) {
        return hash(key, Slots.slotOf(tableHash, key));
    }

    /**
     * {@link #hash(long)} of a key whose slot the caller has already computed ({@code slot} must be {@code key}'s, as
     * {@link Slots#slotOf} gives it: a push's and a pull's keys are checked against the slots the shard owns first).
     */
    long hash(final long key, final int slot) {
        // The seed keeps keys shaped alike (field << 56 | id) from meeting in the same buckets in every store; the
        // finalizer of MurmurHash3 (a bijection with full avalanche) spreads every input bit over the result.
        long z = key ^ seed;
        z = (z ^ (z >>> 33)) * 0xff51afd7ed558ccdL;
        z = (z ^ (z >>> 33)) * 0xc4ceb9fe1a85ec53L;
        z ^= z >>> 33;
        // The top bits are the key's slot's index in this partition, the rest the seeded hash's: the directory puts
        // the keys of one slot in one segment (or a few, once a slot outgrows one), so that a request whose keys go
        // slot by slot, as large calls do (the SDK orders them), finds each slot's part of the index in cache after
        // its first keys. Within a slot, segments split and buckets probe on the seeded bits as before.
        final long local = slotIndex(slot);
        return (local << (Long.SIZE - slotBits)) | (z >>> slotBits);
    }

    /** The index of {@code slot} among this partition's slots, {@code slot / partitions}: its keys' top hash bits. */
    int slotIndex(final int slot) {
        return (int) ((slot * slotReciprocal) >>> 32);
    }

    /**
     * Copies the {@code dim} values of {@code key} to {@code target} at {@code targetOffset} (bytes, little-endian
     * float32) and returns true, or returns false if the key has no row. {@code foundId} is the record id a previous
     * {@link #find} gave (or -1); it is checked against the record's key and looked up again if the record was freed
     * or reused meanwhile. Lock-free; retries while the writer is changing the record.
     */
    boolean readValues(final long key, final int foundId, final byte[] target, final int targetOffset) {
        int id = foundId;
        for (int misses = 0; id >= 0 && misses < 2; misses++) {
            if (readAt(recordAddress(addresses, id), key, target, targetOffset)) {
                return true;
            }
            // The record was freed or reused for another key after it was found: look the key up again, once.
            if (misses == 0) {
                id = find(key);
            }
        }
        return false;
    }

    /**
     * As {@link #readValues(long, int, byte[], int)} for the key whose hash is {@code h}, starting from the record at
     * {@code candidate} (from {@link #candidate}, or {@link #NOWHERE}): when it holds the key, no index lookup is
     * needed; otherwise the key is looked up as usual.
     */
    boolean readValues(
            final long key, final long h, final long candidate, final byte[] target, final int targetOffset) {
        if (candidate != NOWHERE && readAt(candidate, key, target, targetOffset)) {
            return true;
        }
        return readValues(key, find(key, h), target, targetOffset);
    }

    /**
     * Copies the values of the record at {@code at} to {@code target} if it is live and holds {@code key}; seqlocked,
     * retrying while the writer changes the record. The caller found the record through an entry loaded with acquire
     * semantics and {@link #addresses} loaded after it.
     */
    private boolean readAt(final long at, final long key, final byte[] target, final int targetOffset) {
        while (true) {
            final int before = UnsafeApi.getIntVolatile(null, at + SEQUENCE);
            if ((before & 1) != 0) {
                Thread.onSpinWait();
                continue;
            }
            final long recordKey = UnsafeApi.getLong(at + KEY);
            final int touch = UnsafeApi.getInt(at + TOUCH);
            final long to = BYTE_ARRAY_BASE + targetOffset;
            if (dim <= SMALL_COPY_FLOATS) {
                // A call to the copy stub costs more than a few loads and stores.
                for (int i = 0; i < dim; i++) {
                    UnsafeApi.putInt(target, to + 4L * i, UnsafeApi.getInt(at + HEADER_BYTES + 4L * i));
                }
            } else {
                UnsafeApi.copyMemory(null, at + HEADER_BYTES, target, to, 4L * dim);
            }
            VarHandle.loadLoadFence();
            if (UnsafeApi.getIntVolatile(null, at + SEQUENCE) == before) {
                return recordKey == key && touch != 0;
            }
        }
    }

    /** The entries of the index segment that holds hash {@code h}: stage one of a block looks them up first. */
    int[] segmentEntries(final long h) {
        return segmentOf(directory, h).entries;
    }

    /**
     * The entry most likely to hold {@code h}'s key among {@code entries} (from {@link #segmentEntries}): the first
     * of its home bucket and the three after it whose fingerprint is {@code h}'s, else the fourth (linear probing
     * leaves a key a few buckets on when others took its home, as it does for many keys at the index's load of up to
     * {@value #MAX_LOAD_PERCENT}%; a key further on, or behind an entry of another key with its fingerprint, is
     * looked up by {@link #find}, a dependent miss per record it checks). The four are in one cache line but
     * three times in 16 and are loaded with acquire semantics; the choice is a select, not a branch, so that a loop
     * of these alone over a block keeps many cache misses in flight at once. Checking two instead of four left about
     * twice as many keys to {@code find} (the share of a pull's samples in it, 14.5% against 7.6%); eight instead of
     * four cost more than the lookups they saved (README, round twenty).
     */
    static int homeEntry(final int[] entries, final long h) {
        final int mask = entries.length - 1;
        final int home = (int) h & mask;
        final int fingerprint = fingerprint(h);
        final int first = (int) ENTRY.getAcquire(entries, home);
        final int second = (int) ENTRY.getAcquire(entries, (home + 1) & mask);
        final int third = (int) ENTRY.getAcquire(entries, (home + 2) & mask);
        final int fourth = (int) ENTRY.getAcquire(entries, (home + 3) & mask);
        final int late = (third & ~ID_MASK) == fingerprint ? third : fourth;
        final int next = (second & ~ID_MASK) == fingerprint ? second : late;
        return (first & ~ID_MASK) == fingerprint ? first : next;
    }

    /**
     * The address of the record that {@code entry} (from {@link #homeEntry}) names if its fingerprint matches {@code
     * h}, else {@link #NOWHERE}: the record most likely to hold the key, to load ahead and to try first. Reads
     * {@link #addresses} after the entry; a reader's copy may predate it, and then the answer is {@link #NOWHERE}.
     */
    long candidate(final int entry, final long h) {
        if (entry <= 0 || (entry & ~ID_MASK) != fingerprint(h)) {
            return NOWHERE;
        }
        final int id = (entry & ID_MASK) - 1;
        final long[] all = addresses;
        final int chunk = id >>> chunkShift;
        if (chunk >= all.length || all[chunk] == 0) {
            return NOWHERE;
        }
        return all[chunk] + (long) (id & chunkMask) * recordBytes;
    }

    /** The address of the last int of the record at {@code candidate}, to load its last cache line too. */
    long lastIntOf(final long candidate) {
        return candidate == NOWHERE ? NOWHERE : candidate + recordBytes - 4;
    }

    /**
     * Loads the int at {@code address} (a {@link #candidate} or {@link #lastIntOf} one) so that a later read of it hits
     * the cache. Java has no prefetch instruction; add the results to {@link #prefetchSink} so that the loads stay.
     */
    static int load(final long address) {
        return UnsafeApi.getInt(address);
    }

    /** Where prefetch results go so that the loads stay; read by nobody. */
    static int prefetchSink;

    /** The record id of {@code key}, or -1. Lock-free. */
    int find(final long key) {
        return find(key, hash(key));
    }

    /** The record id of {@code key} whose {@link #hash} is {@code h}, or -1. Lock-free. */
    int find(final long key, final long h) {
        final int[] entries = segmentOf(directory, h).entries;
        final int mask = entries.length - 1;
        final int fingerprint = fingerprint(h);
        int i = (int) h & mask;
        while (true) {
            final int entry = (int) ENTRY.getAcquire(entries, i);
            if (entry == EMPTY) {
                return -1;
            }
            // The chunk addresses are read after the entry (acquire), so they already hold the entry's record.
            if (entry != DELETED && (entry & ~ID_MASK) == fingerprint && keyOf((entry & ID_MASK) - 1) == key) {
                return (entry & ID_MASK) - 1;
            }
            i = (i + 1) & mask;
        }
    }

    int size() {
        return liveRows;
    }

    /** Bytes held for records (off-heap) plus the index and the change marks (on the heap). */
    long bytes() {
        return (long) chunkCount * (chunkMask + 1) * recordBytes + 4L * indexEntries + marks.bytes();
    }

    long longestGrowthNanos() {
        return longestGrowthNanos;
    }

    /** Writes that threw and were abandoned (their rows not applied); each is logged. */
    long failedWrites() {
        return failedWrites;
    }

    /** The index's shape, for tests and diagnostics: computed on the writer (it reads every entry's record). */
    IndexShape indexShape() {
        final Segment[] all = directory;
        int segments = 0;
        int largest = 0;
        long probes = 0;
        long entries = 0;
        int longest = 0;
        Segment previous = null;
        for (final Segment segment : all) {
            if (segment == previous) {
                continue;
            }
            previous = segment;
            segments++;
            final int[] slots = segment.entries;
            largest = Math.max(largest, slots.length);
            final int mask = slots.length - 1;
            for (int i = 0; i < slots.length; i++) {
                if (slots[i] > 0) {
                    final int home = (int) hash(keyOf((slots[i] & ID_MASK) - 1)) & mask;
                    final int distance = ((i - home) & mask) + 1;
                    probes += distance;
                    entries++;
                    longest = Math.max(longest, distance);
                }
            }
        }
        return new IndexShape(depthOf(all), segments, largest, entries == 0 ? 0 : (double) probes / entries, longest);
    }

    /** Directory depth, distinct segments, entries of the largest, mean and longest probe of a present key. */
    record IndexShape(int depth, int segments, int largestSegment, double meanProbe, int longestProbe) {}

    // ---- writer (the partition's thread only)

    /**
     * Begins a snapshot as cut {@code cutEpoch}: a copy of the rows as they are now, taken later in bounded
     * {@link #snapshotStep}s while writes go on (marked from now on in epoch {@code cutEpoch + 1}). Records that exist
     * now are visited in id order; the first change to a record the scan has not reached yet (an update, a removal, a
     * reuse of a free record) saves its state at the cut first, and the scan hands out that saved state instead.
     * Records created beyond the cut's last id are not part of it.
     *
     * <p>With {@code sinceEpoch > 0} the snapshot is a delta: only rows written after cut {@code sinceEpoch}, then
     * (see {@link #snapshotRemovalsStep}) the keys removed after it. Removals logged, and which records were
     * written, at or before {@code pruneEpoch} are forgotten first: no delta will reach back that far. Removals are
     * logged from the first cut on.
     */
    void beginSnapshot(final int cutEpoch, final int sinceEpoch, final int pruneEpoch) {
        if (!logRemovals) {
            // The log restarts here (first cut, or it overflowed): what it held cannot serve a delta any more.
            removals = 0;
            logRemovals = true;
            loggingSince = cutEpoch;
        }
        pruneRemovals(pruneEpoch);
        marks.forgetUpTo(pruneEpoch);
        marks.startEpoch(cutEpoch + 1);
        snapshot = new Snapshot(highWater, recordFloats, cutEpoch, sinceEpoch, removals);
    }

    /**
     * Whether every write and removal since cut {@code sinceEpoch} is known: not if the removal log overflowed since,
     * the log or the change marks were pruned past that cut, or no cut was taken yet.
     */
    boolean changesKnownSince(final int sinceEpoch) {
        return logRemovals && sinceEpoch >= loggingSince && marks.knownSince(sinceEpoch);
    }

    /**
     * Takes cut {@code cutEpoch} without a snapshot: the rows as they are now count as that cut's (every write so far
     * was in an epoch up to {@code cutEpoch}, later ones are marked above it) and removals are logged from here on if
     * they were not. A restore takes one once it has loaded a checkpoint, so that the next delta holds only what
     * changed since. Returns false, changing nothing, while a snapshot is under way (it owns the epochs until it ends).
     */
    boolean markCut(final int cutEpoch) {
        if (snapshot != null || cutEpoch < marks.epoch() - 1) {
            return false;
        }
        if (!logRemovals) {
            removals = 0;
            logRemovals = true;
            loggingSince = cutEpoch;
        }
        marks.startEpoch(cutEpoch + 1);
        return true;
    }

    private void pruneRemovals(final int upToEpoch) {
        int drop = 0;
        while (drop < removals && removedEpochs[drop] <= upToEpoch) {
            drop++;
        }
        if (drop > 0) {
            // Removals of epochs up to the last dropped one are gone: only deltas since that cut or a later one are
            // whole.
            loggingSince = Math.max(loggingSince, removedEpochs[drop - 1]);
            removals -= drop;
            System.arraycopy(removedKeys, drop, removedKeys, 0, removals);
            System.arraycopy(removedEpochs, drop, removedEpochs, 0, removals);
        }
    }

    /** Logs a removal for the next delta; past {@link #MAX_LOGGED_REMOVALS} the log is dropped (deltas need a base). */
    private void logRemoval(final long key) {
        if (!logRemovals) {
            return;
        }
        if (removals == removedKeys.length) {
            if (removals >= MAX_LOGGED_REMOVALS) {
                // Later deltas cannot be served (the next cut restarts the log); a snapshot under way still reads the
                // entries up to its cut, so they stay until then.
                logRemovals = false;
                if (snapshot == null) {
                    removedKeys = new long[0];
                    removedEpochs = new int[0];
                    removals = 0;
                }
                return;
            }
            removedKeys = Arrays.copyOf(removedKeys, Math.max(64, 2 * removals));
            removedEpochs = Arrays.copyOf(removedEpochs, removedKeys.length);
        }
        removedKeys[removals] = key;
        removedEpochs[removals++] = marks.epoch();
    }

    /**
     * Copies the next keys the snapshot's delta removed (logged since its {@code sinceEpoch}, up to the cut) whose key
     * {@code want}s into {@code batch} (of row width 0); true once every logged removal has been looked at.
     */
    boolean snapshotRemovalsStep(final LongPredicate want, final SnapshotBatch batch, final int maxEntries) {
        final Snapshot current = snapshot;
        if (current.since == 0) {
            return true; // a full copy has no removals: what is absent is absent
        }
        final int to = (int) Math.min(current.removalsEnd, (long) current.removalCursor + maxEntries);
        int i = current.removalCursor;
        for (; i < to && batch.hasRoom(); i++) {
            if (removedEpochs[i] > current.since) {
                final long key = removedKeys[i];
                if (want.test(key)) {
                    batch.add(key);
                }
            }
        }
        current.removalCursor = i;
        return i >= current.removalsEnd;
    }

    /** Ends the snapshot (complete or abandoned) and frees what it saved. */
    void endSnapshot() {
        snapshot = null;
    }

    /** Bytes held by states saved for the snapshot (0 without one). */
    long snapshotHeldBytes() {
        final Snapshot current = snapshot;
        return current == null ? 0 : current.heldBytes();
    }

    /**
     * Copies the next rows of the snapshot whose key {@code want}s into {@code batch}, visiting at most
     * {@code maxRecords} records and stopping when the batch is full. Returns true once every record of the cut has
     * been visited.
     */
    boolean snapshotStep(final LongPredicate want, final SnapshotBatch batch, final int maxRecords) {
        final Snapshot current = snapshot;
        final int to = (int) Math.min(current.end, (long) current.cursor + maxRecords);
        int id = current.cursor;
        for (; id < to && batch.hasRoom(); id++) {
            final int saved = current.saved.remove(id);
            if (saved == Snapshot.ABSENT) {
                continue; // free at the cut
            }
            if (saved != Snapshot.NONE) {
                final long key = current.savedKeys[saved];
                if (current.savedWritten.get(saved) && want.test(key)) {
                    final int floatBytes = 4 * recordFloats;
                    System.arraycopy(current.savedRecords, saved * floatBytes, batch.bytes, batch.add(key), floatBytes);
                }
                current.release(saved);
                continue;
            }
            final UnsafeBuffer chunk = chunks[id >>> chunkShift];
            final int at = (id & chunkMask) * recordBytes;
            if (chunk.getInt(at + TOUCH) != 0 && writtenSince(current, id)) {
                final long key = chunk.getLong(at + KEY);
                if (want.test(key)) {
                    copyRecordBytes(id, batch.bytes, batch.add(key));
                }
            }
        }
        current.cursor = id;
        return id >= current.end;
    }

    /** Saves record {@code id}'s state at the cut before its first change, if a snapshot has yet to visit it. */
    private void preserve(final int id) {
        final Snapshot current = snapshot;
        if (current == null || id < current.cursor || id >= current.end || current.saved.containsKey(id)) {
            return;
        }
        final UnsafeBuffer chunk = chunks[id >>> chunkShift];
        final int at = (id & chunkMask) * recordBytes;
        if (chunk.getInt(at + TOUCH) == 0) {
            current.saved.put(id, Snapshot.ABSENT);
            return;
        }
        final int index = current.claim();
        current.savedKeys[index] = chunk.getLong(at + KEY);
        current.savedWritten.set(index, writtenSince(current, id));
        copyRecordBytes(id, current.savedRecords, index * 4 * recordFloats);
        current.saved.put(id, index);
    }

    /**
     * The writer's state of one snapshot: the cut (records {@code < end} existed), how far the scan got, and the
     * saved states of records changed ahead of it, in arrays reused as the scan hands them out.
     */
    private static final class Snapshot {
        static final int NONE = Integer.MIN_VALUE;
        static final int ABSENT = -1;

        final int end;
        final int floats;
        /** The cut's epoch: writes after it are not the snapshot's. */
        final int cut;
        /** Rows last written at or before this cut are left out (0: none is). */
        final int since;
        /** Removals logged before this index are the delta's (those above {@link #since}). */
        final int removalsEnd;

        int cursor;
        int removalCursor;
        /** Record id to its saved state's index, or {@link #ABSENT} for a record that was free at the cut. */
        final Int2IntHashMap saved = new Int2IntHashMap(NONE);

        long[] savedKeys = new long[16];
        /** Whether each saved state belongs in the snapshot (written since {@link #since}), by index. */
        final BitSet savedWritten = new BitSet();
        /** Saved records as a row file stores them (raw float bits, little-endian), {@code 4 * floats} bytes each. */
        byte[] savedRecords;

        private final IntArrayList freeIndexes = new IntArrayList();
        private int used;

        Snapshot(final int end, final int floats, final int cut, final int since, final int removalsEnd) {
            this.end = end;
            this.floats = floats;
            this.cut = cut;
            this.since = since;
            this.removalsEnd = removalsEnd;
            this.savedRecords = new byte[16 * 4 * floats];
        }

        int claim() {
            if (!freeIndexes.isEmpty()) {
                return freeIndexes.popInt();
            }
            if (used == savedKeys.length) {
                if ((long) 2 * used * 4 * floats > Integer.MAX_VALUE - 8) {
                    throw new OutOfMemoryError("a snapshot cannot keep more than " + used + " changed rows aside");
                }
                savedKeys = Arrays.copyOf(savedKeys, 2 * used);
                savedRecords = Arrays.copyOf(savedRecords, 2 * used * 4 * floats);
            }
            return used++;
        }

        void release(final int index) {
            freeIndexes.addInt(index);
        }

        long heldBytes() {
            return (long) (used - freeIndexes.size()) * (8 + 4L * floats) + 12L * saved.size();
        }
    }

    /**
     * Applies a batch in blocks of {@link #BLOCK} keys: hashes every key of the block and loads its index entry, then
     * loads the records those entries name, then finds (or creates) and updates each row. The loads of one stage are
     * independent, so their cache misses overlap, and each row is updated while its record is still in cache.
     * Returns the number of rows not applied: new rows the table's cap or memory refused, and writes that threw
     * (counted in {@link #failedWrites()} and logged; the record stays readable and the batch goes on).
     */
    int applyBatch(
            final long[] keys,
            final int[] slots,
            final int[] rowsOfBatch,
            final int count,
            final float[] gradients,
            final int touch) {
        final long[] hashes = blockHashes;
        final int[] entries = blockEntries;
        final int[][] segments = blockSegments;
        final long[] firsts = blockFirsts;
        final long[] lasts = blockLasts;
        int notApplied = 0;
        for (int from = 0; from < count; from += BLOCK) {
            final int n = Math.min(BLOCK, count - from);
            // Each stage's loop does little besides its loads, so that the processor has many misses in flight.
            for (int i = 0; i < n; i++) {
                final int row = rowsOfBatch[from + i];
                final long h = hash(keys[row], slots[row]);
                hashes[i] = h;
                segments[i] = segmentEntries(h);
            }
            for (int i = 0; i < n; i++) {
                entries[i] = homeEntry(segments[i], hashes[i]);
            }
            // Growth may replace these arrays: hold none of them past the stage.
            Arrays.fill(segments, 0, n, null);
            for (int i = 0; i < n; i++) {
                final long candidate = candidate(entries[i], hashes[i]);
                firsts[i] = candidate;
                lasts[i] = lastIntOf(candidate);
            }
            int sink = 0;
            for (int i = 0; i < n; i++) {
                sink += load(firsts[i]) + load(lasts[i]);
            }
            prefetchSink = sink;
            for (int i = 0; i < n; i++) {
                final int row = rowsOfBatch[from + i];
                final long key = keys[row];
                try {
                    // The writer's view is stable: a live record that holds the key is the key's row.
                    int id = firsts[i] == NOWHERE ? -1 : (entries[i] & ID_MASK) - 1;
                    if (id < 0
                            || UnsafeApi.getLong(firsts[i] + KEY) != key
                            || UnsafeApi.getInt(firsts[i] + TOUCH) == 0) {
                        id = findOrCreate(key, hashes[i], touch, true);
                    }
                    if (id < 0) {
                        notApplied++;
                    } else {
                        applyAt(id, key, gradients, row * dim, touch);
                    }
                } catch (RuntimeException | Error failure) {
                    notApplied++;
                    writeFailed(key, failure);
                }
            }
        }
        return notApplied;
    }

    private void applyAt(final int id, final long key, final float[] gradients, final int offset, final int touch) {
        preserve(id);
        final UnsafeBuffer chunk = chunks[id >>> chunkShift];
        final int at = (id & chunkMask) * recordBytes;
        marks.mark(id);
        beginWrite(chunk, at);
        try {
            faults.recordWrite(key);
            optimizer.apply(chunk, at + HEADER_BYTES, dim, gradients, offset);
            chunk.putInt(at + TOUCH, touch);
        } finally {
            endWrite(chunk, at);
        }
    }

    private void writeFailed(final long key, final Throwable failure) {
        failedWrites++;
        final long now = System.nanoTime();
        if (failedWrites == 1 || now - lastFailureLogNanos > FAILURE_LOG_INTERVAL_NANOS) {
            lastFailureLogNanos = now;
            LOG.error(
                    "a write of key {} failed and was abandoned ({} so far in this partition); the row stays as it"
                            + " was before or partly updated, and the writer goes on",
                    key,
                    failedWrites,
                    failure);
        }
    }

    /**
     * Creates the row of {@code key} with its initial values if it has none (outside the row cap).
     *
     * @throws IllegalStateException naming the reason if the row cannot be created (memory, the partition's limit).
     */
    void ensure(final long key, final int touch) {
        if (findOrCreate(key, hash(key), touch, false) < 0) {
            throw new IllegalStateException("cannot create the row of key " + key + ": " + lastRefusal);
        }
    }

    /**
     * Replaces (or creates) the whole record of {@code key} from {@code record} (values, slots, counter bits).
     *
     * @throws IllegalStateException naming the reason if the row cannot be created.
     */
    void put(final long key, final float[] record, final int touch) {
        final int id = findOrCreate(key, hash(key), touch, false);
        if (id < 0) {
            throw new IllegalStateException("cannot create the row of key " + key + ": " + lastRefusal);
        }
        preserve(id);
        final UnsafeBuffer chunk = chunks[id >>> chunkShift];
        final int at = (id & chunkMask) * recordBytes;
        marks.mark(id);
        beginWrite(chunk, at);
        try {
            faults.recordWrite(key);
            final int floats = record.length;
            for (int i = 0; i < floats; i++) {
                chunk.putInt(at + HEADER_BYTES + 4 * i, Float.floatToRawIntBits(record[i]));
            }
            chunk.putInt(at + TOUCH, touch);
        } finally {
            endWrite(chunk, at);
        }
    }

    /**
     * Replaces (or creates) the records of {@code count} rows stored as a row file stores them: row {@code i} at
     * {@code rows[i * (8 + 4 * floats)]}, its key then its record's floats (values, slots, counter bits), all
     * little-endian. In blocks, as {@link #applyBatch}: the index entries of a block are loaded together, then each
     * row is found or created; a new row is created with its record (never its initial values first), an existing
     * one is saved for a snapshot, then overwritten.
     *
     * @throws IllegalStateException naming the reason if a row cannot be created; the rows before it are in.
     */
    void putRows(final byte[] rows, final int count, final int touch) {
        final int rowBytes = 8 + 4 * recordFloats;
        final long[] hashes = blockHashes;
        final int[] entries = blockEntries;
        final int[][] segments = blockSegments;
        final long[] firsts = blockFirsts;
        for (int from = 0; from < count; from += BLOCK) {
            final int n = Math.min(BLOCK, count - from);
            for (int i = 0; i < n; i++) {
                final long h = hash((long) LONG_LE.get(rows, (from + i) * rowBytes));
                hashes[i] = h;
                segments[i] = segmentEntries(h);
            }
            for (int i = 0; i < n; i++) {
                entries[i] = homeEntry(segments[i], hashes[i]);
            }
            Arrays.fill(segments, 0, n, null);
            for (int i = 0; i < n; i++) {
                firsts[i] = candidate(entries[i], hashes[i]);
            }
            int sink = 0;
            for (int i = 0; i < n; i++) {
                sink += load(firsts[i]) + load(lastIntOf(firsts[i]));
            }
            prefetchSink = sink;
            for (int i = 0; i < n; i++) {
                final int at = (from + i) * rowBytes;
                final long key = (long) LONG_LE.get(rows, at);
                final long h = hashes[i];
                final int id = probe(segmentOf(directory, h), key, h);
                if (id >= 0) {
                    preserve(id);
                    final UnsafeBuffer chunk = chunks[id >>> chunkShift];
                    final int record = (id & chunkMask) * recordBytes;
                    marks.mark(id);
                    beginWrite(chunk, record);
                    try {
                        faults.recordWrite(key);
                        copyIn(chunk, record, rows, at + 8);
                        chunk.putInt(record + TOUCH, touch);
                    } finally {
                        endWrite(chunk, record);
                    }
                } else if (create(key, h, touch, false, rows, at + 8) < 0) {
                    throw new IllegalStateException("cannot create the row of key " + key + ": " + lastRefusal);
                }
            }
        }
    }

    /**
     * Sizes the index of an empty store for about {@code rows} rows at once: segments of {@link #MAX_SEGMENT} entries,
     * enough that {@code rows} fill them to at most 70%, as growth would leave them, so that a restore into the store
     * does not grow the index a segment at a time (a split reads the key of every record in the segment, at random).
     * The rows come from the slots whose {@link #slotIndex} is in {@code localSlotsFilled} (null: from all). Does
     * nothing if the store has rows, {@code rows} fit in one segment or the heap has no room for the segments.
     * Writer-only; readers see the new directory (and no row, as before) once it is published.
     */
    void reserve(final long rows, final BitSet localSlotsFilled) {
        final long perSegment = MAX_SEGMENT * 70L / 100;
        if (liveRows != 0 || rows <= perSegment) {
            return;
        }
        // Only prefixes of slots the rows come from get keys (see hash): a shard restores a range of slots, so on one
        // of S shards a partition's keys reach about 1/S of the prefixes, and those must hold the rows between them.
        final long needed = (rows + perSegment - 1) / perSegment;
        int depth = 0;
        while (depth < MAX_DEPTH && prefixesFilled(depth, localSlotsFilled) < needed) {
            depth++;
        }
        if (depthOf(directory) >= depth && directory[0].entries.length == MAX_SEGMENT) {
            return;
        }
        final Segment[] next = new Segment[1 << depth];
        long entries = 0;
        try {
            for (int i = 0; i < next.length; i++) {
                // Prefixes that no key will reach get the smallest segment.
                next[i] = new Segment(isFilled(i, depth, localSlotsFilled) ? MAX_SEGMENT : MIN_SEGMENT, depth);
                entries += next[i].entries.length;
            }
        } catch (OutOfMemoryError full) {
            // Only an optimization: nothing is published, and the index grows as rows come, as it would have.
            LOG.warn("could not size the index for {} rows ahead of a restore ({}); it grows as they come", rows, full);
            return;
        }
        publish(next, entries - indexEntries);
    }

    /** How many of the {@code 2^depth} prefixes {@link #isFilled} says keys will reach. */
    private long prefixesFilled(final int depth, final BitSet localSlotsFilled) {
        long filled = 0;
        for (int i = 0; i < 1 << depth; i++) {
            filled += isFilled(i, depth, localSlotsFilled) ? 1 : 0;
        }
        return filled;
    }

    /**
     * Whether prefix {@code i} of {@code depth} bits covers a slot index of this partition (see {@link #hash}) that is
     * in {@code localSlotsFilled} (null: every one).
     */
    private boolean isFilled(final int i, final int depth, final BitSet localSlotsFilled) {
        final long first = depth <= slotBits ? (long) i << (slotBits - depth) : i >>> (depth - slotBits);
        final long end = depth <= slotBits ? (long) (i + 1) << (slotBits - depth) : first + 1;
        final int limit = (int) Math.min(end, localSlots);
        if (first >= limit) {
            return false;
        }
        if (localSlotsFilled == null) {
            return true;
        }
        final int next = localSlotsFilled.nextSetBit((int) first);
        return next >= 0 && next < limit;
    }

    /** Copies a record's floats, little-endian at {@code source[offset..]}, into the record at {@code at}. */
    private void copyIn(final UnsafeBuffer chunk, final int at, final byte[] source, final int offset) {
        if (NATIVE_LITTLE_ENDIAN) {
            chunk.putBytes(at + HEADER_BYTES, source, offset, 4 * recordFloats);
        } else {
            for (int i = 0; i < recordFloats; i++) {
                chunk.putInt(at + HEADER_BYTES + 4 * i, (int) INT_LE.get(source, offset + 4 * i));
            }
        }
    }

    /** Removes the row of {@code key}, if any; its record is reused later. */
    void remove(final long key) {
        final long h = hash(key);
        final Segment segment = segmentOf(directory, h);
        final int[] entries = segment.entries;
        final int mask = entries.length - 1;
        final int fingerprint = fingerprint(h);
        int i = (int) h & mask;
        while (true) {
            final int entry = entries[i];
            if (entry == EMPTY) {
                return;
            }
            if (entry != DELETED && (entry & ~ID_MASK) == fingerprint && keyOf((entry & ID_MASK) - 1) == key) {
                final int id = (entry & ID_MASK) - 1;
                // What may allocate comes first: if memory runs out, the row is still there, whole and indexed.
                preserve(id);
                logRemoval(key);
                ENTRY.setRelease(entries, i, DELETED);
                segment.live--;
                free(id);
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /** Visits every live record: its id, key and touch. */
    void forEach(final RecordVisitor visitor) {
        for (int id = 0; id < highWater; id++) {
            final UnsafeBuffer chunk = chunks[id >>> chunkShift];
            final int at = (id & chunkMask) * recordBytes;
            final int touch = chunk.getInt(at + TOUCH);
            if (touch != 0) {
                visitor.visit(id, chunk.getLong(at + KEY), touch);
            }
        }
    }

    /**
     * Removes the rows last touched before {@code oldestTouch} among records {@code from} to {@code from + max - 1};
     * returns where the next step starts, or -1 when the step reached the last record.
     */
    int evictStep(final int from, final int max, final long oldestTouch) {
        final int to = (int) Math.min(highWater, (long) from + max);
        for (int id = from; id < to; id++) {
            final UnsafeBuffer chunk = chunks[id >>> chunkShift];
            final int at = (id & chunkMask) * recordBytes;
            final int touch = chunk.getInt(at + TOUCH);
            if (touch != 0 && touch < oldestTouch) {
                remove(chunk.getLong(at + KEY));
            }
        }
        return to >= highWater ? -1 : to;
    }

    /** What {@link #forEach} calls for each live record. */
    @FunctionalInterface
    interface RecordVisitor {
        void visit(int id, long key, int touch);
    }

    /**
     * Copies record {@code id}'s values, slots and counter bits into {@code target} at {@code offset} as a row file
     * stores them: raw bits, little-endian ({@code 4 * floats} bytes).
     */
    void copyRecordBytes(final int id, final byte[] target, final int offset) {
        final UnsafeBuffer chunk = chunks[id >>> chunkShift];
        final int at = (id & chunkMask) * recordBytes + HEADER_BYTES;
        if (NATIVE_LITTLE_ENDIAN) {
            chunk.getBytes(at, target, offset, 4 * recordFloats);
        } else {
            for (int i = 0; i < recordFloats; i++) {
                INT_LE.set(target, offset + 4 * i, chunk.getInt(at + 4 * i));
            }
        }
    }

    /** Copies record {@code id}'s values, slots and counter bits into {@code target} at {@code offset}. */
    void copyRecord(final int id, final float[] target, final int offset, final int floats) {
        final UnsafeBuffer chunk = chunks[id >>> chunkShift];
        final int at = (id & chunkMask) * recordBytes + HEADER_BYTES;
        for (int i = 0; i < floats; i++) {
            target[offset + i] = Float.intBitsToFloat(chunk.getInt(at + 4 * i));
        }
    }

    /**
     * The record of {@code key} (whose hash is {@code h}), created with its initial values if it has none; -1 if a
     * new row was needed and the table's cap (when {@code capped}), memory or the partition's row limit refused it
     * ({@link #lastRefusal} says which). Nothing changes when a row is refused or its initial write throws.
     */
    private int findOrCreate(final long key, final long h, final int touch, final boolean capped) {
        return create(key, h, touch, capped, null, 0);
    }

    /**
     * As {@link #findOrCreate}; a new row takes its record from {@code source[offset..]} (as {@link #putRows} reads
     * it) instead of its initial values when {@code source} is not null.
     */
    private int create(
            final long key,
            final long h,
            final int touch,
            final boolean capped,
            final byte[] source,
            final int offset) {
        Segment segment = segmentOf(directory, h);
        int found = probe(segment, key, h);
        if (found >= 0) {
            return found;
        }
        if (capped && promisedRows > 0) {
            // Counted against the cap when the push was admitted.
            promisedRows--;
        } else if (!budget.reserve(capped && !createsPastCap)) {
            return refuse("the table's cap of " + budget.cap() + " rows on this shard is reached");
        }
        if (claimedRecords > 0) {
            // Claimed when the push was admitted.
            claimedRecords--;
        } else if (!room.claim(1, true)) {
            budget.release();
            return refuse("out of off-heap memory (" + memory.shortage() + ")");
        }
        final int id;
        try {
            if (segment.isFullForOneMore()) {
                grow(segment, h);
                segment = segmentOf(directory, h);
                found = probe(segment, key, h);
            }
            id = allocate();
            preserve(id);
        } catch (RowLimitReached limit) {
            budget.release();
            room.release(1);
            return refuse("a partition holds at most " + MAX_ROWS + " rows; use more partitions or shards");
        } catch (OutOfMemoryError full) {
            budget.release();
            room.release(1);
            return refuse("out of memory (" + full.getMessage() + ")");
        } catch (RuntimeException | Error failure) {
            budget.release();
            room.release(1);
            throw failure;
        }
        final UnsafeBuffer chunk = chunks[id >>> chunkShift];
        final int at = (id & chunkMask) * recordBytes;
        marks.mark(id);
        beginWrite(chunk, at);
        try {
            chunk.putLong(at + KEY, key);
            chunk.putInt(at + TOUCH, touch);
            faults.recordWrite(key);
            if (source == null) {
                initializer.fill(key, chunk, at + HEADER_BYTES, dim);
                optimizer.init(chunk, at + HEADER_BYTES, dim);
            } else {
                copyIn(chunk, at, source, offset);
            }
        } catch (RuntimeException | Error failure) {
            // Unpublished: give the record and the row back, as if it had never been asked for.
            chunk.putInt(at + TOUCH, 0);
            endWrite(chunk, at);
            freeRecords.addInt(id);
            budget.release();
            room.release(1);
            throw failure;
        }
        endWrite(chunk, at);
        final int position = -found - 1;
        if (segment.entries[position] == EMPTY) {
            segment.used++;
        }
        segment.live++;
        ENTRY.setRelease(segment.entries, position, fingerprint(h) | (id + 1));
        // Written by the writer alone and read as a count: a release store, not a full fence per row.
        LIVE_ROWS.setRelease(this, liveRows + 1);
        return id;
    }

    /** Sets the rows the next push applied here was promised; see {@link #promisedRows}. */
    void promiseRows(final int rows, final boolean pastCap) {
        promisedRows = rows;
        createsPastCap = pastCap;
    }

    /** The promised rows the push did not create (its keys' rows made meanwhile by an earlier push); now none. */
    int takeUnusedPromise() {
        final int unused = promisedRows;
        promisedRows = 0;
        createsPastCap = false;
        return unused;
    }

    /**
     * Claims room for {@code records} new rows before a push that may create them is queued (any thread): false,
     * nothing claimed, when the off-heap budget has no room for the chunks they would need (see {@link
     * RecordRoom#claim}). The push's writer uses
     * the claim ({@link #useClaims}); a push not queued gives it back with {@link #releaseClaim}.
     */
    boolean claimAhead(final long records, final boolean exact) {
        return room.claim(records, exact);
    }

    /** Gives back records {@link #claimAhead} claimed for a push that was not queued (any thread). */
    void releaseClaim(final long records) {
        room.release(records);
    }

    /** Sets the records the next push applied here claimed when admitted; see {@link #claimedRecords}. */
    void useClaims(final int records) {
        claimedRecords = records;
    }

    /** Gives back the claimed records the push did not create (rows that existed after all, refusals); writer-only. */
    void releaseUnusedClaims() {
        final int unused = claimedRecords;
        claimedRecords = 0;
        room.release(unused);
    }

    private int refuse(final String reason) {
        lastRefusal = reason;
        final long now = System.nanoTime();
        // A push's new rows are counted against the cap when it is admitted, so a cap refusal here is a row that did
        // not exist then (evicted meanwhile) or a combined SYNC clock: rare, and logged like any other.
        if (!warnedRefusal || now - lastRefusalLogNanos > FAILURE_LOG_INTERVAL_NANOS) {
            warnedRefusal = true;
            lastRefusalLogNanos = now;
            LOG.error("a partition cannot create rows: {}; new rows are refused until it can", reason);
        }
        return -1;
    }

    /** The partition's record ids are used up (not memory: thrown before anything is allocated). */
    private static final class RowLimitReached extends RuntimeException {
        private static final long serialVersionUID = 1L;

        RowLimitReached() {
            super(null, null, false, false);
        }
    }

    /**
     * Where {@code key} is in {@code segment}: its record id (>= 0), or {@code -(position + 1)} of the entry a new row
     * would take (the first deleted entry on its probe, else the empty one that ended it).
     */
    private int probe(final Segment segment, final long key, final long h) {
        final int[] entries = segment.entries;
        final int mask = entries.length - 1;
        final int fingerprint = fingerprint(h);
        int i = (int) h & mask;
        int firstDeleted = -1;
        while (true) {
            final int entry = entries[i];
            if (entry == EMPTY) {
                return -(firstDeleted >= 0 ? firstDeleted : i) - 1;
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
    }

    /**
     * Makes room for one more entry in {@code segment}, which holds the hash {@code h}: rebuilds it without its
     * deleted entries when they are what fills it, doubles it while it is smaller than {@link #MAX_SEGMENT}, splits
     * it in two otherwise. Everything is allocated and filled aside and published with one directory write, so a
     * failure (an {@link OutOfMemoryError}) changes nothing.
     */
    private void grow(final Segment segment, final long h) {
        faults.indexGrowth();
        final long start = System.nanoTime();
        final int capacity = segment.entries.length;
        final Segment[] old = directory;
        if ((segment.live + 1) * 200L <= (long) capacity * MAX_LOAD_PERCENT) {
            replace(old, segment, h, capacity);
        } else if (capacity < MAX_SEGMENT || segment.depth >= MAX_DEPTH) {
            replace(old, segment, h, 2 * capacity);
        } else {
            split(old, segment, h);
        }
        longestGrowthNanos = Math.max(longestGrowthNanos, System.nanoTime() - start);
    }

    /**
     * Moves the live entries of {@code from} into {@code low}, or, when {@code high} is not null, into {@code low} or
     * {@code high} by the hash bit at {@code splitShift}. Reads the key of every live entry's record: the cost of
     * growth, bounded by the size of one segment.
     */
    private void refill(final Segment from, final Segment low, final Segment high, final int splitShift) {
        final int[] source = from.entries;
        final long[] keys = growthKeys;
        final int[] entries = growthEntries;
        int i = 0;
        while (i < source.length) {
            // Gather a block of live entries and load their keys in one tight loop (independent misses overlap),
            // then place them.
            int n = 0;
            while (n < BLOCK && i < source.length) {
                if (source[i] > 0) {
                    entries[n++] = source[i];
                }
                i++;
            }
            for (int k = 0; k < n; k++) {
                keys[k] = keyOf((entries[k] & ID_MASK) - 1);
            }
            for (int k = 0; k < n; k++) {
                final long h = hash(keys[k]);
                final Segment to = high != null && ((h >>> splitShift) & 1) != 0 ? high : low;
                final int[] slots = to.entries;
                final int mask = slots.length - 1;
                int at = (int) h & mask;
                while (slots[at] != EMPTY) {
                    at = (at + 1) & mask;
                }
                slots[at] = entries[k];
                to.used++;
                to.live++;
            }
        }
    }

    /** Publishes a directory in which {@code old} is rebuilt into a segment of {@code capacity} entries. */
    private void replace(final Segment[] current, final Segment old, final long h, final int capacity) {
        final Segment fresh = new Segment(capacity, old.depth);
        final Segment[] next = current.clone();
        refill(old, fresh, null, 0);
        final int span = 1 << (depthOf(current) - old.depth);
        final int first = prefix(h, old.depth) * span;
        Arrays.fill(next, first, first + span, fresh);
        publish(next, fresh.entries.length - old.entries.length);
    }

    /** Splits {@code old} by the next bit of the hash into two segments of its size, doubling the directory if needed. */
    private void split(final Segment[] current, final Segment old, final long h) {
        final int depth = old.depth + 1;
        final int capacity = old.entries.length;
        final int globalDepth = Math.max(depthOf(current), depth);
        final Segment[] next = new Segment[1 << globalDepth];
        final Segment low = new Segment(capacity, depth);
        final Segment high = new Segment(capacity, depth);
        refill(old, low, high, 63 - old.depth);
        final int stretch = next.length / current.length;
        for (int i = 0; i < next.length; i++) {
            next[i] = current[i / stretch];
        }
        final int span = 1 << (globalDepth - old.depth);
        final int first = prefix(h, old.depth) * span;
        Arrays.fill(next, first, first + span / 2, low);
        Arrays.fill(next, first + span / 2, first + span, high);
        publish(next, capacity);
    }

    private void publish(final Segment[] next, final long addedEntries) {
        indexEntries = indexEntries + addedEntries;
        directory = next;
    }

    private int allocate() {
        if (!freeRecords.isEmpty()) {
            return freeRecords.popInt();
        }
        if (highWater == MAX_ROWS) {
            throw new RowLimitReached();
        }
        final int id = highWater;
        final int chunk = id >>> chunkShift;
        if (chunk == chunkCount) {
            // Allocate first: if memory is short nothing has changed, and the id is not used up.
            faults.chunkAllocation();
            // Its bytes were counted when a record in it was claimed (see RecordRoom).
            if (room.countedChunks() <= chunk) {
                throw new IllegalStateException("chunk " + chunk + " of a partition is not counted against the"
                        + " off-heap budget: " + room.claimed() + " records claimed");
            }
            // Its records' change marks first: if the heap is short, nothing has changed either.
            marks.ensureCapacity((chunk + 1) << chunkShift);
            final UnsafeBuffer fresh = new UnsafeBuffer(memory.allocateReserved((chunkMask + 1) * recordBytes));
            UnsafeBuffer[] all = chunks;
            long[] allAddresses = addresses;
            if (chunk == all.length) {
                all = Arrays.copyOf(all, Math.max(16, 2 * all.length));
                allAddresses = Arrays.copyOf(allAddresses, all.length);
            }
            // Readers reach the new chunk only through an entry published later (release), or the volatiles below.
            all[chunk] = fresh;
            allAddresses[chunk] = fresh.addressOffset();
            chunks = all;
            addresses = allAddresses;
            chunkCount = chunkCount + 1;
            room.chunkAllocated();
        }
        highWater = id + 1;
        return id;
    }

    /** Frees a record {@link #remove} has unpublished (its state at a snapshot's cut saved, its removal logged). */
    private void free(final int id) {
        final UnsafeBuffer chunk = chunks[id >>> chunkShift];
        final int at = (id & chunkMask) * recordBytes;
        beginWrite(chunk, at);
        chunk.putInt(at + TOUCH, 0);
        endWrite(chunk, at);
        freeRecords.addInt(id);
        LIVE_ROWS.setRelease(this, liveRows - 1);
        budget.release();
        room.release(1);
    }

    /** Whether record {@code id} as it was at the cut of {@code current} belongs in it (a full copy: every record). */
    private boolean writtenSince(final Snapshot current, final int id) {
        return current.since == 0 || marks.writtenBetween(id, current.since, current.cut);
    }

    private long keyOf(final int id) {
        return UnsafeApi.getLong(recordAddress(addresses, id) + KEY);
    }

    /** The address of record {@code id}, which {@code all} (a load of {@link #addresses}) must reach. */
    private long recordAddress(final long[] all, final int id) {
        return all[id >>> chunkShift] + (long) (id & chunkMask) * recordBytes;
    }

    private static Segment segmentOf(final Segment[] directory, final long h) {
        // The top depth bits of the hash; (h >>> 1) >>> 63 is 0, so a directory of one needs no special case.
        return directory[(int) ((h >>> 1) >>> (63 - depthOf(directory)))];
    }

    private static int depthOf(final Segment[] directory) {
        return Integer.numberOfTrailingZeros(directory.length);
    }

    /** The top {@code depth} bits of {@code h}. */
    private static int prefix(final long h, final int depth) {
        return (int) ((h >>> 1) >>> (63 - depth));
    }

    private static void beginWrite(final UnsafeBuffer chunk, final int at) {
        chunk.putInt(at + SEQUENCE, chunk.getInt(at + SEQUENCE) + 1);
        VarHandle.storeStoreFence();
    }

    private static void endWrite(final UnsafeBuffer chunk, final int at) {
        chunk.putIntOrdered(at + SEQUENCE, chunk.getInt(at + SEQUENCE) + 1);
    }

    /** Bits 27..31 of the hash, in place above the id: the bucket uses the low bits, at most 15 of them. */
    private static int fingerprint(final long h) {
        return (((int) h) >>> 27) << ID_BITS;
    }

    /** A part of the index: its entries (read by anyone) and the writer's counts of them. */
    private static final class Segment {
        final int[] entries;
        /** How many top bits of the hash all of its keys share. */
        final int depth;
        /** Entries that are not empty (live or deleted); writer-only. */
        int used;
        /** Live entries; writer-only. */
        int live;

        Segment(final int capacity, final int depth) {
            this.entries = new int[capacity];
            this.depth = depth;
        }

        boolean isFullForOneMore() {
            return (used + 1) * 100L > (long) entries.length * MAX_LOAD_PERCENT;
        }
    }
}
