package io.pscluster.bench;

import io.pscluster.proto.v1.JobSpec;
import io.pscluster.wire.UpdateModes;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;
import java.util.concurrent.CompletionService;
import java.util.concurrent.ExecutorCompletionService;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;
import org.HdrHistogram.Histogram;

/**
 * modes: what the synchronous modes cost on one job shape, against the same job in async measured in the same run. A
 * job of {@value #WORKERS} workers (threads, each with its own {@link PsClient}, as separate processes would be) on one
 * sparse table of dim {@value #DIM}: each step pulls {@value #KEYS_PER_STEP} random keys (out of {@value #KEY_SPACE}),
 * computes, pushes a gradient for them and ends its clock. The computing is simulated by sleeping: 10 ms per step, 12
 * ms for the one slow worker (20% slower). A sleep rather than a busy loop, so that four workers computing do not take
 * the two cores from the shard and the SDK: the bench measures waiting for each other, not a contest for the CPU.
 *
 * <p>Three jobs (async, sync, ssp:2), each with its own table and job id, are joined up front and run in turns: half of
 * {@code --modes-steps} each in the order async, sync, ssp:2, then the other half in the reverse order (ABBA), after a
 * fifth as many warm-up steps each. Reports per mode:
 *
 * <ul>
 *   <li>steps/s: the job's worker steps per second, the sum over its workers of steps / that worker's measured time
 *       (async lets the fast workers run at their own pace; sync holds every worker to the slowest);
 *   <li>the barrier wait: the time of the pull that starts each step (in sync and ssp:2 it waits on the shard until
 *       the clock may be read; in async it is the plain pull), p50 and p99 over every worker's measured steps.
 * </ul>
 *
 * <p>Each is reported for sync and ssp:2 with async as the baseline, so the ratios are sync/async and ssp2/async (for
 * steps/s; for the waits, async's time over the mode's).
 */
final class ModesWorkload implements Workload {
    static final String NAME = "modes";
    static final int WORKERS = 4;
    static final int DIM = 16;
    static final int KEYS_PER_STEP = 2_000;
    static final int KEY_SPACE = 100_000;
    static final long COMPUTE_NANOS = TimeUnit.MILLISECONDS.toNanos(10);
    static final long SLOW_COMPUTE_NANOS = TimeUnit.MILLISECONDS.toNanos(12);
    /** The slow worker, by rank (its place among the job's worker ids). */
    static final int SLOW_RANK = WORKERS - 1;

    private static final List<String> MODES = List.of("async", "sync", "ssp:2");

    @Override
    public String name() {
        return NAME;
    }

    @Override
    public String describe(final BenchSettings settings) {
        return String.format(
                Locale.ROOT,
                "a job of %d workers (threads, a client each), sparse table dim %d: pull %,d random keys, simulated"
                        + " compute (sleep 10 ms, one worker 12 ms), push, clock; %d steps in each of sync and ssp:2;"
                        + " baseline: the same job in async",
                WORKERS,
                DIM,
                KEYS_PER_STEP,
                settings.modesSteps());
    }

    @Override
    public List<BenchResult> run(final BenchHarness harness) throws Exception {
        final int steps = harness.settings().modesSteps();
        final int warmup = Math.max(1, steps / 5);
        final ExecutorService threads =
                Executors.newFixedThreadPool(WORKERS * MODES.size(), BenchHarness.daemonThreads(NAME));
        final List<Job> jobs = new ArrayList<>();
        try {
            // A suffix of the time: against a running cluster, a second run must not join the first run's jobs.
            final String run = Long.toString(System.currentTimeMillis(), 36);
            for (final String mode : MODES) {
                jobs.add(Job.open(harness, mode, run, threads));
            }
            harness.progress("%s: warm-up, %d steps per mode", NAME, warmup);
            for (final Job job : jobs) {
                job.run(warmup, false, threads);
            }
            final int firstHalf = steps / 2;
            harness.progress("%s: measuring %d steps per mode, in two halves (ABBA)", NAME, steps);
            for (final Job job : jobs) {
                job.run(firstHalf, true, threads);
            }
            for (int i = jobs.size() - 1; i >= 0; i--) {
                jobs.get(i).run(steps - firstHalf, true, threads);
            }
            final Job async = jobs.get(0);
            final List<BenchResult> results = new ArrayList<>();
            for (final Job job : jobs.subList(1, jobs.size())) {
                final String mode = job.label();
                results.add(BenchResult.rate(
                        NAME,
                        mode + "_steps_per_s",
                        job.stepsPerSecond(),
                        async.stepsPerSecond(),
                        "worker steps/s (baseline: async)"));
                results.add(BenchResult.time(
                        NAME,
                        mode + "_barrier_p50_us",
                        job.pullMicros(50),
                        async.pullMicros(50),
                        "us, pull at a step's start (baseline: async)"));
                results.add(BenchResult.time(
                        NAME,
                        mode + "_barrier_p99_us",
                        job.pullMicros(99),
                        async.pullMicros(99),
                        "us, pull at a step's start (baseline: async)"));
            }
            return results;
        } finally {
            jobs.forEach(Job::close);
            threads.shutdownNow();
        }
    }

    /** Sleeps (a simulated compute) for {@code nanos}, however often the park returns early. */
    private static void compute(final long nanos) {
        final long end = System.nanoTime() + nanos;
        for (long left = nanos; left > 0; left = end - System.nanoTime()) {
            LockSupport.parkNanos(left);
        }
    }

