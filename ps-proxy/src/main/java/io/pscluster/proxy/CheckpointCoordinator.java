package io.pscluster.proxy;

import com.google.protobuf.ByteString;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.pscluster.checkpoint.CheckpointCorruptException;
import io.pscluster.checkpoint.CheckpointInfo;
import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.ChunkCodec;
import io.pscluster.checkpoint.Manifest;
import io.pscluster.checkpoint.RetentionPolicy;
import io.pscluster.checkpoint.RowFileInfo;
import io.pscluster.checkpoint.VerifyReport;
import io.pscluster.proto.v1.CheckpointFile;
import io.pscluster.proto.v1.CheckpointProgressRequest;
import io.pscluster.proto.v1.CheckpointProgressResponse;
import io.pscluster.proto.v1.FenceSlotsRequest;
import io.pscluster.proto.v1.FenceSlotsResponse;
import io.pscluster.proto.v1.JobCheckpointState;
import io.pscluster.proto.v1.JobClock;
import io.pscluster.proto.v1.JoinJobResponse;
import io.pscluster.proto.v1.RestoreCheckpointRequest;
import io.pscluster.proto.v1.RestoreProgress;
import io.pscluster.proto.v1.ShardAdminServiceGrpc;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.proto.v1.WriteCheckpointRequest;
import io.pscluster.proto.v1.WriteCheckpointResponse;
import io.pscluster.wire.PsException;
import io.pscluster.wire.Slots;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Base64;
import java.util.BitSet;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Takes cluster-wide checkpoints and restores them. A checkpoint asks every slot owner to write its rows under a
 * new checkpoint directory, then writes the manifest (tables, files with lengths and CRC32C, slot owners, epoch)
 * last; the manifest's rename is the commit. One checkpoint, restore or drain runs at a time. Refused while a
 * restore order is outstanding: the restoring slots' rows are not on their owner yet, and a checkpoint without them
 * would later restore them empty.
 *
 * <p>The shards write their files as {@link Settings} say (codec, replication, block size); after each commit the
 * retention policy runs, sparing every checkpoint the proxy may still order restored.
 */
final class CheckpointCoordinator {
    private static final Logger LOG = LoggerFactory.getLogger(CheckpointCoordinator.class);
    static final String SLOT_OWNERS = "slot-owners";
    static final String ROUTING_EPOCH = "routing-epoch";
    /** The manifest property naming the state of the proxy that committed it ({@link ClusterState#stateId()}). */
    static final String PROXY_STATE = "proxy.state";

    private final ClusterState state;
    private final CheckpointStore store;
    /**
     * Checkpoints whose bytes a restore here found damaged (since this proxy started; the marks written in their
     * directories carry it over a restart, when they could be written): retention does not count them toward the newest
     * K ({@link CheckpointStore#retain(io.pscluster.checkpoint.RetentionPolicy, long, Set, Set)}).
     */
    private final Map<Long, String> foundDamaged = new java.util.concurrent.ConcurrentHashMap<>();

    private final java.util.concurrent.atomic.AtomicLong committed = new java.util.concurrent.atomic.AtomicLong();
    private final java.util.concurrent.atomic.AtomicLong failed = new java.util.concurrent.atomic.AtomicLong();

    private final ShardFanOut fanOut;
    private final Settings settings;
    private final WorkerPauses pauses;
    private volatile JobStates jobStates = new JobStates(-1, Map.of(), null, Map.of());

    private final OperationBoard operations = new OperationBoard();

    /**
     * How checkpoints are written and kept.
     *
     * @param codec how shards compress their row files.
     * @param replication replicas of each data file; 0: the filesystem's default.
     * @param blockSize block size of each data file in bytes; 0: the filesystem's default.
     * @param retention which checkpoints are kept after each commit.
     * @param deltasPerBase deltas taken after a base before the next base (0: every checkpoint is a base); a base
     *     comes sooner once the deltas since the last one outgrow half of it.
     * @param pauseMillis how long a checkpoint waits for every worker of the running jobs to pause at a step boundary
     *     (then the whole cluster is cut at once); past it, or with 0, each shard is cut on its own.
     * @param watch how long a shard's checkpoint write or restore may go without progress, and the limit on the whole
     *     (0: none), instead of a fixed deadline.
     */
    record Settings(
            ChunkCodec codec,
            int replication,
            long blockSize,
            RetentionPolicy retention,
            int deltasPerBase,
            long pauseMillis,
            ShardFanOut.Watch watch) {
        Settings(
                final ChunkCodec codec,
                final int replication,
                final long blockSize,
                final RetentionPolicy retention,
                final int deltasPerBase) {
            this(
                    codec,
                    replication,
                    blockSize,
                    retention,
                    deltasPerBase,
                    DEFAULT_PAUSE_MILLIS,
                    new ShardFanOut.Watch(DEFAULT_STALL_TIMEOUT_MS, 0));
        }

        static Settings defaults() {
            return new Settings(
                    ChunkCodec.ZSTD,
                    0,
                    0,
                    RetentionPolicy.keepAll(),
                    DEFAULT_DELTAS_PER_BASE,
                    DEFAULT_PAUSE_MILLIS,
                    new ShardFanOut.Watch(DEFAULT_STALL_TIMEOUT_MS, 0));
        }
    }

    /** How long a checkpoint waits for the running jobs' workers to pause before it cuts per shard instead. */
    static final long DEFAULT_PAUSE_MILLIS = 10_000;
    /** Added to the pause limit for the shards to take their cuts: how long a paused worker waits at most. */
    private static final long CUT_MILLIS = 60_000;
    /** Manifest property: how the cut was taken. */
    static final String CUT = "cut";
    /**
     * Manifest property prefix: {@code job-state/<job>/<rank>} = {@code <clock>:<base64 state>}, the rank being the
     * one the job gave the worker at its join ({@code JobWorker.rank}, from 1).
     */
    static final String JOB_STATE = "job-state/";
    /**
     * Manifest property prefix: {@code job-states-lost/<job>} = why the states of that job, which had no workers at
     * this checkpoint's cut, could not be carried over into it (the checkpoint before could not give them back); a
     * join of that job that finds no state of its rank here gets this instead of none. Carried on into later
     * checkpoints until the job runs at a cut again.
     */
    static final String JOB_STATES_LOST = "job-states-lost/";

    /** A shard's checkpoint write or restore fails after this long without progress, unless set otherwise. */
    static final long DEFAULT_STALL_TIMEOUT_MS = 120_000;

    /** Deltas after each base unless told otherwise (0 turns deltas off); see the README on choosing K. */
    static final int DEFAULT_DELTAS_PER_BASE = 4;
    /** A base comes once the deltas since the last one hold more than this share of its bytes. */
    private static final double MAX_DELTA_SHARE = 0.5;
    /** What a shard's refusal to write a delta says (then the checkpoint is taken again as a base). */
    private static final String NO_DELTA = "cannot write a delta";

    CheckpointCoordinator(final ClusterState state, final CheckpointStore store, final ShardFanOut fanOut) {
        this(state, store, fanOut, Settings.defaults(), null);
    }

    /** @param pauses pauses the running jobs' workers for a cut; null: every cut is per shard. */
    CheckpointCoordinator(
            final ClusterState state,
            final CheckpointStore store,
            final ShardFanOut fanOut,
            final Settings settings,
            final WorkerPauses pauses) {
        this.state = state;
        this.store = store;
        this.fanOut = fanOut;
        this.settings = settings;
        this.pauses = pauses;
    }

    CheckpointStore store() {
        return store;
    }

