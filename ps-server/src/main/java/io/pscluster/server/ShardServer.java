package io.pscluster.server;

import io.grpc.Grpc;
import io.grpc.Server;
import io.grpc.ServerBuilder;
import io.grpc.StatusRuntimeException;
import io.grpc.health.v1.HealthCheckResponse.ServingStatus;
import io.grpc.protobuf.services.HealthStatusManager;
import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.core.instrument.binder.grpc.MetricCollectingServerInterceptor;
import io.pscluster.proto.v1.DrainShardResponse;
import io.pscluster.server.table.OptimizerKernels;
import io.pscluster.server.table.PartitionWriters;
import io.pscluster.wire.Security;
import java.io.IOException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import org.apache.hadoop.conf.Configuration;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A shard process: the gRPC server (data plane, checkpoint admin, health), the {@link Shard} behind it and the
 * link to the proxy.
 *
 * <p>{@link #close()} is the graceful stop, a drain that loses no acknowledged push: health NOT_SERVING; the shard
 * refuses every push and pull with the retryable wrong-owner answer ("draining"), so clients go to the new owner;
 * it waits until every accepted push is applied, still heartbeating; it asks the proxy to hand its slots over
 * (DrainShard: the proxy checkpoints them and gives them to other shards); then it stops heartbeating, deregisters
 * and stops the server. If DrainShard fails, the slots come back from the last checkpoint instead (the proxy reports
 * that rollback). {@link Context#drainOnClose(boolean) drainOnClose(false)} skips the hand-over.
 */
public final class ShardServer implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(ShardServer.class);

    /** How often a drained shard looks whether the new owners of its slots have restored them. */
    private static final long HAND_OVER_POLL_MS = 50;

    private final Context context;
    private final Shard shard;
    // Held here: the registry holds what its metrics read through only weakly.
    private ShardMetrics metrics;
    private final HealthStatusManager health = new HealthStatusManager();
    private final ExecutorService executor;
    private Server server;
    private volatile ProxyLink proxyLink;
    private boolean closed;

    private ShardServer(final Context context) {
        this.context = context;
        // An empty id asks the proxy to assign one.
        this.shard = new Shard(
                context.shardId,
                context.maxKeysPerRequest,
                context.partitions,
                context.applyQueueCapacity,
                context.hadoopConf);
        shard.limitQueuedPushBytes(context.maxQueuedPushBytes);
        // Handlers may block (checkpoint I/O, waiting for the apply queue), so they run on a bounded pool rather
        // than on the event loop; its size bounds how many requests decode and validate at once.
        this.executor = Executors.newFixedThreadPool(context.handlerThreads, ProxyLink.daemon("ps-shard-handler"));
    }

    /** Starts serving and registers with the proxy; returns once registered. */
    public static ShardServer start(final Context context) throws IOException, InterruptedException {
        context.validate();
        final ShardServer shardServer = new ShardServer(context);
        try {
            shardServer.startServing();
        } catch (IOException | InterruptedException | RuntimeException e) {
            shardServer.close();
            throw e;
        }
        return shardServer;
    }

    private void startServing() throws IOException, InterruptedException {
        // Both from files Security checked when it was made (a bad one fails the start, naming it).
        final io.grpc.ChannelCredentials toProxy = context.security.channelCredentials();
        final ServerBuilder<?> builder = Grpc.newServerBuilderForPort(
                        context.port, context.security.serverCredentials())
                // Inner to the metrics' interceptor: refused calls are counted, by status.
                .intercept(context.security.tokenCheck());
        if (context.meterRegistry != null) {
            metrics = ShardMetrics.bind(context.meterRegistry, shard);
            // Calls and their outcomes per method (grpc_server_requests_received_total, _responses_sent_total and
            // _processing_duration_seconds by method and status code).
            builder.intercept(new MetricCollectingServerInterceptor(context.meterRegistry));
        }
        server = builder.executor(executor)
                .maxInboundMessageSize(context.maxMessageBytes)
                .addService(new ShardDataService(
                                shard,
                                () -> {
                                    final ProxyLink link = proxyLink;
                                    if (link != null) {
                                        link.refreshSoon();
                                    }
                                },
                                context.faults,
                                executor)
                        .definition())
                .addService(new ShardAdminGrpcService(shard, context.faults))
                .addService(health.getHealthService())
                .build()
                .start();
        final String address = context.host + ":" + server.getPort();
        if (context.security.tls()) {
            reachableAt(address, toProxy);
        }
        proxyLink = new ProxyLink(
                shard,
                Grpc.newChannelBuilder(context.proxyAddress, toProxy).build(),
                address,
                context.proxyAddress,
                context.faults);
        proxyLink.register(context.registerTimeoutMs);
        health.setStatus("", ServingStatus.SERVING);
        // Scripts and the fault tests take the address from the end of the serving line: nothing may follow it.
        LOG.info("shard {}: optimizer updates {}", shard.shardId(), OptimizerKernels.describe());
        LOG.info("shard {} serving at {}", shard.shardId(), address);
    }

    /**
     * With TLS, clients reach this shard at {@code address} and check that its certificate names that host: calls
     * itself there as they will (its health service needs no token), so that a certificate that does not name --host
     * fails the start, naming both, instead of every later call from the proxy and the SDKs.
     */
    private void reachableAt(final String address, final io.grpc.ChannelCredentials credentials)
            throws InterruptedException {
        final io.grpc.ManagedChannel self =
                Grpc.newChannelBuilder(address, credentials).build();
        try {
            io.grpc.health.v1.HealthGrpc.newBlockingStub(self)
                    .withDeadlineAfter(10, TimeUnit.SECONDS)
                    .check(io.grpc.health.v1.HealthCheckRequest.getDefaultInstance());
        } catch (io.grpc.StatusRuntimeException e) {
            throw new IllegalStateException("shard cannot be reached over TLS at " + address + ", where clients will"
                    + " call it (--host=" + context.host + "): " + e.getStatus().getCode() + ": "
                    + e.getStatus().getDescription() + io.pscluster.wire.PsException.causeOf(e.getStatus())
                    + "; its certificate must name that host and be signed by a CA the cluster trusts");
        } finally {
            self.shutdownNow();
            self.awaitTermination(5, TimeUnit.SECONDS);
        }
    }

    public int port() {
        return server.getPort();
    }

    public String address() {
        return context.host + ":" + port();
    }

    public String shardId() {
        return shard.shardId();
    }

    /** The shard's state, for in-process tests and the local cluster. */
    /** The fault points of this shard's server (tests). */
    public FaultPoints faults() {
        return context.faults;
    }

    public Shard shard() {
        return shard;
    }

    public void awaitTermination() throws InterruptedException {
        server.awaitTermination();
    }

    /**
     * Stops the shard: drains it (unless {@link Context#drainOnClose(boolean)} is off or it never registered), then
     * stops heartbeating, deregisters and stops the server.
     */
    @Override
    public synchronized void close() throws InterruptedException {
        if (closed) {
            return;
        }
        closed = true;
        health.setStatus("", ServingStatus.NOT_SERVING);
        try {
            final ProxyLink link = proxyLink;
            if (context.drainOnClose && link != null && link.registered()) {
                drain(link);
            }
        } finally {
            stop();
        }
    }

    /**
     * Stops the shard as {@code kill -9} would, for in-process tests and the local cluster: no hand-over, no
     * deregistration, calls in flight cut off. The proxy finds out when its lease lapses, and its slots come back on
     * other shards from the newest complete checkpoint (a reported rollback).
     */
    public synchronized void crash() throws InterruptedException {
        if (closed) {
            return;
        }
        closed = true;
        health.enterTerminalState();
        try {
            if (proxyLink != null) {
                proxyLink.close(false);
            }
            if (server != null) {
                server.shutdownNow();
                server.awaitTermination(5, TimeUnit.SECONDS);
            }
        } finally {
            shard.close();
            executor.shutdownNow();
        }
    }

    /**
     * Hands this shard's slots over through a checkpoint, then keeps their rows (refusing their requests) until their
     * new owners have restored them: should the drain's checkpoint be damaged by then, the proxy gives the slots back
     * with the rows kept here, and they are handed over again through a new checkpoint, so that nothing acknowledged
     * is lost. All of it within the drain's timeout; past it the shard stops all the same (the proxy then restores
     * what is not restored yet from the last checkpoint it can read, reporting a rollback if that lacks pushes).
     */
    private void drain(final ProxyLink link) throws InterruptedException {
        final long start = System.nanoTime();
        final long deadline = start + TimeUnit.MILLISECONDS.toNanos(context.drainTimeoutMs);
        shard.beginDrain();
        shard.awaitDrained();
        // Gradients of sync clocks not yet ended are in no checkpoint: give the workers a moment to end them.
        final String unapplied = shard.awaitSyncClocks(context.syncDrainWaitMs);
        for (int round = 1; ; round++) {
            final long leftMs = TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime());
            final DrainShardResponse handed;
            try {
                // Gradients not applied are reported lost by the first hand-over; later ones are whole.
                handed = link.drain(Math.max(1, leftMs), round == 1 ? unapplied : "");
            } catch (StatusRuntimeException e) {
                LOG.warn(
                        "shard {} could not hand its slots over (DrainShard at the proxy at {} failed: {}); the proxy"
                                + " will restore them from the last checkpoint and report the rollback",
                        shard.shardId(),
                        context.proxyAddress,
                        ProxyLink.describe(e.getStatus()));
                return;
            }
            final long answered = System.nanoTime();
            LOG.info(
                    "shard {} drained: {} slots handed over from checkpoint {} in {} ms{}",
                    shard.shardId(),
                    handed.getSlotsHandedOver(),
                    handed.getCheckpointId(),
                    TimeUnit.NANOSECONDS.toMillis(answered - start),
                    round == 1 ? "" : " (hand-over " + round + ")");
            if (handed.getRoutingEpoch() == 0) {
                // A proxy of an older version, which does not count on rows kept here.
                return;
            }
            if (!awaitGivenBack(link, answered, handed.getSlotsHandedOver() > 0, deadline)) {
                return;
            }
            LOG.warn(
                    "shard {}: the proxy gave back slots it had handed over (their checkpoint could not be restored);"
                            + " handing them over again",
                    shard.shardId());
        }
    }

    /**
     * After a hand-over whose answer came at {@code answered}: waits, heartbeating, until this shard follows a routing
     * answered after it, then while it keeps rows of slots it gave away (their new owners have not restored them).
     * Returns true when the proxy gave slots back (it owns slots again after a hand-over: they must be handed over
     * again), false when nothing is kept any more, when no slot was handed over (no other shard took them: they wait
     * for one, restored from the checkpoint), or when it gives up: the deadline passed, or the proxy has not answered
     * within its lease (it then no longer counts on the kept rows).
     */
    private boolean awaitGivenBack(
            final ProxyLink link, final long answered, final boolean handedAny, final long deadline)
            throws InterruptedException {
        link.heartbeatNow();
        boolean kept = false;
        while (true) {
            if (link.followedAnswerSentAfter(answered)) {
                final Shard.HandOver state = shard.handOverState();
                if (state == Shard.HandOver.OWNS) {
                    return handedAny || kept;
                }
                if (state == Shard.HandOver.DONE) {
                    return false;
                }
                if (!kept) {
                    kept = true;
                    LOG.info(
                            "shard {} keeps the rows of {} slots until their new owners have restored them",
                            shard.shardId(),
                            shard.keptMovedSlotCount());
                }
            }
            if (System.nanoTime() - deadline > 0) {
                LOG.warn(
                        "shard {} stops although the new owners of {} slots it handed over have not restored them yet"
                                + " (drain timeout {} ms): should their checkpoint be damaged, the proxy restores an"
                                + " older one and reports the rollback",
                        shard.shardId(),
                        shard.keptMovedSlotCount(),
                        context.drainTimeoutMs);
                return false;
            }
            if (!link.heardWithinLease()) {
                LOG.warn(
                        "shard {} stops keeping the rows of {} slots it handed over: no answer from the proxy at {}"
                                + " within its lease, so the proxy no longer counts on them",
                        shard.shardId(),
                        shard.keptMovedSlotCount(),
                        context.proxyAddress);
                return false;
            }
            TimeUnit.MILLISECONDS.sleep(HAND_OVER_POLL_MS);
        }
    }

    private void stop() throws InterruptedException {
        health.enterTerminalState();
        try {
            if (proxyLink != null) {
                proxyLink.close();
            }
            if (server != null) {
                server.shutdown();
                if (!server.awaitTermination(context.shutdownGraceMs, TimeUnit.MILLISECONDS)) {
                    server.shutdownNow();
                    server.awaitTermination(5, TimeUnit.SECONDS);
                }
            }
        } finally {
            shard.close();
            executor.shutdownNow();
        }
        LOG.info("shard {} stopped", shard.shardId());
    }

    /** Start-up settings, validated once by {@link ShardServer#start}. */
    public static final class Context {
        private String proxyAddress = "";
        private MeterRegistry meterRegistry;
        private String host = "127.0.0.1";
        private int port;
        private String shardId = "";
        private int maxKeysPerRequest = 4 << 20;
        private int maxMessageBytes = 256 << 20;
        private int applyQueueCapacity = 1024;
        private long maxQueuedPushBytes = PartitionWriters.defaultQueuedBytesLimit();
        private int partitions = Math.max(1, Math.min(64, Runtime.getRuntime().availableProcessors()));
        private int handlerThreads = 8;
        private long registerTimeoutMs = 30_000;
        private long shutdownGraceMs = 10_000;
        private boolean drainOnClose = true;
        private long drainTimeoutMs = TimeUnit.MINUTES.toMillis(10);
        private long syncDrainWaitMs = 5_000;
        private Configuration hadoopConf = new Configuration();
        private FaultPoints faults = new FaultPoints();
        private Security security = Security.NONE;

        /** TLS and tokens for the shard's server and its calls to the proxy ({@link Security}); none by default. */
        public Context security(final Security value) {
            security = java.util.Objects.requireNonNull(value, "security");
            return this;
        }

        /**
         * Where the shard's metrics go ({@link ShardMetrics} and its gRPC calls'); none when not set. A registry of its
         * own: another process's meters of the same names would be mixed with its.
         */
        public Context meterRegistry(final MeterRegistry value) {
            meterRegistry = value;
            return this;
        }

        /** host:port of the proxy. Required. */
        public Context proxyAddress(final String value) {
            proxyAddress = value;
            return this;
        }

        /** The host name clients use to reach this shard (default 127.0.0.1). */
        public Context host(final String value) {
            host = value;
            return this;
        }

        /** Port to serve on; 0 picks a free one. */
        public Context port(final int value) {
            port = value;
            return this;
        }

        /** A stable id: a shard restarted with its old id takes its old slots back. Empty: the proxy assigns one. */
        public Context shardId(final String value) {
            shardId = value;
            return this;
        }

        public Context maxKeysPerRequest(final int value) {
            maxKeysPerRequest = value;
            return this;
        }

        /** Writer threads, each owning the rows of {@code slot % partitions} (default: one per core). */
        public Context partitions(final int value) {
            partitions = value;
            return this;
        }

        public Context applyQueueCapacity(final int value) {
            applyQueueCapacity = value;
            return this;
        }

        /**
         * The most heap bytes pushes queued and not yet applied may hold (their keys and gradients) before more are
         * refused for a while, as when the queue is full; a push larger than this goes when nothing else is queued.
         * Default: a quarter of the heap.
         */
        public Context maxQueuedPushBytes(final long value) {
            maxQueuedPushBytes = value;
            return this;
        }

        public Context registerTimeoutMs(final long value) {
            registerTimeoutMs = value;
            return this;
        }

        public Context hadoopConf(final Configuration value) {
            hadoopConf = value;
            return this;
        }

        /**
         * Whether {@link ShardServer#close()} hands the shard's slots over before it stops (default true). Off: a fast
         * stop; the slots come back on other shards from the last checkpoint (a rollback) after the lease lapses.
         */
        public Context drainOnClose(final boolean value) {
            drainOnClose = value;
            return this;
        }

        /**
         * About the longest a stop by SIGTERM takes with these settings, when it drains: the wait for sync clocks, the
         * hand-over (a checkpoint at the proxy) and the grace for calls in flight, plus the forced shutdown's wait. A
         * service manager's stop timeout (systemd's TimeoutStopSec) must be above it, else it kills the drain.
         */
        public long longestStopMs() {
            return syncDrainWaitMs + drainTimeoutMs + shutdownGraceMs + 5_000;
        }

        /** The deadline of the DrainShard call when closing (default 10 minutes: the proxy writes a checkpoint). */
        public Context drainTimeoutMs(final long value) {
            drainTimeoutMs = value;
            return this;
        }

        /** Fault points (tests); by default allowed only with -Dpscluster.faults=true. */
        Context faults(final FaultPoints value) {
            faults = value;
            return this;
        }

        void validate() {
            if (proxyAddress.isBlank()) {
                throw new IllegalArgumentException("proxyAddress is empty: give the proxy's host:port");
            }
            if (port < 0 || port > 65535) {
                throw new IllegalArgumentException("port=" + port + " must be in 0..65535");
            }
            if (host.isBlank()) {
                throw new IllegalArgumentException("host is empty");
            }
            if (maxKeysPerRequest < 1) {
                throw new IllegalArgumentException("maxKeysPerRequest=" + maxKeysPerRequest + " must be > 0");
            }
            if (partitions < 1 || partitions > 64) {
                throw new IllegalArgumentException("partitions=" + partitions + " must be in 1..64");
            }
            if (applyQueueCapacity < partitions) {
                throw new IllegalArgumentException("applyQueueCapacity=" + applyQueueCapacity
                        + " must be >= partitions=" + partitions + " (a push may touch every partition)");
            }
            if (applyQueueCapacity < 1) {
                throw new IllegalArgumentException("applyQueueCapacity=" + applyQueueCapacity + " must be > 0");
            }
            if (maxQueuedPushBytes < 1) {
                throw new IllegalArgumentException("maxQueuedPushBytes=" + maxQueuedPushBytes + " must be > 0");
            }
            if (drainTimeoutMs < 1) {
                throw new IllegalArgumentException("drainTimeoutMs=" + drainTimeoutMs + " must be > 0");
            }
            if (registerTimeoutMs < 0) {
                throw new IllegalArgumentException("registerTimeoutMs=" + registerTimeoutMs + " must be >= 0");
            }
        }
    }
}
