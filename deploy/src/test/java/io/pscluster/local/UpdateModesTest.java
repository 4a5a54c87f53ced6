package io.pscluster.local;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.pscluster.proto.v1.InitializerKind;
import io.pscluster.proto.v1.InitializerSpec;
import io.pscluster.proto.v1.JobSpec;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.proto.v1.UpdateMode;
import io.pscluster.server.FaultPoints;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLongArray;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;

/**
 * The update modes end to end, on a real proxy and two shards over loopback, with workers as threads each holding its
 * own {@link PsClient} (as separate processes would): SYNC workers see bit-identical parameters at every clock and
 * end where a single-process reference does; SSP lets a fast worker run ahead by at most the staleness, and does let
 * it; ASYNC acknowledges before applying and flush() waits for the apply; a pull whose clock never comes ends in
 * DEADLINE_EXCEEDED without a thread parked on the shard.
 */
@ExtendWith(FaultsAllowed.class)
class UpdateModesTest {
    private static final int WORKERS = 4;
    private static final int KEYS = 64;
    private static final int DIM = 2;
    private static final float LEARNING_RATE = 0.25f;

    @TempDir
    static Path checkpoints;

    private static LocalCluster cluster;

    @BeforeAll
    static void startCluster() throws Exception {
        cluster = LocalCluster.builder()
                .shards(2)
                .checkpointRoot(checkpoints.toUri().toString())
                .start();
    }

    @AfterAll
    static void stopCluster() throws InterruptedException {
        cluster.close();
    }

    private static TableSchema schema(final String name) {
        return TableSchema.newBuilder()
                .setName(name)
                .setKind(TableKind.SPARSE)
                .setDim(DIM)
                .setOptimizer(
                        OptimizerSpec.newBuilder().setKind(OptimizerKind.SGD).setLearningRate(LEARNING_RATE))
                .setInitializer(InitializerSpec.newBuilder()
                        .setKind(InitializerKind.UNIFORM)
                        .setScale(1f)
                        .setSeed(3))
                .build();
    }

    private static PsClient worker(final String job, final UpdateMode mode, final int staleness) {
        return PsClient.connect(new PsClient.Context()
                .proxyAddress(cluster.proxyAddress())
                .deadlineMs(30_000)
                .job(JobSpec.newBuilder()
                        .setJobId(job)
                        .setMode(mode)
                        .setStaleness(staleness)
                        .setExpectedWorkers(WORKERS)
                        .build()));
    }

    /** The one worker of a job. */
    private static PsClient solo(final String job, final UpdateMode mode, final int staleness) {
        return PsClient.connect(new PsClient.Context()
                .proxyAddress(cluster.proxyAddress())
                .job(JobSpec.newBuilder()
                        .setJobId(job)
                        .setMode(mode)
                        .setStaleness(staleness)
                        .setExpectedWorkers(1)
                        .build()));
    }

    private static float[] minusOnes(final int count) {
        final float[] values = new float[count];
        Arrays.fill(values, -1f);
        return values;
    }

    private static long[] allKeys() {
        final long[] keys = new long[KEYS];
        for (int i = 0; i < KEYS; i++) {
            keys[i] = 1_000L * i + 17;
        }
        return keys;
    }

    /** Worker {@code worker}'s gradient at {@code clock}: seeded, over a subset of keys, values that round. */
    private static float[] gradient(final long seed, final int worker, final long clock) {
        final SplittableRandom random = new SplittableRandom(seed * 1_000_003L + worker * 7919L + clock);
        final float[] gradient = new float[KEYS * DIM];
        for (int i = 0; i < gradient.length; i++) {
            gradient[i] = random.nextInt(3) == 0 ? 0f : (float) (random.nextDouble() * 2 - 1) / 3f;
        }
        return gradient;
    }

    /** Runs a SYNC job of {@link #WORKERS} workers for {@code clocks} clocks; returns what each pulled at each clock. */
    private static float[][][] runSync(final String job, final String table, final long seed, final int clocks)
            throws Exception {
        final float[][][] pulled = new float[WORKERS][clocks + 1][];
        final ExecutorService threads = Executors.newFixedThreadPool(WORKERS);
        try {
            final List<Future<?>> done = new ArrayList<>();
            for (int w = 0; w < WORKERS; w++) {
                done.add(threads.submit(() -> {
                    try (PsClient client = worker(job, UpdateMode.SYNC, 0)) {
                        final int id = client.workerId();
                        final PsTable weights = client.createTable(schema(table));
                        for (int c = 0; c < clocks; c++) {
                            assertThat(client.currentClock()).isEqualTo(c);
                            pulled[id][c] = weights.pull(allKeys());
                            weights.push(allKeys(), gradient(seed, id, c));
                            client.clock();
                        }
                        pulled[id][clocks] = weights.pull(allKeys());
                    }
                    return null;
                }));
            }
            for (final Future<?> future : done) {
                future.get(120, TimeUnit.SECONDS);
            }
        } finally {
            threads.shutdownNow();
        }
        return pulled;
    }