    /**
     * The checkpoints a restore found damaged, with why: those marked in their directories, and those this proxy found
     * since it started that are not marked (blocks no replica could serve: not proven damage).
     */
    Map<Long, String> damageKnown() throws IOException {
        final Map<Long, String> known = new java.util.TreeMap<>(store.damageMarks());
        foundDamaged.forEach((id, why) -> known.putIfAbsent(
                id,
                "found unreadable by a restore since the proxy started"
                        + " (not marked: it may come back with a DataNode): " + why));
        return known;
    }

    /** The checkpoint or restore running now, or the last one. */
    OperationBoard operations() {
        return operations;
    }

    /**
     * The result of a checkpoint: what was committed, the longest push stall a shard reported, how the cut was taken,
     * and {@code unrecorded}: empty, or why the proxy state does not name it yet (see
     * {@link ClusterState#checkpointCommitted}).
     */
    record Taken(CheckpointInfo checkpoint, long maxSnapshotMicros, String cut, String unrecorded) {}

    /**
     * Takes a checkpoint, pausing the running jobs' workers for its cut; refused while an operator's restore into
     * every shard is unfinished (the model may be a mix, {@link ClusterState#refuseIfMixed}).
     */
    synchronized Taken checkpointNow() throws IOException, InterruptedException {
        try {
            state.refuseIfMixed("a checkpoint");
            final Taken taken = checkpointNow(true);
            committed.incrementAndGet();
            return taken;
        } catch (IOException | RuntimeException e) {
            failed.incrementAndGet();
            // The caller hears why; the proxy's log says so too (an operator's `checkpoint now` left no trace here).
            LOG.warn("checkpoint failed: {}", e.getMessage() == null ? e.toString() : e.getMessage());
            throw e;
        }
    }

    /** Checkpoints taken (periodic and on demand, not a drain's hand-over) that committed since the proxy started. */
    long committedCount() {
        return committed.get();
    }

    /** Checkpoints taken (as {@link #committedCount}) that failed since the proxy started. */
    long failedCount() {
        return failed.get();
    }

    /**
     * Takes a checkpoint; with {@code pauseWorkers} false each shard is cut on its own (a drain: it needs only every
     * push the draining shard acknowledged, and its workers may be stuck retrying pushes it refuses).
     */
    private Taken checkpointNow(final boolean pauseWorkers) throws IOException, InterruptedException {
        final Optional<CheckpointInfo> parent = deltaParent();
        if (parent.isPresent()) {
            try {
                return checkpointNow(parent.get(), pauseWorkers);
            } catch (StatusRuntimeException refused) {
                if (refused.getStatus().getCode() != Status.Code.FAILED_PRECONDITION
                        || refused.getStatus().getDescription() == null
                        || !refused.getStatus().getDescription().contains(NO_DELTA)) {
                    throw refused;
                }
                LOG.info(
                        "taking a base instead of a delta: {}",
                        refused.getStatus().getDescription());
            }
        }
        return checkpointNow(null, pauseWorkers);
    }

    /**
     * The checkpoint the next one can be a delta of: the latest committed one (or the one every shard restored since,
     * see {@link #previousId}), while its chain holds fewer than
     * {@link Settings#deltasPerBase} deltas, their bytes stay under half the base's and every file of the chain is
     * there (a delta on a lost file would leave this checkpoint and every later delta unrestorable); empty when a
     * base is due. The presence check asks the filesystem for each file's length, reading no data.
     */
    private Optional<CheckpointInfo> deltaParent() throws IOException {
        final long latest = previousId();
        if (settings.deltasPerBase() <= 0 || latest <= 0) {
            return Optional.empty();
        }
        final Optional<CheckpointInfo> parent;
        final List<CheckpointInfo> chain;
        try {
            parent = store.get(latest);
            if (parent.isEmpty()) {
                return Optional.empty();
            }
            chain = store.chain(parent.get());
        } catch (io.pscluster.checkpoint.CheckpointCorruptException damaged) {
            LOG.warn("checkpoint {} cannot carry a delta ({}); taking a base", latest, damaged.getMessage());
            return Optional.empty();
        }
        final long baseBytes = chain.get(0).manifest().totalBytes();
        long deltaBytes = 0;
        for (final CheckpointInfo delta : chain.subList(1, chain.size())) {
            deltaBytes += delta.manifest().totalBytes();
        }
        if (chain.size() - 1 >= settings.deltasPerBase() || deltaBytes > MAX_DELTA_SHARE * baseBytes) {
            return Optional.empty();
        }
        for (final CheckpointInfo link : chain) {
            if (store.isMarkedDamaged(link)) {
                // A restore found it damaged (a move's taker, say): a delta on it could never be restored either.
                LOG.warn(
                        "checkpoint {} cannot carry a delta: checkpoint {} of its chain is marked damaged; taking a base",
                        latest,
                        link.id());
                return Optional.empty();
            }
            final VerifyReport report = store.check(link, VerifyReport.Depth.PRESENCE);
            if (!report.intact()) {
                LOG.warn(
                        "{}; taking a base",
                        cannotCarryDelta(
                                latest,
                                link.id(),
                                report.problems().size(),
                                report.problems().get(0)));
                return Optional.empty();
            }
        }
        return parent;
    }

    /**
     * Why checkpoint {@code latest} cannot carry a delta: {@code damaged} (itself, or a checkpoint of its chain) has
     * {@code files} files missing or of the wrong length, the first of them {@code first}.
     */
    static String cannotCarryDelta(final long latest, final long damaged, final int files, final String first) {
        return "checkpoint " + latest + " cannot carry a delta: "
                + (damaged == latest ? "it has " : "checkpoint " + damaged + " of its chain has ") + files
                + " file(s) missing or of the wrong length (" + first + ")";
    }

    /**
     * The checkpoint the shards' state follows from ({@link ClusterState#dataCheckpointId}, persisted, so a restarted
     * proxy knows it too): the latest committed, unless an operator restored another one into every slot owner since;
     * a delta is of it, and the shards keep its cut (a shard whose restore failed refuses the delta, and a base
     * follows).
     */
    private long previousId() {
        return state.dataCheckpointId();
    }

    /**
     * Refuses to commit checkpoint {@code id} when a slot changed owner since its shards were asked for their files (a
     * failover, a hand-over): the files of its earlier owner hold what that shard had when it lost the slot, a branch
     * the cluster has left (its new owner restored an older checkpoint and went on from there), which a restore of this
     * checkpoint would bring back. The next checkpoint has every slot from its owner.
     */
    private void refuseIfSlotsMoved(final long id, final ClusterState.SlotsAt slotsAt) {
        final String moved = state.movedSince(slotsAt);
        if (moved != null) {
            throw PsException.failedPrecondition("checkpoint " + id + " not committed: " + moved + " while it was"
                    + " written; the files of their earlier owner hold a branch the cluster has left. The next"
                    + " checkpoint takes them from their owner");
        }
    }

    /** Deletes checkpoint {@code id}, just committed and not recorded, saying why in the log. */
    private void withdraw(final long id, final String why) {
        LOG.warn("checkpoint {} withdrawn after its commit: {}", id, why);
        try {
            store.delete(id, true);
        } catch (IOException | RuntimeException e) {
            LOG.error("could not delete checkpoint {}, withdrawn after its commit: {}", id, e.toString());
        }
    }

