package io.pscluster.server;

import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.InsecureServerCredentials;
import io.grpc.Server;
import io.grpc.ServerBuilder;
import io.grpc.health.v1.HealthCheckResponse.ServingStatus;
import io.grpc.protobuf.services.HealthStatusManager;
import java.io.IOException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import org.apache.hadoop.conf.Configuration;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A shard process: the gRPC server (data plane, checkpoint admin, health), the {@link Shard} behind it and the
 * link to the proxy. {@link #close()} is the graceful shutdown: health NOT_SERVING, deregister, stop accepting
 * calls, let running ones finish, apply what was accepted.
 */
public final class ShardServer implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(ShardServer.class);

    private final Context context;
    private final Shard shard;
    private final HealthStatusManager health = new HealthStatusManager();
    private final ExecutorService executor;
    private Server server;
    private volatile ProxyLink proxyLink;
    private boolean closed;

    private ShardServer(final Context context) {
        this.context = context;
        this.shard = new Shard(
                context.shardId.isEmpty() ? "unregistered" : context.shardId,
                context.maxKeysPerRequest,
                context.partitions,
                context.applyQueueCapacity,
                context.hadoopConf);
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
        final ServerBuilder<?> builder = Grpc.newServerBuilderForPort(context.port, InsecureServerCredentials.create());
        server = builder.executor(executor)
                .maxInboundMessageSize(context.maxMessageBytes)
                .addService(new ShardDataService(shard, () -> {
                    final ProxyLink link = proxyLink;
                    if (link != null) {
                        link.refreshSoon();
                    }
                }))
                .addService(new ShardAdminGrpcService(shard))
                .addService(health.getHealthService())
                .build()
                .start();
        final String address = context.host + ":" + server.getPort();
        proxyLink = new ProxyLink(
                shard,
                Grpc.newChannelBuilder(context.proxyAddress, InsecureChannelCredentials.create())
                        .build(),
                address);
        proxyLink.register(context.registerTimeoutMs);
        health.setStatus("", ServingStatus.SERVING);
        LOG.info("shard {} serving at {}", shard.shardId(), address);
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
    public Shard shard() {
        return shard;
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
        shard.close();
        executor.shutdownNow();
        LOG.info("shard {} stopped", shard.shardId());
    }

    /** Start-up settings, validated once by {@link ShardServer#start}. */
    public static final class Context {
        private String proxyAddress = "";
        private String host = "127.0.0.1";
        private int port;
        private String shardId = "";
        private int maxKeysPerRequest = 4 << 20;
        private int maxMessageBytes = 256 << 20;
        private int applyQueueCapacity = 1024;
        private int partitions = Math.max(1, Math.min(64, Runtime.getRuntime().availableProcessors()));
        private int handlerThreads = 8;
        private long registerTimeoutMs = 30_000;
        private long shutdownGraceMs = 10_000;
        private Configuration hadoopConf = new Configuration();

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

        public Context registerTimeoutMs(final long value) {
            registerTimeoutMs = value;
            return this;
        }

        public Context hadoopConf(final Configuration value) {
            hadoopConf = value;
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
            if (registerTimeoutMs < 0) {
                throw new IllegalArgumentException("registerTimeoutMs=" + registerTimeoutMs + " must be >= 0");
            }
        }
    }
}
