package io.pscluster.bench;

import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.server.table.ParameterTable;
import io.pscluster.wire.Slots;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

/**
 * scale: how the table's cost per key grows with the table, measured on the table alone in this JVM (no gRPC): one
 * writer partition, sparse SGD, dim 1, at 1M, 10M and 50M rows (capped by {@code --scale-max-rows}). For each size:
 *
 * <ol>
 *   <li>fill: every row is created by inserting random 64-bit keys in batches of {@value #BATCH} through {@link
 *       ParameterTable#applyPartition}, called from this thread as the partition's writer would ({@link
 *       TableFixture}); reports ns per key and the longest single batch, which is the stall a push meets when the
 *       index grows. Baseline: the same keys and batches inserted into a {@link PlainRowIndex}, a single doubling index
 *       algorithm alone on the heap, growing from empty the same way.
 *   <li>update: SGD on batches of {@value #BATCH} random existing rows, in an order unrelated to the insertion order.
 *       Baseline: the same updates, by row index, to a {@code float[]} of as many rows ({@link ApplyBenchmark}'s loop).
 *   <li>pull: the same batches read with {@link ParameterTable#pull(long[], int[], byte[])}. Baseline: gathering the
 *       same rows out of the {@code float[]} ({@link GatherBenchmark}'s loop).
 *   <li>update and pull in slot order: the same rows, the whole pool ordered by slot first (keys of a slot in their
 *       drawn order), as the SDK orders a call of {@value #POOL_ROWS} keys before it sends it in requests; then cut
 *       into batches of {@value #BATCH} the same way. The rows are still random; the index keeps each slot's keys
 *       together, so each batch meets a few slots' part of it. Baselines as above, on the same rows in the same order.
 * </ol>
 *
 * <p>Only the calls are timed: batches are copied or drawn beforehand, updates and pulls from a pool of up to
 * {@value #POOL_ROWS} random rows. Updates and pulls each take a quarter of the warm-up and measuring times per side,
 * in alternating slices. One throwaway fill of each side before the first size compiles the insert paths, so that the
 * first size's longest batch is not the interpreter's.
 *
 * <p>Memory at 50M rows: the table holds 24-byte records off-heap (1.2 GB) and about 6-10 bytes of index per row
 * on the heap, in segments of at most 128 KiB; the baseline's single index is 512 MiB (768 MiB while it doubles), plus
 * 12 bytes per row of keys and values on the heap; the fill's keys take 400 MB. So the baseline is filled and dropped
 * before the table is built, and each table is closed and collected before the next size.
 */
final class ScaleWorkload implements Workload {
    static final String NAME = "scale";
    static final int LARGEST_ROWS = 50_000_000;
    static final int BATCH = 4096;
    private static final int[] SIZES = {1_000_000, 10_000_000, LARGEST_ROWS};
    private static final int POOL_ROWS = 1 << 21;
    private static final int WARMUP_ROWS = 1_000_000;
    /** {@link KeySets} blocks of the keys filled and of the throwaway warm-up fill. */
    private static final int KEY_BLOCK = 16;

    private static final int WARMUP_KEY_BLOCK = 17;

    @Override
    public String name() {
        return NAME;
    }

    @Override
    public String describe(final BenchSettings settings) {
        final StringBuilder sizes = new StringBuilder();
        for (final int rows : sizes(settings.scaleMaxRows())) {
            sizes.append(sizes.length() == 0 ? "" : ", ").append(label(rows));
        }
        return "in-process, 1 partition, SGD dim 1, " + sizes + " rows: fill with random keys in batches of " + BATCH
                + " (ns/key, longest batch), then updates and pulls of random rows in batches of " + BATCH
                + "; baselines: the index algorithm alone on the heap for the fill, float[] by row index";
    }

