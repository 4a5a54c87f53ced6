package io.pscluster.proxy;

import io.grpc.stub.StreamObserver;
import io.pscluster.checkpoint.CheckpointInfo;
import io.pscluster.checkpoint.Manifest;
import io.pscluster.checkpoint.PausePoints;
import io.pscluster.proto.v1.AdminServiceGrpc;
import io.pscluster.proto.v1.CheckpointNowRequest;
import io.pscluster.proto.v1.CheckpointNowResponse;
import io.pscluster.proto.v1.ForgetShardRequest;
import io.pscluster.proto.v1.ForgetShardResponse;
import io.pscluster.proto.v1.InjectFaultRequest;
import io.pscluster.proto.v1.InjectFaultResponse;
import io.pscluster.proto.v1.ListCheckpointsRequest;
import io.pscluster.proto.v1.ListCheckpointsResponse;
import io.pscluster.proto.v1.ListJobsRequest;
import io.pscluster.proto.v1.ListJobsResponse;
import io.pscluster.proto.v1.ListShardsRequest;
import io.pscluster.proto.v1.ListShardsResponse;
import io.pscluster.proto.v1.OperationProgressRequest;
import io.pscluster.proto.v1.OperationProgressResponse;
import io.pscluster.proto.v1.PassedOverCheckpoint;
import io.pscluster.proto.v1.RebalanceRequest;
import io.pscluster.proto.v1.RebalanceResponse;
import io.pscluster.proto.v1.RestoreRequest;
import io.pscluster.proto.v1.RestoreResponse;
import io.pscluster.proto.v1.SlotMove;
import io.pscluster.wire.PsException;
import io.pscluster.wire.Unary;

/**
 * Operator calls: shard and job status and forget answer on the control thread; checkpoint, list checkpoints and restore wait
 * on storage and shards, so they run on {@link LongCalls}' pool.
 */
final class AdminGrpcService extends AdminServiceGrpc.AdminServiceImplBase {
    private static final java.util.Set<String> COMMIT_PAUSE_POINTS =
            java.util.Set.of(PausePoints.BEFORE_MANIFEST, PausePoints.BEFORE_RENAME, PausePoints.AFTER_RENAME);

    private final ClusterState state;
    private final JobRegistry jobs;
    private final CheckpointCoordinator checkpoints;
    private final LongCalls longCalls;

    AdminGrpcService(
            final ClusterState state,
            final JobRegistry jobs,
            final CheckpointCoordinator checkpoints,
            final LongCalls longCalls) {
        this.state = state;
        this.jobs = jobs;
        this.checkpoints = checkpoints;
        this.longCalls = longCalls;
    }

    @Override
    public void listShards(final ListShardsRequest request, final StreamObserver<ListShardsResponse> out) {
        Unary.respond(out, state::status);
    }

    @Override
    public void listJobs(final ListJobsRequest request, final StreamObserver<ListJobsResponse> out) {
        Unary.respond(
                out, () -> ListJobsResponse.newBuilder().addAllJobs(jobs.list()).build());
    }

    @Override
    public void forgetShard(final ForgetShardRequest request, final StreamObserver<ForgetShardResponse> out) {
        Unary.respond(out, () -> {
            if (request.getShardId().isEmpty()) {
                throw PsException.invalidArgument("forget: shard_id is empty");
            }
            return ForgetShardResponse.newBuilder()
                    .setForgotten(state.forget(request.getShardId()))
                    .build();
        });
    }

    @Override
    public void checkpointNow(final CheckpointNowRequest request, final StreamObserver<CheckpointNowResponse> out) {
        longCalls.respond(out, () -> {
            final CheckpointCoordinator.Taken taken = checkpoints.checkpointNow();
            return CheckpointNowResponse.newBuilder()
                    .setCheckpoint(describe(taken.checkpoint()))
                    .setMaxSnapshotMicros(taken.maxSnapshotMicros())
                    .setCut(taken.cut())
                    .setUnrecorded(taken.unrecorded())
                    .build();
        });
    }

