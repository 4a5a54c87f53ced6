package io.pscluster.proxy;

import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.StreamObserver;
import io.pscluster.proto.v1.AttachTableRequest;
import io.pscluster.proto.v1.AttachTableResponse;
import io.pscluster.proto.v1.AwaitPauseRequest;
import io.pscluster.proto.v1.AwaitPauseResponse;
import io.pscluster.proto.v1.CreateTableRequest;
import io.pscluster.proto.v1.CreateTableResponse;
import io.pscluster.proto.v1.DeregisterShardRequest;
import io.pscluster.proto.v1.DeregisterShardResponse;
import io.pscluster.proto.v1.DrainShardRequest;
import io.pscluster.proto.v1.DrainShardResponse;
import io.pscluster.proto.v1.DropTableRequest;
import io.pscluster.proto.v1.DropTableResponse;
import io.pscluster.proto.v1.GetRoutingTableRequest;
import io.pscluster.proto.v1.GetRoutingTableResponse;
import io.pscluster.proto.v1.HeartbeatRequest;
import io.pscluster.proto.v1.HeartbeatResponse;
import io.pscluster.proto.v1.JoinJobRequest;
import io.pscluster.proto.v1.JoinJobResponse;
import io.pscluster.proto.v1.LeaveJobRequest;
import io.pscluster.proto.v1.LeaveJobResponse;
import io.pscluster.proto.v1.ListTablesRequest;
import io.pscluster.proto.v1.ListTablesResponse;
import io.pscluster.proto.v1.PausedRequest;
import io.pscluster.proto.v1.PausedResponse;
import io.pscluster.proto.v1.ProxyServiceGrpc;
import io.pscluster.proto.v1.RegisterJobRequest;
import io.pscluster.proto.v1.RegisterJobResponse;
import io.pscluster.proto.v1.RegisterShardRequest;
import io.pscluster.proto.v1.RegisterShardResponse;
import io.pscluster.proto.v1.RenewWorkerRequest;
import io.pscluster.proto.v1.RenewWorkerResponse;
import io.pscluster.proto.v1.ShardServiceGrpc;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.proto.v1.UpdateJobsRequest;
import io.pscluster.wire.PsException;
import io.pscluster.wire.TableSchemas;
import io.pscluster.wire.Unary;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Discovery, routing and the table catalog over gRPC. Registration, heartbeats and routing answer on the calling
 * (control) thread from {@link ClusterState} alone; table creation and removal and drains wait on shards, so they run
 * on {@link LongCalls}' pool and never hold a thread a heartbeat needs. Job calls change {@link JobRegistry} on the
 * calling thread and, when they must wait (for the job to start, for the shards to be sent the new list), are
 * answered later from a future: no thread waits for them.
 */
final class ProxyGrpcService extends ProxyServiceGrpc.ProxyServiceImplBase {
    private static final Logger LOG = LoggerFactory.getLogger(ProxyGrpcService.class);

    private final ClusterState state;
    private final JobRegistry jobs;
    private final ShardFanOut fanOut;
    private final CheckpointCoordinator checkpoints;
    private final WorkerPauses pauses;
    private final LongCalls longCalls;
    private final long heartbeatIntervalMs;
    private final ClusterMark mark;

    ProxyGrpcService(
            final ClusterState state,
            final JobRegistry jobs,
            final ShardFanOut fanOut,
            final CheckpointCoordinator checkpoints,
            final WorkerPauses pauses,
            final LongCalls longCalls,
            final long heartbeatIntervalMs,
            final ClusterMark mark) {
        this.state = state;
        this.mark = mark;
        this.jobs = jobs;
        this.fanOut = fanOut;
        this.checkpoints = checkpoints;
        this.pauses = pauses;
        this.longCalls = longCalls;
        this.heartbeatIntervalMs = heartbeatIntervalMs;
    }

    @Override
    public void registerShard(final RegisterShardRequest request, final StreamObserver<RegisterShardResponse> out) {
        Unary.respond(
                out,
                () -> state.register(request).toBuilder()
                        .setHeartbeatIntervalMillis(heartbeatIntervalMs)
                        .build());
    }

    @Override
    public void heartbeat(final HeartbeatRequest request, final StreamObserver<HeartbeatResponse> out) {
        Unary.respond(out, () -> {
            final HeartbeatResponse response = state.heartbeat(request);
            final UpdateJobsRequest list = jobs.published();
            return request.getJobsVersion() == list.getJobsVersion()
                    ? response
                    : response.toBuilder().setJobs(list).build();
        });
    }

