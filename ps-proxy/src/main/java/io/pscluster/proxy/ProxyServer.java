package io.pscluster.proxy;

import io.grpc.Grpc;
import io.grpc.Server;
import io.grpc.health.v1.HealthCheckResponse.ServingStatus;
import io.grpc.protobuf.services.HealthStatusManager;
import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.core.instrument.binder.grpc.MetricCollectingServerInterceptor;
import io.pscluster.checkpoint.CheckpointInfo;
import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.ChunkCodec;
import io.pscluster.checkpoint.Manifest;
import io.pscluster.checkpoint.RetentionPolicy;
import io.pscluster.wire.PsException;
import io.pscluster.wire.Security;
import java.io.IOException;
import java.io.InterruptedIOException;
import java.net.URI;
import java.net.URISyntaxException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import org.apache.hadoop.conf.Configuration;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The proxy process: discovery, routing, the table catalog, jobs ({@link JobRegistry}) and checkpoint coordination
 * over gRPC. Its state lives in a {@link ProxyStateStore} (a local file by default) and is saved before any change
 * takes effect; on start it resumes from that record, or, without one, from the newest checkpoint manifest under its
 * checkpoint root.
 *
 * <p>Threads: the gRPC executor is the control pool (registration, heartbeats, deregistration, routing, status),
 * which only ever waits on the state's monitor and a state save; calls that wait on shards or storage run on the
 * long-call pool ({@link LongCalls}), whose onward calls run on their own cached pool. So a checkpoint of many
 * minutes never keeps a heartbeat waiting, which would let a healthy shard's lease lapse. Job calls that wait (a
 * join until its job starts, any job change until the shards were sent the new list) hold no thread at all: they are
 * answered when a future completes, on the onward-call pool.
 */