    /** 1M, 10M and 50M, each capped at {@code maxRows}, without repeats: a cap of 5M gives 1M and 5M. */
    static List<Integer> sizes(final int maxRows) {
        final List<Integer> sizes = new ArrayList<>();
        for (final int size : SIZES) {
            final int capped = Math.min(size, maxRows);
            if (!sizes.contains(capped)) {
                sizes.add(capped);
            }
        }
        return sizes;
    }

    /** 50000000 as "50M", 20000 as "20K": the size in a metric's name. */
    static String label(final int rows) {
        if (rows % 1_000_000 == 0) {
            return rows / 1_000_000 + "M";
        }
        if (rows % 1_000 == 0) {
            return rows / 1_000 + "K";
        }
        return Integer.toString(rows);
    }

    @Override
    public List<BenchResult> run(final BenchHarness harness) throws Exception {
        final List<Integer> sizes = sizes(harness.settings().scaleMaxRows());
        final long[] warmKeys = KeySets.block(WARMUP_KEY_BLOCK, Math.min(WARMUP_ROWS, sizes.get(0)));
        harness.progress("%s: warm-up fill of %,d rows per side", NAME, warmKeys.length);
        fillPlain(warmKeys);
        try (TableFixture fixture = TableFixture.empty(1, OptimizerKind.SGD)) {
            fillTable(fixture.table, warmKeys);
        }
        final List<BenchResult> results = new ArrayList<>();
        for (final int rows : sizes) {
            results.addAll(measure(harness, rows));
        }
        return results;
    }

    private static List<BenchResult> measure(final BenchHarness harness, final int rows) throws Exception {
        final String size = label(rows);
        long[] keys = KeySets.block(KEY_BLOCK, rows);
        harness.progress("%s %s: baseline fill (plain index)", NAME, size);
        // Frees the previous size's table (its records are direct buffers, freed when collected).
        quiet();
        final Fill plainFill = fillPlain(keys);
        quiet();
        harness.progress("%s %s: table fill", NAME, size);
        try (TableFixture fixture = TableFixture.empty(1, OptimizerKind.SGD)) {
            final ParameterTable table = fixture.table;
            final Fill tableFill = fillTable(table, keys);
            if (table.rowCount() != rows) {
                throw new IllegalStateException("filled " + table.rowCount() + " rows of " + rows + " keys");
            }
            final Pool pool = new Pool(table, keys);
            keys = null; // 400 MB at 50M rows, no longer needed: let the collector have it.
            final float[] plain = new float[rows];
            final float[] gradients = KeySets.gradients(BATCH);
            final int touch = table.touchNow();
            final BatchSide updateOurs = new BatchSide(
                    pool, batch -> table.applyPartition(0, pool.keys[batch], pool.slots[batch], gradients, touch));
            final BatchSide updateBaseline =
                    new BatchSide(pool, batch -> ApplyBenchmark.plainSgd(plain, pool.rows[batch], gradients, 1, BATCH));
            harness.alternate(NAME + " " + size + " update", 4, updateOurs, updateBaseline);

            final byte[] pulled = new byte[BATCH * Float.BYTES];
            final float[] gathered = new float[BATCH];
            final BatchSide pullOurs =
                    new BatchSide(pool, batch -> table.pull(pool.keys[batch], pool.slots[batch], pulled));
            final BatchSide pullBaseline = new BatchSide(
                    pool, batch -> GatherBenchmark.plainGather(plain, pool.rows[batch], 1, gathered, BATCH));
            harness.alternate(NAME + " " + size + " pull", 4, pullOurs, pullBaseline);

            final Pool bySlot = pool.bySlot();
            final BatchSide updateBySlot = new BatchSide(
                    bySlot,
                    batch -> table.applyPartition(0, bySlot.keys[batch], bySlot.slots[batch], gradients, touch));
            final BatchSide updateBySlotBaseline = new BatchSide(
                    bySlot, batch -> ApplyBenchmark.plainSgd(plain, bySlot.rows[batch], gradients, 1, BATCH));
            harness.alternate(NAME + " " + size + " update in slot order", 4, updateBySlot, updateBySlotBaseline);
            final BatchSide pullBySlot =
                    new BatchSide(bySlot, batch -> table.pull(bySlot.keys[batch], bySlot.slots[batch], pulled));
            final BatchSide pullBySlotBaseline = new BatchSide(
                    bySlot, batch -> GatherBenchmark.plainGather(plain, bySlot.rows[batch], 1, gathered, BATCH));
            harness.alternate(NAME + " " + size + " pull in slot order", 4, pullBySlot, pullBySlotBaseline);

            return List.of(
                    BenchResult.time(
                            NAME,
                            "insert_ns_per_key " + size,
                            tableFill.nanosPerKey(rows),
                            plainFill.nanosPerKey(rows),
                            "ns/key"),
                    BenchResult.time(
                            NAME,
                            "insert_max_batch_ms " + size + " (" + BATCH + "-key batches)",
                            tableFill.longestBatchNanos() / 1e6,
                            plainFill.longestBatchNanos() / 1e6,
                            "ms"),
                    BenchResult.time(
                            NAME,
                            "index_growth_max_ms " + size + " (one segment; baseline: the plain index's longest batch)",
                            table.longestIndexGrowthNanos() / 1e6,
                            plainFill.longestBatchNanos() / 1e6,
                            "ms"),
                    BenchResult.time(
                            NAME,
                            "update_ns_per_key " + size,
                            updateOurs.nanosPerKey(),
                            updateBaseline.nanosPerKey(),
                            "ns/key"),
                    BenchResult.time(
                            NAME,
                            "pull_ns_per_key " + size,
                            pullOurs.nanosPerKey(),
                            pullBaseline.nanosPerKey(),
                            "ns/key"),
                    BenchResult.time(
                            NAME,
                            "update_ns_per_key " + size + " in slot order",
                            updateBySlot.nanosPerKey(),
                            updateBySlotBaseline.nanosPerKey(),
                            "ns/key"),
                    BenchResult.time(
                            NAME,
                            "pull_ns_per_key " + size + " in slot order",
                            pullBySlot.nanosPerKey(),
                            pullBySlotBaseline.nanosPerKey(),
                            "ns/key"));
        }
    }