    @Override
    public void deregisterShard(
            final DeregisterShardRequest request, final StreamObserver<DeregisterShardResponse> out) {
        Unary.respond(out, () -> {
            state.deregister(request.getShardId());
            return DeregisterShardResponse.getDefaultInstance();
        });
    }

    @Override
    public void getRoutingTable(
            final GetRoutingTableRequest request, final StreamObserver<GetRoutingTableResponse> out) {
        Unary.respond(
                out,
                () -> GetRoutingTableResponse.newBuilder()
                        .setRouting(state.routingTable())
                        .build());
    }

    /**
     * Marks the checkpoint root as a cluster's ({@link ClusterMark}), adds the table to the catalog (persisted), then
     * creates it on every live shard; later shards get it later.
     */
    @Override
    public void createTable(final CreateTableRequest request, final StreamObserver<CreateTableResponse> out) {
        longCalls.respond(out, () -> {
            final TableSchema schema = TableSchemas.normalize(request.getSchema());
            mark.ensure("create table '" + schema.getName() + "'");
            final boolean created = state.addTable(schema);
            final CreateTableRequest onward =
                    CreateTableRequest.newBuilder().setSchema(schema).build();
            onEveryLiveShard("create table '" + schema.getName() + "'", (stub, index) -> stub.createTable(onward));
            return CreateTableResponse.newBuilder().setCreated(created).build();
        });
    }

    /** Tombstones the table first (so no heartbeat brings it back), then drops it from every live shard. */
    @Override
    public void dropTable(final DropTableRequest request, final StreamObserver<DropTableResponse> out) {
        longCalls.respond(out, () -> {
            final boolean dropped = state.removeTable(request.getTable());
            try {
                jobs.pruneTables();
            } catch (RuntimeException e) {
                LOG.warn(
                        "table '{}' is dropped but still listed by jobs ({}); the next job check removes it",
                        request.getTable(),
                        e.getMessage());
            }
            onEveryLiveShard("drop table '" + request.getTable() + "'", (stub, index) -> stub.dropTable(request));
            return DropTableResponse.newBuilder().setDropped(dropped).build();
        });
    }

    @Override
    public void drainShard(final DrainShardRequest request, final StreamObserver<DrainShardResponse> out) {
        longCalls.respond(out, () -> {
            if (request.getShardId().isEmpty()) {
                throw PsException.invalidArgument("drain: shard_id is empty");
            }
            final CheckpointCoordinator.Drained drained =
                    checkpoints.drain(request.getShardId(), request.getUnapplied());
            return DrainShardResponse.newBuilder()
                    .setCheckpointId(drained.checkpointId())
                    .setSlotsHandedOver(drained.slotsHandedOver())
                    .setRoutingEpoch(drained.epoch())
                    .build();
        });
    }

    @FunctionalInterface
    private interface ShardCall {
        Object call(ShardServiceGrpc.ShardServiceBlockingStub stub, int index);
    }

    /** Calls every live shard at once; a failure keeps the shard's code and says the shard catches up later. */
    private void onEveryLiveShard(final String what, final ShardCall call) throws InterruptedException {
        try {
            fanOut.callAll(
                    what,
                    state.liveShards(),
                    (index, channel, deadline) ->
                            call.call(ShardServiceGrpc.newBlockingStub(channel).withDeadline(deadline), index));
        } catch (StatusRuntimeException e) {
            throw Status.fromCode(e.getStatus().getCode())
                    .withDescription(e.getStatus().getDescription()
                            + "; the catalog has the change and the shard follows it on its next heartbeat")
                    .withCause(e.getCause())
                    .asRuntimeException();
        }
    }

    // ---- jobs

    @Override
    public void registerJob(final RegisterJobRequest request, final StreamObserver<RegisterJobResponse> out) {
        Unary.respond(
                out,
                () -> RegisterJobResponse.newBuilder()
                        .setJob(jobs.register(request.getSpec()))
                        .build());
    }

    /**
     * A long poll until the job starts, bounded by the caller's deadline; a cancelled call takes its worker out. The
     * workers a run starts with get their rank's state from the checkpoint the data is at; when it cannot be read the
     * call fails UNAVAILABLE naming the cause (before the worker joins, or taking it out again), never an empty state.
     */
    @Override
    public void joinJob(final JoinJobRequest request, final StreamObserver<JoinJobResponse> out) {
        final JobRegistry.Joining joining;
        try {
            // Read (or known) before the worker joins: a manifest that cannot be read fails the call here.
            checkpoints.jobStates();
            joining = jobs.join(request.getJobId(), request.getHost(), request.getRank(), io.grpc.Context.current());
        } catch (RuntimeException e) {
            out.onError(PsException.toStatus(e));
            return;
        }
        answerWhenDone(out, joining.answer().thenCompose(answer -> withRestored(request.getJobId(), answer)));
    }

