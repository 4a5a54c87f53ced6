package io.pscluster.server;

import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.pscluster.proto.v1.DeregisterShardRequest;
import io.pscluster.proto.v1.HeartbeatRequest;
import io.pscluster.proto.v1.HeartbeatResponse;
import io.pscluster.proto.v1.ProxyServiceGrpc;
import io.pscluster.proto.v1.RegisterShardRequest;
import io.pscluster.proto.v1.RegisterShardResponse;
import io.pscluster.proto.v1.RestoreDirective;
import io.pscluster.proto.v1.RoutingTable;
import io.pscluster.proto.v1.ShardLoad;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.wire.Slots;
import java.net.URI;
import java.util.BitSet;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The shard's side of discovery: registers with the proxy, heartbeats its load, and carries out what the proxy
 * answers (a new routing table, tables to create, slots to restore from a checkpoint). If the proxy forgets the
 * shard (a restarted proxy, a lapsed lease) the next heartbeat re-registers it with its rows still in memory.
 */
final class ProxyLink implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(ProxyLink.class);
    private static final long CALL_DEADLINE_MS = 5_000;

    private final Shard shard;
    private final ManagedChannel channel;
    private final String address;
    private final ProxyServiceGrpc.ProxyServiceBlockingStub proxy;
    private final ScheduledExecutorService heartbeats;
    // Restores read whole checkpoints; they must not hold up heartbeats.
    private final ExecutorService restores;
    private final AtomicBoolean refreshQueued = new AtomicBoolean();
    private volatile boolean freshStart = true;
    private volatile boolean closing;
    private volatile long lastRequests;
    private volatile long lastBeatNanos = System.nanoTime();
    private volatile URI checkpointRoot;

    ProxyLink(final Shard shard, final ManagedChannel channel, final String advertisedAddress) {
        this.shard = shard;
        this.channel = channel;
        this.address = advertisedAddress;
        this.proxy = ProxyServiceGrpc.newBlockingStub(channel);
        this.heartbeats = Executors.newSingleThreadScheduledExecutor(daemon("ps-heartbeat"));
        this.restores = Executors.newSingleThreadExecutor(daemon("ps-restore"));
    }

    /** Registers, retrying while the proxy is unreachable, for up to {@code timeoutMs}; then heartbeats. */
    void register(final long timeoutMs) throws InterruptedException {
        final long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMs);
        RegisterShardResponse response;
        while (true) {
            try {
                response = registerOnce();
                break;
            } catch (StatusRuntimeException e) {
                if (e.getStatus().getCode() != Status.Code.UNAVAILABLE || System.nanoTime() > deadline) {
                    throw e;
                }
                LOG.info("proxy not reachable yet ({}); retrying", e.getStatus().getDescription());
                TimeUnit.MILLISECONDS.sleep(200);
            }
        }
        final long interval = Math.max(50, response.getHeartbeatIntervalMillis());
        heartbeats.scheduleWithFixedDelay(this::heartbeatQuietly, interval, interval, TimeUnit.MILLISECONDS);
    }

    private RegisterShardResponse registerOnce() throws InterruptedException {
        final RegisterShardResponse response = proxy.withDeadlineAfter(CALL_DEADLINE_MS, TimeUnit.MILLISECONDS)
                .registerShard(RegisterShardRequest.newBuilder()
                        .setShardId(shard.shardId())
                        .setAddress(address)
                        .setFreshStart(freshStart)
                        .build());
        shard.assignId(response.getShardId());
        freshStart = false;
        if (!response.getCheckpointRoot().isEmpty()) {
            checkpointRoot = ShardAdminGrpcService.root(response.getCheckpointRoot());
        }
        LOG.info("shard {} registered at {}", response.getShardId(), address);
        follow(response.getTablesList(), response.hasRestore() ? response.getRestore() : null, response.getRouting());
        return response;
    }

    /** Asks for a heartbeat now, for instance when a client routed with a newer epoch than ours. */
    void refreshSoon() {
        if (refreshQueued.compareAndSet(false, true)) {
            heartbeats.execute(this::heartbeatQuietly);
        }
    }

    private void heartbeatQuietly() {
        refreshQueued.set(false);
        if (closing) {
            return;
        }
        try {
            try {
                heartbeat();
            } catch (StatusRuntimeException e) {
                if (e.getStatus().getCode() != Status.Code.NOT_FOUND) {
                    throw e;
                }
                LOG.warn("proxy does not know shard {}; registering again", shard.shardId());
                registerOnce();
            }
        } catch (StatusRuntimeException e) {
            LOG.warn("heartbeat to proxy failed: {}", e.getStatus());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } catch (RuntimeException e) {
            LOG.error("heartbeat handling failed", e);
        }
    }

    private void heartbeat() throws InterruptedException {
        final long now = System.nanoTime();
        final long requests = shard.requestCount();
        final double seconds = Math.max(1e-3, (now - lastBeatNanos) / 1e9);
        final double rate = (requests - lastRequests) / seconds;
        lastRequests = requests;
        lastBeatNanos = now;
        final Runtime runtime = Runtime.getRuntime();
        long rows = 0;
        long bytes = 0;
        final var stats = shard.tableStats();
        for (final var table : stats) {
            rows += table.getRows();
            bytes += table.getBytes();
        }
        final HeartbeatResponse response = proxy.withDeadlineAfter(CALL_DEADLINE_MS, TimeUnit.MILLISECONDS)
                .heartbeat(HeartbeatRequest.newBuilder()
                        .setShardId(shard.shardId())
                        .setRoutingEpoch(shard.routingEpoch())
                        .setLoad(ShardLoad.newBuilder()
                                .setRows(rows)
                                .setBytes(bytes)
                                .setRequestsPerSecond(rate)
                                .setApplyQueueDepth(shard.applyQueueDepth())
                                .setHeapUsedBytes(runtime.totalMemory() - runtime.freeMemory())
                                .setHeapMaxBytes(runtime.maxMemory()))
                        .addAllTables(stats)
                        .build());
        for (final String dropped : response.getDroppedTablesList()) {
            if (shard.dropTable(dropped)) {
                LOG.info("shard {} dropped table {}: the proxy's catalog no longer holds it", shard.shardId(), dropped);
            }
        }
        follow(
                response.getTablesList(),
                response.hasRestore() ? response.getRestore() : null,
                response.hasRouting() ? response.getRouting() : null);
    }

    /**
     * Carries out the proxy's answer in the order that keeps requests safe: tables first, then the slots to
     * restore are marked (refused until loaded) before the routing table that hands them over is applied.
     */
    private void follow(final List<TableSchema> tables, final RestoreDirective restore, final RoutingTable routing)
            throws InterruptedException {
        createTables(tables);
        if (restore != null) {
            startRestore(restore);
        }
        if (routing != null) {
            shard.applyRouting(routing);
        }
    }

    private void createTables(final List<TableSchema> schemas) throws InterruptedException {
        for (final TableSchema schema : schemas) {
            try {
                shard.createTable(schema);
            } catch (RuntimeException e) {
                LOG.error("shard {} cannot create table {} the proxy holds: {}", shard.shardId(), schema.getName(), e);
            }
        }
    }

    /** Marks the slots restoring at once (so no request touches them), then loads them in the background. */
    private void startRestore(final RestoreDirective directive) {
        final BitSet slots = new BitSet(Slots.SLOT_COUNT);
        directive.getSlotsList().forEach(slots::set);
        if (directive.getCheckpointId() == 0) {
            LOG.warn(
                    "shard {} takes {} slots with no checkpoint to restore them from: they start empty",
                    shard.shardId(),
                    slots.cardinality());
            return;
        }
        final URI root = ShardAdminGrpcService.root(directive.getCheckpointRoot());
        shard.markRestoring(slots);
        restores.execute(() -> {
            try {
                shard.restore(root, directive.getCheckpointId(), slots);
            } catch (Exception e) {
                LOG.error(
                        "shard {} failed to restore {} slots from checkpoint {} under {}",
                        shard.shardId(),
                        slots.cardinality(),
                        directive.getCheckpointId(),
                        root,
                        e);
            }
        });
    }

    URI checkpointRoot() {
        return checkpointRoot;
    }

    /**
     * Stops heartbeating (so a leaving shard never re-registers), then tells the proxy this shard is leaving, so its
     * slots can be taken over without waiting for the lease to lapse.
     */
    @Override
    public void close() throws InterruptedException {
        closing = true;
        heartbeats.shutdownNow();
        restores.shutdownNow();
        heartbeats.awaitTermination(5, TimeUnit.SECONDS);
        try {
            proxy.withDeadlineAfter(CALL_DEADLINE_MS, TimeUnit.MILLISECONDS)
                    .deregisterShard(DeregisterShardRequest.newBuilder()
                            .setShardId(shard.shardId())
                            .build());
        } catch (StatusRuntimeException e) {
            LOG.warn("deregistration of shard {} failed: {}", shard.shardId(), e.getStatus());
        }
        channel.shutdown();
        if (!channel.awaitTermination(5, TimeUnit.SECONDS)) {
            channel.shutdownNow();
        }
    }

    static java.util.concurrent.ThreadFactory daemon(final String name) {
        return runnable -> {
            final Thread thread = new Thread(runnable, name);
            thread.setDaemon(true);
            return thread;
        };
    }
}