    /** What a fill took: all its batches, and the longest one. */
    private record Fill(long nanos, long longestBatchNanos) {
        double nanosPerKey(final int keys) {
            return (double) nanos / keys;
        }
    }

    /** Creates a row for every key, {@value #BATCH} keys per call, each call timed on its own. */
    private static Fill fillTable(final ParameterTable table, final long[] keys) {
        final float[] gradients = KeySets.gradients(BATCH);
        final int touch = table.touchNow();
        long[] batchKeys = new long[BATCH];
        int[] batchSlots = new int[BATCH];
        long nanos = 0;
        long longest = 0;
        for (int from = 0; from < keys.length; from += BATCH) {
            final int count = Math.min(BATCH, keys.length - from);
            if (count != batchKeys.length) {
                // applyPartition takes whole arrays: the last batch may be shorter.
                batchKeys = new long[count];
                batchSlots = new int[count];
            }
            System.arraycopy(keys, from, batchKeys, 0, count);
            for (int i = 0; i < count; i++) {
                batchSlots[i] = table.slotOf(batchKeys[i]);
            }
            final long start = System.nanoTime();
            table.applyPartition(0, batchKeys, batchSlots, gradients, touch);
            final long took = System.nanoTime() - start;
            nanos += took;
            longest = Math.max(longest, took);
        }
        return new Fill(nanos, longest);
    }

