package io.pscluster.server.table;

import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.wire.Slots;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.IntPredicate;
import java.util.function.Supplier;
import org.agrona.concurrent.UnsafeBuffer;

/**
 * One table's rows on one shard: a {@link PartitionStore} per writer partition, off-heap, lock-free to read.
 *
 * <p>Reads ({@link #pull}) run on the caller's thread and never wait for writers. Every change runs on the
 * partition's writer ({@link PartitionWriters}): pushes are queued and acknowledged before they are applied (async
 * mode); control operations (snapshot, clear, restore, dense materialization) are queued behind the pushes already
 * there and the caller waits for them. Callers validate keys and gradients first (see the shard); this class
 * trusts its input.
 */
public final class ParameterTable {
    private final TableSchema schema;
    private final long tableHash;
    private final int dim;
    private final int rowWidth;
    private final Optimizer optimizer;
    private final Initializer initializer;
    private final PartitionWriters writers;
    private final PartitionStore[] partitions;
    private final RowBudget budget;
    private final OffHeapBudget memory;
    private final Supplier<BitSet> writableSlots;
    private final long startMillis = System.currentTimeMillis();
    private final AtomicLong droppedRows = new AtomicLong();
    /** Per partition, the record where the next TTL eviction step starts; each touched by its writer only. */
    private final int[] evictionCursor;

    /** A table whose pushes may change every slot (tests, benchmarks). */
    public ParameterTable(final TableSchema schema, final PartitionWriters writers) {
        this(schema, writers, () -> null);
    }

    /**
     * @param schema a schema already normalized by {@code TableSchemas.normalize}.
     * @param writableSlots the slots a push may still change when a writer applies it (null: all). A push is
     *     validated against the shard's slots when it arrives but applied later; a slot that moved away or began a
     *     restore meanwhile has had its rows cleared, and applying the push there would bring stale rows back.
     */
    public ParameterTable(
            final TableSchema schema, final PartitionWriters writers, final Supplier<BitSet> writableSlots) {
        this(schema, writers, writableSlots, OffHeapBudget.JVM);
    }

    /** As {@link #ParameterTable(TableSchema, PartitionWriters, Supplier)}, its rows held in {@code memory}. */
    ParameterTable(
            final TableSchema schema,
            final PartitionWriters writers,
            final Supplier<BitSet> writableSlots,
            final OffHeapBudget memory) {
        this.memory = memory;
        this.writableSlots = writableSlots;
        this.schema = schema;
        this.tableHash = Slots.tableHash(schema.getName());
        this.dim = schema.getDim();
        this.optimizer = Optimizer.of(schema.getOptimizer());
        this.rowWidth = dim * (1 + optimizer.slotCount()) + optimizer.counterCount();
        this.initializer = new Initializer(schema.getInitializer());
        this.writers = writers;
        this.budget = new RowBudget(schema.getMaxRowsPerShard());
        this.partitions = new PartitionStore[writers.partitionCount()];
        this.evictionCursor = new int[partitions.length];
        for (int p = 0; p < partitions.length; p++) {
            partitions[p] = new PartitionStore(
                    dim, optimizer, initializer, budget, memory, tableHash, writers.partitionCount());
        }
    }

    public TableSchema schema() {
        return schema;
    }

    public String name() {
        return schema.getName();
    }

    public int dim() {
        return dim;
    }

    /** Floats per record in snapshots and checkpoints: values, optimizer slots, then counters (as raw int bits). */
    public int rowWidth() {
        return rowWidth;
    }

    /**
     * About the off-heap bytes a dense table's rows in {@code slots} of the {@link Slots#SLOT_COUNT} slots take (its keys
     * spread evenly over slots), and 0 for a sparse table: checked before materializing, so that a table too large is
     * refused without filling memory first.
     */
    public long denseBytesFor(final int slots) {
        if (schema.getKind() != TableKind.DENSE) {
            return 0;
        }
        // rows * slots / SLOT_COUNT without overflowing (rows may be up to Long.MAX_VALUE), saturated past
        // Long.MAX_VALUE: a product that wrapped had let a table of 5e15 rows pass as small and fill every shard's
        // memory.
        final long rows = schema.getRows();
        final long share = rows / Slots.SLOT_COUNT * slots + rows % Slots.SLOT_COUNT * slots / Slots.SLOT_COUNT;
        final long record = recordBytes();
        return share > Long.MAX_VALUE / record ? Long.MAX_VALUE : share * record;
    }

    /** Off-heap bytes the tables of this JVM may still allocate for rows (see {@code OffHeapBudget}). */
    public static long offHeapAvailable() {
        return OffHeapBudget.JVM.available();
    }

