package io.pscluster.proxy;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

import com.google.common.util.concurrent.ListenableFuture;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.InsecureServerCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Server;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.StreamObserver;
import io.pscluster.proto.v1.AdminServiceGrpc;
import io.pscluster.proto.v1.AttachTableRequest;
import io.pscluster.proto.v1.CreateTableRequest;
import io.pscluster.proto.v1.CreateTableResponse;
import io.pscluster.proto.v1.DropTableRequest;
import io.pscluster.proto.v1.DropTableResponse;
import io.pscluster.proto.v1.HeartbeatRequest;
import io.pscluster.proto.v1.HeartbeatResponse;
import io.pscluster.proto.v1.JobInfo;
import io.pscluster.proto.v1.JobSpec;
import io.pscluster.proto.v1.JobWorker;
import io.pscluster.proto.v1.JoinJobRequest;
import io.pscluster.proto.v1.JoinJobResponse;
import io.pscluster.proto.v1.LeaveJobRequest;
import io.pscluster.proto.v1.ListJobsRequest;
import io.pscluster.proto.v1.ProxyServiceGrpc;
import io.pscluster.proto.v1.RegisterJobRequest;
import io.pscluster.proto.v1.RegisterShardRequest;
import io.pscluster.proto.v1.RenewWorkerRequest;
import io.pscluster.proto.v1.ShardAdminServiceGrpc;
import io.pscluster.proto.v1.ShardServiceGrpc;
import io.pscluster.proto.v1.UpdateJobsRequest;
import io.pscluster.proto.v1.UpdateJobsResponse;
import io.pscluster.proto.v1.UpdateMode;
import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.assertj.core.api.ThrowableAssert.ThrowingCallable;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Jobs and worker leases through the proxy over real gRPC, with a fake shard that records the job lists the proxy
 * sends it (and sends no heartbeat, so every list it holds came from a delivery). The shards' lease is long, so the
 * fake shard stays live; the workers' lease is short, so a silent worker lapses within a second.
 */
class ProxyJobsTest {
    // Long enough that a renewal every 50 ms keeps a worker on a loaded machine (800 ms was not, under a full build).
    private static final long WORKER_LEASE_MS = 2_500;
    private static final Duration PATIENCE = Duration.ofSeconds(10);

    @TempDir
    Path root;

    private final List<AutoCloseable> closeables = new ArrayList<>();
    /** Every list the fake shard was sent, in order of arrival. */
    private final List<UpdateJobsRequest> delivered = new CopyOnWriteArrayList<>();

    private ProxyServer proxy;
    private ManagedChannel channel;

    @BeforeEach
    void startProxyAndShard() throws IOException {
        proxy = startProxy();
        final String shard = ProxyServiceGrpc.newBlockingStub(channel)
                .registerShard(RegisterShardRequest.newBuilder()
                        .setAddress(startFakeShard())
                        .setFreshStart(true)
                        .build())
                .getShardId();
        stub().heartbeat(HeartbeatRequest.newBuilder().setShardId(shard).build());
    }

    @AfterEach
    void closeAll() throws Exception {
        for (int i = closeables.size() - 1; i >= 0; i--) {
            closeables.get(i).close();
        }
    }

    private ProxyServer startProxy() throws IOException {
        final ProxyServer started = ProxyServer.start(new ProxyServer.Context()
                .port(0)
                .checkpointRoot(root.toUri().toString())
                .heartbeatIntervalMs(1_000)
                .leaseMs(60_000)
                .leaseMarginMs(1_000)
                .callDeadlineMs(10_000)
                .workerLeaseMs(WORKER_LEASE_MS));
        closeables.add(started::close);
        channel = Grpc.newChannelBuilder("localhost:" + started.port(), InsecureChannelCredentials.create())
                .build();
        final ManagedChannel opened = channel;
        closeables.add(() -> {
            opened.shutdownNow();
            opened.awaitTermination(5, TimeUnit.SECONDS);
        });
        return started;
    }