    /** Takes a checkpoint: a delta of {@code parent}, or a base when it is null. */
    private Taken checkpointNow(final CheckpointInfo parent, final boolean pauseWorkers)
            throws IOException, InterruptedException {
        refuseIfRootLost("no checkpoint");
        // Read first: a slot that moves from here to the commit refuses the commit (refuseIfSlotsMoved).
        final ClusterState.SlotsAt slotsAt = state.slotsAt();
        final List<ClusterState.Owner> owners = state.ownersForClusterOperation("a checkpoint");
        // The checkpoint's time, with the tables it holds: a table created after it (also one dropped and created
        // again while the shards write their files) is not one the checkpoint holds.
        final ClusterState.CheckpointStart start = state.beginCheckpoint();
        final long startedMillis = start.millis();
        final List<TableSchema> tables = start.tables();
        final long epoch = state.epoch();
        final long id = store.nextId();
        refuseIfAnotherProxyCommitted(id);
        LOG.info("checkpoint {} begins: {}", id, parent == null ? "a base" : "a delta of checkpoint " + parent.id());
        final OperationBoard.Operation operation = operations.begin("checkpoint", id);
        try {
            final Taken taken =
                    checkpointNow(parent, pauseWorkers, owners, tables, slotsAt, epoch, id, startedMillis, operation);
            operation.succeeded();
            return taken;
        } catch (IOException | InterruptedException | RuntimeException e) {
            operation.failed(e.getMessage() == null ? e.toString() : e.getMessage());
            throw e;
        }
    }

    private Taken checkpointNow(
            final CheckpointInfo parent,
            final boolean pauseWorkers,
            final List<ClusterState.Owner> owners,
            final List<TableSchema> tables,
            final ClusterState.SlotsAt slotsAt,
            final long epoch,
            final long id,
            final long startedMillis,
            final OperationBoard.Operation operation)
            throws IOException, InterruptedException {
        store.fileSystem().mkdirs(store.checkpointDir(id));

        final WorkerPauses.Pause pause = !pauseWorkers || pauses == null || settings.pauseMillis() <= 0
                ? null
                : pauses.begin(settings.pauseMillis(), settings.pauseMillis() + CUT_MILLIS);
        try {
            return cutAndCommit(
                    parent, owners, tables, slotsAt, epoch, id, startedMillis, pause, pauseWorkers, operation);
        } finally {
            if (pause != null) {
                pause.end(0);
            }
        }
    }

    private Taken cutAndCommit(
            final CheckpointInfo parent,
            final List<ClusterState.Owner> owners,
            final List<TableSchema> tables,
            final ClusterState.SlotsAt slotsAt,
            final long epoch,
            final long id,
            final long startedMillis,
            final WorkerPauses.Pause pause,
            final boolean pauseWorkers,
            final OperationBoard.Operation operation)
            throws IOException, InterruptedException {
        final Map<String, String> properties = new LinkedHashMap<>();
        // Jobs with workers from before the cut to the commit: their states are theirs to hand in, never carried over.
        final Set<String> withWorkers = new HashSet<>(jobsWithWorkers());
        final Map<String, Long> syncClocks;
        if (pause == null) {
            syncClocks = Map.of();
            properties.put(
                    CUT,
                    !pauseWorkers
                            ? "per shard: a drain or a rebalance"
                            : pauses == null || settings.pauseMillis() <= 0
                                    ? "per shard: pausing workers is off"
                                    : "per shard: no job running");
        } else {
            operation.phase("pausing workers");
            final List<WorkerPauses.Worker> missing = pause.awaitAll(settings.pauseMillis());
            if (!missing.isEmpty()) {
                pause.end(0);
                syncClocks = Map.of();
                properties.put(
                        CUT,
                        "per shard: workers " + missing + " did not pause within " + settings.pauseMillis() + " ms");
                LOG.warn("checkpoint {}: {}", id, properties.get(CUT));
            } else {
                syncClocks = pause.syncClocks();
                final Map<WorkerPauses.Worker, WorkerPauses.Held> paused = pause.pausedWorkers();
                properties.put(CUT, "workers paused: " + describe(paused));
                // By the rank the job gave the worker at its join (ids grow from run to run; ranks do not): a worker
                // of a later run gets back what the worker of its rank handed in.
                paused.forEach((worker, held) -> properties.put(
                        JOB_STATE + worker.jobId() + "/" + held.rank(), stateValue(held.clock(), held.state())));
            }
        }
        final WriteCheckpointRequest.Builder asked = WriteCheckpointRequest.newBuilder();
        syncClocks.forEach((job, clock) -> asked.addAppliedClocks(
                JobClock.newBuilder().setJobId(job).setClock(clock).build()));
        final WriteCheckpointRequest request = asked.setCheckpointRoot(
                        store.root().toString())
                .setCheckpointId(id)
                .setCodec(settings.codec().toProto())
                .setReplication(settings.replication())
                .setBlockSize(settings.blockSize())
                .setSinceCheckpointId(previousId())
                .setDelta(parent != null)
                .build();
        operation.fanOut("cut", shardIds(owners));
        final List<WriteCheckpointResponse> responses = fanOut.callAllWatched(
                "checkpoint " + id,
                targets(owners),
                (index, channel, deadline) -> ShardAdminServiceGrpc.newBlockingStub(channel)
                        .withDeadline(deadline)
                        .writeCheckpoint(request.toBuilder()
                                .addAllSlots(owners.get(index).slots())
                                .build()),
                (index, channel, deadline) -> writeProgress(channel, deadline, id),
                settings.watch(),
                operation,
                pause == null ? null : () -> pause.end(id));
        if (pause != null) {
            // Every shard has cut (the workers went on then, while the shards wrote their files).
            pause.end(id);
            final String broken = pause.broken();
            if (broken != null) {
                // A worker went on before the cut: this is a per-shard cut, and its states do not match the model.
                properties.keySet().removeIf(key -> key.startsWith(JOB_STATE));
                properties.put(CUT, "per shard: " + broken);
                for (final String job : withWorkers) {
                    // A later run of the job learns that, rather than finding no state.
                    properties.put(
                            JOB_STATES_LOST + job,
                            "checkpoint " + id + " was cut per shard (" + broken
                                    + "), so the states its workers handed in do not match the model and were left"
                                    + " out");
                }
                LOG.warn("checkpoint {}: {}", id, properties.get(CUT));
            }
        }
        withWorkers.addAll(jobsWithWorkers());
        carryJobStates(id, properties, withWorkers);
        operation.phase("committing");
        checkCoverage(id, owners, responses);
        final List<Manifest.FileEntry> files = new ArrayList<>();
        long maxStall = 0;
        long maxHeld = 0;
        for (int i = 0; i < owners.size(); i++) {
            final WriteCheckpointResponse response = responses.get(i);
            maxStall = Math.max(maxStall, response.getSnapshotMicros());
            maxHeld = Math.max(maxHeld, response.getHeldPushMicros());
            if (!response.getPushWindows().isEmpty()) {
                properties.put(
                        Manifest.PUSH_WINDOWS_PROPERTY + owners.get(i).shardId(),
                        Base64.getEncoder()
                                .encodeToString(response.getPushWindows().toByteArray()));
            }
            for (final CheckpointFile file : response.getFilesList()) {
                files.add(new Manifest.FileEntry(
                        file.getTable(),
                        owners.get(i).shardId(),
                        new RowFileInfo(
                                file.getPath(),
                                file.getLength(),
                                file.getCrc32C(),
                                file.getRows(),
                                file.getSlotsList().stream()
                                        .mapToInt(Integer::intValue)
                                        .toArray(),
                                ChunkCodec.fromProto(file.getCodec()).orElse(ChunkCodec.NONE),
                                file.getUncompressedBytes()),
                        file.getRemovedKeys()));
            }
        }
        final List<Manifest.TableEntry> tableEntries = new ArrayList<>();
        tables.forEach(schema -> tableEntries.add(new Manifest.TableEntry(schema.getName(), schema.toByteArray())));
        properties.put(SLOT_OWNERS, SlotOwners.encode(slotsAt.owners()));
        properties.put(PROXY_STATE, state.stateId());
        properties.put(ROUTING_EPOCH, Long.toString(epoch));
        final Manifest manifest = parent == null
                ? new Manifest(id, startedMillis, Slots.SLOT_COUNT, tableEntries, files, properties)
                : new Manifest(
                        id,
                        startedMillis,
                        Slots.SLOT_COUNT,
                        Manifest.Kind.DELTA,
                        parent.manifest().kind() == Manifest.Kind.BASE
                                ? parent.id()
                                : parent.manifest().baseId(),
                        parent.id(),
                        tableEntries,
                        files,
                        properties);
        refuseIfRootLost("checkpoint " + id + " not committed");
        refuseIfAnotherProxyCommitted(id);
        refuseIfSlotsMoved(id, slotsAt);
        store.commit(manifest);
        String unrecorded = "";
        try {
            state.checkpointCommitted(id, manifest.createdMillis(), slotsAt);
        } catch (PsException e) {
            if (e.code() == Status.Code.FAILED_PRECONDITION) {
                // A slot moved between the check above and the commit: take the checkpoint back before anyone uses it.
                withdraw(id, e.getMessage());
                throw e;
            }
            // The checkpoint is committed; the next save that succeeds records it first (ClusterState.change).
            final String why = e.getMessage().replace(ClusterState.NOTHING_CHANGED, "");
            unrecorded = "checkpoint " + id + " is committed, but the proxy could not save that it is the latest ("
                    + why + "). Until a save succeeds the proxy changes nothing (a lost shard is not replaced, a shard"
                    + " cannot register); the first save that succeeds records checkpoint " + id + " before anything"
                    + " else, and a restart of the proxy adopts it.";
            LOG.warn("{}", unrecorded);
        }
        LOG.info(
                "checkpoint {} committed: {} files, {} rows, {} bytes; longest push stall {} us at the cut, {} us"
                        + " while copying",
                id,
                files.size(),
                manifest.totalRows(),
                manifest.totalBytes(),
                maxStall,
                maxHeld);
        applyRetention();
        return new Taken(
                new CheckpointInfo(id, store.checkpointDir(id), manifest), maxStall, properties.get(CUT), unrecorded);
    }

