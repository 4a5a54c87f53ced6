package io.pscluster.server;

import static org.assertj.core.api.Assertions.assertThat;
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
        assertThat(shard.endClock("j", worker, clock).join().accepted()).isTrue();
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
        // In float, (1 + 1e8) - 1e8 is 0 and (-1e8 + 1e8) + 1 is 1: the order of the sum shows in the result. The
        // pushes arrive in reverse worker order.
        push(TABLE, 2, 0, -1e8f);
        push(TABLE, 1, 0, 1e8f);
        push(TABLE, 0, 0, 1f);
        end(2, 0);
        end(1, 0);
        end(0, 0);
        await().atMost(Duration.ofSeconds(10)).until(() -> applied() == 0);
        final float inWorkerOrder = -((1f + 1e8f) + -1e8f);
        assertThat(value(TABLE)).isEqualTo(inWorkerOrder).isZero();
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
    void shouldStopWaitingForADroppedWorkerAndDiscardItsGradients() throws InterruptedException {
        jobs(UpdateMode.SYNC, 0, 0, 1);
        push(TABLE, 0, 0, 1f);
        push(TABLE, 1, 0, 2f);
        end(0, 0);
        final CompletableFuture<Throwable> dropped = new CompletableFuture<>();
        shard.whenReadable(new Shard.JobTag("j", 1, 1), () -> {}, dropped::complete);
        jobs(UpdateMode.SYNC, 0, 0);
        await().atMost(Duration.ofSeconds(10)).until(() -> applied() == 0);
        assertThat(value(TABLE)).as("only worker 0's gradient").isEqualTo(-1f);
        assertThat(dropped.join()).hasMessageContaining("no longer a member");
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
        final JobClocks.Reported tooLate = shard.endClock("j", 3, 0).join();
        assertThat(tooLate.accepted()).isFalse();
        assertThat(tooLate.applied()).isEqualTo(1);
        assertThat(shard.endClock("j", 3, 1).join().accepted()).isTrue();
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
    void shouldAnswerJobPendingForAJobOrWorkerTheProxyHasNotAnnouncedYet() {
        final PsException unknownJob = catchThrowableOfType(PsException.class, () -> push(TABLE, 0, 0, 1f));
        assertThat(PsException.rejectOf(PsException.toStatus(unknownJob))).isEqualTo(PsException.Reject.JOB_PENDING);
        jobs(UpdateMode.SYNC, 0, 0);
        final PsException unknownWorker = catchThrowableOfType(PsException.class, () -> push(TABLE, 12, 0, 1f));
        assertThat(PsException.rejectOf(PsException.toStatus(unknownWorker))).isEqualTo(PsException.Reject.JOB_PENDING);
    }
}