    /** The off-heap budget of this JVM's rows (see {@code OffHeapBudget}). */
    public static long offHeapLimit() {
        return OffHeapBudget.JVM.limit();
    }

    /**
     * Whether the tables of this JVM have room for {@code bytes} more rows' bytes, after at most one collection to get
     * back the memory of dropped tables.
     */
    public static boolean offHeapRoomFor(final long bytes) {
        return OffHeapBudget.JVM.hasRoomFor(bytes);
    }

    /** Bytes one row takes off-heap (header, values, slots, counters), not counting its index entry. */
    public int recordBytes() {
        return PartitionStore.recordBytes(dim, optimizer);
    }

    public int slotOf(final long key) {
        return Slots.slotOf(tableHash, key);
    }

    public int[] slotsOf(final long[] keys) {
        final int[] slots = new int[keys.length];
        for (int i = 0; i < keys.length; i++) {
            slots[i] = Slots.slotOf(tableHash, keys[i]);
        }
        return slots;
    }

    // ---- reads: any thread, no locks

    /**
     * Copies the values of {@code keys} into {@code out} as little-endian float32, row after row; a key without a row
     * reads as its initial values (and is not created). {@code slots} are the keys' slots ({@link #slotsOf}).
     *
     * @throws IllegalArgumentException if {@code slots} or {@code out} is too short for {@code keys}.
     */
    public void pull(final long[] keys, final int[] slots, final byte[] out) {
        final int rowBytes = 4 * dim;
        if (slots.length < keys.length || out.length < (long) keys.length * rowBytes) {
            throw new IllegalArgumentException("pull of " + keys.length + " keys x dim " + dim + " needs "
                    + keys.length + " slots and " + (long) keys.length * rowBytes + " output bytes; got "
                    + slots.length + " slots and " + out.length + " bytes");
        }
        // In blocks, as in PartitionStore.applyBatch: every key's index entry, then every record, then the copies,
        // so that the cache misses of a block overlap instead of following one another.
        final int block = PartitionStore.BLOCK;
        final PartitionStore[] stores = new PartitionStore[block];
        final long[] hashes = new long[block];
        final int[][] segments = new int[block][];
        final int[] entries = new int[block];
        final long[] firsts = new long[block];
        final long[] lasts = new long[block];
        UnsafeBuffer initial = null;
        for (int from = 0; from < keys.length; from += block) {
            final int n = Math.min(block, keys.length - from);
            for (int i = 0; i < n; i++) {
                final PartitionStore store = partitions[writers.partitionOf(slots[from + i])];
                final long h = store.hash(keys[from + i], slots[from + i]);
                stores[i] = store;
                hashes[i] = h;
                segments[i] = store.segmentEntries(h);
            }
            // Each stage's loop does little besides its loads, so that the processor has many misses in flight.
            for (int i = 0; i < n; i++) {
                entries[i] = PartitionStore.homeEntry(segments[i], hashes[i]);
            }
            for (int i = 0; i < n; i++) {
                firsts[i] = stores[i].candidate(entries[i], hashes[i]);
                lasts[i] = stores[i].lastIntOf(firsts[i]);
            }
            int sink = 0;
            for (int i = 0; i < n; i++) {
                sink += PartitionStore.load(firsts[i]) + PartitionStore.load(lasts[i]);
            }
            PartitionStore.prefetchSink = sink;
            for (int i = 0; i < n; i++) {
                final int k = from + i;
                if (!stores[i].readValues(keys[k], hashes[i], firsts[i], out, k * rowBytes)) {
                    if (initial == null) {
                        initial = new UnsafeBuffer(out);
                    }
                    initializer.fill(keys[k], initial, k * rowBytes, dim);
                }
            }
        }
    }

    /** {@link #pull(long[], int[], byte[])} decoded to floats, for tests and in-process callers. */
    public float[] pull(final long[] keys) {
        final byte[] bytes = new byte[keys.length * 4 * dim];
        pull(keys, slotsOf(keys), bytes);
        final float[] values = new float[keys.length * dim];
        final UnsafeBuffer buffer = new UnsafeBuffer(bytes);
        for (int i = 0; i < values.length; i++) {
            values[i] = buffer.getFloat(4 * i);
        }
        return values;
    }

    /** Distinct keys among {@code keys} (with their slots) that have no row yet, counted for the row cap. */
    public int countAbsent(final long[] keys, final int[] slots) {
        return Arrays.stream(absentPerPartition(keys, slots)).sum();
    }