    /** Why this proxy must not write to its root now ({@link RootClaim#trouble}; empty: it may). */
    private volatile java.util.function.Supplier<String> rootTrouble = () -> "";

    /** Sets where this proxy learns whether it still holds its root ({@link RootClaim#trouble}). */
    void rootClaim(final java.util.function.Supplier<String> trouble) {
        rootTrouble = trouble;
    }

    /**
     * Refuses to go on with a checkpoint ({@code what} it says) while this proxy does not hold its claim on the root:
     * another proxy may run there (see {@link RootClaim}).
     *
     * @throws PsException FAILED_PRECONDITION saying why.
     */
    private void refuseIfRootLost(final String what) {
        final String trouble = rootTrouble.get();
        if (!trouble.isEmpty()) {
            throw PsException.failedPrecondition(what + ": " + trouble);
        }
    }

    /**
     * Refuses to go on with checkpoint {@code id} when a checkpoint above the latest this proxy recorded was committed
     * by another proxy's state: two clusters write under one root, and their ids, retention and restores would mix.
     * A checkpoint that names no state (from a version before {@link #PROXY_STATE}) is not judged.
     *
     * @throws PsException FAILED_PRECONDITION naming the other checkpoint, both states and what to do.
     */
    private void refuseIfAnotherProxyCommitted(final long id) throws IOException {
        final long latest = state.latestCheckpointId();
        final List<Long> foreign = new ArrayList<>();
        String writer = "";
        // The one being taken has no manifest yet: it is not among them.
        for (final Above other : committedAbove(store, latest)) {
            if (!other.committer().isEmpty() && !other.committer().equals(state.stateId())) {
                foreign.add(other.id());
                writer = other.committer();
            }
        }
        if (!foreign.isEmpty()) {
            final String root = store.root().toString();
            throw PsException.failedPrecondition("checkpoint " + id + " not committed: checkpoint(s) " + foreign
                    + " under " + root + " were committed by another proxy (state " + writer + "; this proxy's state"
                    + " is " + state.stateId() + ", its latest checkpoint " + latest + "): two clusters must not"
                    + " share a checkpoint root. Stop the other cluster's proxy or give it its own --checkpoint-dir;"
                    + " then, to keep this cluster's model, delete those checkpoints (`psctl checkpoint delete"
                    + " --checkpoint-dir " + root + " --id N` for each), or, to keep the other's, stop this proxy and"
                    + " move its --state-dir away so that it starts from the newest checkpoint");
        }
    }

    /** A committed checkpoint above the latest a proxy recorded, and the state that committed it ("": none named). */
    record Above(long id, Manifest manifest, String committer) {}

    /**
     * The committed checkpoints of {@code store} above {@code latest}, newest first, each with the state that committed
     * it ({@link #PROXY_STATE}); one whose manifest does not decode is left out.
     */
    static List<Above> committedAbove(final CheckpointStore store, final long latest) throws IOException {
        final List<Above> above = new ArrayList<>();
        for (final long id : store.idsAbove(latest)) {
            final Optional<CheckpointInfo> info;
            try {
                info = store.get(id);
            } catch (CheckpointCorruptException e) {
                continue;
            }
            if (info.isPresent()) {
                final Manifest manifest = info.get().manifest();
                above.add(new Above(id, manifest, manifest.properties().getOrDefault(PROXY_STATE, "")));
            }
        }
        return above;
    }

    private Set<String> jobsWithWorkers() {
        return pauses == null ? Set.of() : pauses.jobsWithWorkers();
    }

    /**
     * Carries the states of jobs without workers (between two runs: their progress is still what their workers last
     * handed in) over from the checkpoint the data is at, so that a checkpoint taken while a job is down does not
     * lose its states. When they cannot be read (now, or in an earlier checkpoint), the checkpoint is taken without
     * them and says so in {@link #JOB_STATES_LOST}, so that a join later finds that, not an empty state.
     */
    private void carryJobStates(final long id, final Map<String, String> properties, final Set<String> withWorkers) {
        // A transient failure to read them fails this checkpoint (UNAVAILABLE): the next one reads them again.
        final JobStates before = jobStates();
        final Map<String, String> lost = new TreeMap<>();
        before.lostJobs().forEach((job, why) -> {
            if (!withWorkers.contains(job)) {
                lost.put(job, why);
            }
        });
        if (before.unreadable() != null && pauses != null) {
            for (final String job : pauses.knownJobs()) {
                if (!withWorkers.contains(job)) {
                    lost.putIfAbsent(job, before.unreadable());
                }
            }
        }
        lost.forEach((job, why) -> properties.put(JOB_STATES_LOST + job, why));
        if (before.unreadable() != null) {
            properties.put(
                    CUT,
                    properties.get(CUT) + "; job states of idle jobs " + lost.keySet() + " not carried over: "
                            + before.unreadable());
            LOG.warn("checkpoint {}: {}", id, properties.get(CUT));
        }
        before.byWorker().forEach((jobAndRank, saved) -> {
            final String job = jobAndRank.substring(0, jobAndRank.lastIndexOf('/'));
            if (!withWorkers.contains(job)) {
                properties.putIfAbsent(JOB_STATE + jobAndRank, stateValue(saved.getClock(), saved.getState()));
            }
        });
    }

