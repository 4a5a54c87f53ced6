package io.pscluster.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import io.grpc.Status;
import io.pscluster.proto.v1.JobInfo;
import io.pscluster.proto.v1.JobSpec;
import io.pscluster.proto.v1.JobWorker;
import io.pscluster.proto.v1.JoinJobResponse;
import io.pscluster.proto.v1.UpdateMode;
import java.util.Optional;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;

/**
 * The job registry on the fixture's hand-moved clock, with no shard to deliver to and deliveries run on the calling
 * thread, so that every lease boundary is exact: worker leases, idle jobs, a failed save, clocks saved lazily, and
 * what a restart keeps.
 */
class JobRegistryTest extends ClusterStateFixture {
    private static final long WORKER_LEASE_MILLIS = 3_000;
    private static final long IDLE_MILLIS = 600_000;

    private final AtomicLong wallMillis = new AtomicLong(1_800_000_000_000L);
    private JobRegistry jobs = open(state);

    private JobRegistry open(final ClusterState on) {
        final JobRegistry registry = JobRegistry.open(
                on,
                new JobRegistry.Settings(WORKER_LEASE_MILLIS, IDLE_MILLIS),
                new ShardFanOut(new ShardChannels(io.grpc.InsecureChannelCredentials.create()), Runnable::run, 1_000),
                Runnable::run,
                nanos::get,
                wallMillis::get);
        registry.startLeases();
        return registry;
    }

    private static JobSpec spec(final String id, final UpdateMode mode, final int expectedWorkers) {
        return JobSpec.newBuilder()
                .setJobId(id)
                .setMode(mode)
                .setExpectedWorkers(expectedWorkers)
                .build();
    }

    private JoinJobResponse joinNow(final String jobId) {
        final JobRegistry.Joining joining = jobs.join(jobId, "host", io.grpc.Context.ROOT);
        assertThat(joining.answer()).as("answered at once").isCompleted();
        return joining.answer().join();
    }

    private JobInfo job(final String id) {
        return jobs.list().stream()
                .filter(job -> job.getSpec().getJobId().equals(id))
                .findFirst()
                .orElse(null);
    }

    private void advance(final long millis) {
        advanceMillis(millis);
        wallMillis.addAndGet(millis);
    }

    @Test
    void shouldNotCountAPauseOfTheProxyItselfAgainstAWorkersLease() {
        jobs.register(spec("paused", UpdateMode.ASYNC, 1));
        final int worker = joinNow("paused").getWorkerId();
        final long tick = JobRegistry.CHECK_INTERVAL_MS;
        jobs.detectOwnPauses(
                java.util.concurrent.TimeUnit.MILLISECONDS.toNanos(tick),
                java.util.concurrent.TimeUnit.MILLISECONDS.toNanos(300));

        // The proxy did not run for three worker leases: the check after it drops nobody.
        advance(3 * WORKER_LEASE_MILLIS);
        jobs.check();
        assertThat(job("paused").getWorkersList())
                .extracting(JobWorker::getWorkerId)
                .containsExactly(worker);

        // Checks on time from then on: a worker that never renews is dropped after a lease of running time.
        for (long ran = 0; ran < WORKER_LEASE_MILLIS - 2 * tick; ran += tick) {
            advance(tick);
            jobs.check();
        }
        assertThat(job("paused").getWorkersList()).hasSize(1);
        for (long ran = 0; ran < 3 * tick; ran += tick) {
            advance(tick);
            jobs.check();
        }
        assertThat(job("paused").getWorkersList()).isEmpty();
    }

    @Test
    void shouldDropALiveWorkerOnlyOnceItsLeaseHasLapsedSinceItsLastRenewal() {
        jobs.register(spec("lr", UpdateMode.ASYNC, 1));
        final int worker = joinNow("lr").getWorkerId();
        advance(WORKER_LEASE_MILLIS - 1);
        jobs.renew("lr", worker, 3);
        advance(WORKER_LEASE_MILLIS);
        jobs.check();
        assertThat(job("lr").getWorkersList())
                .extracting(JobWorker::getWorkerId)
                .containsExactly(worker);

        advance(1);
        jobs.check();

        assertThat(job("lr").getWorkersList()).isEmpty();
        assertThat(job("lr").getIdleSinceMillis()).isEqualTo(wallMillis.get());
        assertStatus(() -> jobs.renew("lr", worker, 4), Status.Code.FAILED_PRECONDITION);
    }

