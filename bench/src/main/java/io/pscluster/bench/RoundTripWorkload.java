package io.pscluster.bench;

import io.pscluster.worker.PsTable;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.HdrHistogram.Histogram;

/**
 * A training step's round trip, one at a time per thread: push a gradient row per key, wait for the acknowledgement,
 * then pull the same keys. The baseline makes the same two calls with the same bytes over raw gRPC (the push's keys
 * and gradients in, 4 bytes back; the keys in, their values back), so both sides pay two round trips per step.
 *
 * <ul>
 *   <li>rtt4k: 1 thread, 256 keys x dim 2: the push request carries 2 KiB of keys + 2 KiB of gradients = 4 KiB, the
 *       pull sends 2 KiB of keys and gets 2 KiB of values. Reports the latency of a round trip and round trips/s.
 *   <li>batch: 4 threads, 1000 keys x dim 64 (8 KB of keys, 256 KB of gradients; 256 KB of values back). Reports
 *       values/s (pushed + pulled) and the latency of a batch.
 * </ul>
 *
 * <p>Each thread cycles over 16 key blocks of its own. At the end of each of our slices the shard's apply backlog is
 * waited for, inside the measured time.
 */
final class RoundTripWorkload implements Workload {
    private static final int BLOCKS_PER_THREAD = 16;

    private final String name;
    private final int keys;
    private final int dim;
    private final int threads;

    private RoundTripWorkload(final String name, final int keys, final int dim, final int threads) {
        this.name = name;
        this.keys = keys;
        this.dim = dim;
        this.threads = threads;
    }

    static RoundTripWorkload rtt4k() {
        return new RoundTripWorkload("rtt4k", 256, 2, 1);
    }

    static RoundTripWorkload batch() {
        return new RoundTripWorkload("batch", 1000, 64, 4);
    }

    @Override
    public String name() {
        return name;
    }

    @Override
    public String describe(final BenchSettings settings) {
        return String.format(
                Locale.ROOT,
                "%s, each: push %d keys x dim %d (%,d B request), then pull them (%,d B back), one at a time;"
                        + " baseline: the same two calls' bytes over raw gRPC",
                threads == 1 ? "1 thread" : threads + " threads",
                keys,
                dim,
                keys * (Long.BYTES + dim * Float.BYTES),
                keys * dim * Float.BYTES);
    }

    @Override
    public List<BenchResult> run(final BenchHarness harness) throws Exception {
        final PsTable table = harness.createTable(name, dim);
        final ExecutorService workers = Executors.newFixedThreadPool(threads, BenchHarness.daemonThreads(name));
        try {
            final long[][][] keyBlocks = new long[threads][][];
            for (int thread = 0; thread < threads; thread++) {
                keyBlocks[thread] = KeySets.blocks(thread * BLOCKS_PER_THREAD, BLOCKS_PER_THREAD, keys);
            }
            final float[] gradients = KeySets.gradients(keys * dim);
            final Loop ours = new Loop(harness.ours(table), workers, keyBlocks, gradients);
            final Loop baseline = new Loop(harness.baseline(dim), workers, keyBlocks, gradients);
            final BenchHarness.CpuTime cpu = harness.alternate(name, ours, baseline);

            final List<BenchResult> results = new ArrayList<>();
            if (threads > 1) {
                final double valuesPerStep = 2.0 * keys * dim;
                results.add(BenchResult.rate(
                        name,
                        "values_per_s",
                        ours.meter.operationsPerSecond() * valuesPerStep,
                        baseline.meter.operationsPerSecond() * valuesPerStep,
                        "values/s (pushed+pulled)"));
            } else {
                results.add(BenchResult.rate(
                        name,
                        "roundtrips_per_s",
                        ours.meter.operationsPerSecond(),
                        baseline.meter.operationsPerSecond(),
                        "push+pull/s"));
            }
            results.add(BenchResult.time(
                    name, "p50_us", ours.meter.percentileMicros(50), baseline.meter.percentileMicros(50), "us"));
            results.add(BenchResult.time(
                    name, "p99_us", ours.meter.percentileMicros(99), baseline.meter.percentileMicros(99), "us"));
            results.addAll(
                    harness.cpuPerOperation(name, "step", cpu, ours.meter.operations(), baseline.meter.operations()));
            return results;
        } finally {
            workers.shutdownNow();
            harness.dropTable(table);
        }
    }

    /** One side: {@code threads} workers each doing push-then-pull steps until the slice ends. */
    private final class Loop implements BenchHarness.Phase {
        final Meter meter = new Meter();
        private final PushPullTarget target;
        private final ExecutorService workers;
        private final long[][][] keyBlocks;
        private final float[] gradients;

        Loop(
                final PushPullTarget target,
                final ExecutorService workers,
                final long[][][] keyBlocks,
                final float[] gradients) {
            this.target = target;
            this.workers = workers;
            this.keyBlocks = keyBlocks;
            this.gradients = gradients;
        }

        @Override
        public void run(final long nanos, final boolean measured) throws Exception {
            final long start = System.nanoTime();
            final long end = start + nanos;
            final List<Future<Histogram>> running = new ArrayList<>();
            for (int thread = 0; thread < threads; thread++) {
                final long[][] blocks = keyBlocks[thread];
                running.add(workers.submit(() -> steps(blocks, end)));
            }
            final Histogram latencies = Meter.newHistogram();
            for (final Future<Histogram> worker : running) {
                latencies.add(worker.get());
            }
            target.awaitApplied();
            if (measured) {
                meter.add(latencies, latencies.getTotalCount(), 0, System.nanoTime() - start);
            }
        }

        private Histogram steps(final long[][] blocks, final long end) {
            final Histogram latencies = Meter.newHistogram();
            for (int step = 0; System.nanoTime() < end; step++) {
                final long[] stepKeys = blocks[step % blocks.length];
                final long start = System.nanoTime();
                target.push(stepKeys, gradients).join();
                final float[] values = target.pull(stepKeys).join();
                latencies.recordValue(System.nanoTime() - start);
                if (values.length != stepKeys.length * dim) {
                    throw new IllegalStateException(target.side() + " pulled " + values.length + " values for "
                            + stepKeys.length + " keys of dim " + dim);
                }
            }
            return latencies;
        }
    }
}
