package io.pscluster.proxy;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;
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
import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.proto.v1.AdminServiceGrpc;
import io.pscluster.proto.v1.AwaitPauseRequest;
import io.pscluster.proto.v1.AwaitPauseResponse;
import io.pscluster.proto.v1.CheckpointNowRequest;
import io.pscluster.proto.v1.CheckpointNowResponse;
import io.pscluster.proto.v1.CheckpointProgressRequest;
import io.pscluster.proto.v1.CheckpointProgressResponse;
import io.pscluster.proto.v1.HeartbeatRequest;
import io.pscluster.proto.v1.JobSpec;
import io.pscluster.proto.v1.JoinJobRequest;
import io.pscluster.proto.v1.JoinJobResponse;
import io.pscluster.proto.v1.LeaveJobRequest;
import io.pscluster.proto.v1.PausedRequest;
import io.pscluster.proto.v1.PausedResponse;
import io.pscluster.proto.v1.ProxyServiceGrpc;
import io.pscluster.proto.v1.RegisterJobRequest;
import io.pscluster.proto.v1.RegisterShardRequest;
import io.pscluster.proto.v1.ShardAdminServiceGrpc;
import io.pscluster.proto.v1.UpdateJobsRequest;
import io.pscluster.proto.v1.UpdateJobsResponse;
import io.pscluster.proto.v1.UpdateMode;
import io.pscluster.proto.v1.WriteCheckpointRequest;
import io.pscluster.proto.v1.WriteCheckpointResponse;
import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Checkpoint pauses through a real proxy over gRPC on loopback, the workers being raw calls (as the SDK makes them:
 * AwaitPause, Paused, LeaveJob) and the shard a fake that cuts at once (or when a test lets it) and writes no file:
 * which workers a pause waits for, a paused call that ends before the cut, and the pause ids a worker sees across a
 * restart of the proxy.
 */
class WorkerPausesTest {
    /** Long: a test that wrongly waits for a worker shows as a per-shard cut, not as a slow pass. */
    private static final long PAUSE_MS = 20_000;

    @TempDir
    Path root;

    private final List<AutoCloseable> closeables = new ArrayList<>();
    /** Held by the fake shard's WriteCheckpoint until counted down (1 when a test wants the cut held). */
    private volatile CountDownLatch cutHeld = new CountDownLatch(0);

    private ProxyServer proxy;
    private ManagedChannel channel;
    private String shardAddress;
    private String shardId;

    @BeforeEach
    void startProxyAndShard() throws IOException {
        shardAddress = startFakeShard();
        startProxy();
        shardId = stub().registerShard(RegisterShardRequest.newBuilder()
                        .setAddress(shardAddress)
                        .setFreshStart(true)
                        .build())
                .getShardId();
        stub().heartbeat(HeartbeatRequest.newBuilder().setShardId(shardId).build());
    }

    @AfterEach
    void closeAll() throws Exception {
        for (int i = closeables.size() - 1; i >= 0; i--) {
            closeables.get(i).close();
        }
    }

    /**
     * A worker polls with the id of the last pause it saw; after a restart the proxy's next pause must still be newer
     * than that, or the worker never hears of it and every checkpoint is a per-shard cut.
     */
    @Test
    void shouldAskAWorkerToPauseAfterAProxyRestartWithAnIdAboveTheOldOnes() throws Exception {
        final JoinJobResponse worker = joinOne("restart");
        final long before = pauseAndCut("restart", worker, 0).pauseId();

        closeProxy();
        startProxy();
        stub().heartbeat(HeartbeatRequest.newBuilder().setShardId(shardId).build());

        final Cut after = pauseAndCut("restart", worker, before);
        assertThat(after.pauseId()).isGreaterThan(before);
        assertThat(after.cut()).startsWith("workers paused: job 'restart' (1 worker at clock 7)");
    }

