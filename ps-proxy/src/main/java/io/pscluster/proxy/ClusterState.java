package io.pscluster.proxy;

import io.pscluster.proto.v1.HeartbeatRequest;
import io.pscluster.proto.v1.HeartbeatResponse;
import io.pscluster.proto.v1.JobInfo;
import io.pscluster.proto.v1.ListShardsResponse;
import io.pscluster.proto.v1.ProxyStateRecord;
import io.pscluster.proto.v1.RegisterShardRequest;
import io.pscluster.proto.v1.RegisterShardResponse;
import io.pscluster.proto.v1.RestoreDirective;
import io.pscluster.proto.v1.RestoreReport;
import io.pscluster.proto.v1.RollbackEvent;
import io.pscluster.proto.v1.RoutingTable;
import io.pscluster.proto.v1.ShardInfo;
import io.pscluster.proto.v1.ShardLoad;
import io.pscluster.proto.v1.ShardStatus;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.proto.v1.TableStats;
import io.pscluster.proto.v1.TableTombstone;
import io.pscluster.wire.PsException;
import io.pscluster.wire.Slots;
import java.io.IOException;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.Set;
import java.util.UUID;
import java.util.function.BooleanSupplier;
import java.util.function.LongSupplier;
import java.util.function.Supplier;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The proxy's view of the cluster: the shard registry with leases, the slot -> shard assignment with its epoch and
 * per-slot generations, the table catalog with tombstones, restore orders and rollback events. Control-plane traffic
 * is a few calls per second, so one monitor guards it all.
 *
 * <p><b>Durable before visible.</b> Every change runs through {@link #change}: the body mutates the state under the
 * monitor, the epoch grows if the routing table's content changed, then the whole {@link ProxyStateRecord} is saved
 * (when it differs from the saved one) before the monitor is released and before any answer is built from it. If the
 * save fails, the state is reloaded from the last saved record and the call fails with UNAVAILABLE: nobody ever saw
 * the change. Epochs only grow; a slot's generation is the epoch at which its owner got it.
 *
 * <p><b>Shards</b> move through named states ({@link ShardState}): a registration makes a shard
 * {@code registering}, its first heartbeat {@code live}; after a proxy restart every shard of the record is
 * {@code suspect} (not heard from yet, lease clock started at the restart); {@code draining} while it hands its
 * slots over; {@code gone} once lease + margin passed since the proxy last <i>received</i> its heartbeat, or it
 * deregistered. A gone shard that owns nothing is forgotten after {@code forgetAfterMillis}.
 *
 * <p><b>Slots</b> are {@link SlotState#OWNED owned}, {@link SlotState#RESTORING restoring} (their owner has an
 * outstanding restore order for them) or {@link SlotState#ORPHANED orphaned} (no owner, or a gone one). While no table
 * exists slots hold no rows and are spread evenly over the serving shards on every change. Once a table exists a slot
 * moves only when orphaned: each lost shard's group goes whole to an idle shard (one that owns nothing) if there is
 * one, otherwise it is split evenly over the live shards, fewest slots first; every part gets a restore order from the
 * checkpoint the data is at ({@link #dataCheckpointId}) and every move a {@link RollbackEvent}.
 *
 * <p><b>Restart.</b> For one lease + margin after start (the grace period) no orphaned slot is reassigned: the shards
 * of the record keep exactly what it says when they heartbeat or re-register. A proxy without a record starts from
 * the newest checkpoint manifest (if any) and, during the grace, lets re-registering shards claim what they hold (the
 * highest generation wins a slot), and adopts the tables they report; if the root shows that a cluster used it (a
 * checkpoint, or the {@link ClusterMark}), no slot goes to anyone else during the grace.
 *
 * <p><b>Jobs</b> are {@link JobRegistry}'s: this class only saves them in the same record ({@link #saveJobs}), so that
 * one save never loses the other's change. Lock order: the registry's monitor, then this one, never the reverse.
 */
final class ClusterState {
    /** How a refusal because the state could not be saved ends (a caller that reports it elsewhere drops it). */
    static final String NOTHING_CHANGED = "; nothing changed, try again";

    private static final Logger LOG = LoggerFactory.getLogger(ClusterState.class);

    /** Rollback events kept for status and routing tables. */
    static final int MAX_ROLLBACKS = 64;

    private static final long NO_CLAIM = Long.MIN_VALUE;

    /** Settings fixed for the life of the state. */
    /**
     * @param checkpointRoot the root checkpoints are under, qualified.
     * @param checkpointRootMoved the operator moved the checkpoints to {@code checkpointRoot}: a saved record that names
     *     another root is taken all the same.
     */
    record Settings(
            long leaseMillis,
            long leaseMarginMillis,
            long forgetAfterMillis,
            String checkpointRoot,
            boolean checkpointRootMoved) {
        Settings(long leaseMillis, long leaseMarginMillis, long forgetAfterMillis, String checkpointRoot) {
            this(leaseMillis, leaseMarginMillis, forgetAfterMillis, checkpointRoot, false);
        }
    }

    /** What the newest readable checkpoint manifest says, for a proxy that starts without a state record. */
    record Bootstrap(long checkpointId, long createdMillis, List<TableSchema> tables, String[] owners, long epoch) {}

    /** The jobs' part of the record: {@link JobRegistry} owns it, this class saves it with everything else. */
    record SavedJobs(List<JobInfo> jobs, long version) {}

    /** A shard to call and the slots it owns. */
    record Owner(String shardId, String address, List<Integer> slots) {}

    /** A shard's place in its life cycle, as status shows it. */
    enum ShardState {
        /** Registered; no heartbeat yet. */
        REGISTERING,
        /** Heartbeats arrive within the lease. */
        LIVE,
        /** Known from the state record, not heard from since the proxy restarted: it may still hold a lease. */
        SUSPECT,
        /** Handing its slots over before it stops. */
        DRAINING,
        /** Lease + margin lapsed, or deregistered: its slots may be given to others. */
        GONE;

        String wireName() {
            return name().toLowerCase(Locale.ROOT);
        }

        /** May hold a valid lease, so its slots stay with it. */
        boolean serving() {
            return this != GONE;
        }

        /** The proxy has heard from it in this life and it may take slots. */
        boolean takesSlots() {
            return this == REGISTERING || this == LIVE;
        }
    }

    /** A slot's condition. */
    enum SlotState {
        OWNED,
        RESTORING,
        ORPHANED
    }

    private static final class ShardRecord {
        final String id;
        String address;
        /** The data-plane protocol it reported when it registered ({@link io.pscluster.wire.Protocol}). */
        int protocolVersion;
        /** The process that registered it last ("": not known); not persisted. */
        String processId = "";

        ShardState state;
        long lastHeardNanos;
        /** Time since {@link #lastHeardNanos} not counted against the lease: the proxy's own pauses. */
        long creditNanos;

        long goneSinceNanos;
        ShardLoad load = ShardLoad.getDefaultInstance();
        List<TableStats> tables = List.of();
        /**
         * The restore orders whose slots it does not serve yet, as its last heartbeat said: a move's, restored and held
         * (RestoreReport.held) until it follows an answer that no longer sends it, or one still loading (this proxy's
         * pending orders, or one it no longer has: superseded, or from before a restart without saved orders). Not
         * persisted.
         */
        List<Long> unservedOrders = List.of();

        ShardRecord(final String id, final String address, final ShardState state, final long now) {
            this.id = id;
            this.address = address;
            this.state = state;
            this.lastHeardNanos = now;
            this.goneSinceNanos = now;
        }

        ShardRecord copy() {
            final ShardRecord copy = new ShardRecord(id, address, state, lastHeardNanos);
            copy.protocolVersion = protocolVersion;
            copy.processId = processId;
            copy.creditNanos = creditNanos;
            copy.goneSinceNanos = goneSinceNanos;
            copy.load = load;
            copy.tables = tables;
            copy.unservedOrders = unservedOrders;
            return copy;
        }

        void registered(final String newAddress, final int newProtocolVersion, final long now) {
            address = newAddress;
            protocolVersion = newProtocolVersion;
            state = ShardState.REGISTERING;
            lastHeardNanos = now;
            creditNanos = 0;
            unservedOrders = List.of();
        }

        void heardFrom(final long now) {
            lastHeardNanos = now;
            creditNanos = 0;
            if (state == ShardState.REGISTERING || state == ShardState.SUSPECT) {
                state = ShardState.LIVE;
            }
        }

        void draining() {
            state = ShardState.DRAINING;
        }

        void gone(final long now) {
            state = ShardState.GONE;
            goneSinceNanos = now;
        }

        ShardInfo info() {
            return ShardInfo.newBuilder()
                    .setShardId(id)
                    .setAddress(address)
                    .setProtocolVersion(protocolVersion)
                    .build();
        }
    }

    /** What a failed change must put back besides the persisted record. */
    private record Volatile(
            Map<String, ShardRecord> shards,
            Map<Long, RestoreReport> reports,
            long[] claimedAt,
            long latestCheckpointCreatedMillis,
            long dataCheckpointCreatedMillis) {}

    private final Settings settings;
    private final ProxyStateStore store;
    private final LongSupplier nanoClock;
    private final LongSupplier wallClock;
    private final long leaseExpiryNanos;
    private final long forgetAfterNanos;
    private long startNanos;
    /**
     * Grows whenever rows a reader may have seen can have changed other than by pushes: routing, restore orders given
     * or done, a restore into every shard, the catalog. The proxy's read cache serves a row only when it was read at
     * the current value (see {@link ReadCache}).
     */
    private volatile long readVersion;
    /** When this proxy started, by its wall clock: shards lift slot fences made before (of moves it did not finish). */
    private final long startMillis;
    /** How late expireLeases runs (see detectOwnPauses). */
    private final OwnPauses ownPauses = new OwnPauses();
    /**
     * No record at start (or a record saved during such a start's grace): shards' claims rebuild the assignment
     * during the grace. Persisted until the grace ends, so that a restart in the middle of it does not drop it.
     */
    private boolean bootstrapped;
    /**
     * Bootstrapped in a cluster that existed (a checkpoint, or the root's cluster mark, or no way to tell): live
     * shards may hold rows this state has not heard of, so during the grace no slot goes to anyone but its claimant.
     */
    private boolean holdForClaims;

    private final Map<String, ShardRecord> shards = new LinkedHashMap<>();
    private final String[] owners = new String[Slots.SLOT_COUNT];
    private final long[] generations = new long[Slots.SLOT_COUNT];
    /** Bootstrap only: the generation of the claim that holds each slot, {@link #NO_CLAIM} when none. */
    private final long[] claimedAt = new long[Slots.SLOT_COUNT];

    private final Map<String, TableSchema> tables = new LinkedHashMap<>();
    /**
     * When each table was created (wall clock, ms), persisted; absent for a table learnt from a checkpoint or brought
     * back to one by an operator's restore. Restore orders carry them: a shard does not restore a checkpoint committed
     * before a table was created into it (its rows of that name are of a dropped table).
     */
    private final Map<String, Long> tableCreatedMillis = new HashMap<>();
    /**
     * The time of the last checkpoint that began ({@link #beginCheckpoint}): a table created after it is stamped later,
     * whatever the clock says within the same millisecond.
     */
    private long lastCheckpointStartMillis;

    private final Map<String, TableTombstone> tombstones = new LinkedHashMap<>();
    private final Map<Long, RestoreDirective> pendingRestores = new LinkedHashMap<>();
    private final Map<Long, RestoreReport> restoreReports = new LinkedHashMap<>();
    private final ArrayDeque<RollbackEvent> rollbacks = new ArrayDeque<>();
    private SavedJobs jobs = new SavedJobs(List.of(), 0);
    private long epoch;
    private long nextShardNumber;
    private long nextOrderId = 1;
    private long nextRollbackId = 1;
    private long saveFailures;
    private boolean closed;
    private long rollbacksTotal;
    private long latestCheckpointId;
    private long latestCheckpointCreatedMillis;
    /** The checkpoint the cluster's data was last brought to as a whole (see {@link #dataCheckpointId()}). */
    private long dataCheckpointId;
    /** An operator's restore into every shard that began and did not end well (0: none); see the record's field. */
    private long unfinishedRestoreId;
    /** When {@link #dataCheckpointId} was taken, for rollback events (not persisted, like the latest's). */
    private long dataCheckpointCreatedMillis;

    /** This state's identity for its whole life (the record's {@code state_id}); never put back by a failed change. */
    private String stateId = "";
    /**
     * A checkpoint committed while the record could not be saved (0: none): the next change that saves records it,
     * so that the record never misses a commit it could have named (and a restart adopts it, see the record's field).
     */
    private long unrecordedCheckpointId;

    private long unrecordedCreatedMillis;

    private boolean graceOver;
    private boolean warnedNoTaker;
    /** The record the state equals between changes: the last one saved or loaded (or bootstrapped, unsaved). */
    private ProxyStateRecord baseline;

    private ClusterState(
            final Settings settings,
            final ProxyStateStore store,
            final LongSupplier nanoClock,
            final LongSupplier wallClock,
            final boolean bootstrapped) {
        this.settings = settings;
        this.store = store;
        this.nanoClock = nanoClock;
        this.wallClock = wallClock;
        this.leaseExpiryNanos = (settings.leaseMillis() + settings.leaseMarginMillis()) * 1_000_000L;
        this.forgetAfterNanos = settings.forgetAfterMillis() * 1_000_000L;
        this.startNanos = nanoClock.getAsLong();
        this.startMillis = wallClock.getAsLong();
        this.bootstrapped = bootstrapped;
        Arrays.fill(claimedAt, NO_CLAIM);
    }

    /**
     * Opens the state: the store's record if it has one (every shard in it suspect, the grace starting now), else
     * what {@code bootstrap} finds in the newest checkpoint (asked only then), else an empty cluster. Without a
     * record, {@code existed} says whether a cluster used the checkpoint root before (asked only when there is no
     * checkpoint; it answers true when it cannot tell): if so, slots go only to the shards that claim them until the
     * grace is over, even while no table is known, because a live shard may hold rows of a table it has yet to report.
     *
     * @throws IOException when the store cannot be read or its record is damaged: the proxy must not start empty.
     */
    static ClusterState open(
            final Settings settings,
            final ProxyStateStore store,
            final Supplier<Optional<Bootstrap>> bootstrap,
            final BooleanSupplier existed,
            final LongSupplier nanoClock,
            final LongSupplier wallClock)
            throws IOException {
        final Optional<ProxyStateRecord> record = store.load();
        final ClusterState state = new ClusterState(settings, store, nanoClock, wallClock, record.isEmpty());
        synchronized (state) {
            if (record.isPresent()) {
                state.resume(record.get());
                if (record.get().getStateId().isEmpty()) {
                    // A record of an older proxy: save its new identity now, before a checkpoint names it.
                    try {
                        state.change("record the state's identity", () -> null);
                    } catch (PsException e) {
                        LOG.warn("{}", e.getMessage());
                    }
                }
            } else {
                state.bootstrap(bootstrap.get(), existed);
            }
        }
        return state;
    }

    /**
     * Starts the grace period now: called once the proxy accepts calls, so that the shards get one whole lease plus
     * margin to reach it (opening the state and starting the server can take a while) before any of them is judged
     * gone. Suspect shards' lease clocks restart too.
     */
    synchronized void startGrace() {
        final long now = nanoClock.getAsLong();
        startNanos = now;
        for (final ShardRecord record : shards.values()) {
            if (record.state == ShardState.SUSPECT) {
                record.lastHeardNanos = now;
                record.creditNanos = 0;
            }
        }
    }

    /**
     * Whether two checkpoint roots name one directory: as qualified URIs they differ at most by trailing slashes (a
     * local path's URI ends in one when the directory exists, so a root created by the first start gains one).
     */
    static boolean sameRoot(final String a, final String b) {
        return withoutTrailingSlashes(a).equals(withoutTrailingSlashes(b));
    }

    private static String withoutTrailingSlashes(final String root) {
        int end = root.length();
        while (end > 1 && root.charAt(end - 1) == '/' && root.charAt(end - 2) != '/') {
            end--;
        }
        return root.substring(0, end);
    }

    private void resume(final ProxyStateRecord record) throws IOException {
        if (record.getSlotOwnerCount() != Slots.SLOT_COUNT || record.getSlotGenerationCount() != Slots.SLOT_COUNT) {
            throw new IOException("proxy state in " + store.describe() + " has " + record.getSlotOwnerCount()
                    + " slot owners and " + record.getSlotGenerationCount() + " generations; this cluster has "
                    + Slots.SLOT_COUNT + " slots");
        }
        final String savedRoot = record.getCheckpointRoot();
        if (!savedRoot.isEmpty() && !sameRoot(savedRoot, settings.checkpointRoot())) {
            if (!settings.checkpointRootMoved()) {
                throw new IOException("proxy state in " + store.describe()
                        + " belongs to a cluster whose checkpoints are"
                        + " under " + savedRoot + ", not " + settings.checkpointRoot() + ": its restore orders and"
                        + " checkpoint ids name checkpoints there. Start the proxy with --checkpoint-dir " + savedRoot
                        + ", or, if that cluster's checkpoints were moved to " + settings.checkpointRoot() + " (the"
                        + " whole directory), add --checkpoint-dir-moved");
            }
            LOG.warn(
                    "the checkpoints of the cluster in {} were under {}; taking them under {} (--checkpoint-dir-moved)",
                    store.describe(),
                    savedRoot,
                    settings.checkpointRoot());
        }
        applyRecord(record);
        stateId = record.getStateId().isEmpty() ? UUID.randomUUID().toString() : record.getStateId();
        if (record.getClaimGrace()) {
            // Saved during the grace of a start without a record: that grace starts over, claims and all.
            bootstrapped = true;
            holdForClaims = record.getHoldForClaims();
            if (record.getClaimedAtCount() == Slots.SLOT_COUNT) {
                for (int slot = 0; slot < Slots.SLOT_COUNT; slot++) {
                    claimedAt[slot] = record.getClaimedAt(slot);
                }
            }
            LOG.warn(
                    "the state in {} was rebuilt from the shards' claims and its grace did not end: taking claims"
                            + " again for {} ms",
                    store.describe(),
                    settings.leaseMillis() + settings.leaseMarginMillis());
        }
        final long now = nanoClock.getAsLong();
        for (final ShardInfo info : record.getShardsList()) {
            final ShardRecord shard = new ShardRecord(info.getShardId(), info.getAddress(), ShardState.SUSPECT, now);
            shard.protocolVersion = info.getProtocolVersion();
            shards.put(info.getShardId(), shard);
        }
        baseline = record;
        LOG.info(
                "resumed from {}: epoch {}, {} shards (suspect until they heartbeat), {} tables, {} restore orders"
                        + " pending; nothing is reassigned for {} ms",
                store.describe(),
                epoch,
                shards.size(),
                tables.size(),
                pendingRestores.size(),
                settings.leaseMillis() + settings.leaseMarginMillis());
    }

    private void bootstrap(final Optional<Bootstrap> checkpoint, final BooleanSupplier existed) {
        stateId = UUID.randomUUID().toString();
        holdForClaims = checkpoint.isPresent() || existed.getAsBoolean();
        if (checkpoint.isPresent()) {
            final Bootstrap from = checkpoint.get();
            from.tables().forEach(schema -> tables.put(schema.getName(), schema));
            epoch = from.epoch() + 1;
            for (int slot = 0; slot < owners.length; slot++) {
                owners[slot] = from.owners()[slot];
                generations[slot] = owners[slot] == null ? 0 : epoch;
            }
            latestCheckpointId = from.checkpointId();
            latestCheckpointCreatedMillis = from.createdMillis();
            dataCheckpointId = from.checkpointId();
            dataCheckpointCreatedMillis = from.createdMillis();
            LOG.warn(
                    "no proxy state in {}: starting from checkpoint {} ({} tables) at epoch {}; shards that"
                            + " re-register within {} ms keep what they hold",
                    store.describe(),
                    from.checkpointId(),
                    from.tables().size(),
                    epoch,
                    settings.leaseMillis() + settings.leaseMarginMillis());
        } else if (holdForClaims) {
            LOG.warn(
                    "no proxy state in {} and no checkpoint, but a cluster used this checkpoint root before: its"
                            + " shards that re-register within {} ms keep what they hold; no slot goes to any other"
                            + " shard until then",
                    store.describe(),
                    settings.leaseMillis() + settings.leaseMarginMillis());
        } else {
            LOG.info("no proxy state in {} and no checkpoint: starting an empty cluster", store.describe());
        }
        // Rollback ids must never go back, even across a lost state file: running jobs report only ids above the
        // newest they saw. A new state's ids start from the wall clock (in thousandths of a millisecond).
        nextRollbackId = Math.max(nextRollbackId, wallClock.getAsLong() * 1000);
        // Ids it hands out must not be those of live shards that come back to claim their slots (a proxy that lost
        // its state file): a new state numbers its shards from the clock (seconds within ~28 hours, times 100).
        nextShardNumber = Math.max(nextShardNumber, wallClock.getAsLong() / 1000 % 100_000 * 100);
        // Shards take a job list only if its version is above the one they hold: a new state's versions start from
        // the wall clock (milliseconds), above anything a proxy that lost its state ever handed out.
        jobs = new SavedJobs(List.of(), wallClock.getAsLong());
        baseline = toRecord();
    }

    // ---- the change protocol

    /**
     * Runs {@code body} as one change: if the routing content changed, the epoch grows; then the record is saved.
     * On any failure (the body's or the save's) the state is put back as it was and the failure is thrown.
     */
    private <T> T change(final String what, final Supplier<T> body) {
        final Volatile before = captureVolatile();
        final RoutingTable routingBefore = routingContent();
        try {
            if (unrecordedCheckpointId > 0) {
                noteCheckpoint(unrecordedCheckpointId, unrecordedCreatedMillis);
            }
            final T result = body.get();
            if (!routingContent().equals(routingBefore)) {
                epoch++;
                readVersion++;
            }
            persist(what);
            unrecordedCheckpointId = 0;
            return result;
        } catch (RuntimeException e) {
            putBack(before);
            throw e;
        }
    }

    /**
     * Stops saving: from now on every change fails (UNAVAILABLE) and is undone. Called when the proxy stops, so that a
     * call still finishing cannot write the state after the store was released (or a successor took the directory).
     */
    synchronized void close() {
        closed = true;
    }

    private void persist(final String what) {
        final ProxyStateRecord record = toRecord();
        if (record.equals(baseline)) {
            return;
        }
        if (closed) {
            throw PsException.unavailable(what + ": the proxy is stopping; nothing changed");
        }
        try {
            store.save(record);
        } catch (IOException | RuntimeException e) {
            // One ERROR with the stack per outage; later failures only count (the change is retried every tick).
            if (saveFailures++ == 0) {
                LOG.error("{}: cannot save the proxy state to {}; the change is undone", what, store.describe(), e);
            }
            throw PsException.unavailable(what + ": the proxy cannot save its state to " + store.describe() + " ("
                    + e.getMessage() + ")" + NOTHING_CHANGED);
        }
        if (saveFailures > 0) {
            LOG.warn("proxy state saved to {} again after {} failed attempts", store.describe(), saveFailures);
            saveFailures = 0;
        }
        baseline = record;
    }

    private Volatile captureVolatile() {
        final Map<String, ShardRecord> copies = new LinkedHashMap<>();
        shards.forEach((id, record) -> copies.put(id, record.copy()));
        return new Volatile(
                copies,
                new LinkedHashMap<>(restoreReports),
                claimedAt.clone(),
                latestCheckpointCreatedMillis,
                dataCheckpointCreatedMillis);
    }

    /** Reloads the last saved record and the volatile state from before the failed change. */
    private void putBack(final Volatile before) {
        applyRecord(baseline);
        shards.clear();
        shards.putAll(before.shards());
        restoreReports.clear();
        restoreReports.putAll(before.reports());
        System.arraycopy(before.claimedAt(), 0, claimedAt, 0, claimedAt.length);
        latestCheckpointCreatedMillis = before.latestCheckpointCreatedMillis();
        dataCheckpointCreatedMillis = before.dataCheckpointCreatedMillis();
    }

    /** The persisted fields from a record; the shard map is the caller's business. */
    private void applyRecord(final ProxyStateRecord record) {
        epoch = record.getEpoch();
        nextShardNumber = record.getNextShardNumber();
        for (int slot = 0; slot < owners.length; slot++) {
            final String owner = slot < record.getSlotOwnerCount() ? record.getSlotOwner(slot) : "";
            owners[slot] = owner.isEmpty() ? null : owner;
            generations[slot] = slot < record.getSlotGenerationCount() ? record.getSlotGeneration(slot) : 0;
        }
        tables.clear();
        record.getTablesList().forEach(schema -> tables.put(schema.getName(), schema));
        tableCreatedMillis.clear();
        tableCreatedMillis.putAll(record.getTableCreatedMillisMap());
        tombstones.clear();
        record.getTombstonesList().forEach(tombstone -> tombstones.put(tombstone.getName(), tombstone));
        pendingRestores.clear();
        record.getPendingRestoresList().forEach(order -> pendingRestores.put(order.getOrderId(), order));
        rollbacks.clear();
        rollbacks.addAll(record.getRollbacksList());
        latestCheckpointId = record.getLatestCheckpointId();
        dataCheckpointId = record.getDataCheckpointId() > 0 ? record.getDataCheckpointId() : latestCheckpointId;
        unfinishedRestoreId = record.getUnfinishedRestoreId();
        nextOrderId = Math.max(1, record.getNextOrderId());
        nextRollbackId = Math.max(1, record.getNextRollbackId());
        rollbacksTotal = record.getRollbacksTotal();
        jobs = new SavedJobs(List.copyOf(record.getJobsList()), record.getJobsVersion());
    }

    private ProxyStateRecord toRecord() {
        final ProxyStateRecord.Builder record = ProxyStateRecord.newBuilder()
                .setCheckpointRoot(settings.checkpointRoot())
                .setStateId(stateId)
                .putAllTableCreatedMillis(tableCreatedMillis)
                .setEpoch(epoch)
                .setNextShardNumber(nextShardNumber)
                .addAllTables(tables.values())
                .addAllTombstones(tombstones.values())
                .addAllPendingRestores(pendingRestores.values())
                .addAllRollbacks(rollbacks)
                .setLatestCheckpointId(latestCheckpointId)
                .setDataCheckpointId(dataCheckpointId)
                .setUnfinishedRestoreId(unfinishedRestoreId)
                .setNextOrderId(nextOrderId)
                .setNextRollbackId(nextRollbackId)
                .setRollbacksTotal(rollbacksTotal)
                .addAllJobs(jobs.jobs())
                .setJobsVersion(jobs.version());
        if (bootstrapped && !graceOver) {
            record.setClaimGrace(true).setHoldForClaims(holdForClaims);
            for (final long claim : claimedAt) {
                record.addClaimedAt(claim);
            }
        }
        shards.values().forEach(shard -> record.addShards(shard.info()));
        for (int slot = 0; slot < owners.length; slot++) {
            record.addSlotOwner(owners[slot] == null ? "" : owners[slot]);
            record.addSlotGeneration(generations[slot]);
        }
        return record.build();
    }

    // ---- jobs

    /**
     * Saves the jobs' part of the record (with everything else, as one change).
     *
     * @throws PsException UNAVAILABLE when the save fails: the saved jobs are those of before.
     */
    synchronized void saveJobs(final String what, final SavedJobs saved) {
        change(what, () -> {
            jobs = new SavedJobs(List.copyOf(saved.jobs()), saved.version());
            return null;
        });
    }

    /** The jobs as the record holds them (as loaded at start, or as last saved). */
    synchronized SavedJobs savedJobs() {
        return jobs;
    }

    /** Whether the catalog holds a table of that name. */
    synchronized boolean hasTable(final String name) {
        return tables.containsKey(name);
    }

    // ---- checkpoints

    /**
     * Records a committed checkpoint as the one later restore orders use (an older one committing late does not).
     *
     * @throws PsException UNAVAILABLE when the record cannot be saved: the next change that saves records the
     *     checkpoint too (until then restore orders use the previous one).
     */
    /**
     * Records checkpoint {@code checkpointId} as the latest, unless a slot changed owner since {@code at} (when its
     * shards were asked for their files).
     *
     * @throws PsException FAILED_PRECONDITION, nothing recorded, when a slot moved: the files of its earlier owner hold
     *     a branch the cluster has left, which a restore of this checkpoint would bring back.
     */
    synchronized void checkpointCommitted(final long checkpointId, final long createdMillis, final SlotsAt at) {
        final String moved = movedSince(at);
        if (moved != null) {
            throw PsException.failedPrecondition("checkpoint " + checkpointId + ": " + moved + " as it committed");
        }
        checkpointCommitted(checkpointId, createdMillis);
    }

    synchronized void checkpointCommitted(final long checkpointId, final long createdMillis) {
        try {
            change("record checkpoint " + checkpointId, () -> {
                noteCheckpoint(checkpointId, createdMillis);
                return null;
            });
        } catch (PsException e) {
            if (checkpointId > unrecordedCheckpointId) {
                unrecordedCheckpointId = checkpointId;
                unrecordedCreatedMillis = createdMillis;
            }
            throw e;
        }
    }

    /**
     * This state's identity: made when the state was first created and kept in its record for its life. The
     * checkpoints this proxy commits name it ({@link CheckpointCoordinator#PROXY_STATE}).
     */
    synchronized String stateId() {
        return stateId;
    }

    /**
     * Remembers when the latest checkpoint, or the one the data is at, was taken (not persisted: read back from its
     * manifest at start).
     */
    synchronized void checkpointTime(final long checkpointId, final long createdMillis) {
        // A restarted proxy stamps tables created from now on after the checkpoints before it, whatever its clock.
        lastCheckpointStartMillis = Math.max(lastCheckpointStartMillis, createdMillis);
        if (checkpointId == latestCheckpointId) {
            latestCheckpointCreatedMillis = createdMillis;
        }
        if (checkpointId == dataCheckpointId) {
            dataCheckpointCreatedMillis = createdMillis;
        }
    }

    private void noteCheckpoint(final long checkpointId, final long createdMillis) {
        if (checkpointId > latestCheckpointId) {
            latestCheckpointId = checkpointId;
            latestCheckpointCreatedMillis = createdMillis;
            // The cluster's data was cut into it: from now on the data moves on from this checkpoint.
            dataCheckpointId = checkpointId;
            dataCheckpointCreatedMillis = createdMillis;
        }
    }

    /**
     * Records, before the shards load it, that every shard's data is being brought back to checkpoint
     * {@code checkpointId} (an operator's restore): from now on, until the next commit, the job states a run's
     * workers get back at their join come from it, slots of a lost shard are restored from it (not from a newer
     * checkpoint, which would mix two points of the model) and the next checkpoint is a delta of it. Until
     * {@link #restoredWhole} the restore counts as unfinished: checkpoints are refused ({@link #refuseIfMixed}).
     *
     * @throws PsException UNAVAILABLE when the record cannot be saved (then the restore must not go on).
     */
    synchronized void restoringWhole(final long checkpointId, final long createdMillis) {
        change("record the restore of checkpoint " + checkpointId + " into every shard", () -> {
            dataCheckpointId = checkpointId;
            dataCheckpointCreatedMillis = createdMillis;
            unfinishedRestoreId = checkpointId;
            // The tables now hold that checkpoint's rows, whenever they were created. A table created before it keeps
            // its time: a restore that falls back to a checkpoint older still must not bring back an earlier table's.
            tableCreatedMillis.values().removeIf(created -> created > createdMillis);
            refreshOrderTableTimes();
            readVersion++;
            return null;
        });
    }

    /**
     * Records that the restore of {@code checkpointId} into every shard ended well: every shard holds that checkpoint
     * (plus what was pushed since), and checkpoints may be taken again.
     *
     * @throws PsException UNAVAILABLE when the record cannot be saved: the restore then still counts as unfinished.
     */
    synchronized void restoredWhole(final long checkpointId) {
        if (unfinishedRestoreId != checkpointId) {
            return;
        }
        change("record that checkpoint " + checkpointId + " is restored into every shard", () -> {
            unfinishedRestoreId = 0;
            // A rollback of every slot, deliberate but one all the same: running jobs hear of it like of a failover's.
            final java.util.TreeSet<String> holders = new java.util.TreeSet<>();
            int slots = 0;
            for (final String owner : owners) {
                if (owner != null) {
                    holders.add(owner);
                    slots++;
                }
            }
            appendRollback(
                    "every shard",
                    List.copyOf(holders),
                    slots,
                    checkpointId,
                    dataCheckpointCreatedMillis,
                    false,
                    "an operator restored checkpoint " + checkpointId + " into every shard: updates since it are gone");
            return null;
        });
    }

    /**
     * Refuses a checkpoint of a model that may be a mix: an operator's restore into every shard began and did not
     * end well (a shard failed it, or the proxy stopped during it).
     *
     * @throws PsException FAILED_PRECONDITION naming the restore and what to do.
     */
    synchronized void refuseIfMixed(final String operation) {
        final String mixed = mixedModel();
        if (mixed != null) {
            throw PsException.failedPrecondition(operation + " refused: " + mixed);
        }
    }

    /**
     * Why the model may be a mix (see {@link #refuseIfMixed}), naming the restore and what to do; null when it is
     * not.
     */
    synchronized String mixedModel() {
        if (unfinishedRestoreId == 0) {
            return null;
        }
        return "the restore of checkpoint " + unfinishedRestoreId + " into every shard did not finish (a shard failed"
                + " it, or the proxy stopped during it), so the shards may hold a mix of it and what they held before;"
                + " run `psctl checkpoint restore --id " + unfinishedRestoreId + "` again, or restore another"
                + " checkpoint";
    }

    /**
     * The checkpoint the cluster's data was last brought to as a whole: the latest committed one, or the one an
     * operator restored into every shard since (0: none). A failover's restore of some slots does not change it.
     */
    synchronized long dataCheckpointId() {
        return dataCheckpointId;
    }

    /**
     * Checkpoints the proxy may still order restored or read: the latest, the one the data was restored from, and
     * those of outstanding restore orders.
     */
    synchronized Set<Long> checkpointsInUse() {
        final Set<Long> ids = new HashSet<>();
        if (latestCheckpointId > 0) {
            ids.add(latestCheckpointId);
        }
        if (dataCheckpointId > 0) {
            // Its job states are given back at joins.
            ids.add(dataCheckpointId);
        }
        for (final RestoreDirective order : pendingRestores.values()) {
            if (order.getCheckpointId() > 0) {
                ids.add(order.getCheckpointId());
            }
        }
        return ids;
    }

    /** When the latest committed checkpoint was taken (its manifest's wall clock, ms); 0 when none is known. */
    synchronized long latestCheckpointCreatedMillis() {
        return latestCheckpointCreatedMillis;
    }

    synchronized long latestCheckpointId() {
        return latestCheckpointId;
    }

    // ---- discovery

    synchronized RegisterShardResponse register(final RegisterShardRequest request) {
        final long now = nanoClock.getAsLong();
        ownPauses.heard(now);
        final String address = request.getAddress();
        if (address.isBlank()) {
            throw PsException.invalidArgument("register: address is empty");
        }
        final String requested =
                request.getShardId().isEmpty() ? idAssignedTo(request.getProcessId()) : request.getShardId();
        if (!requested.isEmpty() && !SlotOwners.SHARD_ID.matcher(requested).matches()) {
            throw PsException.invalidArgument(
                    "register: shard id '" + requested + "' must match " + SlotOwners.SHARD_ID.pattern());
        }
        if (request.getHeldSlotsCount() != request.getHeldGenerationsCount()) {
            throw PsException.invalidArgument("register: " + request.getHeldSlotsCount() + " held slots but "
                    + request.getHeldGenerationsCount() + " generations");
        }
        for (final int slot : request.getHeldSlotsList()) {
            if (slot < 0 || slot >= Slots.SLOT_COUNT) {
                throw PsException.invalidArgument(
                        "register: held slot " + slot + " is outside 0.." + (Slots.SLOT_COUNT - 1));
            }
        }
        final ShardRecord existing = requested.isEmpty() ? null : shards.get(requested);
        if (existing != null && existing.state.serving() && !existing.address.equals(address)) {
            throw PsException.alreadyExists("register: shard id '" + requested + "' is " + existing.state.wireName()
                    + " at " + existing.address + "; " + address + " cannot take it until that lease lapses");
        }
        // The same process again: its registration's answer was lost (the shard tries again when it does not come in
        // time), and its first registration planned the restore and reported the rollback a restart calls for.
        final boolean retried = existing != null
                && !request.getProcessId().isEmpty()
                && request.getProcessId().equals(existing.processId);
        final String id =
                change("register " + (requested.isEmpty() ? "a new shard" : requested) + " at " + address, () -> {
                    final String assigned = requested.isEmpty() ? newShardId() : requested;
                    final ShardRecord record = shards.computeIfAbsent(
                            assigned, key -> new ShardRecord(key, address, ShardState.REGISTERING, now));
                    record.registered(address, request.getProtocolVersion(), now);
                    record.processId = request.getProcessId();
                    if (request.getDraining()) {
                        // Back after its lease lapsed while it waits for its hand-over: it takes no slots.
                        record.draining();
                    }
                    adoptUnknownTables(assigned, request.getTablesList());
                    if (acceptingClaims(now)) {
                        applyClaims(assigned, request);
                    }
                    if (request.getFreshStart() && !retried) {
                        // Whatever it kept of slots it gave away is gone with its memory.
                        forgetKeptRowsOf(assigned, "restarted without its rows");
                    }
                    if (request.getFreshStart() && sticky() && ownsAny(assigned) && !retried) {
                        // A restarted shard keeps its slots but lost its rows: they come back from the checkpoint.
                        dropOrdersOf(assigned, "restarted without its rows");
                        final List<Integer> slots = slotsOf(assigned);
                        planRestore(
                                assigned,
                                assigned,
                                slots,
                                dataCheckpointId,
                                "shard " + assigned + " restarted without its rows");
                        appendRollback(
                                assigned,
                                List.of(assigned),
                                slots.size(),
                                dataCheckpointId,
                                dataCheckpointCreatedMillis,
                                false,
                                "shard " + assigned + " restarted without its rows");
                    }
                    reconcile(now);
                    return assigned;
                });
        LOG.info("shard {} registered at {} (fresh start: {})", id, address, request.getFreshStart());
        return RegisterShardResponse.newBuilder()
                .setShardId(id)
                .setCheckpointRoot(settings.checkpointRoot())
                .setRouting(routingTable())
                .addAllTables(tables.values())
                .setLeaseMillis(settings.leaseMillis())
                .addAllRestoreOrders(ordersOf(id))
                .build();
    }

    /**
     * The id this proxy gave the process {@code processId} when it registered without one, if it registers again (the
     * answer was lost); "" otherwise, for a new id.
     */
    private String idAssignedTo(final String processId) {
        if (processId.isEmpty()) {
            return "";
        }
        for (final ShardRecord record : shards.values()) {
            if (processId.equals(record.processId) && record.state != ShardState.GONE) {
                return record.id;
            }
        }
        return "";
    }

    private String newShardId() {
        String id;
        do {
            id = "shard-" + nextShardNumber++;
        } while (shards.containsKey(id) || ownsAny(id) || !ordersOf(id).isEmpty());
        return id;
    }

    private boolean acceptingClaims(final long now) {
        return bootstrapped && inGrace(now);
    }

    /** Bootstrap grace: what a re-registering shard holds wins over the manifest; among claims the newest wins. */
    private void applyClaims(final String shardId, final RegisterShardRequest request) {
        epoch = Math.max(epoch, request.getRoutingEpoch());
        int won = 0;
        for (int i = 0; i < request.getHeldSlotsCount(); i++) {
            final int slot = request.getHeldSlots(i);
            final long generation = request.getHeldGenerations(i);
            epoch = Math.max(epoch, generation);
            if (generation > claimedAt[slot]) {
                claimedAt[slot] = generation;
                if (!shardId.equals(owners[slot])) {
                    removeFromOrders(slot);
                }
                owners[slot] = shardId;
                generations[slot] = generation;
                won++;
            }
        }
        if (request.getHeldSlotsCount() > 0) {
            LOG.info(
                    "shard {} claims {} slots (routing epoch {}); it keeps {} of them",
                    shardId,
                    request.getHeldSlotsCount(),
                    request.getRoutingEpoch(),
                    won);
        }
    }

    synchronized HeartbeatResponse heartbeat(final HeartbeatRequest request) {
        final long now = nanoClock.getAsLong();
        ownPauses.heard(now);
        final String id = request.getShardId();
        final ShardRecord record = shards.get(id);
        if (record == null) {
            throw PsException.notFound("shard '" + id + "' is not registered: register again");
        }
        if (record.state == ShardState.GONE) {
            throw PsException.notFound("shard '" + id + "' is gone (its lease lapsed "
                    + (now - record.goneSinceNanos) / 1_000_000 + " ms ago, or it deregistered): register again");
        }
        try {
            change("heartbeat from " + id, () -> {
                record.heardFrom(now);
                record.protocolVersion = request.getProtocolVersion();
                record.load = request.getLoad();
                record.tables = request.getTablesList();
                adoptUnknownTables(id, request.getTablesList());
                applyReports(id, request.getRestoresList());
                return null;
            });
        } catch (PsException unsaved) {
            if (unsaved.code() != io.grpc.Status.Code.UNAVAILABLE || closed) {
                throw unsaved;
            }
            // The state cannot be saved (its disk is full, say) and the change was undone. A lease is not part of the
            // state: it is renewed all the same, so that the proxy's own disk never makes a live shard stop serving,
            // or fail over once saves work again. Its reports (sent with every heartbeat) wait for a save.
            final ShardRecord kept = shards.get(id);
            kept.heardFrom(now);
            kept.load = request.getLoad();
            // What the shard speaks is a fact, not a change to keep: SDKs must not refuse it until a save works.
            kept.protocolVersion = request.getProtocolVersion();
        }
        final ShardRecord heard = shards.get(id);
        // A fact about the shard, like its load: slots it refuses until these orders end (the held ones after this
        // answer).
        heard.unservedOrders = request.getRestoresList().stream()
                .filter(report -> !report.getDone() || report.getHeld())
                .map(RestoreReport::getOrderId)
                .toList();
        if (request.getDraining() && heard.state != ShardState.DRAINING) {
            // A fact about the shard, not saved: a proxy that restarted while it drains learns it takes no slots.
            heard.draining();
            LOG.info("shard {} at {} is draining", id, heard.address);
        }
        final HeartbeatResponse.Builder response = HeartbeatResponse.newBuilder()
                .setLeaseMillis(settings.leaseMillis())
                .setLiftFencesBeforeMillis(startMillis)
                .addAllKeepMovedSlots(keptMovedBy(id));
        if (request.getRoutingEpoch() != epoch) {
            response.setRouting(routingTable());
        }
        final Set<String> reported = new HashSet<>();
        for (final TableStats stats : request.getTablesList()) {
            reported.add(stats.getName());
            if (!tables.containsKey(stats.getName()) && tombstones.containsKey(stats.getName())) {
                response.addDroppedTables(stats.getName());
            }
        }
        tables.values().stream()
                .filter(schema -> !reported.contains(schema.getName()))
                .forEach(response::addTables);
        response.addAllRestoreOrders(ordersOf(id));
        return response.build();
    }

    private void applyReports(final String shardId, final List<RestoreReport> reports) {
        for (final RestoreReport report : reports) {
            final RestoreDirective order = pendingRestores.get(report.getOrderId());
            if (order == null || !order.getShardId().equals(shardId)) {
                continue;
            }
            if (!report.getDone()) {
                restoreReports.put(order.getOrderId(), report);
                if (report.getDamaged() && order.getGiverKeepsRows()) {
                    undoMove(order, report.getNote());
                }
                continue;
            }
            pendingRestores.remove(order.getOrderId());
            restoreReports.remove(order.getOrderId());
            // What was read of its slots while the order was under way (before the shard took it) is of before.
            readVersion++;
            if (report.getCheckpointId() != order.getCheckpointId()) {
                appendRollback(
                        order.getFromShard(),
                        List.of(shardId),
                        order.getSlotsCount(),
                        report.getCheckpointId(),
                        report.getCheckpointCreatedMillis(),
                        false,
                        "restore order " + order.getOrderId() + " on shard " + shardId + " restored checkpoint "
                                + report.getCheckpointId() + " instead of " + order.getCheckpointId() + ": "
                                + report.getNote());
                LOG.warn(
                        "shard {} restored {} slots from checkpoint {} instead of {}: {}",
                        shardId,
                        order.getSlotsCount(),
                        report.getCheckpointId(),
                        order.getCheckpointId(),
                        report.getNote());
            } else {
                LOG.info(
                        "shard {} restored {} slots ({} rows) from checkpoint {}{}",
                        shardId,
                        order.getSlotsCount(),
                        report.getRows(),
                        report.getCheckpointId(),
                        report.getNote().isEmpty() ? "" : ": " + report.getNote());
            }
        }
    }

    /**
     * The checkpoint of a move's restore order is damaged (the taker says how, {@code damage}) and the giver kept the
     * slots' rows: hands them back to the giver, which serves them again as they were when the move's fence went up
     * (one lossless event; nothing is rolled back). With the giver gone or restarted, or a slot moved on since, the
     * order may fall back to an older checkpoint like any other (a rollback, reported when it is done); while the giver
     * is suspect (this proxy restarted and has not heard from it yet) nothing is decided.
     */
    private void undoMove(final RestoreDirective order, final String damage) {
        final String giverId = order.getFromShard();
        final ShardRecord giver = shards.get(giverId);
        if (giver != null && giver.state == ShardState.SUSPECT) {
            return;
        }
        if (canHandBack(order)) {
            handBack(order, "its checkpoint " + order.getCheckpointId() + " is damaged (" + damage + ")");
            return;
        }
        final String why = "checkpoint " + order.getCheckpointId() + " is damaged and shard " + giverId
                + ", which kept the rows, is "
                + (giver == null ? "gone" : giver.state.takesSlots() ? "no longer their giver" : giver.state.wireName())
                + ": the restore falls back to an older checkpoint";
        pendingRestores.put(
                order.getOrderId(),
                order.toBuilder()
                        .setGiverKeepsRows(false)
                        .setReason(order.getReason() + "; " + why)
                        .build());
        LOG.warn("restore order {} on shard {}: {} ({})", order.getOrderId(), order.getShardId(), why, damage);
    }

    /**
     * Whether a move's slots can go back to its giver: it is live or draining (a draining shard keeps the rows it handed
     * over until they are restored, and hands slots given back over again) and the taker still has them.
     */
    private boolean canHandBack(final RestoreDirective order) {
        final ShardRecord giver = shards.get(order.getFromShard());
        return order.getGiverKeepsRows()
                && giver != null
                && (giver.state.takesSlots() || giver.state == ShardState.DRAINING)
                && order.getSlotsList().stream()
                        .allMatch(slot -> order.getShardId().equals(owners[slot]));
    }

    /**
     * Undoes the move of {@code order} (because of {@code cause}): its slots go back to the giver with an order to serve
     * the rows it kept, and one lossless event says so.
     */
    private void handBack(final RestoreDirective order, final String cause) {
        final String giverId = order.getFromShard();
        pendingRestores.remove(order.getOrderId());
        restoreReports.remove(order.getOrderId());
        order.getSlotsList().forEach(slot -> assign(slot, giverId));
        final String why = "move of " + order.getSlotsCount() + " slots from shard " + giverId + " to shard "
                + order.getShardId() + " undone: " + cause + "; shard " + giverId
                + " kept their rows and serves them again";
        planRestore(
                giverId,
                order.getShardId(),
                order.getSlotsList(),
                order.getCheckpointId(),
                why,
                RestoreDirective.newBuilder().setTakeBackKeptRows(true));
        appendRollback(
                order.getShardId(),
                List.of(giverId),
                order.getSlotsCount(),
                order.getCheckpointId(),
                order.getCheckpointId() == dataCheckpointId ? dataCheckpointCreatedMillis : 0,
                true,
                true,
                why);
    }

    /**
     * Shard {@code shardId} will not restore what moves gave it ({@code why}: it is gone, restarted without its rows,
     * or draining): the moves whose givers are live or draining and keep the rows are undone.
     */
    private void undoMovesTo(final String shardId, final String why) {
        for (final RestoreDirective order : List.copyOf(pendingRestores.values())) {
            if (order.getShardId().equals(shardId) && canHandBack(order)) {
                handBack(order, "shard " + shardId + " " + why + " before it restored them");
            }
        }
    }

    /** Shard {@code shardId} no longer keeps the rows it gave away ({@code why}): orders of its moves may fall back. */
    private void forgetKeptRowsOf(final String shardId, final String why) {
        for (final Map.Entry<Long, RestoreDirective> entry : pendingRestores.entrySet()) {
            final RestoreDirective order = entry.getValue();
            if (order.getGiverKeepsRows() && order.getFromShard().equals(shardId)) {
                entry.setValue(order.toBuilder()
                        .setGiverKeepsRows(false)
                        .setReason(order.getReason() + "; shard " + shardId + ", which kept the rows, " + why)
                        .build());
            }
        }
    }

    /** The slots {@code shardId} gave away in moves not done yet, whose rows it keeps (and takes back). */
    private List<Integer> keptMovedBy(final String shardId) {
        final List<Integer> kept = new ArrayList<>();
        for (final RestoreDirective order : pendingRestores.values()) {
            if ((order.getGiverKeepsRows() && order.getFromShard().equals(shardId))
                    || (order.getTakeBackKeptRows() && order.getShardId().equals(shardId))) {
                kept.addAll(order.getSlotsList());
            }
        }
        return kept;
    }

    synchronized void deregister(final String shardId) {
        final ShardRecord record = shards.get(shardId);
        if (record == null || record.state == ShardState.GONE) {
            return;
        }
        final long now = nanoClock.getAsLong();
        change("deregister " + shardId, () -> {
            record.gone(now);
            dropOrdersOf(shardId, "deregistered");
            reconcile(now);
            return null;
        });
        LOG.info("shard {} deregistered", shardId);
    }

    /**
     * The timer's duty: marks shards gone whose last heartbeat was received more than lease + margin ago, forgets
     * gone shards that own nothing after the forget delay, and hands orphaned slots on once the grace is over.
     *
     * @return true if anything changed.
     */
    synchronized boolean expireLeases() {
        final long now = nanoClock.getAsLong();
        creditOwnPause(now);
        return change("lease check", () -> {
            boolean changed = false;
            for (final ShardRecord record : shards.values()) {
                if (record.state.serving() && now - record.lastHeardNanos - record.creditNanos > leaseExpiryNanos) {
                    LOG.warn(
                            "shard {} at {} ({}) missed its lease: {} ms since its last heartbeat arrived",
                            record.id,
                            record.address,
                            record.state.wireName(),
                            (now - record.lastHeardNanos) / 1_000_000);
                    record.gone(now);
                    dropOrdersOf(record.id, "missed its lease");
                    changed = true;
                }
            }
            for (final Iterator<ShardRecord> it = shards.values().iterator(); it.hasNext(); ) {
                final ShardRecord record = it.next();
                if (record.state == ShardState.GONE
                        && now - record.goneSinceNanos >= forgetAfterNanos
                        && !ownsAny(record.id)) {
                    LOG.info(
                            "forgetting shard {}: not live for {} ms and owns nothing",
                            record.id,
                            (now - record.goneSinceNanos) / 1_000_000);
                    it.remove();
                    changed = true;
                }
            }
            if (!graceOver && !inGrace(now)) {
                graceOver = true;
                changed = true;
            }
            if (changed) {
                final RoutingTable before = routingContent();
                reconcile(now);
                changed = changed || !before.equals(routingContent());
            }
            return changed;
        });
    }

    /**
     * From now on {@link #expireLeases} notices when it runs later than every {@code intervalNanos} by more than
     * {@code thresholdNanos}: this process did not run meanwhile (a long collection, a stopped or frozen JVM, a wait for
     * this monitor), read no heartbeat, and those that arrived are still waiting. That excess is not counted against
     * any serving shard's lease, nor against the grace after a start, so shards are not declared gone (their slots
     * handed on, their rows rolled back) for the proxy's own silence. Waiting longer never breaks one writer per slot: a
     * shard stops serving on its own clock once its lease lapses. Off until called (tests step the clock at will).
     */
    synchronized void detectOwnPauses(final long intervalNanos, final long thresholdNanos) {
        ownPauses.start(intervalNanos, thresholdNanos, nanoClock.getAsLong());
    }

    /** Credits the time since the last check beyond its interval, if it passes the threshold; see above. */
    private void creditOwnPause(final long now) {
        final long excess = ownPauses.lateBy(now);
        if (excess == 0) {
            return;
        }
        for (final ShardRecord record : shards.values()) {
            if (record.state.serving()) {
                record.creditNanos = Math.min(now - record.lastHeardNanos, record.creditNanos + excess);
            }
        }
        if (!graceOver) {
            startNanos = Math.min(now, startNanos + excess);
        }
        LOG.warn(
                "the lease check ran {} ms late (this process was paused or starved): that time is not counted"
                        + " against any shard's lease",
                excess / 1_000_000);
    }

    /**
     * Removes a shard that is not live from the registry; its slots, if any, go to live shards.
     *
     * @return false if no shard has that id.
     * @throws PsException FAILED_PRECONDITION when the shard may still hold a lease.
     */
    synchronized boolean forget(final String shardId) {
        final ShardRecord record = shards.get(shardId);
        if (record == null) {
            return false;
        }
        if (record.state != ShardState.GONE) {
            throw PsException.failedPrecondition("shard " + shardId + " is " + record.state.wireName()
                    + ": only a shard that is gone (lease lapsed or deregistered) can be forgotten");
        }
        final long now = nanoClock.getAsLong();
        change("forget " + shardId, () -> {
            shards.remove(shardId);
            dropOrdersOf(shardId, "was forgotten");
            reconcile(now);
            return null;
        });
        LOG.info("shard {} forgotten", shardId);
        return true;
    }

    // ---- drain

    /**
     * Marks a shard draining: it takes no more slots.
     *
     * @return true if it owns slots whose rows must be checkpointed before they are handed over.
     */
    synchronized boolean beginDrain(final String shardId) {
        final ShardRecord record = shards.get(shardId);
        if (record == null) {
            throw PsException.notFound("drain: shard '" + shardId + "' is not registered");
        }
        if (record.state == ShardState.GONE) {
            throw PsException.failedPrecondition(
                    "drain: shard " + shardId + " is gone; its slots are handed on" + " as for a lost shard");
        }
        record.heardFrom(nanoClock.getAsLong());
        record.draining();
        LOG.info("shard {} at {} is draining", shardId, record.address);
        return sticky() && ownsAny(shardId);
    }

    /**
     * Hands a draining shard's slots on (idle shard, else split over the live ones) with restore orders from
     * {@code checkpointId}, which holds all its rows, and a lossless event. With no shard to take them they stay
     * and are adopted later from that checkpoint.
     *
     * @return the number of slots handed over.
     */
    synchronized int handOver(
            final String shardId, final long checkpointId, final long createdMillis, final String unapplied) {
        final ShardRecord record = shards.get(shardId);
        if (record == null || record.state != ShardState.DRAINING) {
            throw PsException.failedPrecondition("drain: shard " + shardId + " is "
                    + (record == null ? "not registered" : record.state.wireName()) + ", no longer draining");
        }
        final long now = nanoClock.getAsLong();
        return change("hand over the slots of " + shardId, () -> {
            if (checkpointId > 0) {
                noteCheckpoint(checkpointId, createdMillis);
            }
            if (sticky()) {
                // Slots moved here not restored yet go back to their giver, which kept their rows.
                undoMovesTo(shardId, "is draining");
            }
            final List<Integer> slots = slotsOf(shardId);
            if (!sticky()) {
                reconcile(now);
                return slots.size() - slotsOf(shardId).size();
            }
            final List<ShardRecord> takers = takers();
            if (slots.isEmpty() || takers.isEmpty()) {
                if (!slots.isEmpty()) {
                    LOG.warn(
                            "shard {} drained but no other shard is live: its {} slots wait for one, which restores"
                                    + " them from checkpoint {}",
                            shardId,
                            slots.size(),
                            checkpointId);
                }
                return 0;
            }
            // It keeps the rows of the moves it gave before, and of these, until they are restored.
            removeOrdersTo(shardId);
            distribute(
                    shardId,
                    slots,
                    takers,
                    checkpointId,
                    createdMillis,
                    RestoreDirective.newBuilder().setGiverKeepsRows(true),
                    unapplied.isEmpty(),
                    unapplied.isEmpty()
                            ? "shard " + shardId + " drained"
                            : "shard " + shardId + " drained with sync gradients not applied: " + unapplied);
            return slots.size();
        });
    }

    // ---- rebalancing

    /**
     * The time to stamp a slot fence with: never before this proxy started (whatever its wall clock did since), so that
     * its own heartbeat answers never lift it.
     */
    long fenceMillis() {
        return Math.max(startMillis, wallClock.getAsLong());
    }

    /** A shard's lease plus the proxy's margin: how long a shard cut off from the proxy may still serve. */
    long leaseWithMarginMillis() {
        return settings.leaseMillis() + settings.leaseMarginMillis();
    }

    /** Slots to move from one shard to another. */
    record Move(String from, String to, List<Integer> slots) {}

    /**
     * A rebalance's moves, the slots as they were when it was planned ({@link #slotsAt}), and the address of each
     * shard that gives slots.
     */
    record Rebalance(List<Move> moves, SlotsAt at, Map<String, String> addresses) {}

    /**
     * Plans moves that give every live shard as many slots as the others, give or take one: the shards with more than
     * their share give their highest slots to those with less, the most loaded first. Empty when every share is met,
     * or when no table exists (slots are then spread as shards come, with nothing to move).
     *
     * @throws PsException FAILED_PRECONDITION while a slot is unowned, being restored, or owned by a shard that is
     *     not live (also one a restarted proxy has not heard from yet).
     */
    synchronized Rebalance planRebalance() {
        final SlotsAt at = slotsAt();
        if (!sticky()) {
            return new Rebalance(List.of(), at, Map.of());
        }
        // Whether shards still hold restored slots back is asked once there is something to move (below).
        final List<Owner> owning = owners("a rebalance");
        final Map<String, List<Integer>> held = new LinkedHashMap<>();
        for (final ShardRecord taker : takers()) {
            held.put(taker.id, new ArrayList<>());
        }
        for (final Owner owner : owning) {
            if (!held.containsKey(owner.shardId())) {
                throw PsException.failedPrecondition("a rebalance needs every slot on a live shard that takes slots;"
                        + " shard " + owner.shardId() + " is "
                        + shards.get(owner.shardId()).state.wireName() + " and owns "
                        + owner.slots().size());
            }
            held.get(owner.shardId()).addAll(owner.slots());
        }
        // The most loaded first (ties by id): they keep the extra slot where the slots do not divide evenly.
        final List<String> order = new ArrayList<>(held.keySet());
        order.sort(Comparator.comparingInt((String id) -> held.get(id).size())
                .reversed()
                .thenComparing(id -> id));
        final int total = owners.length;
        final Map<String, Integer> share = new HashMap<>();
        for (int i = 0; i < order.size(); i++) {
            share.put(order.get(i), total / order.size() + (i < total % order.size() ? 1 : 0));
        }
        final ArrayDeque<Integer> given = new ArrayDeque<>();
        final ArrayDeque<String> givers = new ArrayDeque<>();
        for (final String id : order) {
            final List<Integer> slots = held.get(id);
            for (int i = share.get(id); i < slots.size(); i++) {
                given.add(slots.get(i));
                givers.add(id);
            }
        }
        final Map<String, Map<String, List<Integer>>> moves = new LinkedHashMap<>();
        for (final String id : order) {
            for (int i = held.get(id).size(); i < share.get(id); i++) {
                moves.computeIfAbsent(givers.poll(), from -> new LinkedHashMap<>())
                        .computeIfAbsent(id, to -> new ArrayList<>())
                        .add(given.poll());
            }
        }
        final List<Move> planned = new ArrayList<>();
        final Map<String, String> addresses = new LinkedHashMap<>();
        moves.forEach((from, byTaker) -> {
            addresses.put(from, shards.get(from).address);
            byTaker.forEach((to, slots) -> planned.add(new Move(from, to, List.copyOf(slots))));
        });
        if (!planned.isEmpty()) {
            refuseWhileUnserved("a rebalance", owning);
        }
        return new Rebalance(List.copyOf(planned), at, addresses);
    }

    /**
     * Commits a rebalance whose slots are in checkpoint {@code checkpointId} (taken while their writes were refused):
     * each move's slots go to their new owner with a restore order from it, and one lossless event per move.
     *
     * @throws PsException FAILED_PRECONDITION, nothing changed, when a slot moved or a restore order was given since
     *     the rebalance was planned.
     */
    synchronized long rebalanced(final Rebalance rebalance, final long checkpointId, final long createdMillis) {
        final String moved = movedSince(rebalance.at());
        if (moved != null) {
            throw PsException.failedPrecondition(
                    "rebalance not done: " + moved + " while it ran; nothing moved, run it again");
        }
        for (final Move move : rebalance.moves()) {
            final ShardRecord taker = shards.get(move.to());
            if (taker == null || !taker.state.takesSlots()) {
                throw PsException.failedPrecondition("rebalance not done: shard " + move.to() + " is "
                        + (taker == null ? "gone" : taker.state.wireName()) + "; nothing moved, run it again");
            }
        }
        change("rebalance", () -> {
            for (final Move move : rebalance.moves()) {
                final String why = "rebalance: " + move.slots().size() + " slots of shard " + move.from()
                        + " move to shard " + move.to();
                move.slots().forEach(slot -> assign(slot, move.to()));
                // The giver keeps the rows until this order is done: a damaged checkpoint undoes the move (undoMove).
                planRestore(
                        move.to(),
                        move.from(),
                        move.slots(),
                        checkpointId,
                        why,
                        RestoreDirective.newBuilder().setGiverKeepsRows(true));
                appendRollback(
                        move.from(), List.of(move.to()), move.slots().size(), checkpointId, createdMillis, true, why);
            }
            return null;
        });
        return epoch;
    }

    // ---- assignment

    private boolean inGrace(final long now) {
        return now - startNanos < leaseExpiryNanos;
    }

    /** Tables exist: slots may hold rows, so they only move with a restore. */
    private boolean sticky() {
        return !tables.isEmpty();
    }

    /** Applies the assignment rules (see the class comment). */
    private void reconcile(final long now) {
        if (!sticky()) {
            if (holdForClaims && inGrace(now)) {
                // A shard that has not re-registered yet may still serve rows of tables nobody reported so far.
                return;
            }
            spreadEvenly();
            return;
        }
        if (inGrace(now)) {
            return;
        }
        final Map<String, List<Integer>> orphans = new LinkedHashMap<>();
        for (int slot = 0; slot < owners.length; slot++) {
            if (slotState(slot, Set.of()) == SlotState.ORPHANED) {
                orphans.computeIfAbsent(owners[slot] == null ? "" : owners[slot], id -> new ArrayList<>())
                        .add(slot);
            }
        }
        if (orphans.isEmpty()) {
            warnedNoTaker = false;
            return;
        }
        final List<ShardRecord> takers = takers();
        if (takers.isEmpty()) {
            if (!warnedNoTaker) {
                warnedNoTaker = true;
                LOG.warn(
                        "{} slot groups of lost shards wait for a live shard to adopt them; requests for them fail",
                        orphans.size());
            }
            return;
        }
        warnedNoTaker = false;
        final List<Map.Entry<String, List<Integer>>> groups = new ArrayList<>(orphans.entrySet());
        groups.sort(Comparator.comparingInt((Map.Entry<String, List<Integer>> group) ->
                        group.getValue().size())
                .reversed());
        for (final Map.Entry<String, List<Integer>> group : groups) {
            final String from = group.getKey();
            distribute(
                    from,
                    group.getValue(),
                    takers,
                    dataCheckpointId,
                    dataCheckpointCreatedMillis,
                    RestoreDirective.newBuilder(),
                    false,
                    from.isEmpty() ? "slots without an owner" : "shard " + from + " is gone");
        }
    }

    /**
     * Gives a group to an idle taker whole, else splits it evenly over the takers (fewest slots first); each part
     * gets a restore order from {@code checkpointId}; one event records the move.
     */
    private void distribute(
            final String from,
            final List<Integer> slots,
            final List<ShardRecord> takers,
            final long checkpointId,
            final long createdMillis,
            final RestoreDirective.Builder flags,
            final boolean lossless,
            final String why) {
        final Map<String, Integer> counts = new HashMap<>();
        for (final String owner : owners) {
            if (owner != null) {
                counts.merge(owner, 1, Integer::sum);
            }
        }
        final List<String> heirs = new ArrayList<>();
        final ShardRecord idle = takers.stream()
                .filter(taker -> !counts.containsKey(taker.id))
                .findFirst()
                .orElse(null);
        final List<List<Integer>> parts = new ArrayList<>();
        if (idle != null) {
            heirs.add(idle.id);
            parts.add(slots);
        } else {
            final List<ShardRecord> byLoad = new ArrayList<>(takers);
            byLoad.sort(Comparator.comparingInt((ShardRecord taker) -> counts.getOrDefault(taker.id, 0))
                    .thenComparing(taker -> taker.id));
            final int base = slots.size() / byLoad.size();
            final int extra = slots.size() % byLoad.size();
            int next = 0;
            for (int i = 0; i < byLoad.size(); i++) {
                final int size = base + (i < extra ? 1 : 0);
                if (size == 0) {
                    continue;
                }
                heirs.add(byLoad.get(i).id);
                parts.add(slots.subList(next, next + size));
                next += size;
            }
        }
        for (int i = 0; i < heirs.size(); i++) {
            final String heir = heirs.get(i);
            final List<Integer> part = List.copyOf(parts.get(i));
            part.forEach(slot -> assign(slot, heir));
            planRestore(
                    heir,
                    from,
                    part,
                    checkpointId,
                    why + "; shard " + heir + " adopts " + part.size() + " slots",
                    flags.clone());
        }
        appendRollback(from, heirs, slots.size(), checkpointId, createdMillis, lossless, why);
    }

    private List<ShardRecord> takers() {
        final List<ShardRecord> takers = new ArrayList<>();
        for (final ShardRecord record : shards.values()) {
            if (record.state.takesSlots()) {
                takers.add(record);
            }
        }
        takers.sort(Comparator.comparing(record -> record.id));
        return takers;
    }

    /** No rows exist: every slot goes to the serving shards (not draining), in equal contiguous ranges. */
    private void spreadEvenly() {
        final List<String> serving = new ArrayList<>();
        for (final ShardRecord record : shards.values()) {
            if (record.state.takesSlots() || record.state == ShardState.SUSPECT) {
                serving.add(record.id);
            }
        }
        serving.sort(Comparator.naturalOrder());
        for (int slot = 0; slot < owners.length; slot++) {
            assign(slot, serving.isEmpty() ? null : serving.get((int) ((long) slot * serving.size() / owners.length)));
        }
    }

    /** Gives a slot a new owner; its generation becomes the epoch this change will publish. */
    private void assign(final int slot, final String owner) {
        if (!Objects.equals(owners[slot], owner)) {
            owners[slot] = owner;
            generations[slot] = owner == null ? 0 : epoch + 1;
        }
    }

    private void planRestore(
            final String shardId,
            final String from,
            final List<Integer> slots,
            final long checkpointId,
            final String why) {
        planRestore(shardId, from, slots, checkpointId, why, RestoreDirective.newBuilder());
    }

    /** Gives {@code shardId} a restore order, {@code flags} (giver_keeps_rows, take_back_kept_rows) set by the caller. */
    private void planRestore(
            final String shardId,
            final String from,
            final List<Integer> slots,
            final long checkpointId,
            final String why,
            final RestoreDirective.Builder flags) {
        final RestoreDirective order = flags.putAllTableCreatedMillis(orderTableTimes())
                .setOrderId(nextOrderId++)
                .setShardId(shardId)
                .setFromShard(from)
                .setCheckpointRoot(settings.checkpointRoot())
                .setCheckpointId(checkpointId)
                .addAllSlots(slots)
                .setReason(why)
                .build();
        pendingRestores.put(order.getOrderId(), order);
        readVersion++;
        if (checkpointId == 0) {
            LOG.warn(
                    "{}: no checkpoint exists, so those {} slots start empty (their rows are lost)", why, slots.size());
        } else {
            LOG.warn(
                    "{}: restoring {} slots from checkpoint {} (order {})",
                    why,
                    slots.size(),
                    checkpointId,
                    order.getOrderId());
        }
    }

    /**
     * The table times a restore order carries: when each table of the catalog was created, and {@link Long#MAX_VALUE}
     * for a dropped one (a tombstone), so that a restore never brings back rows of a table dropped or created anew
     * after its checkpoint was taken.
     */
    private Map<String, Long> orderTableTimes() {
        final Map<String, Long> times = new HashMap<>();
        tombstones.keySet().forEach(name -> times.put(name, Long.MAX_VALUE));
        times.putAll(tableCreatedMillis);
        return times;
    }

    /**
     * The catalog changed: every outstanding restore order carries its table times anew (a shard takes a re-sent
     * order's times, and clears the rows of a table they say was dropped before its restored slots serve).
     */
    private void refreshOrderTableTimes() {
        final Map<String, Long> times = orderTableTimes();
        pendingRestores.replaceAll(
                (id, order) -> order.getTableCreatedMillisMap().equals(times)
                        ? order
                        : order.toBuilder()
                                .clearTableCreatedMillis()
                                .putAllTableCreatedMillis(times)
                                .build());
    }

    private void appendRollback(
            final String from,
            final List<String> to,
            final int slotCount,
            final long checkpointId,
            final long createdMillis,
            final boolean lossless,
            final String why) {
        appendRollback(from, to, slotCount, checkpointId, createdMillis, lossless, false, why);
    }

    private void appendRollback(
            final String from,
            final List<String> to,
            final int slotCount,
            final long checkpointId,
            final long createdMillis,
            final boolean lossless,
            final boolean keptRows,
            final String why) {
        rollbacks.addLast(RollbackEvent.newBuilder()
                .setId(nextRollbackId++)
                .setAtMillis(wallClock.getAsLong())
                .setFromShard(from)
                .addAllToShards(to)
                .setSlotCount(slotCount)
                .setCheckpointId(checkpointId)
                .setCheckpointCreatedMillis(createdMillis)
                .setLossless(lossless)
                .setKeptRows(keptRows)
                .setReason(why)
                .build());
        while (rollbacks.size() > MAX_ROLLBACKS) {
            rollbacks.removeFirst();
        }
        if (!lossless) {
            rollbacksTotal++;
        }
    }

    /**
     * Drops the orders of shard {@code shardId}, which will not carry them out ({@code why}: it is gone, restarted
     * without its rows, or forgotten), after undoing the moves to it whose givers keep the rows; the moves from it no
     * longer count on its kept rows.
     */
    private void dropOrdersOf(final String shardId, final String why) {
        undoMovesTo(shardId, why);
        forgetKeptRowsOf(shardId, why);
        removeOrdersTo(shardId);
    }

    /** Removes the orders shard {@code shardId} was to carry out. */
    private void removeOrdersTo(final String shardId) {
        pendingRestores.values().removeIf(order -> {
            if (order.getShardId().equals(shardId)) {
                restoreReports.remove(order.getOrderId());
                return true;
            }
            return false;
        });
    }

    /** A slot claimed away from an order's shard is no longer that shard's to restore. */
    private void removeFromOrders(final int slot) {
        for (final Iterator<Map.Entry<Long, RestoreDirective>> it =
                        pendingRestores.entrySet().iterator();
                it.hasNext(); ) {
            final Map.Entry<Long, RestoreDirective> entry = it.next();
            if (entry.getValue().getSlotsList().contains(slot)) {
                final List<Integer> rest = new ArrayList<>(entry.getValue().getSlotsList());
                rest.remove(Integer.valueOf(slot));
                if (rest.isEmpty()) {
                    it.remove();
                    restoreReports.remove(entry.getKey());
                } else {
                    entry.setValue(entry.getValue().toBuilder()
                            .clearSlots()
                            .addAllSlots(rest)
                            .build());
                }
            }
        }
    }

    private List<RestoreDirective> ordersOf(final String shardId) {
        final List<RestoreDirective> orders = new ArrayList<>();
        for (final RestoreDirective order : pendingRestores.values()) {
            if (order.getShardId().equals(shardId)) {
                orders.add(order);
            }
        }
        return orders;
    }

    private Set<Integer> restoringSlots() {
        final Set<Integer> restoring = new HashSet<>();
        pendingRestores.values().forEach(order -> restoring.addAll(order.getSlotsList()));
        return restoring;
    }

    private SlotState slotState(final int slot, final Set<Integer> restoring) {
        final ShardRecord owner = owners[slot] == null ? null : shards.get(owners[slot]);
        if (owner == null || owner.state == ShardState.GONE) {
            return SlotState.ORPHANED;
        }
        return restoring.contains(slot) ? SlotState.RESTORING : SlotState.OWNED;
    }

    private boolean ownsAny(final String shardId) {
        for (final String owner : owners) {
            if (shardId.equals(owner)) {
                return true;
            }
        }
        return false;
    }

    private List<Integer> slotsOf(final String shardId) {
        final List<Integer> slots = new ArrayList<>();
        for (int slot = 0; slot < owners.length; slot++) {
            if (shardId.equals(owners[slot])) {
                slots.add(slot);
            }
        }
        return slots;
    }

    // ---- catalog

    /** Adopts tables a shard holds that the catalog does not know and no tombstone names (the state was lost). */
    private void adoptUnknownTables(final String shardId, final List<TableStats> reported) {
        for (final TableStats stats : reported) {
            final String name = stats.getName();
            if (!stats.hasSchema()
                    || name.isEmpty()
                    || !name.equals(stats.getSchema().getName())
                    || tables.containsKey(name)
                    || tombstones.containsKey(name)) {
                continue;
            }
            tables.put(name, stats.getSchema());
            LOG.warn(
                    "shard {} holds table '{}' that the catalog does not know (was the proxy state lost?): adopting it",
                    shardId,
                    name);
        }
    }

    /**
     * Adds a table to the catalog (clearing a tombstone of that name); returns false if an identical one is there.
     *
     * @throws PsException ALREADY_EXISTS when a table of that name has another schema.
     */
    synchronized boolean addTable(final TableSchema schema) {
        final TableSchema existing = tables.get(schema.getName());
        if (existing != null) {
            if (!existing.equals(schema)) {
                throw PsException.alreadyExists("table '" + schema.getName() + "' exists with a different schema: "
                        + existing + "; requested " + schema);
            }
            return false;
        }
        if (shards.values().stream().noneMatch(record -> record.state.serving())) {
            throw PsException.failedPrecondition("no shard is live: start shards before creating tables");
        }
        return change("create table '" + schema.getName() + "'", () -> {
            tombstones.remove(schema.getName());
            tables.put(schema.getName(), schema);
            tableCreatedMillis.put(schema.getName(), Math.max(wallClock.getAsLong(), lastCheckpointStartMillis + 1));
            refreshOrderTableTimes();
            readVersion++;
            return true;
        });
    }

    /** Removes a table from the catalog and writes its tombstone; returns false if the catalog did not hold it. */
    synchronized boolean removeTable(final String name) {
        return change("drop table '" + name + "'", () -> {
            final boolean held = tables.remove(name) != null;
            tableCreatedMillis.remove(name);
            readVersion++;
            if (held || !tombstones.containsKey(name)) {
                tombstones.put(
                        name,
                        TableTombstone.newBuilder()
                                .setName(name)
                                .setDroppedAtMillis(wallClock.getAsLong())
                                .setEpoch(epoch)
                                .build());
            }
            refreshOrderTableTimes();
            return held;
        });
    }

    /** See {@link #readVersion}: read before rows are read, so that a change while they are read invalidates them. */
    long readVersion() {
        return readVersion;
    }

    /** Whether an operator's restore into every shard did not finish (the model may be a mix; see refuseIfMixed). */
    synchronized boolean unfinishedRestore() {
        return unfinishedRestoreId != 0;
    }

    /** Rows may have changed other than by pushes (a restore ended, well or not): what was read before is not served. */
    synchronized void invalidateReads() {
        readVersion++;
    }

    /** The catalog's schema of {@code name}, or null. */
    synchronized TableSchema table(final String name) {
        return tables.get(name);
    }

    synchronized List<TableSchema> tables() {
        return new ArrayList<>(tables.values());
    }

    /** The tables a checkpoint holds, and its time ({@link #beginCheckpoint}). */
    record CheckpointStart(long millis, List<TableSchema> tables) {}

    /**
     * A checkpoint begins: its tables, and its time, taken together under this state's monitor so that every table
     * listed was stamped at or before it ({@link #tableCreatedMillis}) and every table created after it later: a
     * shard restoring the checkpoint tells a table it holds from one created (again) since by those times alone.
     */
    synchronized CheckpointStart beginCheckpoint() {
        long millis = Math.max(wallClock.getAsLong(), lastCheckpointStartMillis);
        for (final long created : tableCreatedMillis.values()) {
            millis = Math.max(millis, created);
        }
        lastCheckpointStartMillis = millis;
        return new CheckpointStart(millis, tables());
    }

    // ---- routing

    synchronized long epoch() {
        return epoch;
    }

    synchronized RoutingTable routingTable() {
        return routingContent().toBuilder()
                .setEpoch(epoch)
                .addAllRollbacks(rollbacks)
                .build();
    }

    /** The routing table without epoch and events: what the epoch versions. */
    private RoutingTable routingContent() {
        final RoutingTable.Builder routing = RoutingTable.newBuilder().setSlotCount(Slots.SLOT_COUNT);
        final Map<String, Integer> index = new LinkedHashMap<>();
        for (final String owner : owners) {
            final ShardRecord record = owner == null ? null : shards.get(owner);
            if (record != null && record.state.serving() && !index.containsKey(owner)) {
                index.put(owner, index.size());
                routing.addShards(record.info());
            }
        }
        for (final ShardRecord record : shards.values()) {
            if (record.state.serving() && !index.containsKey(record.id)) {
                index.put(record.id, index.size());
                routing.addShards(record.info());
            }
        }
        for (int slot = 0; slot < owners.length; slot++) {
            final Integer i = owners[slot] == null ? null : index.get(owners[slot]);
            routing.addSlotOwner(i == null ? -1 : i);
            routing.addSlotGeneration(i == null ? 0 : generations[slot]);
        }
        return routing.build();
    }

    synchronized String[] slotOwners() {
        return owners.clone();
    }

    /**
     * Each slot's owner and the epoch at which it got the slot, and the next restore order's id, as they were when read
     * ({@link #slotsAt()}).
     */
    record SlotsAt(String[] owners, long[] generations, long nextOrderId) {}

    synchronized SlotsAt slotsAt() {
        return new SlotsAt(owners.clone(), generations.clone(), nextOrderId);
    }

    /**
     * Null when every slot has the owner, and the generation, it had at {@code at}, and no restore was ordered since;
     * else what changed, for an error. A slot that changed owner meanwhile was restored elsewhere (a failover) or handed
     * over, and one whose shard restarted under its id was restored into it again without a change of owner: either
     * way what the shard held of it before is a branch the cluster has left.
     */
    synchronized String movedSince(final SlotsAt at) {
        if (nextOrderId != at.nextOrderId()) {
            final long orders = nextOrderId - at.nextOrderId();
            return orders + " restore order(s) were given (slots restored from a checkpoint: a shard lost, or restarted"
                    + " without its rows), so the slots changed owner or contents";
        }
        int moved = 0;
        int first = -1;
        for (int slot = 0; slot < owners.length; slot++) {
            if (!Objects.equals(owners[slot], at.owners()[slot]) || generations[slot] != at.generations()[slot]) {
                moved++;
                first = first < 0 ? slot : first;
            }
        }
        return moved == 0
                ? null
                : moved + " slots changed owner (first slot " + first + ": " + at.owners()[first] + " then, "
                        + owners[first] + " now, at epoch " + generations[first] + ")";
    }

    /**
     * The shards that own slots, for a cluster-wide operation (checkpoint, restore).
     *
     * @throws PsException FAILED_PRECONDITION naming the slots no serving shard owns, or the restore still under way:
     *     the operation would miss their rows.
     */
    synchronized List<Owner> ownersForClusterOperation(final String operation) {
        final List<Owner> owning = owners(operation);
        refuseWhileUnserved(operation, owning);
        return owning;
    }

    /**
     * As {@link #ownersForClusterOperation} but for the shards' own reports of slots they do not serve yet (a move's
     * restored slots until their next heartbeat): for an operation that may turn out to touch no shard.
     */
    private List<Owner> owners(final String operation) {
        if (!pendingRestores.isEmpty()) {
            final RestoreDirective first = pendingRestores.values().iterator().next();
            throw PsException.failedPrecondition(operation + " needs every slot restored; "
                    + restoringSlots().size() + " slots are still being restored, first order " + first.getOrderId()
                    + " on shard " + first.getShardId());
        }
        final Map<String, List<Integer>> bySlot = new LinkedHashMap<>();
        int unowned = 0;
        String firstMissing = null;
        for (int slot = 0; slot < owners.length; slot++) {
            if (slotState(slot, Set.of()) == SlotState.ORPHANED) {
                unowned++;
                if (firstMissing == null) {
                    firstMissing = "slot " + slot + " (owner " + owners[slot] + ")";
                }
            } else {
                bySlot.computeIfAbsent(owners[slot], id -> new ArrayList<>()).add(slot);
            }
        }
        if (unowned > 0) {
            throw PsException.failedPrecondition(operation + " needs every slot on a live shard; " + unowned
                    + " slots are not, first " + firstMissing);
        }
        final List<Owner> result = new ArrayList<>();
        bySlot.forEach((id, slots) -> result.add(new Owner(id, shards.get(id).address, slots)));
        return result;
    }

    /** Refuses {@code operation} while one of {@code owning} reports restore orders whose slots it does not serve. */
    private void refuseWhileUnserved(final String operation, final List<Owner> owning) {
        for (final Owner owner : owning) {
            final List<Long> unserved = shards.get(owner.shardId()).unservedOrders;
            if (!unserved.isEmpty()) {
                // The shard would refuse the operation's requests for those slots: a move's, restored, serve once the
                // shard has heard it is done (its next heartbeat); an order this proxy no longer has, once it ends.
                throw PsException.failedPrecondition(operation + " needs every slot served; shard "
                        + owner.shardId() + " does not serve the slots of restore order(s) " + unserved
                        + " yet (a move's restored slots serve from its next heartbeat)");
            }
        }
    }

    /** The live shards whose last heartbeat reported slots fenced for a move. */
    synchronized List<ShardFanOut.Target> fencedShards() {
        final List<ShardFanOut.Target> fenced = new ArrayList<>();
        for (final ShardRecord record : takers()) {
            if (record.load.getFencedSlots() > 0) {
                fenced.add(new ShardFanOut.Target(record.id, record.address));
            }
        }
        return fenced;
    }

    /** The shards heard from in this life that take new work (table creation and removal). */
    synchronized List<ShardFanOut.Target> liveShards() {
        final List<ShardFanOut.Target> live = new ArrayList<>();
        for (final ShardRecord record : takers()) {
            live.add(new ShardFanOut.Target(record.id, record.address));
        }
        return live;
    }

    synchronized List<String> liveAddresses() {
        final List<String> addresses = new ArrayList<>();
        liveShards().forEach(target -> addresses.add(target.address()));
        return addresses;
    }

    // ---- status

    synchronized List<ShardStatus> shardStatuses() {
        final long now = nanoClock.getAsLong();
        final Set<Integer> restoring = new HashSet<>();
        final List<ShardStatus> statuses = new ArrayList<>();
        for (final ShardRecord record : shards.values()) {
            restoring.clear();
            ordersOf(record.id).forEach(order -> restoring.addAll(order.getSlotsList()));
            final List<Integer> owned = slotsOf(record.id);
            statuses.add(ShardStatus.newBuilder()
                    .setShard(record.info())
                    .setLive(record.state.takesSlots() || record.state == ShardState.DRAINING)
                    .setState(record.state.wireName())
                    .setSlotsOwned(owned.size())
                    .setSlotsRestoring(
                            (int) owned.stream().filter(restoring::contains).count())
                    .setMillisSinceHeartbeat((now - record.lastHeardNanos) / 1_000_000)
                    .setLoad(record.load)
                    .addAllTables(record.tables)
                    .build());
        }
        return statuses;
    }

    synchronized int unownedSlots() {
        int unowned = 0;
        for (int slot = 0; slot < owners.length; slot++) {
            if (slotState(slot, Set.of()) == SlotState.ORPHANED) {
                unowned++;
            }
        }
        return unowned;
    }

    /** Everything {@code psctl status} shows. */
    synchronized ListShardsResponse status() {
        final long now = nanoClock.getAsLong();
        return ListShardsResponse.newBuilder()
                .setRoutingEpoch(epoch)
                .addAllShards(shardStatuses())
                .setUnownedSlots(unownedSlots())
                .addAllRollbacks(rollbacks)
                .addAllPendingRestores(pendingRestores.values())
                .addAllRestoreReports(restoreReports.values())
                .setRollbacksTotal(rollbacksTotal)
                .setGraceRemainingMillis(Math.max(0, (leaseExpiryNanos - (now - startNanos)) / 1_000_000))
                .setUnfinishedRestoreId(unfinishedRestoreId)
                .build();
    }

    /** The state a shard is in, or null when the registry does not hold it. */
    synchronized ShardState shardState(final String shardId) {
        final ShardRecord record = shards.get(shardId);
        return record == null ? null : record.state;
    }
}
