package io.pscluster.local;

import io.pscluster.proxy.ProxyServer;
import io.pscluster.server.Shard;
import io.pscluster.server.ShardServer;
import io.pscluster.server.table.ParameterTable;
import io.pscluster.server.table.PartitionWriters;
import io.pscluster.server.table.SlotSnapshot;
import io.pscluster.wire.Security;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.apache.hadoop.conf.Configuration;

/**
 * A proxy and N shards in one process on loopback, each a real gRPC server: what {@code psctl local} and
 * {@code psctl demo} run, and the fixture of the integration tests.
 *
 * <pre>{@code
 * try (LocalCluster cluster = LocalCluster.builder().shards(2).checkpointRoot("file:///tmp/ps").start()) {
 *     PsClient client = PsClient.connect(cluster.proxyAddress());
 * }
 * }</pre>
 */
public final class LocalCluster implements AutoCloseable {
    private final Builder builder;
    private final ProxyServer proxy;
    private final List<ShardServer> shards = new ArrayList<>();

    private LocalCluster(final Builder builder, final ProxyServer proxy) {
        this.builder = builder;
        this.proxy = proxy;
    }

    public static Builder builder() {
        return new Builder();
    }

    public String proxyAddress() {
        return "127.0.0.1:" + proxy.port();
    }

    public ProxyServer proxy() {
        return proxy;
    }

    public int shardCount() {
        return shards.size();
    }

    /** The running shard at {@code index}, or null if it was stopped. */
    public ShardServer shard(final int index) {
        return shards.get(index);
    }

    /** Starts one more shard; the proxy gives it a new, unique id. Returns its index. */
    public synchronized int addShard() throws IOException, InterruptedException {
        final ShardServer shard = startShard("", "shard-" + shards.size());
        shards.add(shard);
        return shards.size() - 1;
    }

    /**
     * Stops a shard gracefully, as SIGTERM does: it refuses new requests (retryably), applies what it acknowledged and
     * hands its slots over through a checkpoint, so that nothing acknowledged is lost; then it deregisters.
     */
    public synchronized void stopShard(final int index) throws InterruptedException {
        stop(index, true);
    }

    /**
     * Stops a shard as {@code kill -9} would: no hand-over, no deregistration. Its rows are gone; once its lease plus
     * the margin lapses its slots come back on other shards from the newest complete checkpoint (a reported rollback).
     */
    public synchronized void crashShard(final int index) throws InterruptedException {
        stop(index, false);
    }

    private void stop(final int index, final boolean drain) throws InterruptedException {
        final ShardServer shard = shards.get(index);
        if (shard != null) {
            if (drain) {
                shard.close();
            } else {
                shard.crash();
            }
            shards.set(index, null);
        }
    }

    private ShardServer startShard(final String id, final String process) throws IOException, InterruptedException {
        return ShardServer.start(new ShardServer.Context()
                .meterRegistry(builder.meterRegistries.apply(process))
                .proxyAddress(proxyAddress())
                .shardId(id)
                .port(0)
                .maxKeysPerRequest(builder.maxKeysPerRequest)
                .maxQueuedPushBytes(
                        builder.maxQueuedPushBytes > 0
                                ? builder.maxQueuedPushBytes
                                : PartitionWriters.defaultQueuedBytesLimit() / Math.max(1, builder.shards))
                .hadoopConf(builder.hadoopConf)
                .security(builder.security));
    }