    /** A {@link #JOB_STATE} property's value: {@code <clock>:<base64 state>} ({@link #jobStates} reads it). */
    private static String stateValue(final long clock, final ByteString state) {
        return clock + ":" + Base64.getEncoder().encodeToString(state.toByteArray());
    }

    /** "job 'a' (2 workers at clock 17), job 'b' (...)". */
    private static String describe(final Map<WorkerPauses.Worker, WorkerPauses.Held> paused) {
        final Map<String, List<Long>> clocks = new TreeMap<>();
        paused.forEach((worker, held) ->
                clocks.computeIfAbsent(worker.jobId(), job -> new ArrayList<>()).add(held.clock()));
        final StringBuilder text = new StringBuilder();
        clocks.forEach((job, at) -> {
            final long low = at.stream().mapToLong(Long::longValue).min().orElse(0);
            final long high = at.stream().mapToLong(Long::longValue).max().orElse(0);
            text.append(text.length() == 0 ? "" : ", ")
                    .append("job '")
                    .append(job)
                    .append("' (")
                    .append(at.size())
                    .append(at.size() == 1 ? " worker" : " workers")
                    .append(" at clock ")
                    .append(low == high ? Long.toString(low) : low + ".." + high)
                    .append(')');
        });
        return text.toString();
    }

    /**
     * The job states of one checkpoint, by "job/rank"; {@code unreadable} says why states that may have been handed
     * in cannot be given back (null: every state it holds is there).
     */
    record JobStates(
            long checkpointId,
            Map<String, JobCheckpointState> byWorker,
            String unreadable,
            Map<String, String> lostJobs) {
        /** The answer of a join at {@code rank}: its state, else why it may have been lost, else the answer as is. */
        JoinJobResponse restore(final JoinJobResponse answer, final String jobId) {
            final JobCheckpointState saved = byWorker.get(jobId + "/" + answer.getRank());
            if (saved != null) {
                return answer.toBuilder().setRestored(saved).build();
            }
            final String lost = unreadable != null ? unreadable : lostJobs.get(jobId);
            return lost == null
                    ? answer
                    : answer.toBuilder().setRestoredUnreadable(lost).build();
        }
    }

    /**
     * The job states of the checkpoint the cluster's data is at ({@link ClusterState#dataCheckpointId()}: the latest
     * committed, or the one restored into every shard since), by job and rank (from 1, as the job gave it at the
     * join), handed in when the workers paused for that checkpoint; read from its manifest once, then kept until that
     * checkpoint changes. A manifest that is damaged or gone gives no states and says why in {@code unreadable} (not
     * kept, so a repaired one is read again): a job can still start, and a worker that asks for its state learns it
     * is lost.
     *
     * @throws PsException UNAVAILABLE naming the checkpoint and the cause when its manifest cannot be read for a reason
     *     that is not damage (an outage): never an empty state where one may have been saved.
     */
    JobStates jobStates() {
        final long from = state.dataCheckpointId();
        if (from <= 0) {
            return new JobStates(0, Map.of(), null, Map.of());
        }
        final JobStates known = jobStates;
        if (known.checkpointId() == from) {
            return known;
        }
        final Optional<CheckpointInfo> checkpoint;
        try {
            checkpoint = store.get(from);
        } catch (io.pscluster.checkpoint.CheckpointCorruptException damaged) {
            return unreadable(from, "its manifest is damaged: " + damaged.getMessage());
        } catch (IOException | RuntimeException e) {
            LOG.warn("cannot read the job states of checkpoint {}: {}", from, e.toString());
            throw PsException.unavailable("cannot read the job states of checkpoint " + from
                    + " (the one the cluster's data is at) from its manifest: " + e.getMessage());
        }
        if (checkpoint.isEmpty()) {
            return unreadable(from, "it has no " + CheckpointStore.MANIFEST + " under " + store.root());
        }
        final Manifest manifest = checkpoint.get().manifest();
        final Map<String, JobCheckpointState> byWorker = new HashMap<>();
        final Map<String, String> lostJobs = new HashMap<>();
        try {
            manifest.properties().forEach((key, value) -> {
                if (key.startsWith(JOB_STATES_LOST)) {
                    lostJobs.put(key.substring(JOB_STATES_LOST.length()), value);
                } else if (key.startsWith(JOB_STATE)) {
                    final int colon = value.indexOf(':');
                    byWorker.put(
                            key.substring(JOB_STATE.length()),
                            JobCheckpointState.newBuilder()
                                    .setCheckpointId(from)
                                    .setCreatedMillis(manifest.createdMillis())
                                    .setClock(Long.parseLong(value.substring(0, colon)))
                                    .setState(ByteString.copyFrom(
                                            Base64.getDecoder().decode(value.substring(colon + 1))))
                                    .build());
                }
            });
        } catch (RuntimeException e) {
            return unreadable(from, "a job-state property of its manifest is damaged: " + e);
        }
        final JobStates read = new JobStates(from, Map.copyOf(byWorker), null, Map.copyOf(lostJobs));
        jobStates = read;
        return read;
    }

    private static JobStates unreadable(final long from, final String why) {
        final String message =
                "the job states of checkpoint " + from + " (the one the cluster's data is at) are lost: " + why;
        LOG.warn("{}", message);
        return new JobStates(from, Map.of(), message, Map.of());
    }

    /**
     * Refuses to commit unless the shards' cuts together cover every slot exactly once and each file holds only slots
     * of the shard that wrote it: a slot that moved while the checkpoint ran would otherwise be missing (restored
     * empty later) or held twice (two owners' rows).
     */
    private static void checkCoverage(
            final long id, final List<ClusterState.Owner> owners, final List<WriteCheckpointResponse> responses) {
        final String[] coveredBy = new String[Slots.SLOT_COUNT];
        for (int i = 0; i < owners.size(); i++) {
            final String shard = owners.get(i).shardId();
            final WriteCheckpointResponse response = responses.get(i);
            final BitSet mine = new BitSet(Slots.SLOT_COUNT);
            for (final int slot : response.getCoveredSlotsList()) {
                if (slot < 0 || slot >= Slots.SLOT_COUNT) {
                    throw PsException.failedPrecondition("checkpoint " + id + " not committed: shard " + shard
                            + " reported slot " + slot + ", outside 0.." + (Slots.SLOT_COUNT - 1));
                }
                if (coveredBy[slot] != null) {
                    throw PsException.unavailable("checkpoint " + id + " not committed: slot " + slot
                            + " was held by both " + coveredBy[slot] + " and " + shard
                            + " (the routing changed while it ran); try again");
                }
                coveredBy[slot] = shard;
                mine.set(slot);
            }
            final BitSet asked = new BitSet(Slots.SLOT_COUNT);
            owners.get(i).slots().forEach(asked::set);
            if (!mine.equals(asked)) {
                throw PsException.failedPrecondition("checkpoint " + id + " not committed: shard " + shard + " covered "
                        + mine.cardinality() + " slots, not the " + asked.cardinality() + " it was asked for");
            }
            for (final CheckpointFile file : response.getFilesList()) {
                for (final int slot : file.getSlotsList()) {
                    if (slot < 0 || slot >= Slots.SLOT_COUNT || !mine.get(slot)) {
                        throw PsException.failedPrecondition(
                                "checkpoint " + id + " not committed: file " + file.getPath() + " of shard " + shard
                                        + " holds slot " + slot + ", which the shard did not cover");
                    }
                }
            }
        }
        for (int slot = 0; slot < Slots.SLOT_COUNT; slot++) {
            if (coveredBy[slot] == null) {
                int last = slot;
                while (last + 1 < Slots.SLOT_COUNT && coveredBy[last + 1] == null) {
                    last++;
                }
                throw PsException.unavailable("checkpoint " + id + " not committed: slots " + slot + ".." + last
                        + " were held by no shard when it was cut (the routing changed while it ran); try again");
            }
        }
    }