    @Test
    void shouldRemoveAJobThatHadNoWorkerForTheIdleDelay() {
        jobs.register(spec("lr", UpdateMode.ASYNC, 1));
        final long version = jobs.published().getJobsVersion();
        advance(IDLE_MILLIS - 1);
        jobs.check();
        assertThat(job("lr")).isNotNull();

        advance(1);
        jobs.check();

        assertThat(jobs.list()).isEmpty();
        assertThat(jobs.published().getJobsVersion()).isGreaterThan(version);
        assertThat(store.saved().getJobsList()).isEmpty();
    }

    @Test
    void shouldChangeNothingWhenTheSaveFails() {
        jobs.register(spec("lr", UpdateMode.SYNC, 2));
        final long version = jobs.published().getJobsVersion();
        store.failSaves.set(true);

        assertStatus(() -> jobs.join("lr", "host", io.grpc.Context.ROOT), Status.Code.UNAVAILABLE);
        assertStatus(() -> jobs.register(spec("other", UpdateMode.ASYNC, 1)), Status.Code.UNAVAILABLE);

        assertThat(jobs.list()).extracting(job -> job.getSpec().getJobId()).containsExactly("lr");
        assertThat(job("lr").getWorkersCount()).isZero();
        assertThat(job("lr").getNextWorkerId()).isZero();
        assertThat(jobs.published().getJobsVersion()).isEqualTo(version);
    }

    /** Each start of a run counts: a shard that missed the list in which a run ended still tells the next one. */
    @Test
    void shouldCountTheRunsOfAJob() {
        jobs.register(spec("runs", UpdateMode.SYNC, 1));
        assertThat(job("runs").getRun()).isZero();
        final int first =
                jobs.join("runs", "host", io.grpc.Context.ROOT).answer().join().getWorkerId();
        assertThat(job("runs").getRun()).isEqualTo(1);
        jobs.leave("runs", first).join();
        assertThat(job("runs").getStarted()).isFalse();
        final JoinJobResponse second =
                jobs.join("runs", "host", io.grpc.Context.ROOT).answer().join();
        assertThat(job("runs").getRun()).isEqualTo(2);
        assertThat(second.getJoinedRunning()).as("the run starts with it").isFalse();

        // One more joins the running run before any clock was renewed: clock 0, but no state of the run's start.
        final JoinJobResponse late =
                jobs.join("runs", "host", io.grpc.Context.ROOT).answer().join();
        assertThat(late.getStartClock()).isZero();
        assertThat(late.getJoinedRunning()).isTrue();
    }

    @Test
    void shouldTakeAJoiningWorkerOutWhenItsCallIsCancelled() {
        jobs.register(spec("bsp", UpdateMode.SYNC, 2));
        final io.grpc.Context.CancellableContext call = io.grpc.Context.ROOT.withCancellation();
        final JobRegistry.Joining joining = jobs.join("bsp", "host", call);
        assertThat(job("bsp").getWorkersCount()).isEqualTo(1);

        call.cancel(null);

        assertThat(job("bsp").getWorkersList()).isEmpty();
        assertThat(job("bsp").getStarted()).isFalse();
        assertThat(joining.answer()).isCompletedExceptionally();
        // The next two joins start the job: the cancelled one does not count.
        final JobRegistry.Joining second = jobs.join("bsp", "host", io.grpc.Context.ROOT);
        assertThat(second.answer()).isNotDone();
        final JobRegistry.Joining third = jobs.join("bsp", "host", io.grpc.Context.ROOT);
        assertThat(second.answer().join().getWorkerId()).isEqualTo(1);
        assertThat(third.answer().join().getWorkerId()).isEqualTo(2);
    }

    @Test
    void shouldGiveEachWorkerTheRankItAsksForOrTheLowestNoMemberHolds() {
        jobs.register(spec("ranks", UpdateMode.ASYNC, 1));
        final JoinJobResponse three =
                jobs.join("ranks", "host", 3, io.grpc.Context.ROOT).answer().join();
        final JoinJobResponse any = joinNow("ranks");
        final JoinJobResponse next = joinNow("ranks");
        assertThat(three.getRank()).isEqualTo(3);
        assertThat(any.getRank()).isEqualTo(1);
        assertThat(next.getRank()).isEqualTo(2);
        assertStatus(() -> jobs.join("ranks", "host", 2, io.grpc.Context.ROOT), Status.Code.ALREADY_EXISTS);
        assertStatus(() -> jobs.join("ranks", "host", -1, io.grpc.Context.ROOT), Status.Code.INVALID_ARGUMENT);

        // A rank is free again once its worker left; the record keeps each worker's rank across a restart.
        jobs.leave("ranks", any.getWorkerId()).join();
        assertThat(joinNow("ranks").getRank()).isEqualTo(1);
        assertThat(open(open(store, Optional.empty())).list().get(0).getWorkersList())
                .extracting(JobWorker::getRank)
                .containsExactlyInAnyOrder(3, 2, 1);
    }