public final class ProxyServer implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(ProxyServer.class);

    private final Context context;
    private final ClusterState state;
    private final JobRegistry jobs;
    private final ProxyStateStore stateStore;
    private final CheckpointCoordinator checkpoints;
    // Held here: the registry holds what its metrics read through only weakly.
    private final ProxyMetrics metrics;
    private final ShardChannels channels;
    private final io.grpc.ServerCredentials serverCredentials;
    private final HealthStatusManager health = new HealthStatusManager();
    // Control calls are short (memory and, at most, one fsync): a small bounded pool.
    private final ExecutorService control = Executors.newFixedThreadPool(4, ThreadFactories.daemon("ps-proxy-control"));
    // Long calls wait on shards for up to the call deadline; bounded so that a burst queues instead of piling threads.
    private final ExecutorService longCalls = Executors.newFixedThreadPool(4, ThreadFactories.daemon("ps-proxy-long"));
    private final ExecutorService onwardCalls = Executors.newCachedThreadPool(ThreadFactories.daemon("ps-proxy-call"));
    // Thin clients' pulls wait on shards: a pool of their own, so that a burst of them queues and leaves the long
    // calls (checkpoints, table creation) their threads.
    private final ExecutorService pullCalls = Executors.newFixedThreadPool(8, ThreadFactories.daemon("ps-proxy-pull"));
    private final ProxyPulls pulls;
    private final ScheduledExecutorService timers =
            Executors.newScheduledThreadPool(1, ThreadFactories.daemon("ps-proxy-timer"));
    // Periodic checkpoints run on their own thread: one waits for workers to pause and for shards to write, and the
    // lease checks on the timer thread must go on meanwhile (a shard lost mid-checkpoint is failed over on time).
    private final ScheduledExecutorService checkpointTimer =
            Executors.newSingleThreadScheduledExecutor(ThreadFactories.daemon("ps-proxy-checkpoint"));
    private final ShardFanOut fanOut;
    private final WorkerPauses pauses;
    private final ClusterMark mark;
    private final RootClaim claim;
    private Server server;
    private boolean closed;

    private ProxyServer(
            final Context context,
            final CheckpointStore store,
            final ClusterState state,
            final ProxyStateStore stateStore,
            final ClusterMark mark,
            final RootClaim claim,
            final Credentials credentials) {
        this.context = context;
        this.channels = new ShardChannels(credentials.toShards());
        this.serverCredentials = credentials.serving();
        this.mark = mark;
        this.claim = claim;
        this.state = state;
        this.stateStore = stateStore;
        this.fanOut = new ShardFanOut(channels, onwardCalls, context.callDeadlineMs);
        this.jobs = JobRegistry.open(
                state,
                new JobRegistry.Settings(context.workerLeaseMs, context.forgetAfterMs),
                new ShardFanOut(channels, onwardCalls, JobRegistry.DELIVERY_DEADLINE_MS),
                onwardCalls,
                System::nanoTime,
                System::currentTimeMillis);
        this.pauses = new WorkerPauses(jobs::list, timers);
        this.checkpoints = new CheckpointCoordinator(state, store, fanOut, context.checkpointSettings(), pauses);
        this.pulls = new ProxyPulls(
                state, channels, onwardCalls, new ReadCache(context.readCacheBytes), ProxyPulls.DEADLINE_MS);
        this.metrics = context.meterRegistry == null
                ? null
                : ProxyMetrics.bind(context.meterRegistry, state, checkpoints, pulls.cache());
        checkpoints.rootClaim(claim::trouble);
    }

    /** What the proxy serves with and what it calls the shards with, read from their files before anything starts. */
    private record Credentials(io.grpc.ServerCredentials serving, io.grpc.ChannelCredentials toShards) {}

    public static ProxyServer start(final Context context) throws IOException {
        final URI root = context.validate();
        final Credentials credentials =
                new Credentials(context.security.serverCredentials(), context.security.channelCredentials());
        final CheckpointStore store = new CheckpointStore(root, context.hadoopConf);
        final ProxyStateStore stateStore = context.stateStore != null
                ? context.stateStore
                : new LocalFileStateStore(stateDir(context.stateDir, store.root()));
        final ClusterMark mark = new ClusterMark(store);
        final ClusterState state;
        try {
            state = ClusterState.open(
                    new ClusterState.Settings(
                            context.leaseMs,
                            context.leaseMarginMs,
                            context.forgetAfterMs,
                            store.root().toString(),
                            context.checkpointRootMoved),
                    stateStore,
                    () -> bootstrapFrom(store),
                    mark::existed,
                    System::nanoTime,
                    System::currentTimeMillis);
        } catch (IOException | RuntimeException e) {
            stateStore.close();
            throw e;
        }
        final RootClaim claim;
        try {
            claim = RootClaim.take(
                    store, state.stateId(), hostName(), describe(context.port), context.rootClaimRenewMs);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            stateStore.close();
            throw new InterruptedIOException("interrupted while checking the other proxies' claims on " + root);
        } catch (IOException | RuntimeException e) {
            stateStore.close();
            throw e;
        }
        adoptUnrecordedCheckpoint(state, store);
        noteCheckpointTimes(state, store);
        final ProxyServer proxy;
        try {
            proxy = new ProxyServer(context, store, state, stateStore, mark, claim, credentials);
        } catch (RuntimeException e) {
            claim.release();
            stateStore.close();
            throw e;
        }
        try {
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

    /** Who this proxy is, as its root claim says it: process and port. */
    private static String describe(final int port) {
        return "proxy process " + ProcessHandle.current().pid() + ", port " + port;
    }

    private static String hostName() {
        try {
            return java.net.InetAddress.getLocalHost().getHostName();
        } catch (IOException e) {
            return "unknown-host";
        }
    }

    /** The state directory: the configured one; else {@code <root>/_proxy-state} for a file:// root, else local. */
    static Path stateDir(final String configured, final URI checkpointRoot) {
        if (!configured.isBlank()) {
            return Path.of(configured);
        }
        if ("file".equals(checkpointRoot.getScheme())) {
            return Path.of(checkpointRoot).resolve("_proxy-state");
        }
        return Path.of("ps-proxy-state");
    }

    /**
     * The newest checkpoint whose manifest decodes, for a proxy without a state record. Reads manifests only (no row
     * file), and a failure to read any checkpoint is logged and skipped: it must never stop the proxy from starting.
     */
    static Optional<ClusterState.Bootstrap> bootstrapFrom(final CheckpointStore store) {
        final List<CheckpointInfo> checkpoints;
        try {
            checkpoints = store.list();
        } catch (IOException | RuntimeException e) {
            LOG.error("cannot list the checkpoints under {}; starting without one", store.root(), e);
            return Optional.empty();
        }
        for (final CheckpointInfo checkpoint : checkpoints) {
            try {
                final Manifest manifest = checkpoint.manifest();
                final String owners = manifest.properties().getOrDefault(CheckpointCoordinator.SLOT_OWNERS, "");
                final long epoch =
                        Long.parseLong(manifest.properties().getOrDefault(CheckpointCoordinator.ROUTING_EPOCH, "0"));
                final ClusterState.Bootstrap bootstrap = new ClusterState.Bootstrap(
                        checkpoint.id(),
                        manifest.createdMillis(),
                        CheckpointCoordinator.schemasOf(manifest),
                        SlotOwners.decode(owners),
                        epoch);
                LOG.info(
                        "starting from checkpoint {} under {}: {} tables, {} rows",
                        checkpoint.id(),
                        store.root(),
                        manifest.tables().size(),
                        manifest.totalRows());
                return Optional.of(bootstrap);
            } catch (IOException | RuntimeException e) {
                LOG.warn("skipping checkpoint {} at {}: {}", checkpoint.id(), checkpoint.dir(), e.toString());
            }
        }
        LOG.info("no readable checkpoint under {}", store.root());
        return Optional.empty();
    }

    /**
     * Adopts the newest checkpoint above the latest the state records that this proxy's state committed: the proxy
     * stopped after the commit and before the record named it, and the cluster's data moved on from it, so a lost
     * shard's slots must come back from it rather than from the one before. A newer checkpoint of another state is
     * logged as an error and left alone (checkpoints are refused while it is there, see {@link CheckpointCoordinator}).
     * Best effort: a root or manifest that cannot be read (a manifest that does not decode is passed over) is logged,
     * and the record is then used as it is.
     */
    private static void adoptUnrecordedCheckpoint(final ClusterState state, final CheckpointStore store) {
        final long recorded = state.latestCheckpointId();
        try {
            boolean adopted = false;
            for (final CheckpointCoordinator.Above above : CheckpointCoordinator.committedAbove(store, recorded)) {
                final String writer = above.committer();
                if (writer.equals(state.stateId())) {
                    if (!adopted) {
                        adopted = true;
                        LOG.warn(
                                "checkpoint {} was committed by this proxy but its state records {} as the latest (the"
                                        + " proxy stopped between the commit and the save): taking {} as the latest"
                                        + " and as the checkpoint the data moved on from",
                                above.id(),
                                recorded,
                                above.id());
                        try {
                            state.checkpointCommitted(
                                    above.id(), above.manifest().createdMillis());
                        } catch (PsException e) {
                            LOG.warn("{}", e.getMessage());
                        }
                    }
                } else if (!writer.isEmpty()) {
                    LOG.error(
                            "checkpoint {} under {} was committed by another proxy (state {}; this proxy's state is {}):"
                                    + " two clusters share this checkpoint root. It is not used, and this proxy takes"
                                    + " no checkpoint while it is there",
                            above.id(),
                            store.root(),
                            writer,
                            state.stateId());
                }
            }
        } catch (IOException | RuntimeException e) {
            LOG.warn("cannot list the checkpoints under {} above {}: {}", store.root(), recorded, e.toString());
        }
    }

    /**
     * Rollback events name the time of their checkpoint (the latest, or the one the data is at); the record keeps
     * only their ids. Best effort.
     */
    private static void noteCheckpointTimes(final ClusterState state, final CheckpointStore store) {
        for (final long id : new java.util.TreeSet<>(List.of(state.latestCheckpointId(), state.dataCheckpointId()))) {
            if (id == 0) {
                continue;
            }
            try {
                store.get(id)
                        .ifPresent(
                                info -> state.checkpointTime(id, info.manifest().createdMillis()));
            } catch (IOException | RuntimeException e) {
                LOG.warn("cannot read the manifest of checkpoint {}: {}", id, e.toString());
            }
        }
    }

    private void startServing() throws IOException {
        final io.grpc.ServerBuilder<?> builder = Grpc.newServerBuilderForPort(context.port, serverCredentials)
                .executor(control)
                // Pulls through the proxy carry up to ProxyPulls.MAX_KEYS keys (8 MiB).
                .maxInboundMessageSize(16 << 20)
                // Inner to the metrics' interceptor: refused calls are counted, by status.
                .intercept(context.security.tokenCheck());
        if (context.meterRegistry != null) {
            // Calls and their outcomes per method (grpc_server_requests_received_total, _responses_sent_total and
            // _processing_duration_seconds by method and status code).
            builder.intercept(new MetricCollectingServerInterceptor(context.meterRegistry));
        }
        server = builder.addService(new ProxyGrpcService(
                        state,
                        jobs,
                        fanOut,
                        checkpoints,
                        pauses,
                        new LongCalls(longCalls),
                        context.heartbeatIntervalMs,
                        mark))
                .addService(new AdminGrpcService(state, jobs, checkpoints, new LongCalls(longCalls)))
                .addService(new ProxyDataGrpcService(pulls, new LongCalls(pullCalls)))
                .addService(health.getHealthService())
                .build()
                .start();
        state.startGrace();
        if (!state.tables().isEmpty()) {
            mark.ensureQuietly();
        }
        jobs.startLeases();
        final long tick = Math.max(1, Math.min(context.heartbeatIntervalMs, context.leaseMarginMs));
        // A check later than its interval by more than this is taken for a pause of this process and not counted
        // against leases: the margin (or a tick), but at most half of what a heartbeat may be late by and still count.
        final long pauseThreshold = TimeUnit.MILLISECONDS.toNanos(Math.max(
                1,
                Math.min(
                        Math.max(tick, context.leaseMarginMs),
                        (context.leaseMs + context.leaseMarginMs - context.heartbeatIntervalMs) / 2)));
        state.detectOwnPauses(TimeUnit.MILLISECONDS.toNanos(tick), pauseThreshold);
        jobs.detectOwnPauses(TimeUnit.MILLISECONDS.toNanos(JobRegistry.CHECK_INTERVAL_MS), pauseThreshold);
        timers.scheduleWithFixedDelay(this::checkLeases, tick, tick, TimeUnit.MILLISECONDS);
        claim.serving(describe(server.getPort()));
        timers.scheduleWithFixedDelay(
                this::checkJobs, JobRegistry.CHECK_INTERVAL_MS, JobRegistry.CHECK_INTERVAL_MS, TimeUnit.MILLISECONDS);
        if (context.checkpointIntervalMs > 0) {
            schedulePeriodicCheckpoint(context.checkpointIntervalMs);
        }
        health.setStatus("", ServingStatus.SERVING);
        LOG.info(
                "proxy serving on port {}, checkpoints under {}",
                server.getPort(),
                checkpoints.store().root());
    }

    private void checkLeases() {
        try {
            state.expireLeases();
        } catch (RuntimeException e) {
            // A failed save undid the change; the next tick tries again.
            LOG.warn("lease check failed: {}", e.getMessage());
        }
    }

    private void checkJobs() {
        try {
            jobs.check();
        } catch (RuntimeException e) {
            // A failed save undid the change; the next tick tries again.
            LOG.warn("job check failed: {}", e.getMessage());
        }
    }

    private void schedulePeriodicCheckpoint(final long delayMs) {
        try {
            checkpointTimer.schedule(this::periodicCheckpoint, delayMs, TimeUnit.MILLISECONDS);
        } catch (java.util.concurrent.RejectedExecutionException closing) {
            // close() shut the timer down.
        }
    }

    /** Checkpoints not taken in a row by the periodic schedule (skipped or failed); the timer's thread alone. */
    private int periodicMisses;

    /**
     * Takes the periodic checkpoint, then schedules the next: an interval later, or sooner when this one was skipped
     * or failed (see {@link #periodicRetryMs}), so that a restore or a move under way when the period came, or a
     * passing fault, does not leave the cluster a whole interval more without a checkpoint.
     */
    private void periodicCheckpoint() {
        final long retryMs = periodicRetryMs(periodicMisses + 1);
        final boolean taken = takePeriodicCheckpoint(retryMs);
        if (Thread.currentThread().isInterrupted()) {
            // close() shut the timer down.
            return;
        }
        periodicMisses = taken ? 0 : periodicMisses + 1;
        schedulePeriodicCheckpoint(taken ? context.checkpointIntervalMs : retryMs);
    }

    /** Whether the periodic checkpoint was taken (or there was nothing to take); else says why not, and when next. */
    private boolean takePeriodicCheckpoint(final long retryMs) {
        if (state.tables().isEmpty()) {
            return true;
        }
        try {
            checkpoints.checkpointNow();
            return true;
        } catch (PsException e) {
            // The coordinator logged why (a WARN); this says it was the periodic one.
            LOG.info("periodic checkpoint skipped; trying again in {} ms", retryMs);
        } catch (IOException | RuntimeException e) {
            LOG.info("periodic checkpoint failed; trying again in {} ms", retryMs);
        } catch (org.apache.hadoop.fs.FSError e) {
            // The local filesystem's I/O failure (a full disk) is an Error; a timer task that throws never runs again.
            LOG.warn("periodic checkpoint failed: {}; trying again in {} ms", e.toString(), retryMs);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        return false;
    }

    /** How long after the {@code misses}-th periodic checkpoint in a row not taken the next is tried. */
    private long periodicRetryMs(final int misses) {
        return periodicRetryMs(context.checkpointIntervalMs, context.heartbeatIntervalMs, misses);
    }

    /**
     * After {@code misses} periodic checkpoints in a row were not taken: a heartbeat interval (what most refusals wait
     * for: a restore or a move reported done), doubled with each further miss, never more than the period itself.
     */
    static long periodicRetryMs(final long intervalMs, final long heartbeatMs, final int misses) {
        final long backoff = heartbeatMs << Math.min(Math.max(misses - 1, 0), 30);
        return Math.max(1, Math.min(intervalMs, backoff < 0 ? intervalMs : backoff));
    }

    /** The workers' checkpoint pauses (tests look at the pause in force). */
    WorkerPauses pauses() {
        return pauses;
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
        pauses.close();
        checkpointTimer.shutdownNow();
        timers.shutdownNow();
        jobs.close();
        state.close();
        if (server != null) {
            server.shutdown();
            if (!server.awaitTermination(10, TimeUnit.SECONDS)) {
                server.shutdownNow();
            }
        }
        channels.close();
        try {
            stateStore.close();
        } catch (IOException e) {
            LOG.warn("closing the proxy state store {}: {}", stateStore.describe(), e.toString());
        }
        control.shutdownNow();
        longCalls.shutdownNow();
        pullCalls.shutdownNow();
        onwardCalls.shutdownNow();
        claim.release();
        LOG.info("proxy stopped");
    }

    /** Start-up settings, validated once by {@link ProxyServer#start}. */
    public static final class Context {
        /** Deltas between two bases unless {@link #deltasPerBase} says otherwise. */
        public static final int DEFAULT_DELTAS_PER_BASE = CheckpointCoordinator.DEFAULT_DELTAS_PER_BASE;
        /** The read cache's default capacity: 64 MiB of rows. */
        public static final long DEFAULT_READ_CACHE_BYTES = 64L << 20;

        private int port;
        private MeterRegistry meterRegistry;
        private String checkpointRoot = "";
        private boolean checkpointRootMoved;
        private long heartbeatIntervalMs = 1_000;
        private long leaseMs = 5_000;
        private long checkpointIntervalMs;
        private long callDeadlineMs = 120_000;
        private long leaseMarginMs = 1_000;
        private long forgetAfterMs = 600_000;
        private long workerLeaseMs = 3_000;
        private String stateDir = "";
        private ProxyStateStore stateStore;
        private long rootClaimRenewMs = 2_000;
        private Configuration hadoopConf = new Configuration();
        private String checkpointCodec = "zstd";
        private int checkpointReplication;
        private long checkpointBlockSize;
        private int keepCheckpoints = 5;
        private int deltasPerBase = CheckpointCoordinator.DEFAULT_DELTAS_PER_BASE;
        private long checkpointPauseMs = CheckpointCoordinator.DEFAULT_PAUSE_MILLIS;
        private long maxCheckpointAgeMs;
        private long checkpointStallTimeoutMs = CheckpointCoordinator.DEFAULT_STALL_TIMEOUT_MS;
        private long checkpointTimeoutMs;
        private long readCacheBytes = DEFAULT_READ_CACHE_BYTES;
        private Security security = Security.NONE;

        /** TLS and tokens for the proxy's server and its calls to shards ({@link Security}); none by default. */
        public Context security(final Security value) {
            security = java.util.Objects.requireNonNull(value, "security");
            return this;
        }

        /**
         * Where the proxy's metrics go ({@link ProxyMetrics} and its gRPC calls'); none when not set. A registry of its
         * own: another process's meters of the same names would be mixed with its.
         */
        public Context meterRegistry(final MeterRegistry value) {
            meterRegistry = value;
            return this;
        }

        /** Bytes of rows the read cache of pulls through the proxy keeps (0: none); 64 MiB by default. */
        public Context readCacheBytes(final long value) {
            readCacheBytes = value;
            return this;
        }

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

        /**
         * The checkpoints of the cluster whose state the proxy resumes were moved to {@link #checkpointRoot}: a state
         * saved with another root is taken (without this, refused, naming both roots).
         */
        public Context checkpointRootMoved(final boolean value) {
            checkpointRootMoved = value;
            return this;
        }

        /**
         * How often the proxy rewrites its claim on the checkpoint root ({@link RootClaim}); a proxy starting with
         * another state's claim there waits twice this and a second to see whether that proxy runs. Default 2 s.
         */
        public Context rootClaimRenewMs(final long value) {
            if (value <= 0) {
                throw new IllegalArgumentException("rootClaimRenewMs must be positive: " + value);
            }
            rootClaimRenewMs = value;
            return this;
        }

        public Context heartbeatIntervalMs(final long value) {
            heartbeatIntervalMs = value;
            return this;
        }

        /**
         * The lease a heartbeat grants a shard: it serves its slots until this long after it sent the heartbeat. The
         * proxy hands them on only after lease + {@link #leaseMarginMs} without receiving one.
         */
        public Context leaseMs(final long value) {
            leaseMs = value;
            return this;
        }

        /** Take a checkpoint this often; 0 turns periodic checkpoints off. */
        public Context checkpointIntervalMs(final long value) {
            checkpointIntervalMs = value;
            return this;
        }

        /**
         * A checkpoint or restore fails once a shard's progress on it has not moved for this long (default 120 s);
         * they have no fixed deadline otherwise (see {@link #checkpointTimeoutMs}).
         */
        public Context checkpointStallTimeoutMs(final long value) {
            checkpointStallTimeoutMs = value;
            return this;
        }

        /** A checkpoint or restore fails after this long in all, progress or not; 0 (default): no limit. */
        public Context checkpointTimeoutMs(final long value) {
            checkpointTimeoutMs = value;
            return this;
        }

        /** Deadline of the proxy's short calls to shards (tables); checkpoints and restores: see the stall timeout. */
        public Context callDeadlineMs(final long value) {
            callDeadlineMs = value;
            return this;
        }

        /** Added to the lease before the proxy moves a silent shard's slots: covers clock rate drift and delays. */
        public Context leaseMarginMs(final long value) {
            leaseMarginMs = value;
            return this;
        }

        /** A local directory for the proxy's state; empty: {@code <root>/_proxy-state} for a file:// root, else
         * {@code ./ps-proxy-state}. */
        public Context stateDir(final String value) {
            stateDir = value == null ? "" : value;
            return this;
        }

        /** A shard gone this long that owns nothing leaves the registry (and status). Default 10 minutes. */
        public Context forgetAfterMs(final long value) {
            forgetAfterMs = value;
            return this;
        }

        /**
         * A job's worker is dropped this long after its last renewal (or its join's answer) reached the proxy. Default
         * 3 seconds.
         */
        public Context workerLeaseMs(final long value) {
            workerLeaseMs = value;
            return this;
        }

        /** A state store other than the local file in {@link #stateDir} (a shared store, or a test's). */
        public Context stateStore(final ProxyStateStore value) {
            stateStore = value;
            return this;
        }

        public Context hadoopConf(final Configuration value) {
            hadoopConf = value;
            return this;
        }

        /** How shards compress checkpoint files: {@code zstd} (default), {@code lz4} or {@code none}. */
        public Context checkpointCodec(final String value) {
            checkpointCodec = value;
            return this;
        }

        /** Replication of checkpoint data files; 0 (default): the filesystem's ({@code dfs.replication}). */
        public Context checkpointReplication(final int value) {
            checkpointReplication = value;
            return this;
        }

        /** Block size of checkpoint data files in bytes; 0 (default): the filesystem's ({@code dfs.blocksize}). */
        public Context checkpointBlockSize(final long value) {
            checkpointBlockSize = value;
            return this;
        }

        /** After each commit, keep this many of the newest checkpoints (default 5); 0: no limit by count. */
        public Context keepCheckpoints(final int value) {
            keepCheckpoints = value;
            return this;
        }

        /**
         * Checkpoints taken as deltas (rows changed and removed since the previous one) between two bases (default
         * {@value #DEFAULT_DELTAS_PER_BASE}); 0: every checkpoint is a base.
         */
        public Context deltasPerBase(final int value) {
            deltasPerBase = value;
            return this;
        }

        /** After each commit, delete checkpoints older than this; 0 (default): no limit by age. */
        public Context maxCheckpointAgeMs(final long value) {
            maxCheckpointAgeMs = value;
            return this;
        }

        /**
         * How long a checkpoint waits for every worker of the running jobs to pause at its next step boundary
         * ({@code clock()}), so that the whole cluster is cut at once; past it the checkpoint is cut per shard (and its
         * manifest says so). 0: never pause workers.
         */
        public Context checkpointPauseMs(final long value) {
            checkpointPauseMs = value;
            return this;
        }

        /** The checkpoint settings; call after {@link #validate()}. */
        CheckpointCoordinator.Settings checkpointSettings() {
            return new CheckpointCoordinator.Settings(
                    ChunkCodec.parse(checkpointCodec),
                    checkpointReplication,
                    checkpointBlockSize,
                    new RetentionPolicy(keepCheckpoints, Duration.ofMillis(maxCheckpointAgeMs)),
                    deltasPerBase,
                    checkpointPauseMs,
                    new ShardFanOut.Watch(checkpointStallTimeoutMs, checkpointTimeoutMs));
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
            if (leaseMarginMs <= 0) {
                throw new IllegalArgumentException("leaseMarginMs=" + leaseMarginMs + " must be > 0");
            }
            if (forgetAfterMs <= 0) {
                throw new IllegalArgumentException("forgetAfterMs=" + forgetAfterMs + " must be > 0");
            }
            if (workerLeaseMs <= 0) {
                throw new IllegalArgumentException("workerLeaseMs=" + workerLeaseMs + " must be > 0");
            }
            if (checkpointStallTimeoutMs <= 0) {
                throw new IllegalArgumentException(
                        "checkpointStallTimeoutMs=" + checkpointStallTimeoutMs + " must be > 0");
            }
            if (checkpointTimeoutMs < 0) {
                throw new IllegalArgumentException(
                        "checkpointTimeoutMs=" + checkpointTimeoutMs + " must be >= 0 (0: no limit)");
            }
            if (callDeadlineMs <= 0) {
                throw new IllegalArgumentException("callDeadlineMs=" + callDeadlineMs + " must be > 0");
            }
            if (readCacheBytes < 0) {
                throw new IllegalArgumentException(
                        "readCacheBytes=" + readCacheBytes + " must be >= 0 (0: no read cache)");
            }
            try {
                ChunkCodec.parse(checkpointCodec);
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("checkpointCodec: " + e.getMessage());
            }
            if (checkpointReplication < 0 || checkpointReplication > Short.MAX_VALUE) {
                throw new IllegalArgumentException("checkpointReplication=" + checkpointReplication + " must be in 0.."
                        + Short.MAX_VALUE + " (0: the filesystem's default)");
            }
            if (checkpointBlockSize < 0 || checkpointBlockSize % 512 != 0) {
                throw new IllegalArgumentException("checkpointBlockSize=" + checkpointBlockSize
                        + " must be 0 (the filesystem's default) or a positive multiple of 512");
            }
            if (checkpointPauseMs < 0) {
                throw new IllegalArgumentException(
                        "checkpointPauseMs=" + checkpointPauseMs + " must be >= 0 (0: never pause workers)");
            }
            if (deltasPerBase < 0) {
                throw new IllegalArgumentException(
                        "deltasPerBase=" + deltasPerBase + " must be >= 0 (0: every checkpoint is a base)");
            }
            if (keepCheckpoints < 0) {
                throw new IllegalArgumentException(
                        "keepCheckpoints=" + keepCheckpoints + " must be >= 0 (0: no limit by count)");
            }
            if (maxCheckpointAgeMs < 0) {
                throw new IllegalArgumentException(
                        "maxCheckpointAgeMs=" + maxCheckpointAgeMs + " must be >= 0 (0: no limit by age)");
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