    @Override
    public void listCheckpoints(
            final ListCheckpointsRequest request, final StreamObserver<ListCheckpointsResponse> out) {
        longCalls.respond(out, () -> {
            final ListCheckpointsResponse.Builder response = ListCheckpointsResponse.newBuilder();
            final java.util.Map<Long, String> damaged = checkpoints.damageKnown();
            for (final CheckpointInfo checkpoint : checkpoints.store().list()) {
                final String why = damaged.get(checkpoint.id());
                response.addCheckpoints(
                        why == null
                                ? describe(checkpoint)
                                : describe(checkpoint).toBuilder()
                                        .setDamaged(why)
                                        .build());
            }
            return response.build();
        });
    }

    @Override
    public void restore(final RestoreRequest request, final StreamObserver<RestoreResponse> out) {
        longCalls.respond(out, () -> {
            final CheckpointCoordinator.Restored restored = checkpoints.restore(request.getCheckpointId());
            final RestoreResponse.Builder response = RestoreResponse.newBuilder()
                    .setCheckpoint(describe(restored.checkpoint()))
                    .setRowsRestored(restored.rows());
            restored.passedOver()
                    .forEach((id, reason) -> response.addPassedOver(
                            PassedOverCheckpoint.newBuilder().setId(id).setReason(reason)));
            return response.build();
        });
    }

    @Override
    public void rebalance(final RebalanceRequest request, final StreamObserver<RebalanceResponse> out) {
        longCalls.respond(out, () -> {
            final CheckpointCoordinator.Rebalanced done = checkpoints.rebalance(request.getDryRun());
            final RebalanceResponse.Builder response = RebalanceResponse.newBuilder()
                    .setCheckpointId(done.checkpointId())
                    .setRoutingEpoch(done.epoch());
            done.moves()
                    .forEach(move -> response.addMoves(SlotMove.newBuilder()
                            .setFromShard(move.from())
                            .setToShard(move.to())
                            .addAllSlots(move.slots())));
            return response.build();
        });
    }

    /** Answers on the control thread: it reads what the polls of the running operation recorded. */
    @Override
    public void operationProgress(
            final OperationProgressRequest request, final StreamObserver<OperationProgressResponse> out) {
        Unary.respond(out, () -> checkpoints.operations().answer());
    }

    /** Arms or disarms a commit's pause point ({@link PausePoints}), only in a JVM run with -Dpscluster.faults=true. */
    @Override
    public void injectFault(final InjectFaultRequest request, final StreamObserver<InjectFaultResponse> out) {
        Unary.respond(out, () -> {
            if (!Boolean.getBoolean("pscluster.faults")) {
                throw PsException.failedPrecondition(
                        "fault injection is off: start the proxy with -Dpscluster.faults=true");
            }
            final String point = request.getPoint();
            if (!COMMIT_PAUSE_POINTS.contains(point)) {
                throw PsException.invalidArgument(
                        "unknown fault point '" + point + "'; the proxy knows " + COMMIT_PAUSE_POINTS);
            }
            if (request.getTimes() > 1) {
                throw PsException.invalidArgument(
                        "times=" + request.getTimes() + ": pause point " + point + " fires once");
            }
            if (request.getEnabled()) {
                PausePoints.arm(point);
            } else {
                PausePoints.disarm(point);
            }
            return InjectFaultResponse.getDefaultInstance();
        });
    }

    static io.pscluster.proto.v1.CheckpointInfo describe(final CheckpointInfo checkpoint) {
        final Manifest manifest = checkpoint.manifest();
        final io.pscluster.proto.v1.CheckpointInfo.Builder info = io.pscluster.proto.v1.CheckpointInfo.newBuilder()
                .setId(checkpoint.id())
                .setUri(checkpoint.dir().toString())
                .setCreatedMillis(manifest.createdMillis())
                .setFiles(manifest.files().size())
                .setBytes(manifest.totalBytes())
                .setRows(manifest.totalRows());
        manifest.tables().forEach(table -> info.addTables(table.name()));
        return info.build();
    }
}