    /**
     * Of two workers, one pauses and the other leaves the job instead: the pause does not wait for the one that left
     * (until the timeout), and the checkpoint is one cut holding the state of the one that paused only.
     */
    @Test
    void shouldNotWaitForAWorkerThatLeftDuringThePause() throws Exception {
        register("leaving", 2);
        final ListenableFuture<JoinJobResponse> first = joinLater("leaving");
        final JoinJobResponse second =
                stub().joinJob(JoinJobRequest.newBuilder().setJobId("leaving").build());
        final JoinJobResponse paused = first.get(10, TimeUnit.SECONDS);

        final ListenableFuture<CheckpointNowResponse> checkpoint = AdminServiceGrpc.newFutureStub(channel)
                .withDeadlineAfter(60, TimeUnit.SECONDS)
                .checkpointNow(CheckpointNowRequest.getDefaultInstance());
        final AwaitPauseResponse asked = awaitPause("leaving", paused, 0);
        final ListenableFuture<PausedResponse> resumed = pausedLater("leaving", paused, asked.getPauseId());
        stub().leaveJob(LeaveJobRequest.newBuilder()
                .setJobId("leaving")
                .setWorkerId(second.getWorkerId())
                .build());

        final CheckpointNowResponse taken = checkpoint.get(PAUSE_MS / 2, TimeUnit.MILLISECONDS);
        assertThat(taken.getCut()).isEqualTo("workers paused: job 'leaving' (1 worker at clock 7)");
        assertThat(resumed.get(10, TimeUnit.SECONDS).getCheckpointId())
                .isEqualTo(taken.getCheckpoint().getId());
        final Map<String, String> properties = new CheckpointStore(root.toUri(), new Configuration())
                .get(taken.getCheckpoint().getId())
                .orElseThrow()
                .manifest()
                .properties();
        assertThat(properties).containsKey("job-state/leaving/" + paused.getRank());
        assertThat(properties).doesNotContainKey("job-state/leaving/" + second.getRank());
    }

    /**
     * A paused worker whose Paused call ends (its deadline here) before the shards have cut may be pushing again: the
     * proxy hears of it through the call's cancellation, and the checkpoint is a per-shard cut without job states.
     */
    @Test
    void shouldCutPerShardWithoutStatesWhenAPausedWorkersCallEndsBeforeTheCut() throws Exception {
        final JoinJobResponse worker = joinOne("abandoned");
        cutHeld = new CountDownLatch(1);
        final ListenableFuture<CheckpointNowResponse> checkpoint = AdminServiceGrpc.newFutureStub(channel)
                .withDeadlineAfter(60, TimeUnit.SECONDS)
                .checkpointNow(CheckpointNowRequest.getDefaultInstance());
        final AwaitPauseResponse asked = awaitPause("abandoned", worker, 0);
        final StatusRuntimeException ended = catchThrowableOfType(
                () -> ProxyServiceGrpc.newBlockingStub(channel)
                        .withDeadlineAfter(300, TimeUnit.MILLISECONDS)
                        .paused(pausedRequest("abandoned", worker, asked.getPauseId())),
                StatusRuntimeException.class);
        assertThat(ended.getStatus().getCode()).isEqualTo(Status.Code.DEADLINE_EXCEEDED);
        try {
            await().atMost(Duration.ofSeconds(10))
                    .until(() -> proxy.pauses().brokenNow().isPresent());
        } finally {
            cutHeld.countDown();
        }

        final CheckpointNowResponse taken = checkpoint.get(60, TimeUnit.SECONDS);
        assertThat(taken.getCut())
                .startsWith("per shard: worker abandoned/" + worker.getWorkerId() + " went on before every shard had"
                        + " cut");
        assertThat(new CheckpointStore(root.toUri(), new Configuration())
                        .get(taken.getCheckpoint().getId())
                        .orElseThrow()
                        .manifest()
                        .properties())
                .noneSatisfy((key, value) -> assertThat(key).startsWith("job-state/abandoned/"));
    }

    /** A pause's id and the cut of its checkpoint. */
    private record Cut(long pauseId, String cut) {}

    /** Takes a checkpoint while {@code worker} (the job's only one) polls after {@code after} and pauses at clock 7. */
    private Cut pauseAndCut(final String job, final JoinJobResponse worker, final long after) throws Exception {
        final ListenableFuture<CheckpointNowResponse> checkpoint = AdminServiceGrpc.newFutureStub(channel)
                .withDeadlineAfter(60, TimeUnit.SECONDS)
                .checkpointNow(CheckpointNowRequest.getDefaultInstance());
        final AwaitPauseResponse asked = awaitPause(job, worker, after);
        if (asked.getPauseId() == 0) {
            // Not asked: the checkpoint goes on without this worker, after the pause timeout.
            return new Cut(0, checkpoint.get(60, TimeUnit.SECONDS).getCut());
        }
        assertThat(asked.getPauseTimeoutMillis()).isEqualTo(PAUSE_MS);
        final ListenableFuture<PausedResponse> resumed = pausedLater(job, worker, asked.getPauseId());
        final CheckpointNowResponse taken = checkpoint.get(60, TimeUnit.SECONDS);
        assertThat(resumed.get(10, TimeUnit.SECONDS).getCheckpointId())
                .isEqualTo(taken.getCheckpoint().getId());
        return new Cut(asked.getPauseId(), taken.getCut());
    }