    /** Distinct keys without a row, counted per partition. */
    private int[] absentPerPartition(final long[] keys, final int[] slots) {
        final int[] perPartition = new int[partitions.length];
        final org.agrona.collections.LongHashSet distinct = new org.agrona.collections.LongHashSet();
        for (final int i : absentPositions(keys, slots)) {
            if (distinct.add(keys[i])) {
                perPartition[writers.partitionOf(slots[i])]++;
            }
        }
        return perPartition;
    }

    /**
     * Admits a push of {@code keys} before it is queued, so that it is refused now rather than acknowledged and then
     * short of rows when its writers apply it: its new rows are counted against the table's cap
     * ({@link RowBudget#promise}), and room for them is claimed in the off-heap budget (a {@link RecordRoom} per
     * partition). Returns the promise, or null (nothing counted) when the new rows would pass the cap. Give it to
     * {@link #offerPush(long[], int[], float[], RowPromise, PartitionWriters.DeferredWakes)}, or back with
     * {@link #release(RowPromise)} if the push is not queued.
     *
     * <p>A table without a cap claims a record for every key of the push, which costs no lookup; only when the budget
     * has no room for that many does it count the keys without a row and claim those.
     *
     * @throws OffHeapFull when the budget has no room for the push's new rows (nothing counted).
     */
    public RowPromise promiseNewRows(final long[] keys, final int[] slots) {
        final int[] counts = keysPerPartition(slots);
        int[] absent = null;
        long promisedTotal = 0;
        if (budget.cap() != 0) {
            absent = absentPerPartition(keys, slots);
            promisedTotal = Arrays.stream(absent).sum();
            if (!budget.promise(promisedTotal)) {
                return null;
            }
        }
        // A bound that costs no lookup, tried without a collection: the exact count is only needed when memory is
        // short.
        int[] claims = absent != null ? absent : counts;
        if (!claimAll(claims, absent != null)) {
            if (absent == null) {
                claims = absentPerPartition(keys, slots);
            }
            if (absent != null || !claimAll(claims, true)) {
                budget.releasePromised(promisedTotal);
                throw noRoomFor(Arrays.stream(claims).sum());
            }
        }
        return new RowPromise(counts, absent, promisedTotal, claims);
    }

    /** The refusal of {@code rows} new rows the off-heap budget has no room for; retryable while room is coming. */
    private OffHeapFull noRoomFor(final long rows) {
        return new OffHeapFull(
                "table '" + name() + "' has no off-heap room for " + rows + " new rows: " + memory.shortage(),
                memory.anyAhead() || memory.coolingDown());
    }

    /** Claims {@code records[p]} records in each partition {@code p}, all or none (see {@link RecordRoom#claim}). */
    private boolean claimAll(final int[] records, final boolean exact) {
        for (int p = 0; p < records.length; p++) {
            if (!partitions[p].claimAhead(records[p], exact)) {
                for (int q = 0; q < p; q++) {
                    partitions[q].releaseClaim(records[q]);
                }
                return false;
            }
        }
        return true;
    }

    /** The number of {@code slots} in each partition. */
    private int[] keysPerPartition(final int[] slots) {
        final int[] counts = new int[partitions.length];
        if (partitions.length == 1) {
            counts[0] = slots.length;
        } else {
            for (final int slot : slots) {
                counts[writers.partitionOf(slot)]++;
            }
        }
        return counts;
    }

    /** Gives back a promise whose push was not queued. */
    public void release(final RowPromise promise) {
        budget.releasePromised(promise.promisedTotal);
        if (promise.claims != null) {
            for (int p = 0; p < partitions.length; p++) {
                partitions[p].releaseClaim(promise.claims[p]);
            }
        }
    }

    /**
     * The positions in {@code keys} (with their slots) of the keys without a row now: what a SYNC clock's push may
     * create ({@link ClockRows#hold}). Lookups only; any thread.
     */
    public int[] absentPositions(final long[] keys, final int[] slots) {
        int[] absent = new int[0];
        int count = 0;
        for (int i = 0; i < keys.length; i++) {
            if (partitions[writers.partitionOf(slots[i])].find(keys[i]) < 0) {
                if (count == absent.length) {
                    absent = Arrays.copyOf(absent, Math.max(16, 2 * count));
                }
                absent[count++] = i;
            }
        }
        return count == absent.length ? absent : Arrays.copyOf(absent, count);
    }

    /** Nothing held yet for a SYNC clock's sum of pushes to this table; see {@link ClockRows}. */
    public ClockRows clockRows() {
        return new ClockRows();
    }