    /** A shard that creates and drops tables and records the job lists it is sent. */
    private String startFakeShard() throws IOException {
        final Server server = Grpc.newServerBuilderForPort(0, InsecureServerCredentials.create())
                .addService(new ShardAdminServiceGrpc.ShardAdminServiceImplBase() {
                    @Override
                    public void updateJobs(
                            final UpdateJobsRequest request, final StreamObserver<UpdateJobsResponse> out) {
                        delivered.add(request);
                        out.onNext(UpdateJobsResponse.getDefaultInstance());
                        out.onCompleted();
                    }
                })
                .addService(new ShardServiceGrpc.ShardServiceImplBase() {
                    @Override
                    public void createTable(
                            final CreateTableRequest request, final StreamObserver<CreateTableResponse> out) {
                        out.onNext(CreateTableResponse.newBuilder()
                                .setCreated(true)
                                .build());
                        out.onCompleted();
                    }

                    @Override
                    public void dropTable(final DropTableRequest request, final StreamObserver<DropTableResponse> out) {
                        out.onNext(
                                DropTableResponse.newBuilder().setDropped(true).build());
                        out.onCompleted();
                    }
                })
                .build()
                .start();
        closeables.add(() -> {
            server.shutdownNow();
            server.awaitTermination(5, TimeUnit.SECONDS);
        });
        return "localhost:" + server.getPort();
    }

    private ProxyServiceGrpc.ProxyServiceBlockingStub stub() {
        return ProxyServiceGrpc.newBlockingStub(channel).withDeadlineAfter(10, TimeUnit.SECONDS);
    }

    private static JobSpec spec(final String id, final UpdateMode mode, final int staleness, final int expected) {
        return JobSpec.newBuilder()
                .setJobId(id)
                .setMode(mode)
                .setStaleness(staleness)
                .setExpectedWorkers(expected)
                .build();
    }

    private JobInfo register(final JobSpec spec) {
        return stub().registerJob(RegisterJobRequest.newBuilder().setSpec(spec).build())
                .getJob();
    }

    private JoinJobResponse join(final String jobId, final String host) {
        return stub().joinJob(request(jobId, host));
    }

    private ListenableFuture<JoinJobResponse> joinLater(final String jobId, final String host) {
        return ProxyServiceGrpc.newFutureStub(channel)
                .withDeadlineAfter(20, TimeUnit.SECONDS)
                .joinJob(request(jobId, host));
    }

    private static JoinJobRequest request(final String jobId, final String host) {
        return JoinJobRequest.newBuilder().setJobId(jobId).setHost(host).build();
    }

    private void renew(final String jobId, final int worker, final long clock) {
        stub().renewWorker(RenewWorkerRequest.newBuilder()
                .setJobId(jobId)
                .setWorkerId(worker)
                .setClock(clock)
                .build());
    }

    private void leave(final String jobId, final int worker) {
        stub().leaveJob(LeaveJobRequest.newBuilder()
                .setJobId(jobId)
                .setWorkerId(worker)
                .build());
    }

    private void attach(final String jobId, final String table) {
        stub().attachTable(AttachTableRequest.newBuilder()
                .setJobId(jobId)
                .setTable(table)
                .build());
    }

    private void createTable(final String name) {
        stub().createTable(CreateTableRequest.newBuilder()
                .setSchema(ClusterStateFixture.schema(name, 0.5f))
                .build());
    }

    private JobInfo listed(final String jobId) {
        return AdminServiceGrpc.newBlockingStub(channel)
                .withDeadlineAfter(10, TimeUnit.SECONDS)
                .listJobs(ListJobsRequest.getDefaultInstance())
                .getJobsList()
                .stream()
                .filter(job -> job.getSpec().getJobId().equals(jobId))
                .findFirst()
                .orElseThrow(() -> new AssertionError("job " + jobId + " is not listed"));
    }

    private static List<Integer> workerIds(final JobInfo job) {
        return job.getWorkersList().stream().map(JobWorker::getWorkerId).toList();
    }

    /** The job as the last list the fake shard was sent has it. */
    private Optional<JobInfo> lastDelivered(final String jobId) {
        if (delivered.isEmpty()) {
            return Optional.empty();
        }
        return delivered.get(delivered.size() - 1).getJobsList().stream()
                .filter(job -> job.getSpec().getJobId().equals(jobId))
                .findFirst();
    }

