package io.pscluster.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.catchThrowableOfType;
import static org.awaitility.Awaitility.await;

import io.grpc.Status;
import io.pscluster.proto.v1.Aggregation;
import io.pscluster.proto.v1.JobInfo;
import io.pscluster.proto.v1.JobSpec;
import io.pscluster.proto.v1.JobWorker;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.proto.v1.UpdateJobsRequest;
import io.pscluster.proto.v1.UpdateMode;
import io.pscluster.wire.PsException;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * A shard's clocks for SYNC and SSP jobs, driven through {@link Shard} as its gRPC service drives it: gradients kept
 * per clock and applied once when every live worker ended it, in worker order; pulls held until their clock; a
 * dropped worker stops holding clocks back; a late join is told where to start; mixing modes refused.
 */
class ShardJobClocksTest {
    private static final String TABLE = "w";
    private static final String MEAN_TABLE = "m";
    private static final long KEY = 7;

    private final Shard shard = new Shard("s", 1 << 20, 2, 1024, new Configuration());
    private final AtomicLong versions = new AtomicLong();
    private final AtomicLong sequences = new AtomicLong();

    @BeforeEach
    void createTables() throws InterruptedException {
        TestRouting.serve(shard, TestRouting.allSlotsTo("s", 1));
        for (final String name : new String[] {TABLE, MEAN_TABLE}) {
            // SGD with lr 1 from zeros, dim 1: a row holds minus what was applied to it.
            shard.createTable(TableSchema.newBuilder()
                    .setName(name)
                    .setKind(TableKind.SPARSE)
                    .setDim(1)
                    .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(1f))
                    .setAggregation(name.equals(MEAN_TABLE) ? Aggregation.MEAN : Aggregation.SUM)
                    .build());
        }
    }

    @AfterEach
    void closeShard() {
        shard.close();
    }

    private void jobs(final UpdateMode mode, final int staleness, final int... workers) {
        final long version = versions.incrementAndGet();
        final JobInfo.Builder job = JobInfo.newBuilder()
                .setSpec(JobSpec.newBuilder().setJobId("j").setMode(mode).setStaleness(staleness))
                .setVersion(version)
                .setStarted(true)
                .setNextWorkerId(10)
                .addTables(TABLE)
                .addTables(MEAN_TABLE);
        for (final int worker : workers) {
            job.addWorkers(JobWorker.newBuilder().setWorkerId(worker));
        }
        shard.updateJobs(UpdateJobsRequest.newBuilder()
                .addJobs(job)
                .setJobsVersion(version)
                .build());
    }

    private void push(final String table, final int worker, final long clock, final float gradient) {
        shard.push(
                table,
                1,
                100 + worker,
                sequences.incrementAndGet(),
                new long[] {KEY},
                new float[] {gradient},
                new Shard.JobTag("j", worker, clock));
    }

    private float value(final String table) throws InterruptedException {
        shard.awaitQuiescent();
        return shard.table(table).pull(new long[] {KEY})[0];
    }

    private long applied() {
        return shard.jobClocks("j").applied();
    }

    private void end(final int worker, final long clock) {
        assertThat(shard.endClock("j", worker, clock, false).join().accepted()).isTrue();
    }

    /**
     * A move's fence lets the SYNC clock open when it went up through (its workers push to and read from the moving
     * slots, then end it) and answers only once that clock is applied, so that the move's cut holds it; a later clock's
     * push is refused until the move. (Answering while the open clock is not applied, because nothing of it was held
     * yet, let its gradients reach the rows after the cut.)
     */
    @Test
    void shouldAnswerAMovesFenceOnlyOnceTheSyncClockOpenAtItIsApplied() throws Exception {
        jobs(UpdateMode.SYNC, 0, 0, 1);
        end(0, -1);
        end(1, -1);
        final java.util.BitSet slots = new java.util.BitSet();
        slots.set(0, io.pscluster.wire.Slots.SLOT_COUNT);

        final java.util.concurrent.CompletableFuture<String> fenced =
                java.util.concurrent.CompletableFuture.supplyAsync(() -> {
                    try {
                        return shard.fenceSlots(slots, 60_000, 1);
                    } catch (InterruptedException e) {
                        throw new IllegalStateException(e);
                    }
                });
        await().atMost(Duration.ofSeconds(10)).until(() -> shard.fencedSlotCount() > 0);
        assertThat(fenced).as("clock 0 is open and not applied").isNotDone();
        push(TABLE, 0, 0, 1f);
        push(TABLE, 1, 0, 2f);
        end(0, 0);
        end(1, 0);

        assertThat(fenced.get(10, java.util.concurrent.TimeUnit.SECONDS)).isEmpty();
        assertThat(applied()).isZero();
        final PsException refused = catchThrowableOfType(PsException.class, () -> push(TABLE, 0, 1, 1f));
        assertThat(refused).as("clock 1 opened after the fence").isNotNull();
        assertThat(refused.getMessage()).contains("over to another shard");
        shard.fenceSlots(new java.util.BitSet(), 0, 0);
        assertThat(value(TABLE)).isEqualTo(-3f);
    }

    @Test
    void shouldApplyAClockOnceEveryLiveWorkerEndedItAndNotBefore() throws InterruptedException {
        jobs(UpdateMode.SYNC, 0, 0, 1);
        end(0, -1);
        end(1, -1);
        push(TABLE, 0, 0, 1f);
        push(TABLE, 1, 0, 2f);
        end(0, 0);
        assertThat(value(TABLE)).as("applied before worker 1 ended clock 0").isZero();
        assertThat(applied()).isEqualTo(-1);
        end(1, 0);
        await().atMost(Duration.ofSeconds(10)).until(() -> applied() == 0);
        assertThat(value(TABLE)).isEqualTo(-3f);
    }

    @Test
    void shouldSumInWorkerOrderWhateverOrderThePushesArrivedIn() throws InterruptedException {
        jobs(UpdateMode.SYNC, 0, 0, 1, 2);
        // In double (the workers' sums are added in float64), (1 + 1e17) - 1e17 is 0 and (-1e17 + 1e17) + 1 is 1: the
        // order of the sum shows in the result. The pushes arrive in reverse worker order.
        push(TABLE, 2, 0, -1e17f);
        push(TABLE, 1, 0, 1e17f);
        push(TABLE, 0, 0, 1f);
        end(2, 0);
        end(1, 0);
        end(0, 0);
        await().atMost(Duration.ofSeconds(10)).until(() -> applied() == 0);
        final float inWorkerOrder = -(float) (((double) 1f + 1e17f) + -1e17f);
        assertThat(value(TABLE)).isEqualTo(inWorkerOrder).isZero();
    }

    /**
     * A SYNC push racing a drop of its table: one that found the table before the drop and buffers after the drop
     * forgot the table's gradients is refused, so that nothing of the dropped table reaches a table created again under
     * its name. Before, such a push was acknowledged and its gradients applied to the new table (a review found it on
     * the first of these rounds).
     */
    @Test
    void shouldGiveATableCreatedAgainNothingOfAPushThatRacedTheDrop() throws Exception {
        shard.updateJobs(UpdateJobsRequest.newBuilder()
                .addJobs(JobInfo.newBuilder()
                        .setSpec(JobSpec.newBuilder().setJobId("j").setMode(UpdateMode.SYNC))
                        .setVersion(versions.incrementAndGet())
                        .setStarted(true)
                        .setNextWorkerId(10)
                        .addTables("r")
                        .addWorkers(JobWorker.newBuilder().setWorkerId(0)))
                .setJobsVersion(versions.get())
                .build());
        end(0, -1);
        final long[] keys = java.util.stream.LongStream.range(0, 5_000).toArray();
        final float[] ones = new float[keys.length];
        java.util.Arrays.fill(ones, 1f);
        final TableSchema schema = TableSchema.newBuilder()
                .setName("r")
                .setKind(TableKind.SPARSE)
                .setDim(1)
                .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(1f))
                .build();
        for (int round = 0; round < 100; round++) {
            shard.createTable(schema);
            final java.util.concurrent.CountDownLatch pushing = new java.util.concurrent.CountDownLatch(1);
            final Thread pusher = new Thread(() -> {
                pushing.countDown();
                try {
                    while (true) {
                        shard.push("r", 1, 100, sequences.incrementAndGet(), keys, ones, new Shard.JobTag("j", 0, 0));
                    }
                } catch (PsException tableGone) {
                    // The drop: the table is not found, or was dropped while the push was checked.
                }
            });
            pusher.start();
            pushing.await();
            assertThat(shard.dropTable("r")).isTrue();
            pusher.join();
            assertThat(shard.syncBufferedBytes())
                    .as("held after round %d's drop", round)
                    .isZero();
        }
        shard.createTable(schema);
        end(0, 0);
        await().atMost(Duration.ofSeconds(10)).until(() -> applied() == 0);
        shard.awaitQuiescent();
        assertThat(shard.table("r").pull(keys)).containsOnly(0f);
    }

    /**
     * A MEAN clock of gradients each within float32's range whose mean is too: summed in float64, it never overflows
     * on the way (two workers' 3e38 summed in float32 was infinite, and so was the row; found by a hostile review).
     */
    @Test
    void shouldNotOverflowAMeanOfLargeGradientsOnTheWay() throws InterruptedException {
        jobs(UpdateMode.SYNC, 0, 0, 1);
        push(MEAN_TABLE, 0, 0, 3e38f);
        push(MEAN_TABLE, 1, 0, 3e38f);
        end(0, 0);
        end(1, 0);
        await().atMost(Duration.ofSeconds(10)).until(() -> applied() == 0);
        assertThat(value(MEAN_TABLE)).isEqualTo(-3e38f);
    }

    /**
     * One worker's own pushes of a key within a clock are summed in float64 too: 3e38 twice, then the other worker's
     * -3e38, is a finite mean (a worker's sum kept in float32 was infinite after its second push, and so was the row).
     */
    @Test
    void shouldNotOverflowAWorkersOwnRepeatedPushesWithinAClock() throws InterruptedException {
        jobs(UpdateMode.SYNC, 0, 0, 1);
        push(MEAN_TABLE, 0, 0, 3e38f);
        push(MEAN_TABLE, 0, 0, 3e38f);
        push(MEAN_TABLE, 1, 0, -3e38f);
        end(0, 0);
        end(1, 0);
        await().atMost(Duration.ofSeconds(10)).until(() -> applied() == 0);
        assertThat(value(MEAN_TABLE)).isEqualTo((float) -(3e38 + 3e38 - 3e38) / 2);
    }

    /** A key's sum starts from its first gradient as it is: a -0.0 stays -0.0, as a float32 sum copying it did. */
    @Test
    void shouldKeepTheSignOfAZeroGradientInASum() {
        final ClockSum sum = new ClockSum(2);
        sum.add(new long[] {KEY}, new float[] {-0f, 1f});
        final ClockSum clock = new ClockSum(2);
        clock.add(sum);
        assertThat(Float.floatToRawIntBits(clock.gradients()[0])).isEqualTo(Float.floatToRawIntBits(-0f));
        assertThat(clock.gradients()[1]).isEqualTo(1f);
    }

    @Test
    void shouldDivideMeanTablesByTheWorkersOfTheClock() throws InterruptedException {
        jobs(UpdateMode.SYNC, 0, 0, 1);
        push(MEAN_TABLE, 0, 0, 1f);
        push(MEAN_TABLE, 1, 0, 2f);
        end(0, 0);
        end(1, 0);
        await().atMost(Duration.ofSeconds(10)).until(() -> applied() == 0);
        assertThat(value(MEAN_TABLE)).isEqualTo(-1.5f);
    }

    @Test
    void shouldHoldAPullForTheNextClockUntilItsClockIsAppliedWithoutAThread() throws InterruptedException {
        jobs(UpdateMode.SYNC, 0, 0, 1);
        end(0, -1);
        end(1, -1);
        final AtomicBoolean ready = new AtomicBoolean();
        assertThat(shard.whenReadable(new Shard.JobTag("j", 0, 0), () -> ready.set(true), failure -> {}))
                .as("clock 0 needs nothing applied")
                .isNull();
        assertThat(ready).isTrue();
        ready.set(false);
        push(TABLE, 0, 0, 1f);
        end(0, 0);
        final JobClocks.Wait wait = shard.whenReadable(new Shard.JobTag("j", 0, 1), () -> ready.set(true), f -> {});
        assertThat(wait).isNotNull();
        assertThat(shard.waitingPulls()).isEqualTo(1);
        assertThat(ready).isFalse();
        end(1, 0);
        await().atMost(Duration.ofSeconds(10)).untilTrue(ready);
        assertThat(shard.waitingPulls()).isZero();
        assertThat(value(TABLE)).isEqualTo(-1f);
    }

    @Test
    void shouldForgetACancelledWait() {
        jobs(UpdateMode.SYNC, 0, 0, 1);
        end(0, 0);
        final JobClocks.Wait wait = shard.whenReadable(new Shard.JobTag("j", 0, 1), () -> {}, f -> {});
        assertThat(shard.waitingPulls()).isEqualTo(1);
        wait.cancel();
        assertThat(shard.waitingPulls()).isZero();
    }

    @Test
    void shouldForgetACutsWaitForAClockOnceItTimedOut() throws InterruptedException {
        jobs(UpdateMode.SYNC, 0, 0, 1);
        end(0, -1);
        end(1, -1);
        end(0, 0);
        final PsException timedOut = catchThrowableOfType(() -> shard.awaitClockApplied("j", 0, 50), PsException.class);
        assertThat(timedOut.code()).isEqualTo(Status.Code.UNAVAILABLE);
        assertThat(shard.jobClocks("j").waiters())
                .as("waits left after the cut gave up")
                .isZero();

        end(1, 0);
        shard.awaitClockApplied("j", 0, 10_000);
        assertThat(shard.jobClocks("j").waiters()).isZero();
    }

    @Test
    void shouldStopWaitingForDroppedWorkersAndKeepOnlyTheClocksTheyEnded() throws InterruptedException {
        jobs(UpdateMode.SYNC, 0, 0, 1, 2);
        push(TABLE, 0, 0, 1f);
        push(TABLE, 1, 0, 2f);
        push(TABLE, 2, 0, 4f);
        end(0, 0);
        end(1, 0);
        final CompletableFuture<Throwable> dropped = new CompletableFuture<>();
        shard.whenReadable(new Shard.JobTag("j", 1, 1), () -> {}, dropped::complete);
        // Worker 1 ended clock 0 and then died; worker 2 died in the middle of it.
        jobs(UpdateMode.SYNC, 0, 0);
        await().atMost(Duration.ofSeconds(10)).until(() -> applied() == 0);
        assertThat(value(TABLE)).as("workers 0 and 1, not worker 2").isEqualTo(-3f);
        assertThat(dropped.join()).hasMessageContaining("no longer a member");
        assertThat(shard.jobClocks("j").ended()).containsOnlyKeys(0);
        final PsException refused = catchThrowableOfType(PsException.class, () -> push(TABLE, 1, 1, 1f));
        assertThat(refused.code()).isEqualTo(Status.Code.FAILED_PRECONDITION);
        assertThat(refused).hasMessageContaining("worker 1").hasMessageContaining("join the job again");
    }

    @Test
    void shouldTellALateJoinerWhereToStart() {
        jobs(UpdateMode.SYNC, 0, 0);
        end(0, 0);
        end(0, 1);
        await().atMost(Duration.ofSeconds(10)).until(() -> applied() == 1);
        jobs(UpdateMode.SYNC, 0, 0, 3);
        final JobClocks.Reported tooLate = shard.endClock("j", 3, 0, true).join();
        assertThat(tooLate.accepted()).isFalse();
        assertThat(tooLate.applied()).isEqualTo(1);
        assertThat(shard.endClock("j", 3, 1, true).join().accepted()).isTrue();
        end(0, 2);
        assertThat(applied()).as("clock 2 waits for the joiner").isEqualTo(1);
        end(3, 2);
        await().atMost(Duration.ofSeconds(10)).until(() -> applied() == 2);
    }

    @Test
    void shouldHoldEveryClockForAListedWorkerThatHasNotReported() {
        jobs(UpdateMode.SYNC, 0, 0, 1);
        end(0, 0);
        end(0, 1);
        assertThat(applied()).isEqualTo(-1);
        end(1, 1);
        assertThat(shard.jobClocks("j").ended()).containsEntry(1, 1L);
    }

    @Test
    void shouldApplyARetriedPushOnce() throws InterruptedException {
        jobs(UpdateMode.SYNC, 0, 0);
        final Shard.JobTag tag = new Shard.JobTag("j", 0, 0);
        for (int i = 0; i < 3; i++) {
            shard.push(TABLE, 1, 5, 1, new long[] {KEY}, new float[] {1f}, tag);
        }
        end(0, 0);
        await().atMost(Duration.ofSeconds(10)).until(() -> applied() == 0);
        assertThat(value(TABLE)).isEqualTo(-1f);
    }

    /**
     * A push whose answer was lost and that is retried after its clock was applied (the worker ended the clock with
     * the push in flight) is a repeat, not a push for a past clock: the caller would otherwise hear that an applied
     * push failed.
     */
    @Test
    void shouldAnswerARetryAfterItsClockWasAppliedAsARepeat() throws InterruptedException {
        jobs(UpdateMode.SYNC, 0, 0);
        final Shard.JobTag tag = new Shard.JobTag("j", 0, 0);
        shard.push(TABLE, 1, 5, 1, new long[] {KEY}, new float[] {1f}, tag);
        end(0, 0);
        await().atMost(Duration.ofSeconds(10)).until(() -> applied() == 0);

        assertThat(shard.push(TABLE, 1, 5, 1, new long[] {KEY}, new float[] {1f}, tag)
                        .duplicate())
                .isTrue();
        assertThat(catchThrowableOfType(
                        PsException.class, () -> shard.push(TABLE, 1, 5, 2, new long[] {KEY}, new float[] {1f}, tag)))
                .as("a new push for the applied clock")
                .isNotNull();
        assertThat(value(TABLE)).isEqualTo(-1f);
    }

    @Test
    void shouldLetSspReadersRunAheadByTheStalenessAndNoFurther() throws InterruptedException {
        jobs(UpdateMode.SSP, 2, 0, 1);
        end(0, -1);
        end(1, -1);
        push(TABLE, 0, 0, 1f);
        assertThat(value(TABLE)).as("SSP applies a push as it comes").isEqualTo(-1f);
        end(0, 0);
        end(0, 1);
        final AtomicBoolean ready = new AtomicBoolean();
        // Worker 0 at clock 2 may read while the slowest has ended -1 = 2 - 2 - 1.
        assertThat(shard.whenReadable(new Shard.JobTag("j", 0, 2), () -> ready.set(true), f -> {}))
                .isNull();
        end(0, 2);
        // At clock 3 it needs the slowest to have ended 0.
        assertThat(shard.whenReadable(new Shard.JobTag("j", 0, 3), () -> ready.set(true), f -> {}))
                .isNotNull();
        ready.set(false);
        end(1, 0);
        await().atMost(Duration.ofSeconds(10)).untilTrue(ready);
    }

    @Test
    void shouldRefuseAPushFromOutsideTheJobThatHoldsTheTable() {
        jobs(UpdateMode.SYNC, 0, 0);
        final PsException outside = catchThrowableOfType(
                PsException.class, () -> shard.push(TABLE, 1, 0, 0, new long[] {KEY}, new float[] {1f}));
        assertThat(outside.code()).isEqualTo(Status.Code.FAILED_PRECONDITION);
        assertThat(outside)
                .hasMessageContaining("table 'w' is updated by job 'j' in sync mode")
                .hasMessageContaining("outside any job");
        final PsException other = catchThrowableOfType(
                PsException.class,
                () -> shard.push(TABLE, 1, 0, 0, new long[] {KEY}, new float[] {1f}, new Shard.JobTag("other", 0, 0)));
        assertThat(other).hasMessageContaining("job 'other' pushes to it");
    }

    @Test
    void shouldIgnoreAnOlderListFromUpdateJobsButTakeOneFromAHeartbeat() {
        for (int i = 0; i < 3; i++) {
            jobs(UpdateMode.SYNC, 0, 0, 1);
        }
        final UpdateJobsRequest restartedProxy = UpdateJobsRequest.newBuilder()
                .addJobs(JobInfo.newBuilder()
                        .setSpec(JobSpec.newBuilder().setJobId("j").setMode(UpdateMode.SYNC))
                        .setVersion(1)
                        .setStarted(true)
                        .setNextWorkerId(10)
                        .addTables(TABLE)
                        .addWorkers(JobWorker.newBuilder().setWorkerId(0)))
                .setJobsVersion(1)
                .build();
        shard.updateJobs(restartedProxy);
        assertThat(shard.jobClocks("j").ended())
                .as("an older UpdateJobs is ignored")
                .containsKeys(0, 1);
        shard.updateJobsFromHeartbeat(restartedProxy);
        assertThat(shard.jobClocks("j").ended())
                .as("a heartbeat's list is the proxy's")
                .containsOnlyKeys(0);
        assertThat(shard.jobsVersion()).isEqualTo(1);
    }

    @Test
    @Timeout(20)
    void shouldJumpOverAHugeGapOfEmptyClocksAtOnce() {
        jobs(UpdateMode.SYNC, 0, 0);
        assertThat(shard.endClock("j", 0, 1_000_000_000_000L, true).join().accepted())
                .isTrue();
        assertThat(applied()).isEqualTo(1_000_000_000_000L);
    }

    @Test
    void shouldRefuseClocksNoWorkerCanBeAt() {
        jobs(UpdateMode.SYNC, 0, 0, 1);
        end(0, -1);
        final PsException negative = catchThrowableOfType(PsException.class, () -> shard.endClock("j", 1, -7, false));
        assertThat(negative.code()).isEqualTo(Status.Code.INVALID_ARGUMENT);
        final PsException pull = catchThrowableOfType(
                PsException.class,
                () -> shard.whenReadable(new Shard.JobTag("j", 1, Long.MIN_VALUE), () -> {}, failure -> {}));
        assertThat(pull.code()).isEqualTo(Status.Code.INVALID_ARGUMENT);
        final PsException ahead = catchThrowableOfType(PsException.class, () -> push(TABLE, 0, 5, 1f));
        assertThat(ahead.code()).isEqualTo(Status.Code.FAILED_PRECONDITION);
        assertThat(ahead).hasMessageContaining("is at clock 0");
        push(TABLE, 0, 0, 1f);
        final PsException skip = catchThrowableOfType(PsException.class, () -> shard.endClock("j", 0, 3, false));
        assertThat(skip).as("a skip over the clock it pushed for here").hasMessageContaining("one at a time");
        final PsException readAhead = catchThrowableOfType(
                PsException.class, () -> shard.whenReadable(new Shard.JobTag("j", 0, 4), () -> {}, failure -> {}));
        assertThat(readAhead).hasMessageContaining("end the clock first");
    }

    @Test
    void shouldCountOnlyTheWorkersOfAClockWhenAJoinMovesItsStart() throws InterruptedException {
        jobs(UpdateMode.SYNC, 0, 0, 1);
        end(0, -1);
        end(1, -1);
        // Worker 1 learned elsewhere that clock 0 was applied and starts at 1 instead.
        assertThat(shard.endClock("j", 1, 0, true).join().accepted()).isTrue();
        push(MEAN_TABLE, 0, 0, 2f);
        end(0, 0);
        await().atMost(Duration.ofSeconds(10)).until(() -> applied() == 0);
        assertThat(value(MEAN_TABLE)).as("clock 0 had one worker").isEqualTo(-2f);
    }

    /**
     * A join that would move a worker's start past a clock it has pushed for is refused: its accepted gradients stay
     * and are applied with their clock.
     */
    @Test
    void shouldRefuseToMoveTheStartOfAWorkerThatPushedAndKeepItsGradients() throws InterruptedException {
        jobs(UpdateMode.SYNC, 0, 0);
        end(0, -1);
        push(TABLE, 0, 0, 3f);

        final PsException refused = catchThrowableOfType(
                PsException.class, () -> shard.endClock("j", 0, 1, true).join());
        end(0, 0);
        await().atMost(Duration.ofSeconds(10)).until(() -> applied() == 0);

        assertThat(refused).isNotNull();
        assertThat(refused.code()).isEqualTo(Status.Code.FAILED_PRECONDITION);
        assertThat(refused.getMessage()).contains("worker 0", "clock 0", "would be dropped");
        assertThat(value(TABLE)).as("the accepted push, applied with clock 0").isEqualTo(-3f);
    }

    @Test
    void shouldStartOverWhenTheRunEndedAndTheJobStartsAgain() {
        jobs(UpdateMode.SYNC, 0, 0);
        end(0, 0);
        end(0, 1);
        assertThat(applied()).isEqualTo(1);
        final long stopped = versions.incrementAndGet();
        shard.updateJobs(UpdateJobsRequest.newBuilder()
                .addJobs(JobInfo.newBuilder()
                        .setSpec(JobSpec.newBuilder().setJobId("j").setMode(UpdateMode.SYNC))
                        .setVersion(stopped)
                        .setNextWorkerId(10)
                        .addTables(TABLE))
                .setJobsVersion(stopped)
                .build());
        jobs(UpdateMode.SYNC, 0, 5);
        assertThat(applied()).as("a new run counts from clock 0").isEqualTo(-1);
        end(5, -1);
        end(5, 0);
        assertThat(applied()).isEqualTo(0);
    }

    /**
     * A worker that ended a clock and then left still took part in it: a MEAN table divides that clock's sum by both
     * workers, not by the one still there (its gradients count, so its share of the divisor must too).
     */
    @Test
    void shouldCountAWorkerThatEndedAClockAndLeftAmongTheWorkersOfThatClock() throws InterruptedException {
        jobs(UpdateMode.SYNC, 0, 0, 1);
        end(0, -1);
        end(1, -1);
        push(MEAN_TABLE, 0, 0, 2f);
        end(0, 0);
        jobs(UpdateMode.SYNC, 0, 1);
        push(MEAN_TABLE, 1, 0, 4f);
        end(1, 0);
        await().atMost(Duration.ofSeconds(10)).until(() -> applied() == 0);
        assertThat(value(MEAN_TABLE)).as("(2 + 4) / 2 workers").isEqualTo(-3f);
    }

    /** The applier's calls, each completed by the test. */
    private static final class HeldApplies implements JobClocks.Applier {
        final java.util.List<Long> clocks = new java.util.concurrent.CopyOnWriteArrayList<>();
        final java.util.List<Integer> participants = new java.util.concurrent.CopyOnWriteArrayList<>();
        final java.util.List<CompletableFuture<Void>> held = new java.util.concurrent.CopyOnWriteArrayList<>();

        @Override
        public CompletableFuture<Void> apply(
                final String jobId, final long clock, final JobClocks.ClockUpdates updates, final int workers) {
            clocks.add(clock);
            participants.add(workers);
            final CompletableFuture<Void> done = new CompletableFuture<>();
            held.add(done);
            return done;
        }
    }

    private static UpdateJobsRequest run(final long version, final boolean started, final int... workers) {
        final JobInfo.Builder job = JobInfo.newBuilder()
                .setSpec(JobSpec.newBuilder().setJobId("j").setMode(UpdateMode.SYNC))
                .setVersion(version)
                .setStarted(started)
                .setNextWorkerId(10)
                .addTables(TABLE);
        for (final int worker : workers) {
            job.addWorkers(JobWorker.newBuilder().setWorkerId(worker));
        }
        return UpdateJobsRequest.newBuilder()
                .addJobs(job)
                .setJobsVersion(version)
                .build();
    }

    /**
     * Starts run 1 of job "j" with worker 0, which pushes for clocks 0 and 1 and ends both: clock 0 goes to the
     * applier, clock 1 waits for it.
     */
    private static void endTwoClocks(final JobClocks clocks) {
        clocks.update(run(1, true, 0), false);
        clocks.report("j", 0, -1, true);
        for (long clock = 0; clock < 2; clock++) {
            clocks.buffer(
                    TABLE, () -> true, "j", 0, clock, 1, new long[] {1}, new float[] {1f}, JobClocks.NewRows.NONE);
            clocks.report("j", 0, clock, false);
        }
    }

    /**
     * A run's last worker ends its last clock while the clock before is still being applied, then leaves: the run
     * ends, and the clock it ended is applied all the same, after the one before and before any clock of the next
     * run. The next run counts from clock 0 whatever the ended run's applies do when they complete.
     */
    @Test
    void shouldApplyTheClocksAnEndedRunsWorkersEndedBeforeAnyOfTheNextRun() {
        final HeldApplies applies = new HeldApplies();
        final JobClocks clocks = new JobClocks(Runnable::run, applies, 1 << 20);
        endTwoClocks(clocks);
        assertThat(applies.clocks).as("clock 1 waits for clock 0's apply").containsExactly(0L);

        // The worker leaves: the run ends with clock 1 ended and not applied. A new run starts meanwhile.
        clocks.update(run(2, false), false);
        clocks.update(run(3, true, 5), false);
        assertThat(clocks.snapshot("j").applied()).isEqualTo(-1);
        clocks.report("j", 5, -1, true);
        clocks.buffer(TABLE, () -> true, "j", 5, 0, 1, new long[] {1}, new float[] {1f}, JobClocks.NewRows.NONE);
        clocks.report("j", 5, 0, false);
        assertThat(applies.clocks)
                .as("nothing of the new run before the old run's clocks")
                .containsExactly(0L);

        applies.held.get(0).complete(null);
        assertThat(applies.clocks).as("the old run's clock 1, then").containsExactly(0L, 1L);
        assertThat(clocks.snapshot("j").applied())
                .as("the old run's clock 0 moved nothing of the new run")
                .isEqualTo(-1);
        applies.held.get(1).complete(null);
        assertThat(applies.clocks).as("then the new run's clock 0").containsExactly(0L, 1L, 0L);
        assertThat(clocks.snapshot("j").applied()).isEqualTo(-1);
        applies.held.get(2).complete(null);
        assertThat(clocks.snapshot("j").applied()).isZero();
        assertThat(applies.participants).containsExactly(1, 1, 1);
        assertThat(clocks.bufferedBytes()).isZero();
        assertThat(clocks.unapplied()).isEmpty();
    }

    /**
     * A shard that missed a worker's clocks (frozen or cut off past its lease, dropped from the routing table, back)
     * hears it end a later clock: with none of its gradients held here for the clocks between, they ended empty here and
     * the report is taken; with some held, it is refused as before (they would be skipped). Before, it was always
     * refused, and the SYNC job failed for good (found by a hostile review).
     */
    @Test
    void shouldTakeAWorkerThatEndedClocksElsewhereWhileThisShardMissedThemWhenNothingOfItsIsHeldForThem() {
        final HeldApplies applies = new HeldApplies();
        final JobClocks clocks = new JobClocks(Runnable::run, applies, 1 << 20);
        clocks.update(run(1, true, 0, 1), false);
        clocks.report("j", 0, -1, true);
        clocks.report("j", 1, -1, true);
        clocks.buffer(TABLE, () -> true, "j", 1, 3, 1, new long[] {1}, new float[] {1f}, JobClocks.NewRows.NONE);

        assertThat(clocks.report("j", 0, 9, false).accepted())
                .as("worker 0 pushed nothing here")
                .isTrue();
        assertThatThrownBy(() -> clocks.report("j", 1, 9, false))
                .as("worker 1's gradients for clock 3 are held here")
                .isInstanceOfSatisfying(PsException.class, e -> {
                    assertThat(e.code()).isEqualTo(Status.Code.FAILED_PRECONDITION);
                    assertThat(e.getMessage()).contains("clocks end one at a time");
                });
        final long held = clocks.bufferedBytes();
        assertThat(clocks.report("j", 1, 9, false, true).accepted())
                .as("the same, on a shard that owns no slots now: its held gradients are of slots it lost")
                .isTrue();
        assertThat(clocks.bufferedBytes()).isLessThan(held);
        clocks.report("j", 0, 10, false);
        clocks.buffer(TABLE, () -> true, "j", 1, 10, 1, new long[] {1}, new float[] {1f}, JobClocks.NewRows.NONE);
        clocks.report("j", 1, 10, false);
        assertThat(applies.clocks)
                .as("clock 10, which holds gradients, goes to the applier once both ended it; nothing of clock 3")
                .containsExactly(10L);
    }

    /** A job the proxy no longer lists still has the clocks its workers ended applied. */
    @Test
    void shouldApplyTheEndedClocksOfAJobThatIsNoLongerListed() {
        final HeldApplies applies = new HeldApplies();
        final JobClocks clocks = new JobClocks(Runnable::run, applies, 1 << 20);
        endTwoClocks(clocks);
        clocks.buffer(TABLE, () -> true, "j", 0, 2, 1, new long[] {1}, new float[] {1f}, JobClocks.NewRows.NONE);

        clocks.update(UpdateJobsRequest.newBuilder().setJobsVersion(2).build(), false);
        applies.held.get(0).complete(null);
        assertThat(applies.clocks).as("clock 2 was never ended").containsExactly(0L, 1L);
        applies.held.get(1).complete(null);
        assertThat(clocks.bufferedBytes()).isZero();
    }

    /**
     * A job the proxy stops listing and lists again (registered anew) starts its new run after the old run's ended
     * clocks are applied; meanwhile those clocks are named as unapplied (a graceful stop waits for them).
     */
    @Test
    void shouldApplyANewRunOfAJobListedAgainAfterTheOldRunsClocks() {
        final HeldApplies applies = new HeldApplies();
        final JobClocks clocks = new JobClocks(Runnable::run, applies, 1 << 20);
        endTwoClocks(clocks);

        clocks.update(UpdateJobsRequest.newBuilder().setJobsVersion(2).build(), false);
        assertThat(clocks.unapplied()).as("the dropped job's clocks").contains("job 'j'");
        final UpdateJobsRequest again =
                run(1, true, 7).toBuilder().setJobsVersion(3).build();
        clocks.update(again, false);
        clocks.report("j", 7, -1, true);
        clocks.buffer(TABLE, () -> true, "j", 7, 0, 1, new long[] {1}, new float[] {1f}, JobClocks.NewRows.NONE);
        clocks.report("j", 7, 0, false);
        assertThat(applies.clocks).as("nothing of the new run yet").containsExactly(0L);

        applies.held.get(0).complete(null);
        applies.held.get(1).complete(null);
        assertThat(applies.clocks).containsExactly(0L, 1L, 0L);
        applies.held.get(2).complete(null);
        assertThat(clocks.snapshot("j").applied()).isZero();
        assertThat(clocks.unapplied()).isEmpty();
        assertThat(clocks.bufferedBytes()).isZero();
    }

    /**
     * A shard that missed the list in which a run ended (its last worker left) still sees from the run count that the
     * next list is of another run: the old run's ended clocks are applied, and the new one counts from clock 0 (its
     * first push was refused as of a clock already applied).
     */
    @Test
    void shouldStartOverWhenTheRunCountChangesThoughTheEndOfTheRunWasMissed() {
        final HeldApplies applies = new HeldApplies();
        final JobClocks clocks = new JobClocks(Runnable::run, applies, 1 << 20);
        clocks.update(withRun(run(1, true, 0), 1), false);
        clocks.report("j", 0, -1, true);
        clocks.buffer(TABLE, () -> true, "j", 0, 0, 1, new long[] {1}, new float[] {1f}, JobClocks.NewRows.NONE);
        clocks.report("j", 0, 0, false);
        applies.held.get(0).complete(null);
        clocks.report("j", 0, 1, false);
        assertThat(clocks.snapshot("j").applied()).isEqualTo(1);

        clocks.update(withRun(run(3, true, 5), 2), true);
        assertThat(clocks.snapshot("j").applied()).as("the new run's clocks").isEqualTo(-1);
        assertThat(clocks.route(TABLE, "j", 5, 0)).isEqualTo(JobClocks.Route.BUFFER);
    }

    private static UpdateJobsRequest withRun(final UpdateJobsRequest request, final long run) {
        return request.toBuilder()
                .setJobs(0, request.getJobs(0).toBuilder().setRun(run))
                .build();
    }

    /**
     * A checkpoint's cut waiting for a clock of a run that ends is told so, not left waiting for a clock of the next
     * run that has the same number.
     */
    @Test
    void shouldFailACutsWaitForAClockOfARunThatEnds() {
        final HeldApplies applies = new HeldApplies();
        final JobClocks clocks = new JobClocks(Runnable::run, applies, 1 << 20);
        clocks.update(run(1, true, 0), false);
        clocks.report("j", 0, -1, true);
        final CompletableFuture<Void> cut = clocks.whenApplied("j", 1);
        clocks.update(run(2, false), false);
        assertThat(cut).isCompletedExceptionally();
        assertThat(catchThrowableOfType(java.util.concurrent.CompletionException.class, cut::join))
                .hasMessageContaining("ended");
    }

    @Test
    void shouldRefuseGradientsPastTheBufferLimitAndKeepNothingOfThem() {
        final JobClocks clocks = new JobClocks(Runnable::run, (job, clock, updates, n) -> null, 4096);
        clocks.update(startedJob(), false);
        clocks.report("j", 0, -1, true);
        clocks.buffer(TABLE, () -> true, "j", 0, 0, 1, new long[] {1, 2}, new float[] {1f, 1f}, JobClocks.NewRows.NONE);
        final long held = clocks.bufferedBytes();
        assertThat(held).isPositive();
        final PsException full = catchThrowableOfType(
                PsException.class,
                () -> clocks.buffer(
                        TABLE, () -> true, "j", 0, 0, 1, new long[1000], new float[1000], JobClocks.NewRows.NONE));
        assertThat(full.code()).isEqualTo(Status.Code.RESOURCE_EXHAUSTED);
        assertThat(full).hasMessageContaining("MiB of sync gradients");
        assertThat(clocks.bufferedBytes()).isEqualTo(held);
    }

    @Test
    void shouldGoOnWhenApplyingAClockThrows() {
        final java.util.concurrent.atomic.AtomicInteger calls = new java.util.concurrent.atomic.AtomicInteger();
        final JobClocks clocks = new JobClocks(
                Runnable::run,
                (job, clock, updates, n) -> {
                    if (calls.incrementAndGet() == 1) {
                        throw new IllegalStateException("injected: applying clock " + clock + " failed");
                    }
                    return CompletableFuture.completedFuture(null);
                },
                1 << 20);
        clocks.update(startedJob(), false);
        clocks.report("j", 0, -1, true);
        clocks.buffer(TABLE, () -> true, "j", 0, 0, 1, new long[] {1}, new float[] {1f}, JobClocks.NewRows.NONE);
        clocks.report("j", 0, 0, false);
        assertThat(clocks.snapshot("j").applied())
                .as("a failed clock still ends")
                .isEqualTo(0);
        clocks.buffer(TABLE, () -> true, "j", 0, 1, 1, new long[] {1}, new float[] {1f}, JobClocks.NewRows.NONE);
        clocks.report("j", 0, 1, false);
        assertThat(clocks.snapshot("j").applied()).isEqualTo(1);
        assertThat(calls).hasValue(2);
        assertThat(clocks.bufferedBytes()).isZero();
    }

    /**
     * A clock whose apply throws gives back the new rows its pushes held (its table's cap counted them until then), so
     * that a failed clock leaves no room held for good.
     */
    @Test
    void shouldGiveBackTheRowsAClockHeldWhenApplyingItThrows() throws InterruptedException {
        shard.createTable(TableSchema.newBuilder()
                .setName("capped")
                .setKind(TableKind.SPARSE)
                .setDim(1)
                .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(1f))
                .setMaxRowsPerShard(10)
                .build());
        final io.pscluster.server.table.ParameterTable table = shard.table("capped");
        final JobClocks clocks = new JobClocks(
                Runnable::run,
                (job, clock, updates, n) -> {
                    throw new IllegalStateException("injected: applying clock " + clock + " failed");
                },
                1 << 20);
        clocks.update(startedJob(), false);
        clocks.report("j", 0, -1, true);
        final long[] keys = {1, 2, 3};
        final int[] slots = table.slotsOf(keys);
        clocks.buffer("capped", () -> true, "j", 0, 0, 1, keys, new float[3], held -> {
            final io.pscluster.server.table.ParameterTable.ClockRows rows = held != null ? held : table.clockRows();
            assertThat(rows.hold(keys, slots, table.absentPositions(keys, slots)))
                    .isTrue();
            return rows;
        });
        assertThat(table.rowsCounted()).as("three new rows held").isEqualTo(3);

        clocks.report("j", 0, 0, false);
        assertThat(clocks.snapshot("j").applied())
                .as("a failed clock still ends")
                .isZero();
        assertThat(table.rowsCounted()).as("held rows given back").isZero();
    }

    private static UpdateJobsRequest startedJob() {
        return UpdateJobsRequest.newBuilder()
                .addJobs(JobInfo.newBuilder()
                        .setSpec(JobSpec.newBuilder().setJobId("j").setMode(UpdateMode.SYNC))
                        .setVersion(1)
                        .setStarted(true)
                        .setNextWorkerId(1)
                        .addTables(TABLE)
                        .addWorkers(JobWorker.newBuilder().setWorkerId(0)))
                .setJobsVersion(1)
                .build();
    }

    @Test
    void shouldAnswerJobPendingForAJobOrWorkerTheProxyHasNotAnnouncedYet() {
        final PsException unknownJob = catchThrowableOfType(PsException.class, () -> push(TABLE, 0, 0, 1f));
        assertThat(PsException.rejectOf(PsException.toStatus(unknownJob))).isEqualTo(PsException.Reject.JOB_PENDING);
        jobs(UpdateMode.SYNC, 0, 0);
        final PsException unknownWorker = catchThrowableOfType(PsException.class, () -> push(TABLE, 12, 0, 1f));
        assertThat(PsException.rejectOf(PsException.toStatus(unknownWorker))).isEqualTo(PsException.Reject.JOB_PENDING);
    }
}