    /**
     * The new rows a SYNC clock's sum will create in this table, counted against the cap and claimed in the off-heap
     * budget as the clock's pushes are held, before they are acknowledged ({@link #hold}), each key once however many
     * workers name it: the sum, applied once every worker ended the clock, then has a row for each key (it used to
     * drop the rows it had no room for, after every worker was told its push was taken). The sum's push takes them
     * ({@link #take}); a clock dropped gives them back ({@link #release}). Not thread-safe: its clock's holder calls it
     * under its own lock, then the clock's applier, which alone has it by then.
     */
    public final class ClockRows {
        private final org.agrona.collections.LongHashSet keys = new org.agrona.collections.LongHashSet();
        private final int[] promised = new int[partitions.length];
        private final int[] claims = new int[partitions.length];
        private long promisedTotal;

        private ClockRows() {}

        /**
         * Holds the rows of the keys at {@code absent} (from {@link #absentPositions}) that this clock does not hold
         * yet, all or none. Returns false, nothing held, when they would pass the table's cap.
         *
         * @throws OffHeapFull when the budget has no room for them (nothing held).
         */
        public boolean hold(final long[] pushKeys, final int[] slots, final int[] absent) {
            final int[] perPartition = new int[partitions.length];
            final long[] added = new long[absent.length];
            int count = 0;
            for (final int i : absent) {
                if (keys.add(pushKeys[i])) {
                    added[count++] = pushKeys[i];
                    perPartition[writers.partitionOf(slots[i])]++;
                }
            }
            if (count == 0) {
                return true;
            }
            final boolean capped = budget.cap() != 0;
            if (capped && !budget.promise(count)) {
                forget(added, count);
                return false;
            }
            if (!claimAll(perPartition, true)) {
                if (capped) {
                    budget.releasePromised(count);
                }
                forget(added, count);
                throw noRoomFor(count);
            }
            for (int p = 0; p < perPartition.length; p++) {
                claims[p] += perPartition[p];
                if (capped) {
                    promised[p] += perPartition[p];
                }
            }
            if (capped) {
                promisedTotal += count;
            }
            return true;
        }

        /** The rows held: keys without a row when a push of the clock named them. */
        public int held() {
            return keys.size();
        }

        /** How many of the keys at {@code absent} this clock does not hold yet. */
        public int countNew(final long[] pushKeys, final int[] absent) {
            final org.agrona.collections.LongHashSet seen = new org.agrona.collections.LongHashSet();
            int count = 0;
            for (final int i : absent) {
                if (!keys.contains(pushKeys[i]) && seen.add(pushKeys[i])) {
                    count++;
                }
            }
            return count;
        }

        private void forget(final long[] added, final int count) {
            for (int i = 0; i < count; i++) {
                keys.remove(added[i]);
            }
        }

        /** Whether these rows are held in {@code table} (and not in a table dropped since of the same name). */
        public boolean isOf(final ParameterTable table) {
            return table == ParameterTable.this;
        }

        /**
         * The rows held, for the clock's sum's push (its writers give back what they do not use; a row beyond them, of
         * a key whose row a push found and TTL evicted since, is created past the cap); holds none after.
         */
        public RowPromise take() {
            final RowPromise promise = new RowPromise(null, promised.clone(), promisedTotal, claims.clone());
            clear();
            return promise;
        }

        /** Gives back every row held: the clock's pushes to the table are dropped. */
        public void release() {
            ParameterTable.this.release(new RowPromise(null, null, promisedTotal, claims));
            clear();
        }

        private void clear() {
            keys.clear();
            Arrays.fill(promised, 0);
            Arrays.fill(claims, 0);
            promisedTotal = 0;
        }
    }

    /**
     * A push refused because the off-heap budget has no room for its new rows. {@link #retryable()} when pushes queued
     * meanwhile hold claims they may not use (they may name the same new keys): sent again once they are applied, the
     * push is taken or refused for good.
     */
    public static final class OffHeapFull extends RuntimeException {
        private static final long serialVersionUID = 1L;
        private final boolean retryable;

        OffHeapFull(final String message, final boolean retryable) {
            super(message, null, false, false);
            this.retryable = retryable;
        }

        public boolean retryable() {
            return retryable;
        }
    }

    /**
     * What a queued push was admitted with, per partition: its keys, its new rows promised against the table's cap,
     * and the records claimed for them in the off-heap budget.
     */
    public static final class RowPromise {
        /** Nothing promised or claimed: the writers count and claim each new row as they create it. */
        public static final RowPromise NONE = new RowPromise(null, null, 0, null);

        private final int[] keysPerPartition;
        private final int[] promised;
        private final long promisedTotal;
        private final int[] claims;

        private RowPromise(
                final int[] keysPerPartition, final int[] promised, final long promisedTotal, final int[] claims) {
            this.keysPerPartition = keysPerPartition;
            this.promised = promised;
            this.promisedTotal = promisedTotal;
            this.claims = claims;
        }

