package io.pscluster.worker;

import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.StatusRuntimeException;
import io.pscluster.proto.v1.CreateTableRequest;
import io.pscluster.proto.v1.DropTableRequest;
import io.pscluster.proto.v1.GetRoutingTableRequest;
import io.pscluster.proto.v1.ListTablesRequest;
import io.pscluster.proto.v1.ProxyServiceGrpc;
import io.pscluster.proto.v1.ShardServiceGrpc;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.wire.PsException;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;

/**
 * The worker SDK's entry point: built from the proxy's address, it caches the routing table and one channel per
 * shard, and hands out {@link PsTable} handles that push and pull directly to the shards (no extra hop through the
 * proxy). Thread-safe; one client per process is enough, though several are fine.
 *
 * <pre>{@code
 * try (PsClient client = PsClient.connect("localhost:7070")) {
 *     PsTable weights = client.createTable(schema);
 *     float[] w = weights.pull(keys);
 *     weights.push(keys, gradients);
 * }
 * }</pre>
 */
public final class PsClient implements AutoCloseable {
    private final Context context;
    private final ManagedChannel proxyChannel;
    private final ProxyServiceGrpc.ProxyServiceBlockingStub proxy;
    private final Map<String, ManagedChannel> shardChannels = new ConcurrentHashMap<>();
    private final ScheduledExecutorService retries;
    private volatile Routing routing = Routing.EMPTY;

    private PsClient(final Context context) {
        this.context = context;
        this.proxyChannel = Grpc.newChannelBuilder(context.proxyAddress, InsecureChannelCredentials.create())
                .build();
        this.proxy = ProxyServiceGrpc.newBlockingStub(proxyChannel);
        this.retries = Executors.newSingleThreadScheduledExecutor(runnable -> {
            final Thread thread = new Thread(runnable, "ps-client-retry");
            thread.setDaemon(true);
            return thread;
        });
    }

    public static PsClient connect(final String proxyAddress) {
        return connect(new Context().proxyAddress(proxyAddress));
    }

    /** Connects and fetches the routing table. */
    public static PsClient connect(final Context context) {
        context.validate();
        final PsClient client = new PsClient(context);
        try {
            client.refreshRouting();
        } catch (RuntimeException e) {
            client.close();
            throw e;
        }
        return client;
    }

    /**
     * Creates a table on every shard, or returns a handle to an existing one with an identical schema.
     *
     * @throws StatusRuntimeException ALREADY_EXISTS if the name is taken by another schema, INVALID_ARGUMENT for a
     *     bad schema.
     */
    public PsTable createTable(final TableSchema schema) {
        proxy().createTable(CreateTableRequest.newBuilder().setSchema(schema).build());
        return table(schema.getName());
    }

    /**
     * A handle to an existing table.
     *
     * @throws StatusRuntimeException NOT_FOUND if the cluster has no such table.
     */
    public PsTable table(final String name) {
        for (final TableSchema schema :
                proxy().listTables(ListTablesRequest.getDefaultInstance()).getTablesList()) {
            if (schema.getName().equals(name)) {
                return new PsTable(this, schema);
            }
        }
        throw PsException.toStatus(PsException.notFound("table '" + name + "' does not exist"));
    }

    /** Drops a table from every shard; returns false if there was no such table. Its rows are gone. */
    public boolean dropTable(final String name) {
        return proxy().dropTable(DropTableRequest.newBuilder().setTable(name).build())
                .getDropped();
    }

    /** Fetches the proxy's current routing table. */
    public void refreshRouting() {
        routing = Routing.of(proxy().getRoutingTable(GetRoutingTableRequest.newBuilder()
                        .setKnownEpoch(routing.epoch())
                        .build())
                .getRouting());
    }

    public long routingEpoch() {
        return routing.epoch();
    }

    Routing routing() {
        return routing;
    }

    ShardServiceGrpc.ShardServiceStub shard(final String address) {
        return ShardServiceGrpc.newStub(shardChannels.computeIfAbsent(
                address,
                target -> Grpc.newChannelBuilder(target, InsecureChannelCredentials.create())
                        .maxInboundMessageSize(context.maxMessageBytes)
                        .build()));
    }

    ScheduledExecutorService retries() {
        return retries;
    }

    Context context() {
        return context;
    }

    private ProxyServiceGrpc.ProxyServiceBlockingStub proxy() {
        return proxy.withDeadlineAfter(context.deadlineMs, TimeUnit.MILLISECONDS);
    }

    @Override
    public void close() {
        retries.shutdownNow();
        proxyChannel.shutdownNow();
        shardChannels.values().forEach(ManagedChannel::shutdownNow);
    }

    /** Client settings, validated once by {@link PsClient#connect(Context)}. */
    public static final class Context {
        private String proxyAddress = "";
        private long deadlineMs = 30_000;
        private long maxBackoffMs = 1_000;
        private int maxMessageBytes = 256 << 20;

        /** host:port of the proxy. Required. */
        public Context proxyAddress(final String value) {
            proxyAddress = value;
            return this;
        }

        /** Deadline of every call, retries included. */
        public Context deadlineMs(final long value) {
            deadlineMs = value;
            return this;
        }

        /** Longest wait between retries of a refused request. */
        public Context maxBackoffMs(final long value) {
            maxBackoffMs = value;
            return this;
        }

        long deadlineMs() {
            return deadlineMs;
        }

        long maxBackoffMs() {
            return maxBackoffMs;
        }

        void validate() {
            if (proxyAddress.isBlank()) {
                throw new IllegalArgumentException("proxyAddress is empty: give the proxy's host:port");
            }
            if (deadlineMs <= 0) {
                throw new IllegalArgumentException("deadlineMs=" + deadlineMs + " must be > 0");
            }
            if (maxBackoffMs <= 0) {
                throw new IllegalArgumentException("maxBackoffMs=" + maxBackoffMs + " must be > 0");
            }
        }
    }
}
