package io.pscluster.proxy;

import io.grpc.Grpc;
import io.grpc.InsecureServerCredentials;
import io.grpc.Server;
import io.grpc.health.v1.HealthCheckResponse.ServingStatus;
import io.grpc.protobuf.services.HealthStatusManager;
import io.pscluster.checkpoint.CheckpointInfo;
import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.Manifest;
import io.pscluster.wire.PsException;
import java.io.IOException;
import java.net.URI;
import java.net.URISyntaxException;
import java.util.Optional;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.TimeUnit;
import org.apache.hadoop.conf.Configuration;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The proxy process: discovery, routing, the table catalog and checkpoint coordination over gRPC. On start it
 * picks up the newest complete checkpoint under its checkpoint root, so a cluster restarted on the same root comes
 * back with its tables and hands each old shard's slots to a new shard that restores them.
 */
public final class ProxyServer implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(ProxyServer.class);

    private final Context context;
    private final ClusterState state;
    private final CheckpointCoordinator checkpoints;
    private final ShardChannels channels = new ShardChannels();
    private final HealthStatusManager health = new HealthStatusManager();
    // Handlers fan out to shards and wait (table creation, checkpoints): a bounded pool, not the event loop.
    private final ExecutorService handlers = Executors.newFixedThreadPool(8, daemon("ps-proxy-handler"));
    private final ExecutorService onwardCalls = Executors.newCachedThreadPool(daemon("ps-proxy-call"));
    private final ScheduledExecutorService timers = Executors.newScheduledThreadPool(2, daemon("ps-proxy-timer"));
    private Server server;
    private boolean closed;

    private ProxyServer(final Context context, final CheckpointStore store) {
        this.context = context;
        this.state = new ClusterState(context.leaseMs, store.root().toString(), System::nanoTime);
        this.checkpoints = new CheckpointCoordinator(state, store, channels, onwardCalls, context.callDeadlineMs);
    }

    public static ProxyServer start(final Context context) throws IOException {
        final URI root = context.validate();
        final CheckpointStore store = new CheckpointStore(root, context.hadoopConf);
        final ProxyServer proxy = new ProxyServer(context, store);
        try {
            proxy.resume(store);
            proxy.startServing();
        } catch (IOException | RuntimeException e) {
            try {
                proxy.close();
            } catch (InterruptedException interrupted) {
                Thread.currentThread().interrupt();
            }
            throw e;
        }
        return proxy;
    }

    private void resume(final CheckpointStore store) throws IOException {
        final Optional<CheckpointInfo> latest = store.latest();
        if (latest.isEmpty()) {
            LOG.info("no checkpoint under {}: starting an empty cluster", store.root());
            return;
        }
        final Manifest manifest = latest.get().manifest();
        final String owners = manifest.properties().getOrDefault(CheckpointCoordinator.SLOT_OWNERS, "");
        final long epoch = Long.parseLong(manifest.properties().getOrDefault(CheckpointCoordinator.ROUTING_EPOCH, "0"));
        state.loadCheckpoint(
                latest.get().id(), CheckpointCoordinator.schemasOf(manifest), SlotOwners.decode(owners), epoch);
        LOG.info(
                "resuming from checkpoint {} under {}: {} tables, {} rows; shards that join restore from it",
                latest.get().id(),
                store.root(),
                manifest.tables().size(),
                manifest.totalRows());
    }

    private void startServing() throws IOException {
        server = Grpc.newServerBuilderForPort(context.port, InsecureServerCredentials.create())
                .executor(handlers)
                .addService(new ProxyGrpcService(
                        state,
                        channels,
                        onwardCalls,
                        context.heartbeatIntervalMs,
                        context.leaseMs,
                        context.callDeadlineMs))
                .addService(new AdminGrpcService(state, checkpoints))
                .addService(health.getHealthService())
                .build()
                .start();
        timers.scheduleWithFixedDelay(
                state::expireLeases, context.heartbeatIntervalMs, context.heartbeatIntervalMs, TimeUnit.MILLISECONDS);
        if (context.checkpointIntervalMs > 0) {
            timers.scheduleWithFixedDelay(
                    this::periodicCheckpoint,
                    context.checkpointIntervalMs,
                    context.checkpointIntervalMs,
                    TimeUnit.MILLISECONDS);
        }
        health.setStatus("", ServingStatus.SERVING);
        LOG.info(
                "proxy serving on port {}, checkpoints under {}",
                server.getPort(),
                checkpoints.store().root());
    }

    private void periodicCheckpoint() {
        if (state.tables().isEmpty()) {
            return;
        }
        try {
            checkpoints.checkpointNow();
        } catch (PsException e) {
            LOG.warn("periodic checkpoint skipped: {}", e.getMessage());
        } catch (IOException | RuntimeException e) {
            LOG.error("periodic checkpoint failed", e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    public int port() {
        return server.getPort();
    }

    public URI checkpointRoot() {
        return checkpoints.store().root();
    }

    public void awaitTermination() throws InterruptedException {
        server.awaitTermination();
    }

    @Override
    public synchronized void close() throws InterruptedException {
        if (closed) {
            return;
        }
        closed = true;
        health.enterTerminalState();
        timers.shutdownNow();
        if (server != null) {
            server.shutdown();
            if (!server.awaitTermination(10, TimeUnit.SECONDS)) {
                server.shutdownNow();
            }
        }
        channels.close();
        handlers.shutdownNow();
        onwardCalls.shutdownNow();
        LOG.info("proxy stopped");
    }

    private static ThreadFactory daemon(final String name) {
        return runnable -> {
            final Thread thread = new Thread(runnable, name);
            thread.setDaemon(true);
            return thread;
        };
    }

    /** Start-up settings, validated once by {@link ProxyServer#start}. */
    public static final class Context {
        private int port;
        private String checkpointRoot = "";
        private long heartbeatIntervalMs = 1_000;
        private long leaseMs = 5_000;
        private long checkpointIntervalMs;
        private long callDeadlineMs = 120_000;
        private Configuration hadoopConf = new Configuration();

        /** Port to serve on; 0 picks a free one. */
        public Context port(final int value) {
            port = value;
            return this;
        }

        /** Hadoop FileSystem URI (hdfs://, file://, ...) under which checkpoints live. Required. */
        public Context checkpointRoot(final String value) {
            checkpointRoot = value;
            return this;
        }

        public Context heartbeatIntervalMs(final long value) {
            heartbeatIntervalMs = value;
            return this;
        }

        /** A shard that has not heartbeat for this long is dead and its slots go to another shard. */
        public Context leaseMs(final long value) {
            leaseMs = value;
            return this;
        }

        /** Take a checkpoint this often; 0 turns periodic checkpoints off. */
        public Context checkpointIntervalMs(final long value) {
            checkpointIntervalMs = value;
            return this;
        }

        /** Deadline of the proxy's calls to shards (checkpoint writes included). */
        public Context callDeadlineMs(final long value) {
            callDeadlineMs = value;
            return this;
        }

        public Context hadoopConf(final Configuration value) {
            hadoopConf = value;
            return this;
        }

        URI validate() {
            if (port < 0 || port > 65535) {
                throw new IllegalArgumentException("port=" + port + " must be in 0..65535");
            }
            if (heartbeatIntervalMs <= 0) {
                throw new IllegalArgumentException("heartbeatIntervalMs=" + heartbeatIntervalMs + " must be > 0");
            }
            if (leaseMs <= heartbeatIntervalMs) {
                throw new IllegalArgumentException(
                        "leaseMs=" + leaseMs + " must be > heartbeatIntervalMs=" + heartbeatIntervalMs);
            }
            if (checkpointIntervalMs < 0) {
                throw new IllegalArgumentException(
                        "checkpointIntervalMs=" + checkpointIntervalMs + " must be >= 0 (0 turns it off)");
            }
            if (callDeadlineMs <= 0) {
                throw new IllegalArgumentException("callDeadlineMs=" + callDeadlineMs + " must be > 0");
            }
            if (checkpointRoot.isBlank()) {
                throw new IllegalArgumentException("checkpointRoot is empty: give a URI such as file:///var/ps");
            }
            final URI uri;
            try {
                uri = new URI(checkpointRoot);
            } catch (URISyntaxException e) {
                throw new IllegalArgumentException(
                        "checkpointRoot='" + checkpointRoot + "' is not a URI: " + e.getMessage());
            }
            if (uri.getScheme() == null) {
                throw new IllegalArgumentException("checkpointRoot='" + checkpointRoot
                        + "' needs a scheme (file:///path or hdfs://namenode:port/path)");
            }
            return uri;
        }
    }
}
