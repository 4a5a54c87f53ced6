package io.pscluster.server;

import io.grpc.Grpc;
import io.grpc.InsecureServerCredentials;
import io.grpc.Server;
import io.grpc.Status;
import io.grpc.stub.StreamObserver;
import io.pscluster.proto.v1.DeregisterShardRequest;
import io.pscluster.proto.v1.DeregisterShardResponse;
import io.pscluster.proto.v1.DrainShardRequest;
import io.pscluster.proto.v1.DrainShardResponse;
import io.pscluster.proto.v1.HeartbeatRequest;
import io.pscluster.proto.v1.HeartbeatResponse;
import io.pscluster.proto.v1.ProxyServiceGrpc;
import io.pscluster.proto.v1.RegisterShardRequest;
import io.pscluster.proto.v1.RegisterShardResponse;
import io.pscluster.proto.v1.RestoreDirective;
import io.pscluster.proto.v1.RestoreReport;
import io.pscluster.proto.v1.RoutingTable;
import io.pscluster.proto.v1.TableSchema;
import java.io.IOException;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Function;

/**
 * A stand-in for the proxy on loopback, built on the real generated service base: it registers shards, answers
 * heartbeats with a lease, the routing and the outstanding restore orders (dropping an order once reported done, as
 * the real proxy does), and records every call. The proxy is not what the tests using it test.
 */
final class FakeProxy extends ProxyServiceGrpc.ProxyServiceImplBase implements AutoCloseable {
    final List<RegisterShardRequest> registrations = new CopyOnWriteArrayList<>();
    final List<HeartbeatRequest> heartbeats = new CopyOnWriteArrayList<>();
    final List<DeregisterShardRequest> deregistrations = new CopyOnWriteArrayList<>();
    final List<DrainShardRequest> drains = new CopyOnWriteArrayList<>();
    final List<RestoreDirective> orders = new CopyOnWriteArrayList<>();
    final List<TableSchema> tables = new CopyOnWriteArrayList<>();

    /** The routing for a shard id (all slots to it at epoch 1 unless a test says otherwise). */
    volatile Function<String, RoutingTable> routing = id -> TestRouting.allSlotsTo(id, 1);

    volatile long leaseMillis = 60_000;
    volatile long heartbeatIntervalMillis = 50;
    volatile String checkpointRoot = "";
    /** Set: RegisterShard is refused with it (while {@link #registerRefusals} is above 0, if that was set). */
    volatile Status registerRefusal;
    /** Above 0: that many more registrations are refused with {@link #registerRefusal}, then it is cleared. */
    final AtomicInteger registerRefusals = new AtomicInteger();
    /** Set: Heartbeat fails with it. */
    volatile Status heartbeatFailure;
    /** Set: DrainShard fails with it. */
    volatile Status drainFailure;
    /** Heartbeats to answer NOT_FOUND (the proxy forgot the shard). */
    final AtomicInteger forgetShard = new AtomicInteger();
    /** Runs inside DrainShard, before it answers. */
    volatile Runnable onDrain = () -> {};
    /** DrainShard answers' routing_epoch (0: as a proxy of an older version answers). */
    volatile long drainEpoch;
    /** DrainShard answers' slots_handed_over. */
    volatile int drainSlots = 4096;
    /** Heartbeat answers' lift_fences_before_millis (0: lift none). */
    volatile long liftFencesBeforeMillis;
    /** Runs in Heartbeat before it answers (the shard's request has left, its answer is not written yet). */
    volatile Runnable onHeartbeat = () -> {};
    /** Set: orders reported done are sent on (a proxy that has not taken the report yet). */
    volatile boolean keepDoneOrders;
    /** Heartbeat answers' keep_moved_slots. */
    volatile List<Integer> keepMovedSlots = List.of();

    private final AtomicInteger nextShard = new AtomicInteger(1);
    private Server server;

