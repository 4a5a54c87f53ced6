package io.pscluster.bench;

import io.pscluster.worker.PsTable;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Semaphore;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

/**
 * stream1m: 1 MiB pushes, then separately 1 MiB pulls, with 40 calls in flight (pushAsync / pullAsync under a
 * semaphore of 40). A call carries 4096 keys x dim 64: a push sends 32 KiB of keys and 1 MiB of gradients, a pull
 * sends the 32 KiB of keys and gets 1 MiB of values. The baseline is a raw sink (the push's bytes in, 4 bytes back)
 * and a raw source (the keys in, 1 MiB back), 40 in flight. Throughput counts the push's request bytes and the
 * pull's reply bytes, in MB (10^6 bytes) per second. A push slice is timed twice: until the last call was
 * acknowledged, and (when the shard is in this process) until the shard has applied what it acknowledged, which is
 * the rate it can sustain; either way the backlog is applied before the baseline's slice starts.
 */
final class StreamWorkload implements Workload {
    static final String NAME = "stream1m";
    static final int DIM = 64;
    private static final int IN_FLIGHT = 40;
    private static final int BLOCKS = 16;

    @Override
    public String name() {
        return NAME;
    }

    @Override
    public String describe(final BenchSettings settings) {
        final int keys = settings.streamKeys();
        return String.format(
                Locale.ROOT,
                "%d keys x dim %d per call (push %,d B, pull %,d B back), %d in flight; baseline: raw sink / source"
                        + " of the same bytes",
                keys,
                DIM,
                keys * (Long.BYTES + DIM * Float.BYTES),
                keys * DIM * Float.BYTES,
                IN_FLIGHT);
    }

    @Override
    public List<BenchResult> run(final BenchHarness harness) throws Exception {
        final int keys = harness.settings().streamKeys();
        final PsTable table = harness.createTable(NAME, DIM);
        try {
            final long[][] blocks = KeySets.blocks(100, BLOCKS, keys);
            final float[] gradients = KeySets.gradients(keys * DIM);
            final long pushBytes = (long) keys * (Long.BYTES + DIM * Float.BYTES);
            final long pullBytes = (long) keys * DIM * Float.BYTES;
            final PushPullTarget ours = harness.ours(table);
            final PushPullTarget baseline = harness.baseline(DIM);

            final Pipeline oursPush = new Pipeline(ours, pushBytes, i -> ours.push(blocks[i % BLOCKS], gradients));
            final Pipeline rawPush =
                    new Pipeline(baseline, pushBytes, i -> baseline.push(blocks[i % BLOCKS], gradients));
            final BenchHarness.CpuTime pushCpu = harness.alternate(NAME + " push", oursPush, rawPush);

            final Pipeline oursPull = new Pipeline(ours, pullBytes, i -> ours.pull(blocks[i % BLOCKS]));
            final Pipeline rawPull = new Pipeline(baseline, pullBytes, i -> baseline.pull(blocks[i % BLOCKS]));
            final BenchHarness.CpuTime pullCpu = harness.alternate(NAME + " pull", oursPull, rawPull);

            final List<BenchResult> results = new ArrayList<>();
            results.add(BenchResult.rate(
                    NAME,
                    "push_mb_per_s",
                    oursPush.acknowledged.bytesPerSecond() / 1e6,
                    rawPush.acknowledged.bytesPerSecond() / 1e6,
                    "MB/s"));
            if (harness.seesApplyBacklog()) {
                results.add(BenchResult.rate(
                        NAME,
                        "push_applied_mb_per_s",
                        oursPush.applied.bytesPerSecond() / 1e6,
                        rawPush.applied.bytesPerSecond() / 1e6,
                        "MB/s"));
            }
            results.add(BenchResult.rate(
                    NAME,
                    "pull_mb_per_s",
                    oursPull.acknowledged.bytesPerSecond() / 1e6,
                    rawPull.acknowledged.bytesPerSecond() / 1e6,
                    "MB/s"));
            // A measured push slice lasts until its pushes are applied (see Pipeline), so their apply is in it.
            results.addAll(harness.cpuPerOperation(
                    NAME, "push", pushCpu, oursPush.acknowledged.operations(), rawPush.acknowledged.operations()));
            results.addAll(harness.cpuPerOperation(
                    NAME, "pull", pullCpu, oursPull.acknowledged.operations(), rawPull.acknowledged.operations()));
            return results;
        } finally {
            harness.dropTable(table);
        }
    }

    @FunctionalInterface
    private interface Call {
        CompletableFuture<?> send(int index);
    }

    /** One side, one direction: calls started while the slice lasts, at most {@link #IN_FLIGHT} at once. */
    private static final class Pipeline implements BenchHarness.Phase {
        /** Timed until the last call completed. */
        final Meter acknowledged = new Meter();
        /** Timed until what was pushed was also applied. */
        final Meter applied = new Meter();

        private final PushPullTarget target;
        private final long bytesPerCall;
        private final Call call;
        private int next;

        Pipeline(final PushPullTarget target, final long bytesPerCall, final Call call) {
            this.target = target;
            this.bytesPerCall = bytesPerCall;
            this.call = call;
        }

        @Override
        public void run(final long nanos, final boolean measured) throws Exception {
            final Semaphore permits = new Semaphore(IN_FLIGHT);
            final AtomicLong completed = new AtomicLong();
            final AtomicReference<Throwable> failure = new AtomicReference<>();
            final long start = System.nanoTime();
            final long end = start + nanos;
            while (System.nanoTime() < end && failure.get() == null) {
                permits.acquire();
                call.send(next++).whenComplete((done, error) -> {
                    if (error != null) {
                        failure.compareAndSet(null, error);
                    } else {
                        completed.incrementAndGet();
                    }
                    permits.release();
                });
            }
            permits.acquire(IN_FLIGHT);
            permits.release(IN_FLIGHT);
            final long acknowledgedNanos = System.nanoTime() - start;
            target.awaitApplied();
            final long appliedNanos = System.nanoTime() - start;
            if (failure.get() != null) {
                throw new IllegalStateException(target.side() + " call failed: " + failure.get(), failure.get());
            }
            if (measured) {
                final long calls = completed.get();
                acknowledged.add(Meter.newHistogram(), calls, calls * bytesPerCall, acknowledgedNanos);
                applied.add(Meter.newHistogram(), calls, calls * bytesPerCall, appliedNanos);
            }
        }
    }
}
