package io.pscluster.server;

import com.google.protobuf.UnsafeByteOperations;
import io.grpc.stub.StreamObserver;
import io.pscluster.proto.v1.CreateTableRequest;
import io.pscluster.proto.v1.CreateTableResponse;
import io.pscluster.proto.v1.DescribeTableRequest;
import io.pscluster.proto.v1.DescribeTableResponse;
import io.pscluster.proto.v1.DropTableRequest;
import io.pscluster.proto.v1.DropTableResponse;
import io.pscluster.proto.v1.PullRequest;
import io.pscluster.proto.v1.PullResponse;
import io.pscluster.proto.v1.PushRequest;
import io.pscluster.proto.v1.PushResponse;
import io.pscluster.proto.v1.ShardServiceGrpc;
import io.pscluster.proto.v1.TableStats;
import io.pscluster.server.table.ParameterTable;
import io.pscluster.wire.LittleEndian;
import io.pscluster.wire.PsException;
import io.pscluster.wire.Unary;

/** The shard's data plane over gRPC: decodes requests, calls {@link Shard}, maps failures to statuses. */
final class ShardDataService extends ShardServiceGrpc.ShardServiceImplBase {
    private final Shard shard;
    private final Runnable routingRefresh;
    private final FaultPoints faults;

    /** @param routingRefresh asks the proxy for the routing table soon; called when a client knows a newer epoch. */
    ShardDataService(final Shard shard, final Runnable routingRefresh, final FaultPoints faults) {
        this.shard = shard;
        this.routingRefresh = routingRefresh;
        this.faults = faults;
    }

    @Override
    public void createTable(final CreateTableRequest request, final StreamObserver<CreateTableResponse> response) {
        Unary.respond(
                response,
                () -> CreateTableResponse.newBuilder()
                        .setCreated(shard.createTable(request.getSchema()))
                        .build());
    }

    @Override
    public void describeTable(
            final DescribeTableRequest request, final StreamObserver<DescribeTableResponse> response) {
        Unary.respond(response, () -> {
            final ParameterTable table = shard.table(request.getTable());
            return DescribeTableResponse.newBuilder()
                    .setSchema(table.schema())
                    .setStats(TableStats.newBuilder()
                            .setName(table.name())
                            .setRows(table.rowCount())
                            .setBytes(table.bytes()))
                    .build();
        });
    }

    @Override
    public void dropTable(final DropTableRequest request, final StreamObserver<DropTableResponse> response) {
        Unary.respond(
                response,
                () -> DropTableResponse.newBuilder()
                        .setDropped(shard.dropTable(request.getTable()))
                        .build());
    }

    @Override
    public void push(final PushRequest request, final StreamObserver<PushResponse> response) {
        followNewerEpoch(request.getRoutingEpoch());
        Unary.respond(response, () -> {
            final long[] keys = LittleEndian.decodeLongs(request.getKeys(), "keys");
            final float[] gradients = LittleEndian.decodeFloats(request.getGradients(), "gradients");
            final Shard.PushResult result = shard.push(
                    request.getTable(),
                    request.getRoutingEpoch(),
                    request.getClientId(),
                    request.getSequence(),
                    keys,
                    gradients);
            if (faults.fire(FaultPoints.LOSE_PUSH_ANSWER)) {
                throw PsException.unavailable("fault injected: the answer to an accepted push was lost");
            }
            return PushResponse.newBuilder()
                    .setAccepted(result.accepted())
                    .setDuplicate(result.duplicate())
                    .build();
        });
    }

    @Override
    public void pull(final PullRequest request, final StreamObserver<PullResponse> response) {
        followNewerEpoch(request.getRoutingEpoch());
        Unary.respond(response, () -> {
            final long[] keys = LittleEndian.decodeLongs(request.getKeys(), "keys");
            return PullResponse.newBuilder()
                    .setValues(UnsafeByteOperations.unsafeWrap(
                            shard.pull(request.getTable(), request.getRoutingEpoch(), keys)))
                    .build();
        });
    }

    private void followNewerEpoch(final long clientEpoch) {
        if (clientEpoch > shard.routingEpoch()) {
            routingRefresh.run();
        }
    }
}