    /**
     * A SYNC clock's gradients held for a table that is dropped and created again before the clock ends: the new table
     * (same schema, or another dim) gets none of them, and the clock's other tables are applied whole. Before, the new
     * table of the same name got the dropped one's gradients, and one of another dim made the clock's apply throw,
     * losing the tables it had not reached yet without a rollback (found by a hostile review).
     */
    @Test
    void shouldGiveATableCreatedAgainMidClockNoneOfTheDroppedTablesGradients() throws Exception {
        try (PsClient worker = solo("recreate-mid-clock", UpdateMode.SYNC, 0)) {
            final long[] keys = allKeys();
            final List<PsTable> kept = new ArrayList<>();
            for (int t = 0; t < 6; t++) {
                kept.add(worker.createTable(zeros("recreate_keep_" + t, DIM)));
            }
            final PsTable same = worker.createTable(zeros("recreate_same", DIM));
            final PsTable other = worker.createTable(zeros("recreate_other_dim", DIM));
            for (final PsTable table : kept) {
                table.push(keys, minusOnes(KEYS * DIM));
            }
            same.push(keys, minusOnes(KEYS * DIM));
            other.push(keys, minusOnes(KEYS * DIM));
            assertThat(worker.dropTable("recreate_same")).isTrue();
            assertThat(worker.dropTable("recreate_other_dim")).isTrue();
            final PsTable sameAgain = worker.createTable(zeros("recreate_same", DIM));
            final PsTable otherAgain = worker.createTable(zeros("recreate_other_dim", 3));
            worker.clock();

            assertThat(sameAgain.pull(keys))
                    .as("the table created again, same schema")
                    .containsOnly(0f);
            assertThat(otherAgain.pull(keys))
                    .as("the table created again, dim 3")
                    .containsOnly(0f);
            for (final PsTable table : kept) {
                assertThat(table.pull(keys))
                        .as("table %s of the same clock", table.name())
                        .containsOnly(LEARNING_RATE);
            }
            assertThat(worker.rollbacks()).isEmpty();
        }
    }

    private static TableSchema zeros(final String name, final int dim) {
        return schema(name).toBuilder()
                .setDim(dim)
                .setInitializer(InitializerSpec.newBuilder().setKind(InitializerKind.ZEROS))
                .build();
    }

    @Test
    void syncWorkersSeeBitIdenticalParametersEqualToASingleProcessReferenceAndRunsRepeat() throws Exception {
        final int clocks = 12;
        final float[][][] first = runSync("sync-a", "sync_a", 11, clocks);
        for (int c = 0; c <= clocks; c++) {
            for (int w = 1; w < WORKERS; w++) {
                assertThat(bits(first[w][c]))
                        .as("worker %d at clock %d vs worker 0", w, c)
                        .isEqualTo(bits(first[0][c]));
            }
        }
        // The reference: from the initial rows, each clock adds the workers' gradients in worker order in float64 (as
        // the shard adds the workers' sums), rounds the sum to float32 once, then applies SGD once.
        final float[] reference = first[0][0].clone();
        for (int c = 0; c < clocks; c++) {
            final double[] sum = new double[reference.length];
            for (int w = 0; w < WORKERS; w++) {
                final float[] g = gradient(11, w, c);
                for (int i = 0; i < sum.length; i++) {
                    sum[i] += g[i];
                }
            }
            for (int i = 0; i < reference.length; i++) {
                reference[i] = reference[i] - LEARNING_RATE * (float) sum[i];
            }
            assertThat(bits(first[0][c + 1]))
                    .as("clock %d against the reference", c)
                    .isEqualTo(bits(reference));
        }
        final float[][][] second = runSync("sync-b", "sync_b", 11, clocks);
        assertThat(bits(second[0][clocks]))
                .as("a second run with the same seed")
                .isEqualTo(bits(first[0][clocks]));
    }