        /**
         * Whether a new row beyond those promised is created past the cap: so it is for a push admitted against the
         * cap ({@link #promiseNewRows}) and a SYNC clock's sum ({@link ClockRows#take}), both acknowledged when the
         * keys they promised no row for had rows, which TTL eviction, or a restore or slot move finishing meanwhile,
         * may have removed since: created again rather than dropped. Not for {@link #NONE} (in-process callers).
         */
        boolean createsPastCap() {
            return this != NONE;
        }

        int promisedIn(final int partition) {
            return promised == null ? 0 : promised[partition];
        }

        int claimedIn(final int partition) {
            return claims == null ? 0 : claims[partition];
        }
    }

    // ---- pushes: queued to the writers

    /**
     * Queues a push to be applied by the partitions' writers; returns false, having queued nothing, when the shard's
     * writers have no room (the caller answers RESOURCE_EXHAUSTED). The keys are split by partition here, once, on
     * the caller's thread; each writer then goes through its own rows only.
     */
    public boolean offerPush(final long[] keys, final int[] slots, final float[] gradients) {
        return offerPush(keys, slots, gradients, RowPromise.NONE);
    }

    /**
     * As {@link #offerPush(long[], int[], float[])}, its new rows created under {@code promise} (a SYNC clock's sum,
     * with the rows its pushes held: {@link ClockRows#take}); the writers give back what they do not use. When this
     * returns false the promise is still the caller's.
     */
    public boolean offerPush(final long[] keys, final int[] slots, final float[] gradients, final RowPromise promise) {
        return offerPush(keys, slots, gradients, promise, null, false);
    }

    /**
     * As {@link #offerPush(long[], int[], float[])}, its new rows created under {@code promise} (from
     * {@link #promiseNewRows}); the writers give back what they do not use. When this returns false the promise is the
     * caller's to release. With {@code later} not null the writers are woken by it, not here (see
     * {@link PartitionWriters.DeferredWakes}).
     */
    public boolean offerPush(
            final long[] keys,
            final int[] slots,
            final float[] gradients,
            final RowPromise promise,
            final PartitionWriters.DeferredWakes later) {
        return offerPush(keys, slots, gradients, promise, later, true);
    }

    /**
     * @param boundedBytes whether the push is refused when its heap would take the queued pushes' past the shard's
     *     bound (a request's push); a push whose arrays the shard holds anyway while it waits (a SYNC clock's sum,
     *     in-process callers of {@link #offerPush(long[], int[], float[])}) is counted but never refused for its bytes,
     *     so that a stream of small pushes cannot keep it out.
     */
    private boolean offerPush(
            final long[] keys,
            final int[] slots,
            final float[] gradients,
            final RowPromise promise,
            final PartitionWriters.DeferredWakes later,
            final boolean boundedBytes) {
        final int partitionCount = partitions.length;
        if (partitionCount == 1) {
            final int[] rows = identity(keys.length);
            final int count = keys.length;
            return writers.offer(
                    partition -> applyQueued(partition, keys, slots, rows, count, gradients, promise),
                    1L,
                    later,
                    queuedBytes(count),
                    boundedBytes);
        }
        final int[] counts = promise.keysPerPartition != null ? promise.keysPerPartition : keysPerPartition(slots);
        final int[][] rowsOf = new int[partitionCount][];
        long mask = 0;
        for (int p = 0; p < partitionCount; p++) {
            if (counts[p] > 0) {
                rowsOf[p] = new int[counts[p]];
                mask |= 1L << p;
            }
        }
        final int[] filled = new int[partitionCount];
        for (int i = 0; i < keys.length; i++) {
            final int p = writers.partitionOf(slots[i]);
            rowsOf[p][filled[p]++] = i;
        }
        if (!writers.offer(
                partition ->
                        applyQueued(partition, keys, slots, rowsOf[partition], counts[partition], gradients, promise),
                mask,
                later,
                queuedBytes(keys.length),
                boundedBytes)) {
            return false;
        }
        // A partition without a key of the push gets no task to give back what was held for it there (a SYNC clock's
        // rows of a worker that left: ClockRows).
        for (int p = 0; p < partitionCount; p++) {
            if (counts[p] == 0) {
                budget.releasePromised(promise.promisedIn(p));
                partitions[p].releaseClaim(promise.claimedIn(p));
            }
        }
        return true;
    }

    /**
     * The heap a queued push of {@code keys} keys holds until its rows are applied, as the writers count it: each key,
     * its slot, its row's gradients and its place in its partition's rows. Each partition gives back its keys' share.
     */
    private long queuedBytes(final int keys) {
        return (long) keys * (Long.BYTES + 2 * Integer.BYTES + (long) Float.BYTES * dim);
    }