    /**
     * The worker's poll: answered when a pause newer than {@code after} is in force, else empty (pause id 0) after the
     * proxy's poll time, well within the pause timeout.
     */
    private AwaitPauseResponse awaitPause(final String job, final JoinJobResponse worker, final long after) {
        return ProxyServiceGrpc.newBlockingStub(channel)
                .withDeadlineAfter(WorkerPauses.POLL_MILLIS + 10_000, TimeUnit.MILLISECONDS)
                .awaitPause(AwaitPauseRequest.newBuilder()
                        .setJobId(job)
                        .setWorkerId(worker.getWorkerId())
                        .setAfterPauseId(after)
                        .build());
    }

    private ListenableFuture<PausedResponse> pausedLater(
            final String job, final JoinJobResponse worker, final long pauseId) {
        return ProxyServiceGrpc.newFutureStub(channel)
                .withDeadlineAfter(60, TimeUnit.SECONDS)
                .paused(pausedRequest(job, worker, pauseId));
    }

    private static PausedRequest pausedRequest(final String job, final JoinJobResponse worker, final long pauseId) {
        return PausedRequest.newBuilder()
                .setJobId(job)
                .setWorkerId(worker.getWorkerId())
                .setPauseId(pauseId)
                .setClock(7)
                .setState(com.google.protobuf.ByteString.copyFromUtf8("worker " + worker.getWorkerId()))
                .build();
    }

    private void register(final String job, final int expected) {
        stub().registerJob(RegisterJobRequest.newBuilder()
                .setSpec(JobSpec.newBuilder()
                        .setJobId(job)
                        .setMode(UpdateMode.ASYNC)
                        .setExpectedWorkers(expected))
                .build());
    }

    private JoinJobResponse joinOne(final String job) {
        register(job, 1);
        return stub().joinJob(JoinJobRequest.newBuilder().setJobId(job).build());
    }

    private ListenableFuture<JoinJobResponse> joinLater(final String job) {
        return ProxyServiceGrpc.newFutureStub(channel)
                .withDeadlineAfter(20, TimeUnit.SECONDS)
                .joinJob(JoinJobRequest.newBuilder().setJobId(job).build());
    }

    private ProxyServiceGrpc.ProxyServiceBlockingStub stub() {
        return ProxyServiceGrpc.newBlockingStub(channel).withDeadlineAfter(10, TimeUnit.SECONDS);
    }

    private void startProxy() throws IOException {
        final ProxyServer started = ProxyServer.start(new ProxyServer.Context()
                .port(0)
                .checkpointRoot(root.toUri().toString())
                .heartbeatIntervalMs(1_000)
                .leaseMs(60_000)
                .leaseMarginMs(1_000)
                .callDeadlineMs(10_000)
                .workerLeaseMs(60_000)
                .checkpointPauseMs(PAUSE_MS));
        proxy = started;
        channel = Grpc.newChannelBuilder("localhost:" + started.port(), InsecureChannelCredentials.create())
                .build();
        final ProxyServer closing = started;
        final ManagedChannel opened = channel;
        closeables.add(() -> {
            opened.shutdownNow();
            opened.awaitTermination(5, TimeUnit.SECONDS);
            closing.close();
        });
    }

    private void closeProxy() throws Exception {
        closeables.remove(closeables.size() - 1).close();
    }

    /** A shard that takes job lists and cuts every checkpoint at once: all the slots asked for, no file. */
    private String startFakeShard() throws IOException {
        final Server server = Grpc.newServerBuilderForPort(0, InsecureServerCredentials.create())
                .addService(new ShardAdminServiceGrpc.ShardAdminServiceImplBase() {
                    @Override
                    public void updateJobs(
                            final UpdateJobsRequest request, final StreamObserver<UpdateJobsResponse> out) {
                        out.onNext(UpdateJobsResponse.getDefaultInstance());
                        out.onCompleted();
                    }

                    @Override
                    public void writeCheckpoint(
                            final WriteCheckpointRequest request, final StreamObserver<WriteCheckpointResponse> out) {
                        try {
                            cutHeld.await(60, TimeUnit.SECONDS);
                        } catch (InterruptedException e) {
                            Thread.currentThread().interrupt();
                        }
                        out.onNext(WriteCheckpointResponse.newBuilder()
                                .addAllCoveredSlots(request.getSlotsList())
                                .build());
                        out.onCompleted();
                    }

                    @Override
                    public void checkpointProgress(
                            final CheckpointProgressRequest request,
                            final StreamObserver<CheckpointProgressResponse> out) {
                        out.onNext(CheckpointProgressResponse.getDefaultInstance());
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
}