    /** The baseline's fill: the same keys in the same batches, each batch timed on its own. */
    private static Fill fillPlain(final long[] keys) {
        final PlainRowIndex index = new PlainRowIndex(keys.length);
        final float[] gradients = KeySets.gradients(BATCH);
        long nanos = 0;
        long longest = 0;
        for (int from = 0; from < keys.length; from += BATCH) {
            final int to = Math.min(keys.length, from + BATCH);
            final long start = System.nanoTime();
            for (int i = from; i < to; i++) {
                index.insert(keys[i], gradients[i - from]);
            }
            final long took = System.nanoTime() - start;
            nanos += took;
            longest = Math.max(longest, took);
        }
        if (index.rows() != keys.length) {
            throw new IllegalStateException("the baseline holds " + index.rows() + " rows of " + keys.length + " keys");
        }
        return new Fill(nanos, longest);
    }

    /**
     * Batches of random existing rows, drawn once per size and used by both sides: our keys and their slots, and the
     * baseline's row indices (row {@code r} is key {@code r} of the fill).
     */
    private static final class Pool {
        final long[][] keys;
        final int[][] slots;
        final int[][] rows;

        Pool(final ParameterTable table, final long[] filled) {
            final int batches = Math.max(1, Math.min(filled.length, POOL_ROWS) / BATCH);
            keys = new long[batches][BATCH];
            slots = new int[batches][BATCH];
            rows = new int[batches][BATCH];
            final SplittableRandom random = new SplittableRandom(filled.length);
            for (int b = 0; b < batches; b++) {
                for (int i = 0; i < BATCH; i++) {
                    final int row = random.nextInt(filled.length);
                    rows[b][i] = row;
                    keys[b][i] = filled[row];
                    slots[b][i] = table.slotOf(filled[row]);
                }
            }
        }

        private Pool(final long[][] keys, final int[][] slots, final int[][] rows) {
            this.keys = keys;
            this.slots = slots;
            this.rows = rows;
        }

        int batches() {
            return keys.length;
        }

        /** The same draws, all of them ordered by slot (a stable counting sort), cut into batches as before. */
        Pool bySlot() {
            final int[] start = new int[Slots.SLOT_COUNT + 1];
            for (final int[] batch : slots) {
                for (final int slot : batch) {
                    start[slot + 1]++;
                }
            }
            for (int slot = 0; slot < Slots.SLOT_COUNT; slot++) {
                start[slot + 1] += start[slot];
            }
            final long[][] orderedKeys = new long[keys.length][BATCH];
            final int[][] orderedSlots = new int[keys.length][BATCH];
            final int[][] orderedRows = new int[keys.length][BATCH];
            for (int b = 0; b < keys.length; b++) {
                for (int i = 0; i < BATCH; i++) {
                    final int at = start[slots[b][i]]++;
                    orderedKeys[at / BATCH][at % BATCH] = keys[b][i];
                    orderedSlots[at / BATCH][at % BATCH] = slots[b][i];
                    orderedRows[at / BATCH][at % BATCH] = rows[b][i];
                }
            }
            return new Pool(orderedKeys, orderedSlots, orderedRows);
        }
    }

    /** One batch of the pool, by its number. */
    @FunctionalInterface
    private interface BatchCall {
        void run(int batch);
    }

    /** One side of updates or pulls: runs the pool's batches in turn, timing each call, adding up measured ones. */
    private static final class BatchSide implements BenchHarness.Phase {
        private final Pool pool;
        private final BatchCall call;
        private int next;
        private long nanos;
        private long keys;

        BatchSide(final Pool pool, final BatchCall call) {
            this.pool = pool;
            this.call = call;
        }

        @Override
        public void run(final long duration, final boolean measured) {
            final long end = System.nanoTime() + duration;
            long took = 0;
            long count = 0;
            do {
                final int batch = next;
                next = (next + 1) % pool.batches();
                final long start = System.nanoTime();
                call.run(batch);
                took += System.nanoTime() - start;
                count += BATCH;
            } while (System.nanoTime() < end);
            if (measured) {
                nanos += took;
                keys += count;
            }
        }

        double nanosPerKey() {
            return keys == 0 ? Double.NaN : (double) nanos / keys;
        }
    }

    /** Collects the previous step's garbage (and a closed table's off-heap records) before the next is timed. */
    private static void quiet() {
        System.gc();
    }
}