    private void applyQueued(
            final int partition,
            final long[] keys,
            final int[] slots,
            final int[] rows,
            final int count,
            final float[] gradients,
            final RowPromise promise) {
        final PartitionStore store = partitions[partition];
        store.promiseRows(promise.promisedIn(partition), promise.createsPastCap());
        store.useClaims(promise.claimedIn(partition));
        try {
            applyRows(partition, keys, slots, rows, count, gradients, touchNow());
        } finally {
            budget.releasePromised(store.takeUnusedPromise());
            store.releaseUnusedClaims();
            writers.applied(queuedBytes(count));
        }
    }

    /** Pushes and waits until the push is applied (tests, benchmarks, in-process callers). */
    public void push(final long[] keys, final float[] gradients) throws InterruptedException {
        final int[] slots = slotsOf(keys);
        while (!offerPush(keys, slots, gradients)) {
            if (writers.isClosing()) {
                throw new IllegalStateException("partition writers are closed; the push was not applied");
            }
            Thread.onSpinWait();
        }
        awaitApplied();
    }

    /**
     * The writer's work for one push in one partition: applies the rows of {@code keys} whose slot is in
     * {@code partition}. Public so that benchmarks can drive a partition from their own threads; anywhere else only
     * the partition's writer may call it.
     */
    public void applyPartition(
            final int partition, final long[] keys, final int[] slots, final float[] gradients, final int touch) {
        final int[] rows;
        final int count;
        if (partitions.length == 1) {
            rows = identity(keys.length);
            count = keys.length;
        } else {
            rows = new int[keys.length];
            int n = 0;
            for (int i = 0; i < keys.length; i++) {
                if (writers.partitionOf(slots[i]) == partition) {
                    rows[n++] = i;
                }
            }
            count = n;
        }
        applyRows(partition, keys, slots, rows, count, gradients, touch);
    }

    /** Applies rows {@code rows[0 .. count)} of a push, all in {@code partition}, on that partition's writer. */
    private void applyRows(
            final int partition,
            final long[] keys,
            final int[] slots,
            final int[] rows,
            final int count,
            final float[] gradients,
            final int touch) {
        int[] applied = rows;
        int n = count;
        final BitSet writable = writableSlots.get();
        if (writable != null) {
            applied = new int[count];
            n = 0;
            for (int i = 0; i < count; i++) {
                if (writable.get(slots[rows[i]])) {
                    applied[n++] = rows[i];
                }
            }
            if (n < count) {
                droppedRows.addAndGet(count - n);
                logUnwritable(count - n);
            }
        }
        final int dropped = partitions[partition].applyBatch(keys, slots, applied, n, gradients, touch);
        if (dropped > 0) {
            droppedRows.addAndGet(dropped);
        }
    }

    /** When {@link #logUnwritable} last logged (ns; 0: never); it logs at most every 10 s per table. */
    private final AtomicLong unwritableLoggedNanos = new AtomicLong();

    /**
     * Says in the log that a push's rows of slots no longer writable here were not applied: the slots moved away, or
     * a restore replaces them (an operator's restore, a failover), which reports the rollback that covers them.
     */
    private void logUnwritable(final int rows) {
        final long now = System.nanoTime();
        final long last = unwritableLoggedNanos.get();
        if ((last == 0 || now - last > java.util.concurrent.TimeUnit.SECONDS.toNanos(10))
                && unwritableLoggedNanos.compareAndSet(last, now)) {
            org.slf4j.LoggerFactory.getLogger(ParameterTable.class)
                    .warn(
                            "table '{}': {} row updates of a push not applied, their slots no longer writable here"
                                    + " (moved away, or being restored from a checkpoint, which reports the rollback);"
                                    + " {} so far (logged at most every 10 s)",
                            name(),
                            rows,
                            droppedRows.get());
        }
    }

    private volatile int[] identityRows = new int[0];

    /** 0, 1, 2, ... at least {@code count} long; shared read-only, grown by replacement. */
    private int[] identity(final int count) {
        int[] rows = identityRows;
        if (rows.length < count) {
            rows = new int[Math.max(count, 2 * rows.length)];
            for (int i = 0; i < rows.length; i++) {
                rows[i] = i;
            }
            identityRows = rows;
        }
        return rows;
    }

    /** The touch stamp for rows written now: whole seconds since the table began, plus one (0 marks free). */
    public int touchNow() {
        return (int) ((System.currentTimeMillis() - startMillis) / 1000) + 1;
    }