    /**
     * A restore found checkpoint {@code id} damaged: retention stops counting it, and unless only blocks no replica
     * could serve are missing, its mark in its directory keeps it so after a restart ({@link CheckpointStore#markDamaged};
     * a mark that cannot be written is logged).
     */
    private void damageFound(final long id, final CheckpointCorruptException damage) {
        // Uncounted while this proxy runs, also when only unreadable now: it cannot be restored now either.
        foundDamaged.put(damage.checkpointIdOr(id), damage.getMessage());
        if (damage.missingBlocksOnly()) {
            // Not marked for good: a DataNode that comes back brings the blocks back.
            return;
        }
        try {
            store.markDamaged(id, damage);
        } catch (IOException | RuntimeException e) {
            LOG.warn(
                    "could not mark checkpoint {} damaged (retention counts it again after a restart): {}",
                    id,
                    e.toString());
        }
    }

    /**
     * Every slot owner loaded {@code checkpoint}'s chain, reading every row (a check of file checksums alone would not
     * do: a replica that rotted on disk still matches its stored checksums): damage found in it before is gone.
     */
    private void loadedWhole(final CheckpointInfo checkpoint) {
        try {
            for (final CheckpointInfo link : store.chain(checkpoint)) {
                foundDamaged.remove(link.id());
            }
            store.clearDamageMarks(checkpoint);
        } catch (IOException | RuntimeException e) {
            LOG.warn("could not clear the damage marks of checkpoint {}: {}", checkpoint.id(), e.toString());
        }
    }

    /** Retention after a commit; a failure is logged, never fails the checkpoint that was committed. */
    private void applyRetention() {
        try {
            store.retain(
                    settings.retention(),
                    System.currentTimeMillis(),
                    state.checkpointsInUse(),
                    Set.copyOf(foundDamaged.keySet()));
        } catch (IOException | RuntimeException e) {
            LOG.warn("checkpoint retention failed (the next commit tries again): {}", e.toString());
        }
    }

    /** The outcome of a drain: the checkpoint holding the shard's rows, how many slots moved, the routing epoch after. */
    record Drained(long checkpointId, int slotsHandedOver, long epoch) {}

    /**
     * Drains a shard that already refuses writes and has applied everything: checkpoints every owner (the draining
     * one included), then hands its slots on with restore orders from that checkpoint; the shard keeps their rows
     * until they are restored, and gets them back should the checkpoint be damaged (then it drains again). A failure
     * before the hand-over leaves the shard draining, owning its slots (it asks again until its drain timeout, then
     * stops and its slots fail over).
     */
    synchronized Drained drain(final String shardId, final String unapplied) throws IOException, InterruptedException {
        // Its checkpoint would be of a model that may be a mix: the shard's slots fail over from the restored one.
        state.refuseIfMixed("the drain of shard " + shardId);
        final boolean holdsRows = state.beginDrain(shardId);
        final long checkpointId;
        final long createdMillis;
        try {
            if (holdsRows) {
                final Taken taken = checkpointNow(false);
                checkpointId = taken.checkpoint().id();
                createdMillis = taken.checkpoint().manifest().createdMillis();
            } else {
                checkpointId = state.latestCheckpointId();
                createdMillis = 0;
            }
        } catch (IOException | InterruptedException | RuntimeException e) {
            // The shard hears why; the proxy's log says so too (a drain's checkpoint failing left no trace here).
            // It stays draining (a draining shard never serves again): it asks again until its own drain timeout.
            LOG.warn(
                    "drain of shard {} not done, its checkpoint failed: {}",
                    shardId,
                    e.getMessage() == null ? e.toString() : e.getMessage());
            throw e;
        }
        final int handed = state.handOver(shardId, holdsRows ? checkpointId : 0, createdMillis, unapplied);
        LOG.info("shard {} drained: {} slots handed over with checkpoint {}", shardId, handed, checkpointId);
        return new Drained(checkpointId, handed, state.epoch());
    }

    /**
     * How long a move's fence holds requests for the moving slots at most: the move's checkpoint must commit well within
     * it (see {@link #rebalance}).
     */
    static final long MOVE_FENCE_MS = TimeUnit.MINUTES.toMillis(10);

    /**
     * How long a shard may take to fence (it waits up to {@code Shard.FENCE_SYNC_WAIT_MS}, 5 s, for SYNC gradients of
     * its moving slots) or lift.
     */
    static final long FENCE_CALL_MS = 10_000;

    /** How long a rebalance tries to find the giving shards with no SYNC gradients held for their moving slots. */
    static final long SYNC_RETRY_MS = 30_000;

    /** The outcome of a rebalance: its moves, the checkpoint the moved slots are restored from, the epoch after. */
    record Rebalanced(List<ClusterState.Move> moves, long checkpointId, long epoch) {}