    @Test
    void sspLetsFastWorkersRunAheadByTheStalenessAndNeverFurther() throws Exception {
        final int staleness = 2;
        final int clocks = 14;
        // Per worker: the last clock it called clock() for, set just before the call: never below what the shards
        // know it ended, so a read it lets through proves the shards let a read through too early.
        final AtomicLongArray endingAtMost = new AtomicLongArray(WORKERS);
        for (int w = 0; w < WORKERS; w++) {
            endingAtMost.set(w, -1);
        }
        final AtomicReference<String> violation = new AtomicReference<>();
        final AtomicLongArray mostAhead = new AtomicLongArray(WORKERS);
        final ExecutorService threads = Executors.newFixedThreadPool(WORKERS);
        try {
            final List<Future<?>> done = new ArrayList<>();
            for (int w = 0; w < WORKERS; w++) {
                done.add(threads.submit(() -> {
                    try (PsClient client = worker("ssp", UpdateMode.SSP, staleness)) {
                        final int id = client.workerId();
                        final boolean slow = id == WORKERS - 1;
                        final PsTable weights = client.createTable(schema("ssp_w"));
                        for (int c = 0; c < clocks; c++) {
                            weights.pull(allKeys());
                            long slowestAtMost = Long.MAX_VALUE;
                            for (int other = 0; other < WORKERS; other++) {
                                slowestAtMost = Math.min(slowestAtMost, endingAtMost.get(other));
                            }
                            if (slowestAtMost < c - staleness - 1) {
                                violation.compareAndSet(
                                        null,
                                        "worker " + id + " read at clock " + c + " while the slowest had ended at most "
                                                + slowestAtMost);
                            }
                            final long ahead = c - 1 - slowestAtMost;
                            mostAhead.accumulateAndGet(id, ahead, Math::max);
                            weights.push(allKeys(), gradient(5, id, c));
                            if (slow) {
                                Thread.sleep(150);
                            }
                            endingAtMost.set(id, c);
                            client.clock();
                        }
                    }
                    return null;
                }));
            }
            for (final Future<?> future : done) {
                future.get(120, TimeUnit.SECONDS);
            }
        } finally {
            threads.shutdownNow();
        }
        assertThat(violation.get()).as("a read beyond the staleness bound").isNull();
        long fastest = 0;
        for (int w = 0; w < WORKERS - 1; w++) {
            fastest = Math.max(fastest, mostAhead.get(w));
        }
        assertThat(fastest)
                .as("how far a fast worker ran ahead of the slow one")
                .isEqualTo(staleness);
    }

    @Test
    void asyncPushIsAcknowledgedBeforeItIsAppliedAndFlushWaitsForIt() throws Exception {
        try (PsClient client = solo("async", UpdateMode.ASYNC, 0)) {
            final PsTable table = client.createTable(CounterTable.schema("async_w"));
            final long[] keys = allKeys();
            final float[] minusOnes = minusOnes(keys.length);
            holdWriters(true);
            final CompletableFuture<Void> flushed;
            try {
                for (int i = 0; i < 3; i++) {
                    table.push(keys, minusOnes);
                }
                assertThat(table.pull(keys))
                        .as("acknowledged, held behind the writers")
                        .containsOnly(0f);
                flushed = CompletableFuture.runAsync(client::flush);
                Thread.sleep(200);
                assertThat(flushed).as("flush while the writers are held").isNotDone();
            } finally {
                holdWriters(false);
            }
            flushed.get(30, TimeUnit.SECONDS);
            assertThat(table.pull(keys)).containsOnly(3f);
            for (int i = 0; i < 40; i++) {
                table.push(keys, minusOnes);
            }
            client.flush();
            assertThat(table.pull(keys)).as("exact after flush").containsOnly(43f);
        }
    }

    @Test
    void anSspWorkerReadsItsOwnPushesAfterItsClockEnds() throws Exception {
        try (PsClient client = solo("ssp-own", UpdateMode.SSP, 3)) {
            final PsTable table = client.createTable(CounterTable.schema("ssp_own"));
            final long[] keys = allKeys();
            final float[] minusOnes = minusOnes(keys.length);
            holdWriters(true);
            final CompletableFuture<Long> ended;
            try {
                table.push(keys, minusOnes);
                ended = CompletableFuture.supplyAsync(client::clock);
                Thread.sleep(200);
                assertThat(ended)
                        .as("clock() while its push is not yet applied")
                        .isNotDone();
            } finally {
                holdWriters(false);
            }
            assertThat(ended.get(30, TimeUnit.SECONDS)).isEqualTo(1);
            assertThat(table.pull(keys))
                    .as("its own push, read at the next clock")
                    .containsOnly(1f);
        }
    }