    // ---- control: queued behind pushes, the caller waits

    /** Waits until every push queued so far has been applied. */
    public void awaitApplied() throws InterruptedException {
        await(writers.runOnAll(p -> null));
    }

    /** Creates every row of a dense table whose slot is accepted, so that the table holds them all up front. */
    public void materializeDense(final IntPredicate slotFilter) throws InterruptedException {
        if (schema.getKind() != TableKind.DENSE) {
            return;
        }
        await(writers.runOnAll(partition -> {
            final int touch = touchNow();
            for (long key = 0; key < schema.getRows(); key++) {
                final int slot = slotOf(key);
                if (writers.partitionOf(slot) == partition && slotFilter.test(slot)) {
                    partitions[partition].ensure(key, touch);
                }
            }
            return null;
        }));
    }

    /**
     * Replaces (or creates) the records of {@code count} keys: record {@code i} is {@code records[i * rowWidth()
     * ..]} (values, optimizer slots, counter bits). Used by restores.
     */
    public void putRecords(final long[] keys, final float[] records, final int count) throws InterruptedException {
        await(writers.runOnAll(partition -> {
            final int touch = touchNow();
            final float[] record = new float[rowWidth];
            for (int i = 0; i < count; i++) {
                if (writers.partitionOf(slotOf(keys[i])) == partition) {
                    System.arraycopy(records, i * rowWidth, record, 0, rowWidth);
                    partitions[partition].put(keys[i], record, touch);
                }
            }
            return null;
        }));
    }

    /**
     * Sizes the index of each partition that holds no row for its share of about {@code rows} rows of the slots in
     * {@code slots} (spread evenly over partitions), before a restore puts them in: see {@link PartitionStore#reserve}.
     */
    public void reserveRows(final long rows, final BitSet slots) throws InterruptedException {
        await(writers.runOnAll(partition -> {
            final PartitionStore store = partitions[partition];
            final BitSet local = new BitSet();
            for (int slot = slots.nextSetBit(0); slot >= 0; slot = slots.nextSetBit(slot + 1)) {
                if (writers.partitionOf(slot) == partition) {
                    local.set(store.slotIndex(slot));
                }
            }
            store.reserve(rows / partitions.length, local);
            return null;
        }));
    }

    /**
     * A loader of rows as row files store them, for a restore: each partition's rows go to its writer alone, in
     * batches, while the caller reads on (see {@link RowLoader}).
     */
    public RowLoader loader() {
        return new RowLoader(this, partitions, writers);
    }

    /** Copies the rows of every accepted slot that has any, in slot order, after the pushes queued before. */
    public List<SlotSnapshot> snapshot(final IntPredicate slotFilter) throws InterruptedException {
        final List<List<SlotSnapshot>> perPartition = await(writers.runOnAll(partition -> {
            final PartitionStore store = partitions[partition];
            final int[] rowsPerSlot = new int[Slots.SLOT_COUNT];
            store.forEach((id, key, touch) -> {
                final int slot = slotOf(key);
                if (slotFilter.test(slot)) {
                    rowsPerSlot[slot]++;
                }
            });
            final long[][] keys = new long[Slots.SLOT_COUNT][];
            final float[][] records = new float[Slots.SLOT_COUNT][];
            final int[] filled = new int[Slots.SLOT_COUNT];
            store.forEach((id, key, touch) -> {
                final int slot = slotOf(key);
                if (slotFilter.test(slot)) {
                    if (keys[slot] == null) {
                        keys[slot] = new long[rowsPerSlot[slot]];
                        records[slot] = new float[rowsPerSlot[slot] * rowWidth];
                    }
                    final int row = filled[slot]++;
                    keys[slot][row] = key;
                    store.copyRecord(id, records[slot], row * rowWidth, rowWidth);
                }
            });
            final List<SlotSnapshot> slots = new ArrayList<>();
            for (int slot = 0; slot < Slots.SLOT_COUNT; slot++) {
                if (keys[slot] != null) {
                    slots.add(new SlotSnapshot(slot, keys[slot], records[slot], keys[slot].length, rowWidth));
                }
            }
            return slots;
        }));
        final List<SlotSnapshot> merged = new ArrayList<>();
        perPartition.forEach(merged::addAll);
        merged.sort((a, b) -> Integer.compare(a.slot(), b.slot()));
        return merged;
    }

    /** The rows of partition {@code partition} (its writer's thread changes them). */
    PartitionStore partition(final int partition) {
        return partitions[partition];
    }