    private static void assertRefused(final ThrowingCallable call, final Status.Code code, final String message) {
        assertThatThrownBy(call).isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
            assertThat(e.getStatus().getCode()).isEqualTo(code);
            assertThat(e.getStatus().getDescription()).contains(message);
        });
    }

    @Test
    void shouldAnswerTheRegisteredJobWhenTheSameSpecIsRegisteredAgain() {
        final JobInfo first = register(spec("lr", UpdateMode.SYNC, 0, 2));

        assertThat(register(spec("lr", UpdateMode.SYNC, 0, 2))).isEqualTo(first);
        assertThat(register(spec("lr", UpdateMode.SSP, 0, 2)))
                .as("ssp:0 is sync")
                .isEqualTo(first);
        assertThat(first.getStarted()).isFalse();
        assertRefused(() -> register(spec("lr", UpdateMode.ASYNC, 2, 2)), Status.Code.INVALID_ARGUMENT, "staleness 2");
        assertRefused(() -> register(spec("", UpdateMode.ASYNC, 0, 2)), Status.Code.INVALID_ARGUMENT, "job_id");
    }

    @Test
    void shouldRefuseAnotherSpecWhileTheJobHasWorkersAndTakeItOnceItHasNone() {
        final JobInfo first = register(spec("lr", UpdateMode.SYNC, 0, 1));
        final int worker = join("lr", "host-a").getWorkerId();

        assertRefused(
                () -> register(spec("lr", UpdateMode.SSP, 2, 1)),
                Status.Code.FAILED_PRECONDITION,
                "job 'lr' has 1 live workers under spec {sync, 1 expected workers}; spec {ssp:2, 1 expected"
                        + " workers} is refused");
        leave("lr", worker);
        final JobInfo replaced = register(spec("lr", UpdateMode.SSP, 2, 1));

        assertThat(replaced.getSpec().getMode()).isEqualTo(UpdateMode.SSP);
        assertThat(replaced.getVersion()).isGreaterThan(first.getVersion());
        assertThat(replaced.getStarted()).isFalse();
        assertThat(replaced.getNextWorkerId()).as("worker ids are never reused").isEqualTo(1);
    }

    @Test
    void shouldStartEveryWaitingWorkerAtClockZeroWhenTheLastExpectedOneJoins() throws Exception {
        register(spec("bsp", UpdateMode.SYNC, 0, 3));
        final ListenableFuture<JoinJobResponse> a = joinLater("bsp", "host-a");
        final ListenableFuture<JoinJobResponse> b = joinLater("bsp", "host-b");
        await().atMost(PATIENCE).until(() -> listed("bsp").getWorkersCount() == 2);
        assertThat(a.isDone() || b.isDone())
                .as("nobody is answered before the job starts")
                .isFalse();
        assertThat(listed("bsp").getStarted()).isFalse();

        final JoinJobResponse c = join("bsp", "host-c");
        // Answered only after the shard was sent the started job with all three workers.
        assertThat(lastDelivered("bsp")).hasValueSatisfying(job -> {
            assertThat(job.getStarted()).isTrue();
            assertThat(job.getWorkersCount()).isEqualTo(3);
        });

        final List<JoinJobResponse> answers = List.of(a.get(10, TimeUnit.SECONDS), b.get(10, TimeUnit.SECONDS), c);
        assertThat(answers).extracting(JoinJobResponse::getWorkerId).containsExactlyInAnyOrder(0, 1, 2);
        assertThat(answers).allSatisfy(answer -> {
            assertThat(answer.getStartClock()).isZero();
            assertThat(answer.getLeaseMillis()).isEqualTo(WORKER_LEASE_MS);
            assertThat(answer.getJob().getStarted()).isTrue();
        });
        assertThat(listed("bsp").getWorkersList())
                .extracting(JobWorker::getHost)
                .containsExactlyInAnyOrder("host-a", "host-b", "host-c");
    }

    @Test
    void shouldTakeAWaitingWorkerOutOfTheJobWhenItsDeadlinePasses() throws Exception {
        register(spec("bsp", UpdateMode.SYNC, 0, 2));

        assertThatThrownBy(() -> ProxyServiceGrpc.newBlockingStub(channel)
                        .withDeadlineAfter(300, TimeUnit.MILLISECONDS)
                        .joinJob(request("bsp", "host-a")))
                .isInstanceOfSatisfying(
                        StatusRuntimeException.class,
                        e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.DEADLINE_EXCEEDED));
        await().atMost(PATIENCE).until(() -> listed("bsp").getWorkersCount() == 0);

        // The lapsed joiner does not count: one more join waits, the next starts the job.
        final ListenableFuture<JoinJobResponse> second = joinLater("bsp", "host-b");
        await().atMost(PATIENCE).until(() -> listed("bsp").getWorkersCount() == 1);
        assertThat(second.isDone()).isFalse();
        final JoinJobResponse third = join("bsp", "host-c");
        assertThat(second.get(10, TimeUnit.SECONDS).getWorkerId()).isEqualTo(1);
        assertThat(third.getWorkerId()).isEqualTo(2);
        assertThat(third.getJob().getNextWorkerId()).isEqualTo(3);
    }

    @Test
    void shouldStartAWorkerJoiningARunningJobAtTheHighestClockReported() throws Exception {
        register(spec("lr", UpdateMode.ASYNC, 0, 2));
        final ListenableFuture<JoinJobResponse> first = joinLater("lr", "host-a");
        // The first join is worker 0 only once it reached the proxy: the second waits for that.
        await().atMost(PATIENCE).until(() -> listed("lr").getWorkersCount() == 1);
        join("lr", "host-b");
        assertThat(first.get(10, TimeUnit.SECONDS).getWorkerId()).isZero();
        renew("lr", 0, 7);
        renew("lr", 1, 4);

        final JoinJobResponse late = join("lr", "host-c");

        assertThat(late.getWorkerId()).isEqualTo(2);
        assertThat(late.getStartClock()).isEqualTo(7);
        assertThat(lastDelivered("lr"))
                .hasValueSatisfying(job -> assertThat(workerIds(job)).containsExactly(0, 1, 2));
    }

    @Test
    void shouldDropAWorkerThatStopsRenewingAndSendTheShardTheListWithoutIt() throws Exception {
        register(spec("lr", UpdateMode.SYNC, 0, 2));
        final ListenableFuture<JoinJobResponse> silent = joinLater("lr", "host-a");
        await().atMost(PATIENCE).until(() -> listed("lr").getWorkersCount() == 1);
        final int renewing = join("lr", "host-b").getWorkerId();
        final long start = System.nanoTime();

        // Worker 1 renews at every poll; worker 0 never does.
        await().atMost(PATIENCE).pollInterval(Duration.ofMillis(50)).until(() -> {
            renew("lr", renewing, 1);
            return workerIds(listed("lr")).equals(List.of(renewing));
        });

        assertThat(System.nanoTime() - start).as("not before its lease").isGreaterThan(WORKER_LEASE_MS * 1_000_000L);
        assertThat(silent.get(10, TimeUnit.SECONDS).getWorkerId()).isZero();
        await().atMost(Duration.ofSeconds(2))
                .until(() -> lastDelivered("lr")
                        .map(job -> workerIds(job).equals(List.of(renewing)))
                        .orElse(false));
        assertRefused(
                () -> renew("lr", 0, 1),
                Status.Code.FAILED_PRECONDITION,
                "worker 0 of job 'lr' is no longer a member (its lease lapsed ");
        assertRefused(
                () -> renew("lr", 9, 1),
                Status.Code.FAILED_PRECONDITION,
                "worker 9 of job 'lr' is no longer a member (the proxy never gave out that id); join again");
    }

    @Test
    void shouldRemoveALeavingWorkerAtOnceAndAnswerLeavesTwice() {
        register(spec("lr", UpdateMode.ASYNC, 0, 1));
        final int worker = join("lr", "host-a").getWorkerId();

        leave("lr", worker);

        assertThat(lastDelivered("lr"))
                .hasValueSatisfying(job -> assertThat(job.getWorkersList()).isEmpty());
        assertThat(listed("lr").getWorkersList()).isEmpty();
        assertThat(listed("lr").getIdleSinceMillis()).isPositive();
        leave("lr", worker);
        leave("gone", 3);
        assertRefused(() -> renew("lr", worker, 1), Status.Code.FAILED_PRECONDITION, "(it left ");
        assertRefused(() -> join("nope", "host"), Status.Code.NOT_FOUND, "job 'nope' is not registered");
    }

    @Test
    void shouldRefuseToMixUpdateModesOnATableAndLetAsyncJobsShareIt() {
        createTable("emb");
        createTable("wide");
        register(spec("lr", UpdateMode.SYNC, 0, 1));
        attach("lr", "emb");
        join("lr", "host-a");
        register(spec("x", UpdateMode.ASYNC, 0, 1));
        register(spec("y", UpdateMode.SYNC, 0, 1));

        assertRefused(
                () -> attach("x", "emb"),
                Status.Code.FAILED_PRECONDITION,
                "table 'emb' is updated by job 'lr' in sync mode; job 'x' asks for async: a table takes one update"
                        + " mode at a time");
        assertRefused(
                () -> attach("y", "emb"),
                Status.Code.FAILED_PRECONDITION,
                "table 'emb' is updated by job 'lr' in sync mode; job 'y' asks for sync too");
        assertRefused(() -> attach("x", "missing"), Status.Code.NOT_FOUND, "table 'missing'");
        assertRefused(() -> attach("nope", "emb"), Status.Code.NOT_FOUND, "job 'nope'");

        attach("x", "wide");
        join("x", "host-b");
        register(spec("z", UpdateMode.ASYNC, 0, 1));
        attach("z", "wide");
        attach("z", "wide");
        join("z", "host-c");

        assertThat(listed("x").getTablesList()).containsExactly("wide");
        assertThat(listed("z").getTablesList()).containsExactly("wide");
        assertThat(listed("lr").getTablesList()).containsExactly("emb");
        assertThat(lastDelivered("z"))
                .hasValueSatisfying(job -> assertThat(job.getTablesList()).containsExactly("wide"));
    }

    @Test
    void shouldRefuseTheFirstWorkerOfAJobWhenAnotherModeTookItsTableMeanwhile() {
        createTable("emb");
        register(spec("lr", UpdateMode.SYNC, 0, 1));
        attach("lr", "emb");
        register(spec("x", UpdateMode.ASYNC, 0, 1));
        attach("x", "emb");
        join("x", "host-a");

        assertRefused(
                () -> join("lr", "host-b"),
                Status.Code.FAILED_PRECONDITION,
                "table 'emb' is updated by job 'x' in async mode; job 'lr' asks for sync");
        assertThat(listed("lr").getWorkersList()).isEmpty();
    }

    @Test
    void shouldRemoveADroppedTableFromEveryJob() {
        createTable("emb");
        register(spec("lr", UpdateMode.ASYNC, 0, 1));
        attach("lr", "emb");

        stub().dropTable(DropTableRequest.newBuilder().setTable("emb").build());

        assertThat(listed("lr").getTablesList()).isEmpty();
        await().atMost(PATIENCE)
                .until(() -> lastDelivered("lr")
                        .map(job -> job.getTablesCount() == 0)
                        .orElse(false));
    }

    @Test
    void shouldCarryTheJobListInAHeartbeatAnswerWhenTheShardsVersionDiffers() {
        register(spec("lr", UpdateMode.ASYNC, 0, 1));
        final String shard = ProxyServiceGrpc.newBlockingStub(channel)
                .registerShard(RegisterShardRequest.newBuilder()
                        .setAddress("localhost:1")
                        .setFreshStart(true)
                        .build())
                .getShardId();

        final HeartbeatResponse first =
                stub().heartbeat(HeartbeatRequest.newBuilder().setShardId(shard).build());

        assertThat(first.hasJobs()).as("a fresh shard holds version 0").isTrue();
        assertThat(first.getJobs().getJobsList())
                .extracting(job -> job.getSpec().getJobId())
                .containsExactly("lr");
        final long version = first.getJobs().getJobsVersion();
        assertThat(version).isEqualTo(listed("lr").getVersion());
        assertThat(stub().heartbeat(HeartbeatRequest.newBuilder()
                                .setShardId(shard)
                                .setJobsVersion(version)
                                .build())
                        .hasJobs())
                .isFalse();
    }

    @Test
    void shouldKeepJobsTablesAndWorkersWhenRestartedOnTheSameStateDir() throws Exception {
        createTable("emb");
        register(spec("lr", UpdateMode.SYNC, 0, 1));
        attach("lr", "emb");
        final JoinJobResponse joined = join("lr", "host-a");
        renew("lr", joined.getWorkerId(), 5);
        final long renewed = System.nanoTime();
        register(spec("waits", UpdateMode.SYNC, 0, 2));
        final ListenableFuture<JoinJobResponse> waiting = joinLater("waits", "host-b");
        await().atMost(PATIENCE).until(() -> listed("waits").getWorkersCount() == 1);

        proxy.close();
        assertThatThrownBy(() -> waiting.get(10, TimeUnit.SECONDS)).isInstanceOf(ExecutionException.class);
        // Down for longer than a worker lease: the lease must restart with the proxy, not count the downtime.
        await().atMost(PATIENCE).until(() -> System.nanoTime() - renewed > 2 * WORKER_LEASE_MS * 1_000_000L);
        proxy = startProxy();

        final JobInfo lr = listed("lr");
        assertThat(lr.getStarted()).isTrue();
        assertThat(lr.getTablesList()).containsExactly("emb");
        assertThat(lr.getWorkersList()).singleElement().satisfies(worker -> {
            assertThat(worker.getWorkerId()).isEqualTo(joined.getWorkerId());
            assertThat(worker.getHost()).isEqualTo("host-a");
            assertThat(worker.getClock()).isEqualTo(5);
            assertThat(worker.getMillisSinceRenewal()).isLessThan(WORKER_LEASE_MS);
        });
        renew("lr", joined.getWorkerId(), 6);
        final JobInfo waits = listed("waits");
        assertThat(waits.getWorkersList())
                .as("its join ended with the old proxy")
                .isEmpty();
        assertThat(waits.getNextWorkerId()).isEqualTo(1);
    }
}
