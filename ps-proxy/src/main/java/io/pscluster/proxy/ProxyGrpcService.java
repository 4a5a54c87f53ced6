package io.pscluster.proxy;

import io.grpc.stub.StreamObserver;
import io.pscluster.proto.v1.CreateTableRequest;
import io.pscluster.proto.v1.CreateTableResponse;
import io.pscluster.proto.v1.DeregisterShardRequest;
import io.pscluster.proto.v1.DeregisterShardResponse;
import io.pscluster.proto.v1.DropTableRequest;
import io.pscluster.proto.v1.DropTableResponse;
import io.pscluster.proto.v1.GetRoutingTableRequest;
import io.pscluster.proto.v1.GetRoutingTableResponse;
import io.pscluster.proto.v1.HeartbeatRequest;
import io.pscluster.proto.v1.HeartbeatResponse;
import io.pscluster.proto.v1.ListTablesRequest;
import io.pscluster.proto.v1.ListTablesResponse;
import io.pscluster.proto.v1.ProxyServiceGrpc;
import io.pscluster.proto.v1.RegisterShardRequest;
import io.pscluster.proto.v1.RegisterShardResponse;
import io.pscluster.proto.v1.ShardServiceGrpc;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.wire.PsException;
import io.pscluster.wire.TableSchemas;
import io.pscluster.wire.Unary;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;

/** Discovery, routing and the table catalog over gRPC. */
final class ProxyGrpcService extends ProxyServiceGrpc.ProxyServiceImplBase {
    private final ClusterState state;
    private final ShardChannels channels;
    private final ExecutorService calls;
    private final long heartbeatIntervalMs;
    private final long leaseMs;
    private final long callDeadlineMs;

    ProxyGrpcService(
            final ClusterState state,
            final ShardChannels channels,
            final ExecutorService calls,
            final long heartbeatIntervalMs,
            final long leaseMs,
            final long callDeadlineMs) {
        this.state = state;
        this.channels = channels;
        this.calls = calls;
        this.heartbeatIntervalMs = heartbeatIntervalMs;
        this.leaseMs = leaseMs;
        this.callDeadlineMs = callDeadlineMs;
    }

    @Override
    public void registerShard(final RegisterShardRequest request, final StreamObserver<RegisterShardResponse> out) {
        Unary.respond(
                out,
                () -> state.register(request).toBuilder()
                        .setHeartbeatIntervalMillis(heartbeatIntervalMs)
                        .setLeaseMillis(leaseMs)
                        .build());
    }

    @Override
    public void heartbeat(final HeartbeatRequest request, final StreamObserver<HeartbeatResponse> out) {
        Unary.respond(out, () -> state.heartbeat(request));
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

    /** Adds the table to the catalog, then creates it on every live shard; later shards get it when they join. */
    @Override
    public void createTable(final CreateTableRequest request, final StreamObserver<CreateTableResponse> out) {
        Unary.respond(out, () -> {
            final TableSchema schema = TableSchemas.normalize(request.getSchema());
            final boolean created = state.addTable(schema);
            onEveryLiveShard(
                    "create table '" + schema.getName() + "'",
                    stub -> stub.createTable(
                            CreateTableRequest.newBuilder().setSchema(schema).build()));
            return CreateTableResponse.newBuilder().setCreated(created).build();
        });
    }

    /** Removes the table from the catalog first (so no heartbeat brings it back), then from every live shard. */
    @Override
    public void dropTable(final DropTableRequest request, final StreamObserver<DropTableResponse> out) {
        Unary.respond(out, () -> {
            final boolean dropped = state.removeTable(request.getTable());
            onEveryLiveShard("drop table '" + request.getTable() + "'", stub -> stub.dropTable(request));
            return DropTableResponse.newBuilder().setDropped(dropped).build();
        });
    }

    /** Calls every live shard concurrently and waits for all; the first failure names its shard. */
    private void onEveryLiveShard(final String what, final Function<ShardServiceGrpc.ShardServiceBlockingStub, ?> call)
            throws InterruptedException {
        final List<String> addresses = state.liveAddresses();
        final List<CompletableFuture<?>> calls = new ArrayList<>();
        for (final String address : addresses) {
            calls.add(CompletableFuture.supplyAsync(
                    () -> call.apply(ShardServiceGrpc.newBlockingStub(channels.channel(address))
                            .withDeadlineAfter(callDeadlineMs, TimeUnit.MILLISECONDS)),
                    this.calls));
        }
        for (int i = 0; i < calls.size(); i++) {
            try {
                calls.get(i).get();
            } catch (ExecutionException e) {
                throw PsException.unavailable(what + ": shard at " + addresses.get(i) + " failed: "
                        + PsException.toStatus(e.getCause()).getStatus()
                        + "; the catalog has the change and the shard follows it on its next heartbeat");
            }
        }
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