    /** One mode's job: its table, its workers' clients and what they measured. */
    private static final class Job implements AutoCloseable {
        private final BenchHarness harness;
        private final String mode;
        private final PsTable created;
        private final List<PsClient> clients;
        private final List<PsTable> tables = new ArrayList<>();
        private final SplittableRandom[] keys = new SplittableRandom[WORKERS];
        private final long[] measuredSteps = new long[WORKERS];
        private final long[] measuredNanos = new long[WORKERS];
        private final Histogram pullNanos = Meter.newHistogram();

        private Job(
                final BenchHarness harness, final String mode, final PsTable created, final List<PsClient> clients) {
            this.harness = harness;
            this.mode = mode;
            this.created = created;
            this.clients = clients;
            for (int rank = 0; rank < WORKERS; rank++) {
                tables.add(clients.get(rank).table(created.name()));
                keys[rank] = new SplittableRandom(rank * 7919L + 1);
            }
        }

        /** Creates the mode's table and joins its job with {@link #WORKERS} clients, in the order of worker ids. */
        static Job open(final BenchHarness harness, final String mode, final String run, final ExecutorService threads)
                throws Exception {
            final String label = label(mode);
            final PsTable table = harness.createTable(NAME + "-" + label, DIM);
            final JobSpec spec = UpdateModes.parse(
                            mode,
                            JobSpec.newBuilder()
                                    .setJobId("psbench-" + NAME + "-" + label + "-" + run)
                                    .setExpectedWorkers(WORKERS))
                    .build();
            // Each connect waits until all have joined: they join at once, from their own threads.
            final CompletionService<PsClient> joining = new ExecutorCompletionService<>(threads);
            final List<PsClient> clients = new ArrayList<>();
            final List<Future<PsClient>> calls = new ArrayList<>();
            try {
                for (int w = 0; w < WORKERS; w++) {
                    calls.add(joining.submit(() -> PsClient.connect(new PsClient.Context()
                            .proxyAddress(harness.proxyAddress())
                            .deadlineMs(harness.settings().deadlineMs())
                            .job(spec))));
                }
                for (int w = 0; w < WORKERS; w++) {
                    clients.add(joining.take().get());
                }
            } catch (Exception e) {
                calls.forEach(call -> call.cancel(true));
                clients.forEach(PsClient::close);
                harness.dropTable(table);
                throw e;
            }
            clients.sort(Comparator.comparingInt(PsClient::workerId));
            return new Job(harness, mode, table, clients);
        }

        /** The mode in a metric's name: sync, ssp2. */
        static String label(final String mode) {
            return mode.replace(":", "");
        }

        String label() {
            return label(mode);
        }

        /** Every worker takes {@code steps} steps; returns when all have. */
        void run(final int steps, final boolean measured, final ExecutorService threads) throws Exception {
            final List<Future<Histogram>> running = new ArrayList<>();
            for (int rank = 0; rank < WORKERS; rank++) {
                final int worker = rank;
                running.add(threads.submit(() -> steps(worker, steps, measured)));
            }
            for (final Future<Histogram> worker : running) {
                final Histogram pulls = worker.get();
                if (measured) {
                    pullNanos.add(pulls);
                }
            }
        }

        private Histogram steps(final int rank, final int steps, final boolean measured) {
            final Histogram pulls = Meter.newHistogram();
            final PsClient client = clients.get(rank);
            final PsTable table = tables.get(rank);
            final float[] gradients = KeySets.gradients(KEYS_PER_STEP * DIM);
            final long[] stepKeys = new long[KEYS_PER_STEP];
            final long start = System.nanoTime();
            for (int step = 0; step < steps; step++) {
                for (int i = 0; i < stepKeys.length; i++) {
                    stepKeys[i] = keys[rank].nextLong(KEY_SPACE);
                }
                final long pullStart = System.nanoTime();
                final float[] values = table.pull(stepKeys);
                pulls.recordValue(System.nanoTime() - pullStart);
                if (values.length != stepKeys.length * DIM) {
                    throw new IllegalStateException(
                            mode + " pulled " + values.length + " values for " + stepKeys.length + " keys");
                }
                compute(rank == SLOW_RANK ? SLOW_COMPUTE_NANOS : COMPUTE_NANOS);
                table.push(stepKeys, gradients);
                client.clock();
            }
            if (measured) {
                // Each worker's own fields: written by its thread, read after its future completed.
                measuredSteps[rank] += steps;
                measuredNanos[rank] += System.nanoTime() - start;
            }
            return pulls;
        }

        double stepsPerSecond() {
            double sum = 0;
            for (int rank = 0; rank < WORKERS; rank++) {
                sum += measuredNanos[rank] == 0 ? 0 : measuredSteps[rank] * 1e9 / measuredNanos[rank];
            }
            return sum;
        }

        double pullMicros(final double percentile) {
            return pullNanos.getValueAtPercentile(percentile) / 1_000.0;
        }

        @Override
        public void close() {
            clients.forEach(PsClient::close);
            try {
                harness.dropTable(created);
            } catch (RuntimeException e) {
                harness.progress("%s: could not drop table %s: %s", NAME, created.name(), e.getMessage());
            }
        }
    }
}