    @Test
    void shouldSaveReportedClocksAtMostOnceASecondWithoutANewVersion() {
        jobs.register(spec("lr", UpdateMode.ASYNC, 1));
        final int worker = joinNow("lr").getWorkerId();
        final long version = jobs.published().getJobsVersion();
        final int saves = store.saves.get();

        jobs.renew("lr", worker, 9);
        jobs.check();
        assertThat(store.saves.get()).as("not yet due").isEqualTo(saves);
        advance(JobRegistry.CLOCK_SAVE_INTERVAL_MS);
        jobs.renew("lr", worker, 10);
        jobs.check();

        assertThat(store.saves.get()).isEqualTo(saves + 1);
        assertThat(store.saved().getJobs(0).getWorkers(0).getClock()).isEqualTo(10);
        assertThat(store.saved().getJobsVersion()).isEqualTo(version);
        assertThat(jobs.published().getJobsVersion()).isEqualTo(version);
    }

    @Test
    void shouldKeepStartedJobsAndDropWaitingWorkersWhenReopened() {
        jobs.register(spec("lr", UpdateMode.SYNC, 1));
        final int worker = joinNow("lr").getWorkerId();
        jobs.renew("lr", worker, 5);
        jobs.register(spec("waits", UpdateMode.SYNC, 2));
        jobs.join("waits", "host", io.grpc.Context.ROOT);
        jobs.close();
        state.close();

        advance(10 * WORKER_LEASE_MILLIS);
        final ClusterState reopened = open(store, Optional.empty());
        jobs = open(reopened);

        assertThat(job("lr").getStarted()).isTrue();
        assertThat(job("lr").getWorkersList()).singleElement().satisfies(w -> {
            assertThat(w.getWorkerId()).isEqualTo(worker);
            assertThat(w.getClock()).as("saved when the proxy closed").isEqualTo(5);
            assertThat(w.getMillisSinceRenewal()).as("a fresh lease").isZero();
        });
        assertThat(job("waits").getWorkersList()).isEmpty();
        assertThat(job("waits").getNextWorkerId()).isEqualTo(1);
        advance(WORKER_LEASE_MILLIS);
        jobs.check();
        assertThat(jobs.renew("lr", worker, 6).getJob().getWorkersCount()).isEqualTo(1);
    }

    /**
     * A worker resumed when the proxy restarts has a grace beyond its lease for its first renewal: its SDK reconnects
     * on gRPC's backoff, seconds after the proxy is back (a hostile review's job died on every proxy restart). Once it
     * renewed, its lease is the usual one again; a worker that never renews is dropped after lease + grace.
     */
    @Test
    void shouldGiveWorkersResumedAfterARestartAGraceForTheirFirstRenewal() {
        jobs.register(spec("slow", UpdateMode.ASYNC, 2));
        final JobRegistry.Joining first = jobs.join("slow", "a", io.grpc.Context.ROOT);
        final JobRegistry.Joining second = jobs.join("slow", "b", io.grpc.Context.ROOT);
        final int renews = first.answer().join().getWorkerId();
        final int silent = second.answer().join().getWorkerId();
        jobs.close();
        state.close();
        jobs = open(open(store, Optional.empty()));

        advance(WORKER_LEASE_MILLIS + JobRegistry.RESTART_GRACE_MS / 2);
        jobs.check();
        assertThat(job("slow").getWorkersList())
                .as("within lease + grace of the restart")
                .extracting(JobWorker::getWorkerId)
                .containsExactlyInAnyOrder(renews, silent);
        // One keeps renewing, the other stays silent, until past lease + grace of the restart.
        for (long since = WORKER_LEASE_MILLIS + JobRegistry.RESTART_GRACE_MS / 2;
                since <= WORKER_LEASE_MILLIS + JobRegistry.RESTART_GRACE_MS;
                since += 1_000) {
            jobs.renew("slow", renews, since);
            advance(1_000);
            jobs.check();
        }
        assertThat(job("slow").getWorkersList())
                .as("the silent one past lease + grace; the other renewed")
                .extracting(JobWorker::getWorkerId)
                .containsExactly(renews);
        advance(WORKER_LEASE_MILLIS + 1);
        jobs.check();
        assertThat(job("slow").getWorkersList())
                .as("a plain lease after its renewal")
                .isEmpty();
    }
}