    /**
     * Moves slots so that every live shard owns its share ({@link ClusterState#planRebalance}), losing nothing: each
     * giving shard refuses requests for its moving slots (a fence, retryable for clients), queues what it accepted for
     * them before and applies the SYNC gradients it holds for them; a checkpoint of every owner then holds all of
     * that, and the slots go to their new owners with restore orders from it (a lossless event, as a drain's). A giving
     * shard still holding SYNC gradients for its moving slots (a worker still pushing to one) has its fence lifted and
     * the move is tried again, for up to {@link #SYNC_RETRY_MS}. A failure before the commit, or a slot that changes
     * owner meanwhile (a giving shard lost), lifts the fences (whatever the caller's deadline) and moves nothing.
     */
    synchronized Rebalanced rebalance(final boolean dryRun) throws IOException, InterruptedException {
        state.refuseIfMixed("a rebalance");
        final ClusterState.Rebalance plan = state.planRebalance();
        if (dryRun || plan.moves().isEmpty()) {
            if (!dryRun) {
                // Fences a move left (its lift did not reach a shard): nothing is moving now.
                final String stuck = liftFences(state.fencedShards());
                if (!stuck.isEmpty()) {
                    throw PsException.unavailable("nothing to move, but " + stuck);
                }
            }
            return new Rebalanced(plan.moves(), 0, state.epoch());
        }
        final Map<String, BitSet> fenced = new LinkedHashMap<>();
        for (final ClusterState.Move move : plan.moves()) {
            final BitSet slots = fenced.computeIfAbsent(move.from(), id -> new BitSet());
            move.slots().forEach(slots::set);
        }
        final List<ShardFanOut.Target> givers = new ArrayList<>();
        plan.addresses().forEach((id, address) -> givers.add(new ShardFanOut.Target(id, address)));
        final long madeMillis = state.fenceMillis();
        final long fencedNanos = System.nanoTime();
        final AtomicReference<String> aborted = new AtomicReference<>();
        final io.grpc.Context.CancellableContext scope =
                io.grpc.Context.current().withCancellation();
        final Thread watcher = watchMoves(plan, scope, aborted);
        final io.grpc.Context previous = scope.attach();
        try {
            fence(givers, fenced, madeMillis);
            final Taken taken = checkpointNow(false);
            // The giving shards learn of the move with their next heartbeat, or stop serving when their lease lapses.
            final long committedWithin = MOVE_FENCE_MS - 2 * state.leaseWithMarginMillis();
            final long tookMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - fencedNanos);
            if (tookMs > committedWithin) {
                throw PsException.unavailable(
                        "its checkpoint " + taken.checkpoint().id() + " took " + tookMs
                                + " ms, past what the moving slots' fence holds safely (" + committedWithin + " ms)");
            }
            final long epoch = state.rebalanced(
                    plan, taken.checkpoint().id(), taken.checkpoint().manifest().createdMillis());
            LOG.info(
                    "rebalanced at routing epoch {}: {} moves, restored from checkpoint {}",
                    epoch,
                    plan.moves().size(),
                    taken.checkpoint().id());
            return new Rebalanced(plan.moves(), taken.checkpoint().id(), epoch);
        } catch (IOException | InterruptedException | RuntimeException e) {
            // The one mapper of failures to statuses, as every call's answer uses.
            final Status failed = PsException.toStatus(e).getStatus();
            final String cause =
                    aborted.get() != null ? aborted.get() : failed.getCode() + ": " + failed.getDescription();
            final String stuck = liftFences(givers);
            final String why = "rebalance not done, nothing moved: " + cause
                    + (stuck.isEmpty()
                            ? "; the moving slots' fences are lifted"
                            : "; " + stuck + " (run the rebalance again to lift them, or they lapse within "
                                    + TimeUnit.MILLISECONDS.toMinutes(MOVE_FENCE_MS) + " minutes)");
            LOG.warn("{}", why);
            if (e instanceof InterruptedException) {
                throw (InterruptedException) e;
            }
            final Status.Code code = aborted.get() != null ? Status.Code.FAILED_PRECONDITION : failed.getCode();
            throw Status.fromCode(code).withDescription(why).asRuntimeException();
        } finally {
            scope.detach(previous);
            watcher.interrupt();
            scope.cancel(null);
        }
    }

    /**
     * Fences every giving shard's moving slots; where one still holds SYNC gradients for them, lifts the fences, waits
     * a little and tries again, for up to {@link #SYNC_RETRY_MS}.
     *
     * @throws PsException FAILED_PRECONDITION naming the SYNC clocks when they never let go in that time.
     */
    private void fence(final List<ShardFanOut.Target> givers, final Map<String, BitSet> fenced, final long madeMillis)
            throws InterruptedException {
        final long giveUp = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(SYNC_RETRY_MS);
        long waitMs = 100;
        while (true) {
            final List<FenceSlotsResponse> answers =
                    fanOut.callAll("fence for a rebalance", givers, (index, channel, deadline) -> {
                        final FenceSlotsRequest.Builder request = FenceSlotsRequest.newBuilder()
                                .setHoldMillis(MOVE_FENCE_MS)
                                .setMadeMillis(madeMillis);
                        fenced.get(givers.get(index).shardId()).stream().forEach(request::addSlots);
                        return ShardAdminServiceGrpc.newBlockingStub(channel)
                                .withDeadline(ShardFanOut.earlier(deadline, FENCE_CALL_MS))
                                .fenceSlots(request.build());
                    });
            String held = null;
            for (int i = 0; i < answers.size() && held == null; i++) {
                if (!answers.get(i).getUnapplied().isEmpty()) {
                    held = "shard " + givers.get(i).shardId() + " holds SYNC gradients for slots that would move ("
                            + answers.get(i).getUnapplied() + ")";
                }
            }
            if (held == null) {
                return;
            }
            if (System.nanoTime() - giveUp > 0) {
                throw PsException.failedPrecondition(held + ", every time for " + SYNC_RETRY_MS / 1000 + " s: a"
                        + " worker kept pushing to them; run it again, or between runs of the synchronous job");
            }
            LOG.info("rebalance: {}; lifting the fences and trying again in {} ms", held, waitMs);
            liftFences(givers);
            TimeUnit.MILLISECONDS.sleep(waitMs);
            waitMs = Math.min(1_000, 2 * waitMs);
        }
    }

    /**
     * Watches a rebalance under way: once a slot changes owner or a restore order is given (a giving shard lost, a
     * shard restarted), the move cannot commit, so {@code scope} is cancelled (the checkpoint's calls with it) instead
     * of waiting for a stalled shard's timeout while the other givers' slots stay fenced.
     */
    private Thread watchMoves(
            final ClusterState.Rebalance plan,
            final io.grpc.Context.CancellableContext scope,
            final AtomicReference<String> aborted) {
        final Thread watcher = new Thread(
                () -> {
                    try {
                        while (!scope.isCancelled()) {
                            final String moved = state.movedSince(plan.at());
                            if (moved != null) {
                                aborted.set(moved + " while it ran");
                                scope.cancel(PsException.failedPrecondition(moved));
                                return;
                            }
                            TimeUnit.MILLISECONDS.sleep(50);
                        }
                    } catch (InterruptedException done) {
                        Thread.currentThread().interrupt();
                    }
                },
                "ps-proxy-rebalance-watch");
        watcher.setDaemon(true);
        watcher.start();
        return watcher;
    }

    /**
     * Lifts the fences of a move that did not happen, in calls of their own (not under the caller's deadline, which
     * may be what failed the move; at most {@link #FENCE_CALL_MS} each). Returns "" when every giving shard lifted its
     * fence, else which did not and why (a shard not reached lifts its own when the fence lapses).
     */
    private String liftFences(final List<ShardFanOut.Target> givers) throws InterruptedException {
        final io.grpc.Context previous = io.grpc.Context.ROOT.attach();
        try {
            final List<String> failures =
                    fanOut.callAll("lift a rebalance's fence", givers, (index, channel, deadline) -> {
                        try {
                            ShardAdminServiceGrpc.newBlockingStub(channel)
                                    .withDeadlineAfter(FENCE_CALL_MS, TimeUnit.MILLISECONDS)
                                    .fenceSlots(FenceSlotsRequest.getDefaultInstance());
                            return "";
                        } catch (StatusRuntimeException e) {
                            return "shard " + givers.get(index).shardId() + " at "
                                    + givers.get(index).address() + ": "
                                    + e.getStatus().getCode();
                        }
                    });
            final String stuck = String.join(
                    ", ",
                    failures.stream().filter(failure -> !failure.isEmpty()).toList());
            if (!stuck.isEmpty()) {
                LOG.warn(
                        "could not lift a rebalance's fence on {}; requests for its slots are refused until it"
                                + " lapses, at most {} ms, or the proxy restarts",
                        stuck,
                        MOVE_FENCE_MS);
                return "fences not lifted on " + stuck;
            }
            return "";
        } finally {
            io.grpc.Context.ROOT.detach(previous);
        }
    }

    /** Loads checkpoint {@code id} (0: the latest complete one) into every slot owner; returns rows restored. */
    synchronized Restored restore(final long id) throws IOException, InterruptedException {
        final OperationBoard.Operation operation = operations.begin("restore", id);
        try {
            final Restored restored = restore(id, operation);
            operation.succeeded();
            return restored;
        } catch (IOException | InterruptedException | RuntimeException e) {
            operation.failed(e.getMessage() == null ? e.toString() : e.getMessage());
            throw e;
        }
    }

    private Restored restore(final long id, final OperationBoard.Operation operation)
            throws IOException, InterruptedException {
        final CheckpointInfo checkpoint;
        final Map<Long, String> passedOver = new java.util.TreeMap<>(java.util.Comparator.reverseOrder());
        final Map<Long, CheckpointCorruptException> damage = new java.util.TreeMap<>();
        if (id == 0) {
            // latest() verifies checksums, skipping damaged checkpoints for older ones.
            try {
                checkpoint = store.latest(operation.local("verifying"), passedOver, damage)
                        .orElseThrow(() -> PsException.notFound("no complete checkpoint under " + store.root()
                                + (passedOver.isEmpty() ? "" : "; passed over: " + passedOver)));
            } finally {
                damage.forEach(this::damageFound);
            }
        } else {
            checkpoint = store.get(id)
                    .orElseThrow(() -> PsException.notFound(
                            "checkpoint " + id + " under " + store.root() + " does not exist or has no manifest"));
            try {
                store.verify(checkpoint, operation.local("verifying"));
            } catch (CheckpointCorruptException corrupt) {
                damageFound(id, corrupt);
                throw PsException.dataLoss("checkpoint " + id + " is damaged: " + corrupt.getMessage());
            }
        }
        operation.checkpointId(checkpoint.id());
        refuseIfTablesWouldBeWiped(checkpoint);
        final List<ClusterState.Owner> owners = state.ownersForClusterOperation("a restore");
        for (final TableSchema schema : schemasOf(checkpoint.manifest())) {
            try {
                state.addTable(schema);
            } catch (PsException differentSchema) {
                if (differentSchema.code() != io.grpc.Status.Code.ALREADY_EXISTS) {
                    throw differentSchema;
                }
                throw PsException.failedPrecondition("cannot restore checkpoint " + checkpoint.id() + ": "
                        + differentSchema.getMessage() + "; drop the table first");
            }
        }
        // Durable before it takes effect: from now on the data is (being) brought back to this checkpoint, and so
        // are the job states a new run of a job gets back.
        state.restoringWhole(checkpoint.id(), checkpoint.manifest().createdMillis());
        operation.fanOut("loading", shardIds(owners));
        final List<Long> restored;
        try {
            restored = fanOut.callAllWatched(
                    "restore checkpoint " + checkpoint.id(),
                    targets(owners),
                    (index, channel, deadline) -> ShardAdminServiceGrpc.newBlockingStub(channel)
                            .withDeadline(deadline)
                            .restoreCheckpoint(RestoreCheckpointRequest.newBuilder()
                                    .setCheckpointRoot(store.root().toString())
                                    .setCheckpointId(checkpoint.id())
                                    .addAllSlots(owners.get(index).slots())
                                    .build())
                            .getRowsRestored(),
                    (index, channel, deadline) -> restoreProgress(channel, deadline, checkpoint.id()),
                    settings.watch(),
                    operation);
        } finally {
            // Rows read while the shards loaded (before they began, or of a shard that failed) are of no model now.
            state.invalidateReads();
        }
        final long rows = restored.stream().mapToLong(Long::longValue).sum();
        state.restoredWhole(checkpoint.id());
        // Every slot's rows were read, each chunk checked against its CRC32C: the chain is intact now.
        loadedWhole(checkpoint);
        LOG.info("restored checkpoint {}: {} rows into {} shards", checkpoint.id(), rows, owners.size());
        return new Restored(checkpoint, rows, passedOver);
    }

    /**
     * A restore replaces the rows of every slot it restores, in every table: a table the cluster holds but the
     * checkpoint does not (created after it) would be left in place with all its rows back at their initial values,
     * and served so (invariant 3). An operator who wants that older model drops those tables first; until then the
     * restore is refused before anything changes.
     *
     * @throws PsException FAILED_PRECONDITION naming the tables.
     */
    private void refuseIfTablesWouldBeWiped(final CheckpointInfo checkpoint) {
        final Set<String> inCheckpoint = new TreeSet<>();
        checkpoint.manifest().tables().forEach(table -> inCheckpoint.add(table.name()));
        final Set<String> missing = new TreeSet<>();
        for (final TableSchema schema : state.tables()) {
            if (!inCheckpoint.contains(schema.getName())) {
                missing.add(schema.getName());
            }
        }
        if (!missing.isEmpty()) {
            throw PsException.failedPrecondition("cannot restore checkpoint " + checkpoint.id() + ": the cluster holds"
                    + " table(s) " + missing + " that it does not hold (it holds " + inCheckpoint
                    + "); the restore would leave their rows at initial values. Nothing was changed. To go back to"
                    + " that model, drop those tables first (PsClient.dropTable), then restore again");
        }
    }

    /**
     * What a restore loaded, and (restoring the latest) the newer checkpoints it passed over, newest first, with why.
     */
    record Restored(CheckpointInfo checkpoint, long rows, Map<Long, String> passedOver) {}

    private static List<String> shardIds(final List<ClusterState.Owner> owners) {
        return owners.stream().map(ClusterState.Owner::shardId).toList();
    }

    /** A shard's progress writing checkpoint {@code id}: "waiting" until the shard has begun it. */
    private static OperationBoard.ShardProgress writeProgress(
            final io.grpc.ManagedChannel channel, final io.grpc.Deadline deadline, final long id) {
        final CheckpointProgressResponse answer = ShardAdminServiceGrpc.newBlockingStub(channel)
                .withDeadline(deadline)
                .checkpointProgress(CheckpointProgressRequest.newBuilder()
                        .setCheckpointId(id)
                        .build());
        if (!answer.getKnown()) {
            return new OperationBoard.ShardProgress("waiting", 0, 0, 0, 0, false, 0, false);
        }
        return new OperationBoard.ShardProgress(
                answer.getPhase(),
                answer.getRowsWritten(),
                answer.getRowsTotal(),
                answer.getBytesWritten(),
                answer.getBytesTotal(),
                answer.getCutMarked(),
                answer.getRowsCopied(),
                answer.getDone());
    }

    /** A shard's progress restoring checkpoint {@code id}: its newest restore of that checkpoint. */
    private static OperationBoard.ShardProgress restoreProgress(
            final io.grpc.ManagedChannel channel, final io.grpc.Deadline deadline, final long id) {
        final CheckpointProgressResponse answer = ShardAdminServiceGrpc.newBlockingStub(channel)
                .withDeadline(deadline)
                .checkpointProgress(CheckpointProgressRequest.newBuilder()
                        .setCheckpointId(id)
                        .build());
        RestoreProgress newest = null;
        for (final RestoreProgress restore : answer.getRestoresList()) {
            if (restore.getCheckpointId() == id) {
                newest = restore;
            }
        }
        if (newest == null) {
            return new OperationBoard.ShardProgress("waiting", 0, 0, 0, 0, false, 0, false);
        }
        return new OperationBoard.ShardProgress(
                newest.getPhase(),
                newest.getRowsDone(),
                newest.getRowsTotal(),
                newest.getBytesDone(),
                newest.getBytesTotal(),
                false,
                0,
                newest.getDone());
    }

    private static List<ShardFanOut.Target> targets(final List<ClusterState.Owner> owners) {
        final List<ShardFanOut.Target> targets = new ArrayList<>();
        owners.forEach(owner -> targets.add(new ShardFanOut.Target(owner.shardId(), owner.address())));
        return targets;
    }

    static List<TableSchema> schemasOf(final Manifest manifest) throws IOException {
        final List<TableSchema> schemas = new ArrayList<>();
        for (final Manifest.TableEntry entry : manifest.tables()) {
            schemas.add(TableSchema.parseFrom(entry.schema()));
        }
        return schemas;
    }
}