    FakeProxy start() throws IOException {
        server = Grpc.newServerBuilderForPort(0, InsecureServerCredentials.create())
                .addService(this)
                .build()
                .start();
        return this;
    }

    String address() {
        return "127.0.0.1:" + server.getPort();
    }

    @Override
    public void registerShard(
            final RegisterShardRequest request, final StreamObserver<RegisterShardResponse> response) {
        registrations.add(request);
        final Status refusal = registerRefusal;
        if (refusal != null) {
            if (registerRefusals.get() > 0 && registerRefusals.decrementAndGet() == 0) {
                registerRefusal = null;
            }
            response.onError(refusal.asRuntimeException());
            return;
        }
        final String id =
                request.getShardId().isEmpty() ? "shard-" + nextShard.getAndIncrement() : request.getShardId();
        response.onNext(RegisterShardResponse.newBuilder()
                .setShardId(id)
                .setCheckpointRoot(checkpointRoot)
                .setRouting(routing.apply(id))
                .addAllTables(tables)
                .setHeartbeatIntervalMillis(heartbeatIntervalMillis)
                .setLeaseMillis(leaseMillis)
                .addAllRestoreOrders(ordersFor(id))
                .build());
        response.onCompleted();
    }

    @Override
    public void heartbeat(final HeartbeatRequest request, final StreamObserver<HeartbeatResponse> response) {
        heartbeats.add(request);
        onHeartbeat.run();
        final Status failure = heartbeatFailure;
        if (failure != null) {
            response.onError(failure.asRuntimeException());
            return;
        }
        if (forgetShard.getAndUpdate(n -> Math.max(0, n - 1)) > 0) {
            response.onError(Status.NOT_FOUND
                    .withDescription("shard " + request.getShardId() + " is not registered")
                    .asRuntimeException());
            return;
        }
        for (final RestoreReport report : request.getRestoresList()) {
            if (report.getDone() && !keepDoneOrders) {
                orders.removeIf(order -> order.getOrderId() == report.getOrderId());
            }
        }
        final HeartbeatResponse.Builder answer = HeartbeatResponse.newBuilder()
                .setLeaseMillis(leaseMillis)
                .setLiftFencesBeforeMillis(liftFencesBeforeMillis)
                .addAllKeepMovedSlots(keepMovedSlots)
                .addAllRestoreOrders(ordersFor(request.getShardId()));
        final RoutingTable table = routing.apply(request.getShardId());
        if (table.getEpoch() != request.getRoutingEpoch()) {
            answer.setRouting(table);
        }
        response.onNext(answer.build());
        response.onCompleted();
    }

    private List<RestoreDirective> ordersFor(final String shardId) {
        return orders.stream()
                .filter(order ->
                        order.getShardId().isEmpty() || order.getShardId().equals(shardId))
                .toList();
    }

    @Override
    public void deregisterShard(
            final DeregisterShardRequest request, final StreamObserver<DeregisterShardResponse> response) {
        deregistrations.add(request);
        response.onNext(DeregisterShardResponse.getDefaultInstance());
        response.onCompleted();
    }

    @Override
    public void drainShard(final DrainShardRequest request, final StreamObserver<DrainShardResponse> response) {
        drains.add(request);
        onDrain.run();
        final Status failure = drainFailure;
        if (failure != null) {
            response.onError(failure.asRuntimeException());
            return;
        }
        response.onNext(DrainShardResponse.newBuilder()
                .setCheckpointId(1)
                .setSlotsHandedOver(drainSlots)
                .setRoutingEpoch(drainEpoch)
                .build());
        response.onCompleted();
    }

    /** The last heartbeat received, or null. */
    HeartbeatRequest lastHeartbeat() {
        return heartbeats.isEmpty() ? null : heartbeats.get(heartbeats.size() - 1);
    }

    @Override
    public void close() throws InterruptedException {
        if (server != null) {
            server.shutdownNow();
            server.awaitTermination(5, TimeUnit.SECONDS);
        }
    }
}