    @Test
    void aClockThatNeverComesEndsInDeadlineExceededWithNoThreadParkedOnTheShard() throws Exception {
        final JobSpec spec = JobSpec.newBuilder()
                .setJobId("stuck")
                .setMode(UpdateMode.SYNC)
                .setExpectedWorkers(2)
                .build();
        final CompletableFuture<PsClient> second = CompletableFuture.supplyAsync(() -> PsClient.connect(
                new PsClient.Context().proxyAddress(cluster.proxyAddress()).job(spec)));
        try (PsClient waiting = PsClient.connect(new PsClient.Context()
                        .proxyAddress(cluster.proxyAddress())
                        .deadlineMs(12_000)
                        .job(spec));
                PsClient idle = second.get(30, TimeUnit.SECONDS)) {
            final PsTable table = waiting.createTable(schema("stuck_w"));
            idle.table("stuck_w");
            waiting.clock();
            // The idle worker never ends clock 0: every pull of the waiting one at clock 1 waits on the shards.
            final int threadsBefore = Thread.activeCount();
            final List<CompletableFuture<float[]>> pulls = new ArrayList<>();
            for (int i = 0; i < 100; i++) {
                pulls.add(table.pullAsync(new long[] {i}));
            }
            // Well within the pulls' 12 s deadline, even on a loaded machine.
            await().atMost(Duration.ofSeconds(9))
                    .until(() -> cluster.shard(0).shard().waitingPulls()
                                    + cluster.shard(1).shard().waitingPulls()
                            == 100);
            assertThat(Thread.activeCount() - threadsBefore)
                    .as("threads added while 100 pulls wait")
                    .isLessThan(10);
            for (final CompletableFuture<float[]> pull : pulls) {
                assertThatThrownBy(pull::join)
                        .isInstanceOf(CompletionException.class)
                        .cause()
                        .isInstanceOf(StatusRuntimeException.class)
                        .satisfies(e ->
                                assertThat(Status.fromThrowable(e).getCode()).isEqualTo(Status.Code.DEADLINE_EXCEEDED));
            }
            await().atMost(Duration.ofSeconds(20))
                    .until(() -> cluster.shard(0).shard().waitingPulls()
                                    + cluster.shard(1).shard().waitingPulls()
                            == 0);
        }
    }

    @Test
    void aTableHeldByASyncJobRefusesAnotherMode() throws Exception {
        final JobSpec spec = JobSpec.newBuilder()
                .setJobId("holder")
                .setMode(UpdateMode.SYNC)
                .setExpectedWorkers(1)
                .build();
        try (PsClient holder = PsClient.connect(new PsClient.Context()
                        .proxyAddress(cluster.proxyAddress())
                        .job(spec));
                PsClient outsider = PsClient.connect(cluster.proxyAddress())) {
            holder.createTable(schema("held"));
            final PsTable table = outsider.table("held");
            assertThatThrownBy(() -> table.push(new long[] {1}, new float[] {1f, 1f}))
                    .isInstanceOf(StatusRuntimeException.class)
                    .hasMessageContaining("FAILED_PRECONDITION")
                    .hasMessageContaining("table 'held' is updated by job 'holder' in sync mode");
            try (PsClient asyncJob = solo("other", UpdateMode.ASYNC, 0)) {
                assertThatThrownBy(() -> asyncJob.table("held"))
                        .isInstanceOf(StatusRuntimeException.class)
                        .hasMessageContaining("FAILED_PRECONDITION")
                        .hasMessageContaining("held");
            }
        }
    }

    @Test
    void aSyncPushWhoseAnswerWasLostAndAClockSentTwiceAreAppliedOnce() throws Exception {
        try (PsClient client = solo("retry", UpdateMode.SYNC, 0)) {
            final PsTable table = client.createTable(CounterTable.schema("retry_w"));
            final long[] keys = allKeys();
            final float[] minusOnes = minusOnes(keys.length);
            AdminCalls.injectFault(cluster, FaultPoints.LOSE_PUSH_ANSWER, true, 1);
            table.push(keys, minusOnes);
            AdminCalls.injectFault(cluster, FaultPoints.LOSE_PUSH_ANSWER, false, 0);
            // A clock() whose answer was lost is sent again: report clock 0 ended twice at every shard.
            for (int i = 0; i < cluster.shardCount(); i++) {
                cluster.shard(i)
                        .shard()
                        .endClock("retry", client.workerId(), 0, false)
                        .join();
            }
            client.clock();
            assertThat(table.pull(keys)).containsOnly(1f);
        }
    }

    private static void holdWriters(final boolean hold) {
        AdminCalls.injectFault(cluster, FaultPoints.HOLD_WRITERS, hold, 0);
    }

    private static int[] bits(final float[] values) {
        final int[] bits = new int[values.length];
        for (int i = 0; i < values.length; i++) {
            bits[i] = Float.floatToRawIntBits(values[i]);
        }
        return bits;
    }
}