    /** The join's answer with the worker's restored state, for a worker a run starts with. */
    private CompletableFuture<JoinJobResponse> withRestored(final String jobId, final JoinJobResponse answer) {
        if (answer.getStartClock() != 0 || answer.getJoinedRunning()) {
            // A worker joining a running job takes the job where it is: no state to go back to.
            return CompletableFuture.completedFuture(answer);
        }
        final CheckpointCoordinator.JobStates states;
        try {
            // The data may be at another checkpoint than when the call came (a commit or restore meanwhile).
            states = checkpoints.jobStates();
        } catch (RuntimeException unreadable) {
            // The worker is a member already: it leaves again, so that the caller's retry joins afresh at its rank.
            CompletableFuture<Void> left;
            try {
                left = jobs.leave(jobId, answer.getWorkerId());
            } catch (RuntimeException stopping) {
                left = CompletableFuture.completedFuture(null);
            }
            return left.handle((done, failure) -> null).thenCompose(done -> CompletableFuture.failedFuture(unreadable));
        }
        final String mixed = state.mixedModel();
        if (mixed != null) {
            // No saved state matches a model that may be a mix.
            return CompletableFuture.completedFuture(answer.toBuilder()
                    .setRestoredUnreadable("no saved job state matches the model: " + mixed)
                    .build());
        }
        return CompletableFuture.completedFuture(states.restore(answer, jobId));
    }

    /** A worker's standing poll for checkpoint pauses; holds no thread. */
    @Override
    public void awaitPause(final AwaitPauseRequest request, final StreamObserver<AwaitPauseResponse> out) {
        answerWhenDone(out, pauses.await(request.getAfterPauseId()));
    }

    /** A worker paused for a checkpoint; answered when it may go on. Holds no thread. */
    @Override
    public void paused(final PausedRequest request, final StreamObserver<PausedResponse> out) {
        final CompletableFuture<PausedResponse> resumed;
        try {
            resumed = pauses.paused(request);
        } catch (RuntimeException e) {
            out.onError(PsException.toStatus(e));
            return;
        }
        if (out instanceof io.grpc.stub.ServerCallStreamObserver<PausedResponse> call) {
            call.setOnCancelHandler(() -> pauses.abandoned(request));
        }
        answerWhenDone(out, resumed);
    }

    @Override
    public void renewWorker(final RenewWorkerRequest request, final StreamObserver<RenewWorkerResponse> out) {
        Unary.respond(out, () -> jobs.renew(request.getJobId(), request.getWorkerId(), request.getClock()));
    }

    @Override
    public void leaveJob(final LeaveJobRequest request, final StreamObserver<LeaveJobResponse> out) {
        final CompletableFuture<Void> left;
        try {
            left = jobs.leave(request.getJobId(), request.getWorkerId());
        } catch (RuntimeException e) {
            out.onError(PsException.toStatus(e));
            return;
        }
        answerWhenDone(out, left.thenApply(done -> LeaveJobResponse.getDefaultInstance()));
    }

    @Override
    public void attachTable(final AttachTableRequest request, final StreamObserver<AttachTableResponse> out) {
        final CompletableFuture<Void> attached;
        try {
            attached = jobs.attach(request.getJobId(), request.getTable());
        } catch (RuntimeException e) {
            out.onError(PsException.toStatus(e));
            return;
        }
        answerWhenDone(out, attached.thenApply(done -> AttachTableResponse.getDefaultInstance()));
    }

    /** Completes the call when the future does (on the thread that completes it); a caller gone by then is ignored. */
    private static <T> void answerWhenDone(final StreamObserver<T> out, final CompletableFuture<T> answer) {
        answer.whenComplete((value, failure) -> {
            try {
                if (failure != null) {
                    out.onError(PsException.toStatus(
                            failure instanceof CompletionException && failure.getCause() != null
                                    ? failure.getCause()
                                    : failure));
                } else {
                    out.onNext(value);
                    out.onCompleted();
                }
            } catch (RuntimeException callerGone) {
                LOG.debug("the caller is gone: {}", callerGone.toString());
            }
        });
    }

    @Override
    public void listTables(final ListTablesRequest request, final StreamObserver<ListTablesResponse> out) {
        Unary.respond(
                out,
                () -> ListTablesResponse.newBuilder()
                        .addAllTables(state.tables())
                        .build());
    }
}