    /** Removes the rows of the first {@code count} of {@code keys} (those that have one). Used by restores. */
    public void removeKeys(final long[] keys, final int count) throws InterruptedException {
        await(writers.runOnAll(partition -> {
            for (int i = 0; i < count; i++) {
                if (writers.partitionOf(slotOf(keys[i])) == partition) {
                    partitions[partition].remove(keys[i]);
                }
            }
            return null;
        }));
    }

    /** The rows of the accepted slots, counted on the writers after the writes queued before. */
    public long countRows(final IntPredicate slotFilter) throws InterruptedException {
        final List<Long> counts = await(writers.runOnAll(partition -> {
            final long[] count = {0};
            partitions[partition].forEach((id, key, touch) -> {
                if (slotFilter.test(slotOf(key))) {
                    count[0]++;
                }
            });
            return count[0];
        }));
        return counts.stream().mapToLong(Long::longValue).sum();
    }

    /** Drops the rows of every accepted slot, after the pushes queued before. */
    public void clearSlots(final IntPredicate slotFilter) throws InterruptedException {
        await(writers.runOnAll(partition -> {
            final PartitionStore store = partitions[partition];
            // Removing while visiting is safe: a removal frees the record just visited and nothing after it.
            store.forEach((id, key, touch) -> {
                if (slotFilter.test(slotOf(key))) {
                    store.remove(key);
                }
            });
            return null;
        }));
    }

    /**
     * Takes cut {@code cutEpoch} in every partition without copying a row (see {@link PartitionStore#markCut}), after
     * the writes queued before; true if every partition took it (none has a snapshot under way).
     */
    public boolean markCut(final int cutEpoch) throws InterruptedException {
        final List<Boolean> marked = await(writers.runOnAll(partition -> partitions[partition].markCut(cutEpoch)));
        return !marked.contains(Boolean.FALSE);
    }

    /** Records one TTL eviction step looks at, so that a step costs about as much as a small push. */
    static final int EVICTION_STEP_RECORDS = 16_384;

    /**
     * The writer's TTL duty, in bounded steps: removes the rows of {@code partition} untouched for the table's TTL
     * among the next {@link #EVICTION_STEP_RECORDS} records, continuing where the previous step stopped. Returns true
     * when a pass over the whole partition is complete (or the table has no TTL), false if more steps are needed.
     * Allocates nothing.
     */
    boolean evictStep(final int partition) {
        final long ttl = schema.getTtlSeconds();
        if (ttl <= 0) {
            return true;
        }
        final int next =
                partitions[partition].evictStep(evictionCursor[partition], EVICTION_STEP_RECORDS, touchNow() - ttl);
        evictionCursor[partition] = Math.max(0, next);
        return next < 0;
    }

    /** The index shape of every partition, computed on its writer (tests, diagnostics). */
    List<PartitionStore.IndexShape> indexShapes() throws InterruptedException {
        return await(writers.runOnAll(partition -> partitions[partition].indexShape()));
    }

    /** Sets the faults tests inject into every partition of this table (see {@link TableFaults}). */
    void injectFaults(final TableFaults faults) throws InterruptedException {
        await(writers.runOnAll(partition -> {
            partitions[partition].injectFaults(faults);
            return null;
        }));
    }

    // ---- stats

    /** The longest any partition's index took to grow once, in nanoseconds: the stall growth adds to one push. */
    public long longestIndexGrowthNanos() {
        long longest = 0;
        for (final PartitionStore store : partitions) {
            longest = Math.max(longest, store.longestGrowthNanos());
        }
        return longest;
    }

    /** The rows this table's partitions hold now. */
    public long rowCount() {
        long rows = 0;
        for (final PartitionStore store : partitions) {
            rows += store.size();
        }
        return rows;
    }

    /** The rows counted against the table's cap: those it holds and the new rows of pushes queued, not yet applied. */
    public long rowsCounted() {
        return budget.rows();
    }

    public long bytes() {
        long bytes = 0;
        for (final PartitionStore store : partitions) {
            bytes += store.bytes();
        }
        return bytes;
    }

    /** The most rows this shard holds of the table (0: no cap). */
    public long maxRows() {
        return budget.cap();
    }

    /**
     * Row updates acknowledged but not applied: new rows the off-heap memory or the index had no room for, new rows
     * of pushes not admitted against the cap (in-process callers), and rows of slots that moved away or began a
     * restore between the push's validation and its application.
     */
    public long droppedRows() {
        return droppedRows.get();
    }

    static <T> T await(final CompletableFuture<T> future) throws InterruptedException {
        try {
            return future.get();
        } catch (ExecutionException e) {
            if (e.getCause() instanceof RuntimeException runtime) {
                throw runtime;
            }
            throw new IllegalStateException(e.getCause());
        }
    }
}