    /**
     * Waits until every slot is served by a running shard, no shard is restoring, and every shard follows the
     * proxy's current routing epoch.
     *
     * @throws TimeoutException naming what was still missing.
     */
    public void awaitHealthy(final long timeoutMs) throws InterruptedException, TimeoutException {
        final long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMs);
        String missing;
        while ((missing = unhealthyReason()) != null) {
            if (System.nanoTime() > deadline) {
                throw new TimeoutException("cluster not healthy after " + timeoutMs + " ms: " + missing);
            }
            TimeUnit.MILLISECONDS.sleep(20);
        }
    }

    private synchronized String unhealthyReason() {
        final BitSet served = new BitSet();
        int running = 0;
        for (final ShardServer server : shards) {
            if (server == null) {
                continue;
            }
            running++;
            final Shard shard = server.shard();
            if (shard.restoringSlotCount() > 0) {
                return "shard " + shard.shardId() + " is restoring " + shard.restoringSlotCount() + " slots";
            }
            final BitSet owned = shard.ownedSlots();
            if (owned.intersects(served)) {
                return "two shards serve the same slot (routing in flux)";
            }
            served.or(owned);
        }
        if (running == 0) {
            return "no shard is running";
        }
        if (served.cardinality() != io.pscluster.wire.Slots.SLOT_COUNT) {
            return (io.pscluster.wire.Slots.SLOT_COUNT - served.cardinality()) + " slots have no running shard";
        }
        return null;
    }

    /**
     * Every record of a table across the running shards: key -> values followed by optimizer slots. For checks that
     * a restore brought back exactly what was checkpointed. Call when no pushes are in flight.
     */
    public Map<Long, float[]> dumpTable(final String table) throws IOException, InterruptedException {
        final Map<Long, float[]> records = new TreeMap<>();
        for (final ShardServer server : shards) {
            if (server == null) {
                continue;
            }
            final Shard shard = server.shard();
            shard.awaitQuiescent();
            final ParameterTable parameters = shard.table(table);
            final BitSet owned = shard.ownedSlots();
            for (final SlotSnapshot slot : parameters.snapshot(owned::get)) {
                for (int row = 0; row < slot.rows(); row++) {
                    final int from = row * slot.rowWidth();
                    records.put(slot.keys()[row], Arrays.copyOfRange(slot.records(), from, from + slot.rowWidth()));
                }
            }
        }
        return records;
    }

    /** Stops every shard without hand-over (the cluster is going away), then the proxy. */
    @Override
    public synchronized void close() throws InterruptedException {
        for (int i = 0; i < shards.size(); i++) {
            crashShard(i);
        }
        proxy.close();
    }

    /** Cluster settings; {@link #start()} validates them through the proxy's and shards' own contexts. */
    public static final class Builder {
        private int shards = 2;
        private String checkpointRoot = "";
        private int proxyPort;
        private long checkpointIntervalMs;
        private int maxKeysPerRequest = 4 << 20;
        /** 0: a quarter of the heap, shared by the shards of this one process. */
        private long maxQueuedPushBytes;

        private Configuration hadoopConf = new Configuration();
        private String stateDir = "";
        private long leaseMs = 5_000;
        private long leaseMarginMs = 1_000;
        private long heartbeatIntervalMs = 1_000;
        private long workerLeaseMs = 3_000;
        private String checkpointCodec = "zstd";
        private Security security = Security.NONE;
        private int keepCheckpoints = 5;
        private int deltasPerBase = ProxyServer.Context.DEFAULT_DELTAS_PER_BASE;
        private long checkpointPauseMs = 10_000;
        private long maxCheckpointAgeMs;
        private long checkpointStallTimeoutMs = 120_000;
        private long checkpointTimeoutMs;
        private java.util.function.Function<String, io.micrometer.core.instrument.MeterRegistry> meterRegistries =
                process -> null;

        /**
         * The metrics registry of each process the cluster starts, by its name: "proxy", and "shard-N" for the Nth
         * shard started (0 first); a null registry: none.
         */
        public Builder meterRegistries(
                final java.util.function.Function<String, io.micrometer.core.instrument.MeterRegistry> value) {
            meterRegistries = value;
            return this;
        }

        /** TLS and tokens for the proxy and every shard, servers and clients alike ({@link Security}). */
        public Builder security(final Security value) {
            security = java.util.Objects.requireNonNull(value, "security");
            return this;
        }

        /** How shards compress checkpoint files: zstd (default), lz4 or none. */
        public Builder checkpointCodec(final String value) {
            checkpointCodec = value;
            return this;
        }

        /** After each commit, keep this many of the newest checkpoints (default 5); 0: all. */
        /**
         * How long a checkpoint waits for the running jobs' workers to pause at a step boundary (default 10 s; 0:
         * never pause them, cut shard by shard).
         */
        public Builder checkpointPauseMs(final long value) {
            checkpointPauseMs = value;
            return this;
        }

        /** Deltas between two bases (default {@value ProxyServer.Context#DEFAULT_DELTAS_PER_BASE}); 0: every checkpoint is a base. */
        public Builder deltasPerBase(final int value) {
            deltasPerBase = value;
            return this;
        }

        public Builder keepCheckpoints(final int value) {
            keepCheckpoints = value;
            return this;
        }

        /** After each commit, delete checkpoints older than this; 0 (default): no limit by age. */
        public Builder maxCheckpointAgeMs(final long value) {
            maxCheckpointAgeMs = value;
            return this;
        }

        /** The proxy's state directory (local); default: {@code _proxy-state} under a file:// root, else a temp dir. */
        public Builder stateDir(final String value) {
            stateDir = value;
            return this;
        }

        /** How long a shard's lease lasts; the proxy moves its slots after lease plus margin without a heartbeat. */
        public Builder leaseMs(final long value) {
            leaseMs = value;
            return this;
        }

        public Builder leaseMarginMs(final long value) {
            leaseMarginMs = value;
            return this;
        }

        public Builder heartbeatIntervalMs(final long value) {
            heartbeatIntervalMs = value;
            return this;
        }

        /** How long a job's worker stays a member without renewing its lease (see ProxyServer.Context). */
        public Builder workerLeaseMs(final long value) {
            workerLeaseMs = value;
            return this;
        }

        /** The most keys a shard accepts in one request. */
        public Builder maxKeysPerRequest(final int value) {
            maxKeysPerRequest = value;
            return this;
        }

        /**
         * See {@link ShardServer.Context#maxQueuedPushBytes}; per shard. Default: a quarter of the heap shared by the
         * shards (they are in this one process).
         */
        public Builder maxQueuedPushBytes(final long value) {
            maxQueuedPushBytes = value;
            return this;
        }

        /** See {@link ProxyServer.Context#checkpointStallTimeoutMs}. */
        public Builder checkpointStallTimeoutMs(final long value) {
            checkpointStallTimeoutMs = value;
            return this;
        }

        /** See {@link ProxyServer.Context#checkpointTimeoutMs}; 0: no limit. */
        public Builder checkpointTimeoutMs(final long value) {
            checkpointTimeoutMs = value;
            return this;
        }

        public Builder shards(final int value) {
            shards = value;
            return this;
        }

        public Builder checkpointRoot(final String value) {
            checkpointRoot = value;
            return this;
        }

        public Builder proxyPort(final int value) {
            proxyPort = value;
            return this;
        }

        public Builder checkpointIntervalMs(final long value) {
            checkpointIntervalMs = value;
            return this;
        }

        public Builder hadoopConf(final Configuration value) {
            hadoopConf = value;
            return this;
        }

        /** Starts the proxy and the shards and waits until every slot is served. */
        public LocalCluster start() throws IOException, InterruptedException, TimeoutException {
            if (shards < 1) {
                throw new IllegalArgumentException("shards=" + shards + " must be >= 1");
            }
            String state = stateDir;
            if (state.isEmpty() && !checkpointRoot.startsWith("file:")) {
                state = java.nio.file.Files.createTempDirectory("ps-proxy-state")
                        .toString();
            }
            final ProxyServer proxy = ProxyServer.start(new ProxyServer.Context()
                    .meterRegistry(meterRegistries.apply("proxy"))
                    .port(proxyPort)
                    .checkpointRoot(checkpointRoot)
                    .checkpointIntervalMs(checkpointIntervalMs)
                    .stateDir(state)
                    .leaseMs(leaseMs)
                    .leaseMarginMs(leaseMarginMs)
                    .heartbeatIntervalMs(heartbeatIntervalMs)
                    .workerLeaseMs(workerLeaseMs)
                    .checkpointCodec(checkpointCodec)
                    .keepCheckpoints(keepCheckpoints)
                    .deltasPerBase(deltasPerBase)
                    .checkpointPauseMs(checkpointPauseMs)
                    .maxCheckpointAgeMs(maxCheckpointAgeMs)
                    .checkpointStallTimeoutMs(checkpointStallTimeoutMs)
                    .checkpointTimeoutMs(checkpointTimeoutMs)
                    .hadoopConf(hadoopConf)
                    .security(security));
            final LocalCluster cluster = new LocalCluster(this, proxy);
            try {
                for (int i = 0; i < shards; i++) {
                    cluster.addShard();
                }
                cluster.awaitHealthy(60_000);
            } catch (IOException | InterruptedException | TimeoutException | RuntimeException e) {
                cluster.close();
                throw e;
            }
            return cluster;
        }
    }
}
