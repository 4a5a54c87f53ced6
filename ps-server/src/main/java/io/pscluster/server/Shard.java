package io.pscluster.server;

import com.google.protobuf.InvalidProtocolBufferException;
import io.grpc.Status;
import io.pscluster.checkpoint.CheckpointCorruptException;
import io.pscluster.checkpoint.CheckpointInfo;
import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.Manifest;
import io.pscluster.checkpoint.Progress;
import io.pscluster.checkpoint.RowFileReader;
import io.pscluster.checkpoint.RowFileWriter;
import io.pscluster.proto.v1.Aggregation;
import io.pscluster.proto.v1.CheckpointFile;
import io.pscluster.proto.v1.PushWindows;
import io.pscluster.proto.v1.RoutingTable;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.proto.v1.TableStats;
import io.pscluster.proto.v1.UpdateJobsRequest;
import io.pscluster.proto.v1.UpdateMode;
import io.pscluster.server.table.ParameterTable;
import io.pscluster.server.table.PartitionWriters;
import io.pscluster.server.table.RowLoader;
import io.pscluster.server.table.ShardSnapshot;
import io.pscluster.server.table.SnapshotBatch;
import io.pscluster.wire.PsException;
import io.pscluster.wire.Slots;
import io.pscluster.wire.TableSchemas;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.URI;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.concurrent.locks.LockSupport;
import java.util.concurrent.locks.ReentrantLock;
import java.util.function.Consumer;
import java.util.function.Function;
import java.util.function.Supplier;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A shard's state and operations, independent of gRPC: its tables, the slots it owns, the partition writers that
 * apply pushes, and checkpoint writing and restoring. The gRPC services are thin adapters over this class.
 *
 * <p>Every request is validated completely before anything is queued, so a bad request changes nothing.
 *
 * <p>Fencing: a push or pull is served only while the shard holds a lease from the proxy (an expiry on this
 * process's monotonic clock, extended by the {@link ProxyLink} after it applied each answer) and only for slots the
 * request was routed to at an epoch no older than the slot's generation. Both checks refuse with the retryable
 * wrong-owner answer; per request they cost one volatile read of the lease and, per key, one array lookup.
 *
 * <p>Retries: a push with a non-zero client id is accepted at most once per (client id, sequence); a repeat is
 * answered as a duplicate and applies nothing (see {@link PushSequenceWindows}). A push refused for any reason is not
 * remembered, so its retry is applied.
 *
 * <p>Draining ({@link #beginDrain}): the lease is revoked for good and every push and pull is refused with
 * wrong-owner; {@link #awaitDrained} returns once every push accepted before is applied.
 */
public final class Shard implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(Shard.class);
    private static final int RESTORE_BATCH_ROWS = 8192;

    private final Map<String, ParameterTable> tables = new ConcurrentHashMap<>();
    private final SlotOwnership ownership = new SlotOwnership();
    /**
     * Slots given away in a move whose rows this shard keeps (no longer owned, so never served or written) until the
     * proxy says the move is done, or hands them back; guards itself and the tables' rows of those slots.
     */
    private final BitSet keptMoved = new BitSet(Slots.SLOT_COUNT);
    // Owned slots whose kept rows were dropped when they came back without an order (guarded by keptMoved): their rows
    // are not as they were when they left, until a restore replaces them.
    private final BitSet returnedEmpty = new BitSet(Slots.SLOT_COUNT);
    /** How often each table name was dropped here: a restore order tells a table dropped while it ran (RestoreCheck). */
    private final Map<String, Long> tableDrops = new ConcurrentHashMap<>();

    private final Map<URI, CheckpointStore> stores = new ConcurrentHashMap<>();
    private final AtomicLong requests = new AtomicLong();
    // Pushes (and SYNC clocks) between their lease check and the end of their offer: a drain waits for them to
    // reach the writers, and a checkpoint's cut is offered only when none is in the middle of its offers.
    private final AtomicInteger pushesInFlight = new AtomicInteger();
    // True while a checkpoint's cut is being offered to the writers: pushes wait (microseconds) before offering.
    private volatile boolean cutting;
    // Held while a cut or a move's fence is offered between pushes: one at a time.
    private final Object cutLock = new Object();
    private final PushSequenceWindows sequences = new PushSequenceWindows();
    // Wakes pulls and reports clocks; never blocks.
    private final ExecutorService clockExecutor = Executors.newFixedThreadPool(2, ProxyLink.daemon("ps-clock"));
    // Combines SYNC clocks' gradients and queues them (waits when the writers are full).
    private final ExecutorService applyExecutor = Executors.newSingleThreadExecutor(ProxyLink.daemon("ps-clock-apply"));
    // Writes a checkpoint's chunks to their files while the checkpoint's thread fills and compresses the next ones
    // (one checkpoint at a time: one thread).
    private final ExecutorService checkpointOutput =
            Executors.newSingleThreadExecutor(ProxyLink.daemon("ps-checkpoint-output"));
    // SYNC gradients waiting for their clocks may take a quarter of the heap.
    private final JobClocks jobs =
            new JobClocks(clockExecutor, this::applyClock, Runtime.getRuntime().maxMemory() / 4);
    private final PartitionWriters writers;
    private volatile ShardSnapshot.Limits snapshotLimits = ShardSnapshot.Limits.defaults();
    /** Heap for one table's part buffer in a checkpoint; 0: {@link #partBufferBytes} decides. */
    private volatile long partBytesSetting;
    /** Checkpoint writes and restores in progress here, for {@code CheckpointProgress}. */
    private final CheckpointProgressBoard progressBoard = new CheckpointProgressBoard();
    /** Fault point {@link FaultPoints#SLOW_CHECKPOINT}: a delay per batch written or restored; 0: off. */
    private volatile long checkpointDelayNanos;

    private final Configuration hadoopConf;
    private final int maxKeysPerRequest;
    private volatile String shardId;
    // The lease: serve while System.nanoTime() is before this. Written under the monitor, read once per request.
    private volatile long leaseExpiryNanos = System.nanoTime();
    private volatile boolean leaseGranted;
    private volatile boolean draining;
    private java.util.concurrent.CountDownLatch heldWriters;

    /**
     * @param partitions writer threads; each owns the rows of the slots {@code slot % partitions}.
     * @param applyCapacity push parts queued and not yet applied before pushes are refused.
     */
    public Shard(
            final String name,
            final int maxKeysPerRequest,
            final int partitions,
            final int applyCapacity,
            final Configuration conf) {
        this(
                name,
                maxKeysPerRequest,
                conf,
                tables -> new PartitionWriters("ps-writer", partitions, applyCapacity, tables));
    }

    /** As the public constructor, with the writers {@code writers} makes over the shard's tables (tests: long parks). */
    Shard(
            final String name,
            final int maxKeysPerRequest,
            final Configuration conf,
            final Function<Supplier<Collection<ParameterTable>>, PartitionWriters> writers) {
        this.shardId = name;
        this.maxKeysPerRequest = maxKeysPerRequest;
        this.writers = writers.apply(tables::values);
        this.hadoopConf = conf;
    }

    public String shardId() {
        return shardId;
    }

    /** The most heap bytes queued pushes may hold ({@link ShardServer.Context#maxQueuedPushBytes}). */
    void limitQueuedPushBytes(final long bytes) {
        writers.limitQueuedBytes(bytes);
    }

    void assignId(final String id) {
        this.shardId = id;
    }

    /** The id for messages: the proxy's, or a placeholder before it assigned one. */
    private String name() {
        final String id = shardId;
        return id.isEmpty() ? "(unregistered)" : id;
    }

    // ---- lease

    /**
     * Lets the shard serve its slots until {@code expiryNanos} on the {@link System#nanoTime()} clock. A lease never
     * shrinks, and a draining shard takes none. The write has release semantics: a request that reads the new expiry
     * sees the routing applied before it. Package-private: only the proxy link (and tests that drive a shard without
     * a proxy) grant leases.
     */
    synchronized void grantLeaseUntil(final long expiryNanos) {
        if (draining) {
            return;
        }
        if (!leaseGranted || expiryNanos - leaseExpiryNanos > 0) {
            leaseExpiryNanos = expiryNanos;
        }
        leaseGranted = true;
    }

    /** Nanoseconds the lease has left (negative: lapsed that long ago). */
    long leaseRemainingNanos() {
        return leaseExpiryNanos - System.nanoTime();
    }

    /** Refuses every request unless the lease is valid and the request was routed at all. */
    private void checkServing(final long routedEpoch, final long shardEpoch) {
        final long remaining = leaseExpiryNanos - System.nanoTime();
        if (remaining <= 0) {
            throw refusedForLease(remaining, shardEpoch);
        }
        if (routedEpoch <= 0) {
            throw PsException.wrongOwner(
                    "request routed at epoch " + routedEpoch + ": shard " + name()
                            + " serves only requests routed with the proxy's routing table; refresh",
                    shardEpoch);
        }
    }

    private PsException refusedForLease(final long remaining, final long shardEpoch) {
        if (draining) {
            return PsException.wrongOwner("shard " + name() + " is draining", shardEpoch);
        }
        if (!leaseGranted) {
            return PsException.wrongOwner(
                    "shard " + name() + " holds no lease from the proxy yet; its slots may be served elsewhere",
                    shardEpoch);
        }
        return PsException.wrongOwner(
                "shard " + name() + "'s lease lapsed " + TimeUnit.NANOSECONDS.toMillis(-remaining)
                        + " ms ago (no heartbeat answer from the proxy); its slots may be served elsewhere",
                shardEpoch);
    }

    // ---- drain

    /** Revokes the lease for good: from now on every push and pull is refused with wrong-owner. */
    synchronized void beginDrain() {
        draining = true;
        leaseExpiryNanos = System.nanoTime();
    }

    public boolean isDraining() {
        return draining;
    }

    /**
     * After {@link #beginDrain}: waits until no push is between its checks and its offer, then until every accepted
     * push is applied.
     */
    void awaitDrained() throws InterruptedException {
        while (pushesInFlight.get() > 0) {
            if (Thread.interrupted()) {
                throw new InterruptedException("interrupted while waiting for pushes in flight");
            }
            LockSupport.parkNanos(TimeUnit.MICROSECONDS.toNanos(100));
        }
        awaitQuiescent();
    }

    // ---- tables

    /** Creates a table; returns false if an identical one exists. */
    public boolean createTable(final TableSchema requested) throws InterruptedException {
        final TableSchema schema = TableSchemas.normalize(requested);
        // Every worker may create the table it shares, so "exists" is the common answer: found without building one.
        ParameterTable existing = tables.get(schema.getName());
        if (existing == null) {
            final ParameterTable created =
                    new ParameterTable(schema, writers, () -> ownership.view().writable());
            existing = tables.putIfAbsent(schema.getName(), created);
            if (existing == null) {
                final BitSet owned = ownership.view().owned();
                final long needed = created.denseBytesFor(owned.cardinality());
                if (needed > 0 && !ParameterTable.offHeapRoomFor(needed)) {
                    tables.remove(schema.getName(), created);
                    throw PsException.resourceExhausted("table '" + schema.getName() + "' needs about "
                            + (needed >> 20) + " MiB off-heap for its rows on shard " + shardId + ", "
                            + (ParameterTable.offHeapAvailable() >> 20)
                            + " MiB are left (-XX:MaxDirectMemorySize less headroom for gRPC)");
                }
                try {
                    created.materializeDense(owned::get);
                } catch (IllegalStateException cannot) {
                    // Never keep a dense table with rows missing: its pulls would read initial values, not data.
                    tables.remove(schema.getName(), created);
                    created.clearSlots(slot -> true);
                    throw PsException.resourceExhausted("table '" + schema.getName() + "' cannot be created on shard "
                            + shardId + ": " + cannot.getMessage());
                }
                LOG.info("shard {} created table {}", shardId, schema.getName());
                return true;
            }
        }
        if (!existing.schema().equals(schema)) {
            throw PsException.alreadyExists("table '" + schema.getName() + "' exists with a different schema: "
                    + existing.schema() + "; requested " + schema);
        }
        return false;
    }

    public ParameterTable table(final String name) {
        final ParameterTable table = tables.get(name);
        if (table == null) {
            throw PsException.notFound("table '" + name + "' does not exist on shard " + shardId);
        }
        return table;
    }

    /**
     * Drops a table. Its off-heap memory is returned when the collector finds it unreachable, not here: a pull that
     * looked the table up just before keeps reading valid memory.
     */
    public boolean dropTable(final String name) {
        final boolean dropped = tables.remove(name) != null;
        if (dropped) {
            tableDrops.merge(name, 1L, Long::sum);
            // After the removal: a push buffering meanwhile finds its table gone under the same monitor (refused), or
            // buffered before and is forgotten here with the rest.
            final long freed = jobs.tableDropped(name);
            if (freed > 0) {
                LOG.info(
                        "shard {}: table '{}' dropped with {} KiB of sync gradients waiting for their clocks; forgotten",
                        shardId,
                        name,
                        freed >> 10);
            }
        }
        return dropped;
    }

    public Collection<ParameterTable> tables() {
        return tables.values();
    }

    public List<TableStats> tableStats() {
        final List<TableStats> stats = new ArrayList<>();
        for (final ParameterTable table : tables.values()) {
            stats.add(TableStats.newBuilder()
                    .setName(table.name())
                    .setRows(table.rowCount())
                    .setBytes(table.bytes())
                    .setSchema(table.schema())
                    .setDroppedRows(table.droppedRows())
                    .build());
        }
        return stats;
    }

    // ---- data plane

    /** What a push was answered: how many keys were accepted, and whether it was a repeat (nothing applied). */
    public record PushResult(int accepted, boolean duplicate) {}

    /**
     * Validates a push and queues it to be applied. Returns once it is queued (async mode). A repeat of an accepted
     * (client id, sequence) is validated the same way, then answered as a duplicate without being queued.
     *
     * @param routingEpoch the epoch the caller routed with; refused if older than a touched slot's generation.
     * @param clientId the sender's id for deduplication; 0: none.
     * @param sequence the push's sequence within its client; a retry keeps it.
     * @throws PsException NOT_FOUND, INVALID_ARGUMENT, wrong-owner, restoring, RESOURCE_EXHAUSTED or (a forgotten
     *     sequence) FAILED_PRECONDITION; in every case nothing was applied.
     */
    public PushResult push(
            final String tableName,
            final long routingEpoch,
            final long clientId,
            final long sequence,
            final long[] keys,
            final float[] gradients) {
        return push(tableName, routingEpoch, clientId, sequence, keys, gradients, JobTag.NONE);
    }

    /** Who sent a request, when a job's worker did: its job, worker id and clock. */
    public record JobTag(String jobId, int workerId, long clock) {
        /** A client outside any job. */
        public static final JobTag NONE = new JobTag("", 0, 0);

        public boolean inJob() {
            return !jobId.isEmpty();
        }
    }

    /**
     * {@link #push(String, long, long, long, long[], float[])} from a job's worker: refused when the table is held by
     * another job's mode; a SYNC job's gradients are kept for their clock (applied once every live worker ended it).
     */
    public PushResult push(
            final String tableName,
            final long routingEpoch,
            final long clientId,
            final long sequence,
            final long[] keys,
            final float[] gradients,
            final JobTag tag) {
        return push(tableName, routingEpoch, clientId, sequence, false, keys, gradients, tag, null);
    }

    /**
     * {@link #push(String, long, long, long, long[], float[], JobTag)}; {@code partial} when the request carries only
     * some of the keys first sent under its sequence (a re-split part: a repeat only for the slots its sequence was
     * accepted for here, {@link PushSequenceWindows.Window#acceptedParts}); with {@code later} not null, an async
     * push's writers are woken by {@code later} (which the caller must reach once it has answered), not before this
     * returns.
     */
    public PushResult push(
            final String tableName,
            final long routingEpoch,
            final long clientId,
            final long sequence,
            final boolean partial,
            final long[] keys,
            final float[] gradients,
            final JobTag tag,
            final PartitionWriters.DeferredWakes later) {
        requests.incrementAndGet();
        enterOffers();
        try {
            return checkAndOffer(tableName, routingEpoch, clientId, sequence, partial, keys, gradients, tag, later);
        } finally {
            pushesInFlight.decrementAndGet();
        }
    }

    private PushResult checkAndOffer(
            final String tableName,
            final long routingEpoch,
            final long clientId,
            final long sequence,
            final boolean partial,
            final long[] keys,
            final float[] gradients,
            final JobTag tag,
            final PartitionWriters.DeferredWakes later) {
        final SlotOwnership.View view = ownership.view();
        checkServing(routingEpoch, view.epoch());
        final ParameterTable table = table(tableName);
        final int[] slots = checkKeys(view, routingEpoch, table, keys, tag);
        final int dim = table.dim();
        if ((long) keys.length * dim != gradients.length) {
            throw PsException.invalidArgument("table '" + tableName + "' has dim=" + dim + ": " + keys.length
                    + " keys need " + (long) keys.length * dim + " gradient values, got " + gradients.length);
        }
        for (int i = 0; i < gradients.length; i++) {
            if (!Float.isFinite(gradients[i])) {
                throw PsException.invalidArgument("non-finite gradient " + gradients[i] + " for key " + keys[i / dim]
                        + " (element " + i % dim + ") of table '" + tableName + "'; the push was rejected whole");
            }
        }
        if (clientId == 0) {
            accepter(table, tag, later).accept(keys, slots, gradients);
            return new PushResult(keys.length, false);
        }
        while (true) {
            final PushSequenceWindows.Window window = sequences.window(clientId);
            // Check, accept and record under one monitor: two copies of a push arriving at once are accepted once.
            synchronized (window) {
                if (window.evicted()) {
                    // Evicted between the lookup and the monitor: the client's window now is another one.
                    continue;
                }
                // Slots whose rows came from a checkpoint holding this sequence, and those this shard accepted it for.
                final BitSet adopted = sequences.adoptedSlots(clientId, sequence);
                if (adopted != null && countOutside(adopted, null, slots) == 0) {
                    return new PushResult(keys.length, true);
                }
                final boolean seen = window.seen(sequence);
                final BitSet acceptedParts = seen ? window.acceptedParts(sequence) : null;
                if ((seen && acceptedParts == null)
                        || ((adopted != null || acceptedParts != null)
                                && countOutside(adopted, acceptedParts, slots) == 0)) {
                    return new PushResult(keys.length, true);
                }
                // A repeat is answered before the job's clocks are checked: a SYNC push retried after its clock was
                // applied is a repeat, not a push for a past clock.
                final Accept accept = accepter(table, tag, later);
                if (adopted == null && acceptedParts == null) {
                    accept.accept(keys, slots, gradients);
                    window.record(sequence, partial ? distinct(slots) : null);
                    return new PushResult(keys.length, false);
                }
                // Some slots already hold this sequence's effect: a sibling part (other slots) re-routed here after its
                // first shard refused it, or a request whose other slots' rows came from a checkpoint before it. Only
                // the keys of the other slots are applied; the sequence is then known here for those slots.
                final int fresh = countOutside(adopted, acceptedParts, slots);
                final long[] freshKeys = new long[fresh];
                final int[] freshSlots = new int[fresh];
                final float[] freshGradients = new float[fresh * dim];
                for (int i = 0, k = 0; i < keys.length; i++) {
                    if (!in(adopted, slots[i]) && !in(acceptedParts, slots[i])) {
                        freshKeys[k] = keys[i];
                        freshSlots[k] = slots[i];
                        System.arraycopy(gradients, i * dim, freshGradients, k * dim, dim);
                        k++;
                    }
                }
                accept.accept(freshKeys, freshSlots, freshGradients);
                window.record(sequence, distinct(freshSlots));
                return new PushResult(keys.length, false);
            }
        }
    }

    /**
     * How a push of {@code tag}'s job and clock is accepted: queued for the writers, or buffered for its SYNC clock.
     *
     * @throws PsException when the job's mode or clocks refuse it (another job holds the table, a clock already applied)
     */
    private Accept accepter(final ParameterTable table, final JobTag tag, final PartitionWriters.DeferredWakes later) {
        final JobClocks.Route route = jobs.route(table.name(), tag.jobId(), tag.workerId(), tag.clock());
        if (route == JobClocks.Route.BUFFER) {
            return (keys, slots, gradients) -> {
                // Looked up before the clocks' lock is taken; only the keys without a row are held, once per clock.
                final int[] absent = table.absentPositions(keys, slots);
                jobs.buffer(
                        table.name(),
                        () -> tables.get(table.name()) == table,
                        tag.jobId(),
                        tag.workerId(),
                        tag.clock(),
                        table.dim(),
                        keys,
                        gradients,
                        held -> holdNewRows(table, held, keys, slots, absent));
            };
        }
        return (keys, slots, gradients) -> offer(table, keys, slots, gradients, later);
    }

    /** Accepts a push's keys (queued, or buffered for their clock), or refuses them all by throwing. */
    @FunctionalInterface
    private interface Accept {
        void accept(long[] keys, int[] slots, float[] gradients);
    }

    /** How many of {@code slots} are in neither set (a null set holds nothing). */
    private static int countOutside(final BitSet first, final BitSet second, final int[] slots) {
        int outside = 0;
        for (final int slot : slots) {
            if (!in(first, slot) && !in(second, slot)) {
                outside++;
            }
        }
        return outside;
    }

    private static boolean in(final BitSet set, final int slot) {
        return set != null && set.get(slot);
    }

    private static int[] distinct(final int[] slots) {
        return Arrays.stream(slots).distinct().toArray();
    }

    /**
     * Queues a push, its new rows counted against the table's cap and their records claimed in the off-heap budget
     * first: a push that would pass the cap or has no memory for its rows is refused now, not acknowledged and then
     * dropped by the writer (rows still queued count as well as rows applied).
     */
    private void offer(
            final ParameterTable table,
            final long[] keys,
            final int[] slots,
            final float[] gradients,
            final PartitionWriters.DeferredWakes later) {
        final ParameterTable.RowPromise promise;
        try {
            promise = table.promiseNewRows(keys, slots);
        } catch (ParameterTable.OffHeapFull full) {
            throw offHeapRefusal(full);
        }
        if (promise == null) {
            final int absent = table.countAbsent(keys, slots);
            if (table.rowCount() + absent <= table.maxRows()) {
                // It fits unless the queued pushes create their rows: they may name the same new keys. Sent again
                // once they are applied, it is accepted or refused for good.
                throw PsException.backpressure("table '" + table.name() + "' on shard " + name()
                        + " is near its cap of "
                        + table.maxRows() + " rows with pushes queued that may create the same rows; retry after a"
                        + " backoff");
            }
            throw rowCapReached(table, absent);
        }
        if (!table.offerPush(keys, slots, gradients, promise, later)) {
            table.release(promise);
            throw PsException.backpressure("shard " + name() + " has " + writers.pending()
                    + " push parts holding " + (writers.queuedBytes() >> 10)
                    + " KiB waiting to be applied; retry after a backoff");
        }
    }

    /**
     * Holds a SYNC push's new rows ({@code absent}) for its clock's sum in {@code held} (null: none held yet), as
     * {@link #offer} claims an applied push's: a push whose new rows would pass the cap or have no off-heap room is
     * refused now, not acknowledged and then short of rows when every worker has ended the clock.
     */
    private ParameterTable.ClockRows holdNewRows(
            final ParameterTable table,
            final ParameterTable.ClockRows held,
            final long[] keys,
            final int[] slots,
            final int[] absent) {
        // Kept even when it holds nothing: it also says which table the clock's pushes went to (isOf).
        final ParameterTable.ClockRows rows = held != null ? held : table.clockRows();
        if (absent.length == 0) {
            return rows;
        }
        final boolean taken;
        try {
            taken = rows.hold(keys, slots, absent);
        } catch (ParameterTable.OffHeapFull full) {
            // Room held ahead by pushes queued comes back in moments; room held by SYNC clocks not applied (this one's
            // among them) only once their workers end them, which the refused worker's own clock waits for.
            if (full.retryable() && writers.pending() > 0) {
                throw offHeapRefusal(full);
            }
            throw PsException.resourceExhausted(full.getMessage() + " on shard " + name() + ", counting the rows held"
                    + " for SYNC clocks not yet applied: push fewer new keys per clock, drop a table, set a TTL or a"
                    + " row cap, or raise -XX:MaxDirectMemorySize");
        }
        if (!taken) {
            final int fresh = rows.countNew(keys, absent);
            if (table.rowCount() + rows.held() + fresh <= table.maxRows()) {
                // The rows held by another clock (a worker pushes for the next clock while the last is not applied)
                // or by pushes queued count too; they are created first, and may be these.
                throw PsException.backpressure("table '" + table.name() + "' on shard " + name()
                        + " is near its cap of " + table.maxRows() + " rows with rows held for other clocks or"
                        + " pushes queued that may create the same rows; retry after a backoff");
            }
            throw PsException.resourceExhausted("table '" + table.name() + "' holds " + table.rowCount()
                    + " rows on shard " + name() + " and its SYNC clock holds " + rows.held() + " more to create; "
                    + fresh + " new rows would pass its cap of " + table.maxRows() + " rows: raise"
                    + " max_rows_per_shard, set a TTL, or push fewer new keys per clock");
        }
        return rows;
    }

    private PsException offHeapRefusal(final ParameterTable.OffHeapFull full) {
        if (full.retryable()) {
            return PsException.backpressure(full.getMessage() + "; pushes queued on shard " + name()
                    + " hold room they may not use: retry after a backoff");
        }
        return PsException.resourceExhausted(full.getMessage() + " on shard " + name()
                + ": drop a table, set a TTL or a row cap, or raise -XX:MaxDirectMemorySize");
    }

    private PsException rowCapReached(final ParameterTable table, final int absent) {
        return PsException.resourceExhausted("table '" + table.name() + "' holds " + table.rowsCounted()
                + " rows on shard " + name() + " (counting those of pushes queued and not yet applied); " + absent
                + " new rows would pass its cap of " + table.maxRows() + " rows");
    }

    /** Wake-ups of the writers that a push's handler pays once it has answered: {@link PartitionWriters#deferredWakes}. */
    public PartitionWriters.DeferredWakes deferredWakes() {
        return writers.deferredWakes();
    }

    /** Reads the values of {@code keys} as they are now, as little-endian float32 bytes, row after row. */
    public byte[] pull(final String tableName, final long routingEpoch, final long[] keys) {
        return pull(tableName, routingEpoch, keys, JobTag.NONE);
    }

    /**
     * {@link #pull(String, long, long[])} of a job's worker at its clock ({@code tag}): a SYNC worker's read of a clock
     * open when a move's fence went up passes the fence, as its pushes do (it reads before it pushes).
     */
    public byte[] pull(final String tableName, final long routingEpoch, final long[] keys, final JobTag tag) {
        requests.incrementAndGet();
        final SlotOwnership.View view = ownership.view();
        checkServing(routingEpoch, view.epoch());
        final ParameterTable table = table(tableName);
        final int[] slots = checkKeys(view, routingEpoch, table, keys, tag);
        final long bytes = 4L * keys.length * table.dim();
        if (bytes > Integer.MAX_VALUE - 64) {
            throw PsException.invalidArgument("pull of " + keys.length + " keys x dim " + table.dim() + " is " + bytes
                    + " bytes, more than one response can carry; split it");
        }
        final byte[] values = new byte[(int) bytes];
        table.pull(keys, slots, values);
        return values;
    }

    /**
     * Checks the request's size, key range, slot ownership and slot generations against one view, and that no slot
     * is fenced for a move (but for a SYNC push, {@code tag}, of a clock open when the fence went up); returns the slot
     * of each key.
     */
    private int[] checkKeys(
            final SlotOwnership.View view,
            final long routingEpoch,
            final ParameterTable table,
            final long[] keys,
            final JobTag tag) {
        if (keys.length > maxKeysPerRequest) {
            throw PsException.invalidArgument("request has " + keys.length + " keys, more than the limit of "
                    + maxKeysPerRequest + " keys per request; split it");
        }
        final long denseRows = table.schema().getRows();
        final boolean dense = denseRows > 0;
        final int[] slots = table.slotsOf(keys);
        final String who = name();
        for (int i = 0; i < keys.length; i++) {
            final long key = keys[i];
            if (dense && (key < 0 || key >= denseRows)) {
                throw PsException.invalidArgument("key " + key + " is outside dense table '" + table.name()
                        + "' (rows 0.." + (denseRows - 1) + ")");
            }
            view.check(slots[i], routingEpoch, who, table.name(), key);
        }
        if (!view.fence().slots().isEmpty()) {
            for (int i = 0; i < keys.length; i++) {
                view.checkNotFenced(slots[i], who, table.name(), keys[i], tag.jobId(), tag.clock());
            }
        }
        return slots;
    }

    // ---- moves

    /** How long a fence waits for SYNC gradients held for its slots to be applied before it answers. */
    static final long FENCE_SYNC_WAIT_MS = 5_000;

    /**
     * Fences {@code slots} for a move (their pushes and pulls are refused, see {@link SlotOwnership#fence}; empty:
     * lifts the fence) and returns once no push is between its checks and its offer, so that every push accepted for
     * them before is queued (a checkpoint cut from now on holds it), and SYNC gradients held for them are applied
     * (waiting up to {@link #FENCE_SYNC_WAIT_MS}: the fence lets SYNC pushes of the clocks open now through, so that
     * every worker can push its part of them and end them). Returns the SYNC clocks still holding gradients for them,
     * in words ("" when none): a move would lose those, as they would be applied after its cut.
     */
    public String fenceSlots(final BitSet slots, final long holdMillis, final long madeMillis)
            throws InterruptedException {
        if (slots.isEmpty()) {
            final int held = ownership.unfence();
            LOG.info("shard {}: fence lifted ({} slots held)", name(), held);
            return "";
        }
        final long holdNanos = TimeUnit.MILLISECONDS.toNanos(holdMillis);
        final AtomicReference<Map<String, Long>> open = new AtomicReference<>();
        offerCutBetweenPushes(() -> {
            open.set(jobs.openSyncClocks());
            ownership.fence(slots, holdNanos, madeMillis, open.get());
        });
        LOG.info("shard {}: {} slots fenced for a move, for at most {} ms", name(), slots.cardinality(), holdMillis);
        final long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(FENCE_SYNC_WAIT_MS);
        String held = syncHeld(slots, open.get());
        while (!held.isEmpty() && System.nanoTime() - deadline < 0) {
            TimeUnit.MILLISECONDS.sleep(20);
            held = syncHeld(slots, open.get());
        }
        return held;
    }

    /**
     * What a move's cut would miss of SYNC gradients for {@code slots}: clocks open when the fence went up not applied
     * yet (their pushes still pass the fence), or gradients held for the slots (of an ended run); "" when none.
     */
    private String syncHeld(final BitSet slots, final Map<String, Long> open) {
        final String notApplied = jobs.notAppliedUpTo(open);
        final String held = jobs.heldIn(slots);
        return notApplied.isEmpty() ? held : held.isEmpty() ? notApplied : notApplied + "; " + held;
    }

    /** Owned slots fenced for a move now (0 when the fence lapsed or none is up). */
    public int fencedSlotCount() {
        final SlotOwnership.View view = ownership.view();
        if (!view.fence().holds()) {
            return 0;
        }
        final BitSet fenced = (BitSet) view.fence().slots().clone();
        fenced.and(view.owned());
        return fenced.cardinality();
    }

    /** How long until the fence lapses on its own (0: none up). */
    public long fenceRemainingMillis() {
        final SlotOwnership.Fence fence = ownership.view().fence();
        return fence.holds() ? TimeUnit.NANOSECONDS.toMillis(fence.untilNanos() - System.nanoTime()) : 0;
    }

    /** A heartbeat answer of a proxy started at {@code proxyStartMillis}: lifts fences an earlier proxy made. */
    void unfenceMadeBefore(final long proxyStartMillis) {
        if (proxyStartMillis > 0) {
            final int held = ownership.unfenceMadeBefore(proxyStartMillis);
            if (held > 0) {
                LOG.warn(
                        "shard {}: fence of {} slots lifted, made by a proxy that restarted since (its move did not"
                                + " finish)",
                        name(),
                        held);
            }
        }
    }

    // ---- routing

    public long routingEpoch() {
        return ownership.view().epoch();
    }

    public int ownedSlotCount() {
        return ownership.view().ownedCount();
    }

    /** A copy of the set of slots this shard serves. */
    public BitSet ownedSlots() {
        return (BitSet) ownership.view().owned().clone();
    }

    public int restoringSlotCount() {
        return ownership.view().restoring().cardinality();
    }

    /** The generation (routing epoch at which this shard got it) of each owned slot, in ascending slot order. */
    long[] ownedGenerations() {
        return SlotOwnership.generationsOf(ownership.view());
    }

    /**
     * Takes the proxy's routing table: serves the slots it assigns here, each at the generation the table gives it
     * (or, from a table without generations, the routing epoch for slots gained now), and drops the rows of slots it
     * moved away.
     */
    void applyRouting(final RoutingTable routing) throws InterruptedException {
        final BitSet owned = new BitSet(Slots.SLOT_COUNT);
        int mine = -1;
        for (int i = 0; i < routing.getShardsCount(); i++) {
            if (routing.getShards(i).getShardId().equals(shardId)) {
                mine = i;
            }
        }
        final int slotCount = Math.min(routing.getSlotOwnerCount(), Slots.SLOT_COUNT);
        for (int slot = 0; slot < slotCount; slot++) {
            if (mine >= 0 && routing.getSlotOwner(slot) == mine) {
                owned.set(slot);
            }
        }
        final SlotOwnership.View was = ownership.view();
        final BitSet before = was.owned();
        final BitSet fenced = was.fence().holds() ? was.fence().slots() : new BitSet();
        final BitSet lost;
        if (routing.getSlotGenerationCount() == 0) {
            lost = ownership.route(routing.getEpoch(), owned);
        } else {
            final long[] generations = new long[Slots.SLOT_COUNT];
            final int known = Math.min(routing.getSlotGenerationCount(), Slots.SLOT_COUNT);
            for (int slot = 0; slot < known; slot++) {
                generations[slot] = routing.getSlotGeneration(slot);
            }
            lost = ownership.route(routing.getEpoch(), owned, generations);
        }
        final BitSet gained = (BitSet) owned.clone();
        gained.andNot(before);
        final BitSet dropped = (BitSet) lost.clone();
        final int keptNow;
        synchronized (keptMoved) {
            // Slots a move takes away while fenced, and every slot a draining shard hands over: their rows stay here
            // until the proxy says their new owner has restored them (an order the proxy gave without that promise is
            // released by the next heartbeat answer).
            final BitSet keep = (BitSet) lost.clone();
            if (!draining) {
                keep.and(fenced);
            }
            dropped.andNot(keep);
            keptMoved.or(keep);
            // A kept slot given back with no restore order to load it: what it kept is of before, not to be served.
            final BitSet back = (BitSet) gained.clone();
            back.and(keptMoved);
            back.andNot(ownership.view().restoring());
            keptMoved.andNot(back);
            returnedEmpty.andNot(lost);
            returnedEmpty.or(back);
            dropped.or(back);
            keptNow = keep.cardinality();
            if (!dropped.isEmpty()) {
                clearRows(dropped);
            }
            if (!gained.isEmpty()) {
                for (final ParameterTable table : tables.values()) {
                    table.materializeDense(gained::get);
                }
            }
        }
        if (!dropped.isEmpty()) {
            // Their rows are gone from here: no adopted capture vouches for them if they come back.
            sequences.rowsReplaced(dropped);
        }
        LOG.info(
                "shard {} at routing epoch {}: owns {} slots (gained {}, lost {}, of which {} kept until their move is"
                        + " done)",
                shardId,
                routing.getEpoch(),
                owned.cardinality(),
                gained.cardinality(),
                lost.cardinality(),
                keptNow);
    }

    /**
     * A heartbeat answer's list of the slots this shard gave away in moves not done yet: drops the rows it kept of
     * every other slot it gave away (their new owners serve them now).
     */
    void keepMovedSlots(final List<Integer> keep) throws InterruptedException {
        final BitSet released;
        synchronized (keptMoved) {
            if (keptMoved.isEmpty()) {
                return;
            }
            released = (BitSet) keptMoved.clone();
            keep.forEach(slot -> {
                if (slot >= 0 && slot < Slots.SLOT_COUNT) {
                    released.clear(slot);
                }
            });
            if (released.isEmpty()) {
                return;
            }
            keptMoved.andNot(released);
            clearRows(released);
        }
        sequences.rowsReplaced(released);
        LOG.info("shard {}: dropped the rows it kept of {} slots it gave away (moved)", name(), released.cardinality());
    }

    /**
     * Where a draining shard's hand-over stands, once it follows the proxy's routing after the hand-over: {@code OWNS}
     * while it owns slots it does not restore (none was handed over, or the proxy gave them back with the rows kept
     * here: they must be handed over again), {@code KEEPS} while it keeps rows of slots given away (see {@link
     * #keepMovedSlots}), {@code DONE} when neither.
     */
    HandOver handOverState() {
        synchronized (keptMoved) {
            final SlotOwnership.View view = ownership.view();
            final BitSet serving = (BitSet) view.owned().clone();
            serving.andNot(view.restoring());
            if (!serving.isEmpty()) {
                return HandOver.OWNS;
            }
            return keptMoved.isEmpty() && view.restoring().isEmpty() ? HandOver.DONE : HandOver.KEEPS;
        }
    }

    /** See {@link #handOverState}. */
    enum HandOver {
        OWNS,
        KEEPS,
        DONE
    }

    /**
     * A move of {@code slots} is undone (a take-back order, before its slots are marked restoring): those this shard
     * still owns and serves never left it (it did not hear of the move before it was undone, and refused their writes
     * meanwhile as fenced or draining), so their rows are kept as if it had heard.
     */
    void keepStillOwned(final BitSet slots) {
        synchronized (keptMoved) {
            final SlotOwnership.View view = ownership.view();
            final BitSet intact = (BitSet) slots.clone();
            intact.and(view.owned());
            intact.andNot(view.restoring());
            intact.andNot(returnedEmpty);
            keptMoved.or(intact);
        }
    }

    /** Slots given away in a move whose rows are still kept here (see {@link #keepMovedSlots}). */
    public int keptMovedSlotCount() {
        synchronized (keptMoved) {
            return keptMoved.cardinality();
        }
    }

    /**
     * A move undone: if this shard kept the rows of all of {@code slots} (marked restoring by the caller), serves them
     * again as they are and returns true; else returns false and keeps nothing of them (the caller restores them).
     */
    boolean takeBackKeptRows(final BitSet slots) throws InterruptedException {
        synchronized (keptMoved) {
            final BitSet missing = (BitSet) slots.clone();
            missing.andNot(keptMoved);
            if (missing.isEmpty()) {
                keptMoved.andNot(slots);
                ownership.endRestore(slots);
                LOG.warn(
                        "shard {}: serves again the rows it kept of {} slots (their move was undone)",
                        name(),
                        slots.cardinality());
                return true;
            }
        }
        forgetKept(slots);
        return false;
    }

    /** Removes every table's rows of {@code slots} (each partition's writer removes them behind its queued pushes). */
    private void clearRows(final BitSet slots) throws InterruptedException {
        for (final ParameterTable table : tables.values()) {
            table.clearSlots(slots::get);
        }
    }

    /** Rows kept of {@code slots} are about to be replaced (by a restore): they are no longer kept. */
    private void forgetKept(final BitSet slots) {
        synchronized (keptMoved) {
            keptMoved.andNot(slots);
        }
    }

    // ---- checkpoints

    /**
     * Writes every table's rows for the owned slots as checkpoint {@code checkpointId} under {@code root}: the rows as
     * they were at one cut (after the pushes queued before it), streamed to part files while pushes go on being
     * applied (see {@link ShardSnapshot}). Heap use is bounded by the part buffers and the snapshot's limits, not by
     * the number of rows.
     */
    public WrittenCheckpoint writeCheckpoint(final URI root, final long checkpointId)
            throws IOException, InterruptedException {
        return writeCheckpoint(root, checkpointId, RowFileWriter.Options.defaults(), null, 0, false);
    }

    /**
     * As {@link #writeCheckpoint(URI, long)}, the files written with {@code options} (codec, replication, block), for
     * exactly the slots {@code slots} (null: every owned slot).
     *
     * @throws PsException UNAVAILABLE if one of {@code slots} is not owned, or is restoring, at any time from before
     *     the cut until after it (the routing moved while the checkpoint began).
     */
    public WrittenCheckpoint writeCheckpoint(
            final URI root,
            final long checkpointId,
            final RowFileWriter.Options options,
            final BitSet slots,
            final long sinceId,
            final boolean delta)
            throws IOException, InterruptedException {
        // Not the shard's monitor: the heartbeat thread takes that to extend the lease while the files are written.
        checkpointLock.lockInterruptibly();
        try {
            final CheckpointProgressBoard.Write progress = progressBoard.beginWrite(checkpointId);
            try {
                final WrittenCheckpoint written =
                        writeCheckpointLocked(root, checkpointId, options, slots, sinceId, delta, progress);
                progress.progress.succeeded();
                return written;
            } catch (IOException | InterruptedException | RuntimeException | Error e) {
                progress.progress.failed(e.getMessage() == null ? e.toString() : e.getMessage());
                throw e;
            }
        } finally {
            checkpointLock.unlock();
        }
    }

    /**
     * How far this shard's write of checkpoint {@code checkpointId} has come, and the restores under way here (the
     * {@code CheckpointProgress} call).
     */
    public io.pscluster.proto.v1.CheckpointProgressResponse checkpointProgress(final long checkpointId) {
        return progressBoard.answer(checkpointId);
    }

    /**
     * Fault point {@link FaultPoints#SLOW_CHECKPOINT}: while on, a checkpoint write waits {@code nanos} after each
     * batch of rows it takes from the snapshot, and a restore after each batch it loads (0: off).
     */
    void slowCheckpoints(final long nanos) {
        checkpointDelayNanos = nanos;
    }

    private void faultDelay() {
        final long nanos = checkpointDelayNanos;
        if (nanos > 0) {
            LockSupport.parkNanos(nanos);
        }
    }

    private WrittenCheckpoint writeCheckpointLocked(
            final URI root,
            final long checkpointId,
            final RowFileWriter.Options options,
            final BitSet slots,
            final long sinceId,
            final boolean delta,
            final CheckpointProgressBoard.Write progress)
            throws IOException, InterruptedException {
        final SlotOwnership.View before = ownership.view();
        final BitSet covered = slots == null ? (BitSet) before.owned().clone() : (BitSet) slots.clone();
        checkCheckpointSlots(before, before, covered);
        final CheckpointStore store = store(root);
        final Path dir = store.checkpointDir(checkpointId);
        final List<ParameterTable> snapshotTables = new ArrayList<>(tables.values());
        final Cut since = cuts.get(sinceId);
        if (delta) {
            checkDeltaPossible(sinceId, since, covered, snapshotTables);
        }
        final ShardSnapshot.Epochs epochs =
                new ShardSnapshot.Epochs(++cutEpochs, delta ? since.epoch() : 0, since == null ? 0 : since.epoch());
        final long partBytes = partBytesSetting > 0 ? partBytesSetting : partBufferBytes(snapshotTables.size());
        final ShardSnapshot snapshot;
        final AtomicReference<List<PushSequenceWindows.Captured>> windowsAtCut = new AtomicReference<>(List.of());
        try {
            snapshot = ShardSnapshot.begin(
                    writers,
                    snapshotTables,
                    covered::get,
                    snapshotLimits,
                    offerCut -> offerCutBetweenPushes(() -> {
                        offerCut.run();
                        // No push is between its check and its record: every sequence accepted so far is of a push
                        // queued ahead of the cut, whose effect the checkpoint holds.
                        windowsAtCut.set(sequences.capture());
                    }),
                    epochs);
        } catch (IllegalStateException busy) {
            throw PsException.unavailable("shard " + shardId + " cannot checkpoint now: " + busy.getMessage());
        }
        long rowsTotal = 0;
        long bytesTotal = 0;
        for (final ParameterTable table : snapshotTables) {
            final long rows = table.rowCount();
            rowsTotal += rows;
            bytesTotal += rows * (8L + 4L * table.rowWidth());
        }
        progress.progress.addTotals(rowsTotal, bytesTotal);
        progress.cutMarked();
        final List<CheckpointFile> files = new ArrayList<>();
        try (snapshot) {
            checkCheckpointSlots(before, ownership.view(), covered);
            if (snapshot.deltaImpossible()) {
                throw PsException.failedPrecondition("shard " + shardId + " cannot write a delta since checkpoint "
                        + sinceId
                        + ": a partition no longer knows every write and removal since (its removal log overflowed, or"
                        + " a later checkpoint pruned what it kept); take a base");
            }
            final CheckpointParts[] parts = new CheckpointParts[snapshotTables.size()];
            final CheckpointParts[] removed = new CheckpointParts[snapshotTables.size()];
            for (int t = 0; t < parts.length; t++) {
                final ParameterTable table = snapshotTables.get(t);
                parts[t] = new CheckpointParts(
                                store.fileSystem(),
                                dir,
                                shardId,
                                table,
                                checkpointId,
                                options,
                                partBytes,
                                false,
                                checkpointOutput)
                        .countInto(progress.progress);
                // A base has no removed keys: its buffer holds one.
                removed[t] = new CheckpointParts(
                                store.fileSystem(),
                                dir,
                                shardId,
                                table,
                                checkpointId,
                                options,
                                delta ? partBytes / 4 : 0,
                                true,
                                checkpointOutput)
                        .countInto(progress.progress);
            }
            while (!snapshot.done()) {
                final SnapshotBatch batch = snapshot.poll(100, TimeUnit.MILLISECONDS);
                if (batch != null) {
                    try {
                        (batch.removedKeys() ? removed : parts)[batch.table()].add(batch);
                        progress.rowsCopied.addAndGet(batch.rows());
                    } finally {
                        snapshot.release(batch);
                    }
                    faultDelay();
                }
            }
            for (int t = 0; t < parts.length; t++) {
                files.addAll(parts[t].finish());
                files.addAll(removed[t].finish());
            }
        }
        rememberCut(checkpointId, sinceId, epochs.cutEpoch(), covered, snapshotTables);
        final long heldMicros = snapshot.heldPushNanos() / 1000;
        LOG.info(
                "shard {} wrote checkpoint {}: {} files; the cut took {} us (pushes waited only while it was offered),"
                        + " the copy held pushes for {} us"
                        + " (at most {} bytes of changed rows kept aside per partition)",
                shardId,
                checkpointId,
                files.size(),
                snapshot.cutMicros(),
                heldMicros,
                snapshot.peakSavedBytes());
        return new WrittenCheckpoint(
                files,
                snapshot.cutMicros(),
                covered,
                heldMicros,
                snapshot.peakSavedBytes(),
                PushSequenceWindows.encode(windowsAtCut.get()));
    }

    /**
     * Sets how checkpoints use memory: the snapshot's batches and limit of rows kept aside per partition, and the heap
     * of each table's part buffer (so of each part file; 0: an eighth of the heap split among the tables).
     */
    public void tuneCheckpoints(final ShardSnapshot.Limits limits, final long partBufferBytes) {
        this.snapshotLimits = limits;
        this.partBytesSetting = partBufferBytes;
    }

    /** A cut this shard took: its epoch, the slots it covered and the tables it held (by identity). */
    private record Cut(int epoch, BitSet covered, Map<String, ParameterTable> tables) {}

    /**
     * One checkpoint at a time on this shard; guards {@link #cuts} and {@link #cutEpochs}. A lock rather than a
     * monitor so that a restore can take its cut only if no checkpoint is being written (it does not wait for one).
     */
    private final ReentrantLock checkpointLock = new ReentrantLock();

    /** The cuts of the last checkpoints written here, for deltas. */
    private final Map<Long, Cut> cuts = new LinkedHashMap<>();

    private int cutEpochs;

    /**
     * Remembers this cut, and forgets every other but the one of {@code sinceId} (the latest committed checkpoint): the
     * next delta's parent is one of the two, whether this checkpoint commits or fails.
     */
    private void rememberCut(
            final long checkpointId,
            final long sinceId,
            final int epoch,
            final BitSet covered,
            final List<ParameterTable> cutTables) {
        final Map<String, ParameterTable> byName = new LinkedHashMap<>();
        cutTables.forEach(table -> byName.put(table.name(), table));
        cuts.keySet().removeIf(id -> id != sinceId);
        cuts.put(checkpointId, new Cut(epoch, covered, byName));
    }

    /**
     * Takes a cut of the rows of {@code slots} just loaded from {@code checkpoint} (before they serve requests) and
     * remembers it as that checkpoint's, so that the next checkpoint can be a delta of it holding only what changed
     * since the restore, rather than every row restored. Exact because the loaded rows are marked written at or below
     * the cut's epoch and every later write above it (the same change marks a written checkpoint's cut uses), and
     * removals are logged from the cut on. The slots' state now is the checkpoint's chain, so the cut stands for that
     * checkpoint; it covers {@code slots} only, and holds the checkpoint's tables only: a delta asked for with other
     * slots (a shard that also serves slots of its own) or another table is refused, and the proxy takes a base.
     *
     * <p>Every other cut that holds one of {@code slots} is forgotten: a delta since it would be exact (the restore's
     * removals and rows are marked after it) but about as large as a base. Taken only if no checkpoint is being
     * written here (its snapshot owns the epochs); otherwise nothing is remembered and the next checkpoint of these
     * slots is a base.
     */
    private void rememberRestoredCut(final CheckpointInfo checkpoint, final BitSet slots) throws InterruptedException {
        if (!checkpointLock.tryLock()) {
            LOG.info(
                    "shard {}: a checkpoint is being written, so the restore of checkpoint {} takes no cut (the next"
                            + " checkpoint of its slots is a base)",
                    shardId,
                    checkpoint.id());
            return;
        }
        try {
            cuts.values().removeIf(cut -> cut.covered().intersects(slots));
            final int epoch = ++cutEpochs;
            final Map<String, ParameterTable> byName = new LinkedHashMap<>();
            for (final Manifest.TableEntry entry : checkpoint.manifest().tables()) {
                final ParameterTable table = tables.get(entry.name());
                if (table == null || !table.markCut(epoch)) {
                    return;
                }
                byName.put(table.name(), table);
            }
            cuts.put(checkpoint.id(), new Cut(epoch, (BitSet) slots.clone(), byName));
        } finally {
            checkpointLock.unlock();
        }
    }

    /**
     * A delta since checkpoint {@code sinceId} needs this shard's own cut of it, of the same slots and the same tables
     * (a table created or re-created since holds rows that cut did not see).
     */
    private void checkDeltaPossible(
            final long sinceId, final Cut since, final BitSet covered, final List<ParameterTable> now) {
        final String refusal = "shard " + shardId + " cannot write a delta since checkpoint " + sinceId + ": ";
        if (since == null) {
            throw PsException.failedPrecondition(
                    refusal + "it did not write that checkpoint (restarted or new); take" + " a base");
        }
        if (!since.covered().equals(covered)) {
            throw PsException.failedPrecondition(refusal + "its slots changed since; take a base");
        }
        for (final ParameterTable table : now) {
            if (since.tables().get(table.name()) != table) {
                throw PsException.failedPrecondition(
                        refusal + "table '" + table.name() + "' was created since; take a base");
            }
        }
    }

    /**
     * Refuses a checkpoint of {@code slots} unless every one is owned and not restoring in {@code now}, with the
     * generation it had in {@code before} (so it did not move away and back in between).
     */
    private void checkCheckpointSlots(
            final SlotOwnership.View before, final SlotOwnership.View now, final BitSet slots) {
        for (int slot = slots.nextSetBit(0); slot >= 0; slot = slots.nextSetBit(slot + 1)) {
            if (!now.owned().get(slot) || now.generationOf(slot) != before.generationOf(slot)) {
                throw PsException.unavailable("shard " + shardId + " cannot checkpoint slot " + slot
                        + ": it does not own it at routing epoch " + now.epoch()
                        + " (or it moved while the checkpoint was cut); the proxy's routing is ahead or behind");
            }
            if (now.restoring().get(slot)) {
                throw PsException.unavailable("shard " + shardId + " is restoring slot " + slot
                        + " (and " + (now.restoring().cardinality() - 1)
                        + " more); a checkpoint now would miss their rows");
            }
        }
    }

    /**
     * Counts this thread's push (or SYNC clock) into {@link #pushesInFlight}, first waiting out a cut being offered;
     * the caller decrements it once its offers are done. With the cut's side (set {@code cutting}, then wait for no
     * push in flight), each sees the other's write (both are sequentially consistent), so a push is offered wholly
     * before or wholly after a cut in every partition it touches.
     */
    private void enterOffers() {
        while (true) {
            pushesInFlight.incrementAndGet();
            if (!cutting) {
                return;
            }
            pushesInFlight.decrementAndGet();
            while (cutting) {
                LockSupport.parkNanos(10_000);
            }
        }
    }

    /**
     * Runs {@code offerCut} once no push is in the middle of its offers, holding new ones back meanwhile (the cut's
     * control tasks are only queued here, so pushes wait microseconds, not for the writers).
     */
    private void offerCutBetweenPushes(final Runnable offerCut) {
        // One at a time: a snapshot's cut, a move's fence.
        synchronized (cutLock) {
            cutting = true;
            try {
                while (pushesInFlight.get() > 0) {
                    LockSupport.parkNanos(10_000);
                }
                offerCut.run();
            } finally {
                cutting = false;
            }
        }
    }

    /** Heap for the part buffers of one checkpoint: an eighth of the heap, split among the tables, 1-64 MiB each. */
    private static long partBufferBytes(final int tableCount) {
        final long share = Runtime.getRuntime().maxMemory() / 8 / Math.max(1, tableCount);
        return Math.max(1L << 20, Math.min(64L << 20, share));
    }

    /**
     * What a shard wrote for one checkpoint: its files, the slots they cover (empty ones included), how long the cut
     * and the copy held pushes back, and the most memory a partition kept for rows changed ahead of the copy.
     */
    public record WrittenCheckpoint(
            List<CheckpointFile> files,
            long snapshotMicros,
            BitSet covered,
            long heldPushMicros,
            long peakSavedBytes,
            PushWindows pushWindows) {}

    /**
     * Replaces the rows of {@code slots} with those of checkpoint {@code checkpointId}, after verifying its
     * checksums. Requests for those slots are refused with a retryable status until the restore ends. Tables the
     * checkpoint holds and the shard lacks are created.
     *
     * @return rows restored: those the checkpoint holds for {@code slots} (of a delta, what its chain leaves there).
     */
    public long restore(final URI root, final long checkpointId, final BitSet slots)
            throws IOException, InterruptedException {
        final CheckpointProgressBoard.Restore progress = progressBoard.beginRestore(checkpointId, slots.cardinality());
        try {
            final long rows = restore(root, checkpointId, slots, progress);
            progress.progress().succeeded();
            return rows;
        } catch (IOException | InterruptedException | RuntimeException | Error e) {
            progress.progress().failed(messageOf(e));
            throw e;
        }
    }

    private static String messageOf(final Throwable e) {
        return e.getMessage() == null ? e.toString() : e.getMessage();
    }

    private long restore(
            final URI root, final long checkpointId, final BitSet slots, final CheckpointProgressBoard.Restore progress)
            throws IOException, InterruptedException {
        markRestoring(slots);
        final CheckpointStore store = store(root);
        final CheckpointInfo checkpoint;
        final java.util.Set<String> restoredTables;
        try {
            checkpoint = store.get(checkpointId)
                    .orElseThrow(() -> PsException.notFound(
                            "checkpoint " + checkpointId + " under " + root + " does not exist or has no manifest"));
            try {
                store.verify(checkpoint, progress.progress());
            } catch (CheckpointCorruptException corrupt) {
                markDamaged(store, checkpointId, corrupt);
                throw PsException.dataLoss("checkpoint " + checkpointId + " is damaged: " + corrupt.getMessage());
            } catch (UncheckedIOException outage) {
                throw outage.getCause();
            }
            // An operator's restore: refused whole, nothing changed, rather than a live table's rows emptied.
            restoredTables = createTables(store, checkpoint, new StringBuilder(), true, java.util.Set.of());
        } catch (IOException | RuntimeException e) {
            // Nothing was changed yet: the slots keep serving what they held.
            ownership.endRestore(slots);
            throw e;
        }
        // From here a failure leaves the slots refusing requests: better unavailable than half restored.
        try {
            return load(
                    store, checkpoint, slots, progress, restoredTables, new StringBuilder(), RestoreCheck.NONE, true);
        } catch (CheckpointCorruptException corrupt) {
            // Damage the verification could not see (a replica rotted on disk matches its stored checksums).
            markDamaged(store, checkpointId, corrupt);
            throw PsException.dataLoss("checkpoint " + checkpointId + " is damaged: " + corrupt.getMessage());
        }
    }

    /**
     * The checkpoint of a move's restore order is damaged, and the order forbids falling back to an older one: the
     * giving shard kept the rows, and the proxy hands them back to it.
     */
    public static final class MoveCheckpointDamagedException extends IOException {
        private static final long serialVersionUID = 1L;

        MoveCheckpointDamagedException(final String damage) {
            super(damage);
        }
    }

    /** How often each table name was dropped here so far (a copy). */
    Map<String, Long> tableDrops() {
        return Map.copyOf(tableDrops);
    }

    /**
     * Asked at the end of a restore order's load, before its slots serve: which of the tables it loaded (from a
     * checkpoint taken at {@code checkpointMillis}) were dropped, or dropped and created anew, since the order was
     * issued. Their rows in the slots are of the dropped table: they are cleared, not served.
     */
    @FunctionalInterface
    public interface RestoreCheck {
        RestoreCheck NONE = (loaded, checkpointMillis) -> java.util.Set.of();

        java.util.Set<String> droppedSince(java.util.Set<String> loaded, long checkpointMillis);
    }

    /** What a restore order loaded: the checkpoint (and when it was taken), its rows, and a note (fallback). */
    public record RestoreOutcome(long checkpointId, long createdMillis, long rows, String note) {}

    /**
     * Carries out one attempt at a proxy's restore order for {@code slots}, which the caller has already marked
     * restoring. Ends the mark only on success: after any failure the slots keep refusing requests (never serving
     * initial values) until a later attempt succeeds.
     *
     * <p>Checkpoint 0 means none exists: the slots start empty. A damaged checkpoint (a {@link
     * CheckpointCorruptException} or DATA_LOSS: bad checksum, truncated, missing file or block, no manifest) makes the
     * restore fall back to the next older complete checkpoint, and the outcome's note says so. Any other I/O failure
     * is thrown as it is, for the caller to retry the same order.
     *
     * @throws IOException a transient failure, or every candidate checkpoint is damaged (the message says which).
     */
    public RestoreOutcome restoreOrder(final URI root, final long checkpointId, final BitSet slots)
            throws IOException, InterruptedException {
        return restoreOrder(root, checkpointId, slots, Map.of());
    }

    /**
     * As {@link #restoreOrder(URI, long, BitSet)}, with when the catalog's tables were created ({@code createdMillis},
     * the proxy's wall clock): what a checkpoint committed before a table was created holds under its name is of a
     * table dropped since, so that table's restored slots start empty, said in the outcome's note.
     */
    public RestoreOutcome restoreOrder(
            final URI root, final long checkpointId, final BitSet slots, final Map<String, Long> createdMillis)
            throws IOException, InterruptedException {
        return restoreOrder(root, checkpointId, slots, createdMillis, true, RestoreCheck.NONE, true);
    }

    /**
     * As {@link #restoreOrder(URI, long, BitSet, Map)}. With {@code fallBack} false a damaged checkpoint is not
     * replaced by an older one (the order of a move whose giver kept the rows): {@link MoveCheckpointDamagedException}
     * instead. {@code check} is asked before the slots serve; with {@code serve} false they stay refused once loaded
     * (a move's, until its proxy has heard it is done: see {@link #serveRestored}).
     */
    public RestoreOutcome restoreOrder(
            final URI root,
            final long checkpointId,
            final BitSet slots,
            final Map<String, Long> createdMillis,
            final boolean fallBack,
            final RestoreCheck check,
            final boolean serve)
            throws IOException, InterruptedException {
        final CheckpointProgressBoard.Restore progress = progressBoard.beginRestore(checkpointId, slots.cardinality());
        try {
            final RestoreOutcome outcome =
                    restoreOrder(root, checkpointId, slots, createdMillis, fallBack, check, serve, progress);
            progress.progress().succeeded();
            return outcome;
        } catch (IOException | InterruptedException | RuntimeException | Error e) {
            progress.progress().failed(messageOf(e));
            throw e;
        }
    }

    private RestoreOutcome restoreOrder(
            final URI root,
            final long checkpointId,
            final BitSet slots,
            final Map<String, Long> createdMillis,
            final boolean fallBack,
            final RestoreCheck check,
            final boolean serve,
            final CheckpointProgressBoard.Restore progress)
            throws IOException, InterruptedException {
        markRestoring(slots);
        forgetKept(slots);
        if (checkpointId == 0) {
            for (final ParameterTable table : tables.values()) {
                table.clearSlots(slots::get);
                table.materializeDense(slots::get);
            }
            sequences.rowsReplaced(slots);
            if (serve) {
                ownership.endRestore(slots);
            }
            final String note = "no checkpoint exists: " + slots.cardinality() + " slots start empty";
            LOG.warn("shard {}: {}", name(), note);
            return new RestoreOutcome(0, 0, 0, note);
        }
        final CheckpointStore store = store(root);
        final StringBuilder damage = new StringBuilder();
        final StringBuilder notes = new StringBuilder();
        Optional<CheckpointInfo> ordered;
        try {
            ordered = store.get(checkpointId);
            if (ordered.isEmpty()) {
                // Deleted, or the proxy's root is not where the checkpoint was written.
                damage.append("checkpoint ")
                        .append(checkpointId)
                        .append(" is not under ")
                        .append(root);
                damage.append(" (no manifest: deleted, or not the root it was written to)");
            }
        } catch (CheckpointCorruptException corrupt) {
            ordered = Optional.empty();
            damage.append("checkpoint ")
                    .append(checkpointId)
                    .append(" damaged: ")
                    .append(corrupt.getMessage());
        }
        if (ordered.isPresent()) {
            final long rows =
                    tryLoad(store, ordered.get(), slots, createdMillis, check, serve, damage, notes, progress);
            if (rows >= 0) {
                return new RestoreOutcome(
                        checkpointId, ordered.get().manifest().createdMillis(), rows, notes.toString());
            }
        }
        if (!fallBack) {
            throw new MoveCheckpointDamagedException(damage.toString());
        }
        for (final CheckpointInfo older : store.list()) {
            if (older.id() >= checkpointId) {
                continue;
            }
            notes.setLength(0);
            final long rows = tryLoad(store, older, slots, createdMillis, check, serve, damage, notes, progress);
            if (rows >= 0) {
                final String note =
                        damage + "; restored checkpoint " + older.id() + (notes.length() > 0 ? "; " + notes : "");
                LOG.warn("shard {} fell back for {} slots: {}", name(), slots.cardinality(), note);
                return new RestoreOutcome(older.id(), older.manifest().createdMillis(), rows, note);
            }
        }
        throw new IOException(damage + "; no older complete checkpoint under " + root + " is intact");
    }

    /**
     * Verifies and loads {@code checkpoint}; returns its rows, or -1 after appending why it is damaged to
     * {@code damage}.
     *
     * @throws IOException a failure that is not damage.
     */
    private long tryLoad(
            final CheckpointStore store,
            final CheckpointInfo checkpoint,
            final BitSet slots,
            final Map<String, Long> createdMillis,
            final RestoreCheck check,
            final boolean serve,
            final StringBuilder damage,
            final StringBuilder notes,
            final CheckpointProgressBoard.Restore progress)
            throws IOException, InterruptedException {
        progress.checkpointId(checkpoint.id());
        try {
            try {
                store.verify(checkpoint, progress.next("verifying"));
            } catch (UncheckedIOException outage) {
                throw outage.getCause();
            }
            final java.util.Set<String> createdSince = new java.util.HashSet<>();
            createdMillis.forEach((table, created) -> {
                if (created > checkpoint.manifest().createdMillis()) {
                    createdSince.add(table);
                }
            });
            return load(
                    store,
                    checkpoint,
                    slots,
                    progress,
                    createTables(store, checkpoint, notes, false, createdSince),
                    notes,
                    check,
                    serve);
        } catch (CheckpointCorruptException corrupt) {
            damageFound(damage, checkpoint.id(), corrupt.getMessage());
            markDamaged(store, checkpoint.id(), corrupt);
        } catch (PsException e) {
            if (e.code() != Status.Code.DATA_LOSS) {
                throw e;
            }
            damageFound(damage, checkpoint.id(), e.getMessage());
            markDamaged(store, checkpoint.id(), new CheckpointCorruptException(e.getMessage()));
        }
        return -1;
    }

    /** Says in {@code damage} why a checkpoint is damaged. */
    private static void damageFound(final StringBuilder damage, final long checkpointId, final String why) {
        if (damage.length() > 0) {
            damage.append("; ");
        }
        damage.append("checkpoint ").append(checkpointId).append(" damaged: ").append(why);
    }

    /**
     * Marks a checkpoint found damaged in its directory, so that retention never counts it among the newest, also after
     * the proxy restarts ({@link CheckpointStore#markDamaged(long, CheckpointCorruptException)}: not for blocks that
     * are only unreadable now); a mark that cannot be written is logged.
     */
    private static void markDamaged(
            final CheckpointStore store, final long checkpointId, final CheckpointCorruptException corrupt) {
        try {
            store.markDamaged(checkpointId, corrupt);
        } catch (IOException | RuntimeException e) {
            LOG.warn("could not mark checkpoint {} damaged: {}", checkpointId, e.toString());
        }
    }

    /**
     * Creates the tables {@code checkpoint} holds that this shard lacks; returns the names of those whose rows it
     * restores. A table here with another schema than the checkpoint's is a later one of that name (the cluster's
     * catalog names it; the checkpoint's was dropped since): its rows cannot go into it, so the restored slots start
     * empty in it, said in {@code notes}, rather than every attempt of the restore failing on a table it cannot change
     * (with {@code refuseOtherSchema}, an operator's restore, it is refused instead: nothing changed). A table no shard
     * could create and of which the checkpoint holds no rows is left out the same way.
     */
    private java.util.Set<String> createTables(
            final CheckpointStore store,
            final CheckpointInfo checkpoint,
            final StringBuilder notes,
            final boolean refuseOtherSchema,
            final java.util.Set<String> createdSince)
            throws IOException, InterruptedException {
        final List<TableSchema> schemas = new ArrayList<>();
        for (final Manifest.TableEntry entry : checkpoint.manifest().tables()) {
            schemas.add(TableSchemas.normalize(parseSchema(entry)));
        }
        final List<String> createdAgain = schemas.stream()
                .filter(schema -> {
                    final ParameterTable live = tables.get(schema.getName());
                    return live != null && !live.schema().equals(schema);
                })
                .map(TableSchema::getName)
                .toList();
        if (refuseOtherSchema && !createdAgain.isEmpty()) {
            // Before any table is created.
            throw PsException.alreadyExists("table(s) " + createdAgain + " of checkpoint " + checkpoint.id()
                    + " have another schema than the tables of those names here (created again since); drop them"
                    + " first to restore the checkpoint's, or restore another checkpoint");
        }
        final java.util.Set<String> restored = new java.util.HashSet<>();
        for (final TableSchema schema : schemas) {
            if (createdSince.contains(schema.getName()) && !createdAgain.contains(schema.getName())) {
                note(
                        notes,
                        "table '" + schema.getName() + "' was dropped (and maybe created anew) after checkpoint "
                                + checkpoint.id() + " was taken: the checkpoint's rows of that name are of the"
                                + " dropped table, not restored; the restored slots start empty in it");
                continue;
            }
            if (createdAgain.contains(schema.getName())) {
                note(
                        notes,
                        "table '" + schema.getName() + "' of checkpoint " + checkpoint.id()
                                + " has another schema than the table of that name here (created again since): its"
                                + " rows are not restored, the restored slots start empty in it");
                continue;
            }
            try {
                createTable(schema);
            } catch (PsException refused) {
                // A table no shard could create (a dense table larger than the off-heap budget) is in the catalog, so
                // in every checkpoint, with no rows: it must not fail every restore. One with rows fails it, as ever.
                if (refused.code() != Status.Code.RESOURCE_EXHAUSTED
                        || holdsRows(store, checkpoint, schema.getName())) {
                    throw refused;
                }
                note(
                        notes,
                        "table '" + schema.getName() + "' of checkpoint " + checkpoint.id()
                                + " holds no rows and cannot be created here (" + refused.getMessage()
                                + "): restored without it");
                continue;
            }
            restored.add(schema.getName());
        }
        return restored;
    }

    /** Whether any checkpoint of {@code checkpoint}'s chain holds rows of {@code table}. */
    private static boolean holdsRows(final CheckpointStore store, final CheckpointInfo checkpoint, final String table)
            throws IOException {
        for (final CheckpointInfo link : store.chain(checkpoint)) {
            for (final Manifest.FileEntry entry : link.manifest().files()) {
                if (entry.table().equals(table)
                        && !entry.removedKeys()
                        && entry.file().rows() > 0) {
                    return true;
                }
            }
        }
        return false;
    }

    private void note(final StringBuilder notes, final String note) {
        LOG.warn("shard {}: {}", name(), note);
        if (notes.length() > 0) {
            notes.append("; ");
        }
        notes.append(note);
    }

    /**
     * Replaces the rows of {@code slots} (already marked restoring) with the checkpoint's, then serves them. A
     * failure leaves them restoring.
     */
    private long load(
            final CheckpointStore store,
            final CheckpointInfo checkpoint,
            final BitSet slots,
            final CheckpointProgressBoard.Restore restore,
            final java.util.Set<String> tableNames,
            final StringBuilder notes,
            final RestoreCheck check,
            final boolean serve)
            throws IOException, InterruptedException {
        final Progress progress = restore.next("loading");
        // Pushes queued before the restore began are applied (then overwritten) before the slots are cleared.
        clearRows(slots);
        long rows = 0;
        final FileSystem fs = store.fileSystem();
        // A delta restores on top of its chain: the base, then each delta's removed keys and rows, oldest first.
        final List<CheckpointInfo> chain = store.chain(checkpoint);
        for (final CheckpointInfo link : chain) {
            for (final Manifest.FileEntry entry : link.manifest().files()) {
                if (tableNames.contains(entry.table())
                        && intersects(entry.file().slots(), slots)) {
                    progress.addTotals(entry.file().rows(), entry.file().length());
                }
            }
        }
        reserveRows(chain, tableNames, slots);
        for (final CheckpointInfo link : chain) {
            for (final Manifest.FileEntry entry : link.manifest().files()) {
                if (entry.removedKeys()
                        && tableNames.contains(entry.table())
                        && intersects(entry.file().slots(), slots)) {
                    removeKeysOf(fs, link, entry, slots, progress);
                }
            }
            for (final Manifest.FileEntry entry : link.manifest().files()) {
                if (!entry.removedKeys()
                        && tableNames.contains(entry.table())
                        && intersects(entry.file().slots(), slots)) {
                    rows += restoreFile(fs, link, entry, slots, progress);
                }
            }
        }
        if (chain.size() > 1) {
            // A chain loads a row once per link that holds it: count what the slots hold of the checkpoint instead.
            rows = 0;
            for (final String name : tableNames) {
                rows += table(name).countRows(slots::get);
            }
        }
        for (final String name :
                check.droppedSince(tableNames, checkpoint.manifest().createdMillis())) {
            // Dropped (and maybe created anew) while this ran: its rows here are of the dropped table.
            final ParameterTable dropped = tables.get(name);
            if (dropped != null) {
                dropped.clearSlots(slots::get);
            }
            note(
                    notes,
                    "table '" + name + "' was dropped (and maybe created anew) while checkpoint " + checkpoint.id()
                            + " was loaded: its rows are of the dropped table, not restored; the restored slots start"
                            + " empty in it");
        }
        for (final ParameterTable table : tables.values()) {
            table.materializeDense(slots::get);
        }
        rememberRestoredCut(checkpoint, slots);
        adoptPushWindows(checkpoint, slots, notes);
        if (serve) {
            ownership.endRestore(slots);
        }
        LOG.info(
                "shard {} restored {} rows of {} slots from checkpoint {}",
                name(),
                rows,
                slots.cardinality(),
                checkpoint.id());
        return rows;
    }

    /**
     * Sizes the indexes of the tables that hold no rows yet for the rows the chain will put in them (a file's rows
     * counted in proportion to its slots among {@code slots}), so that they do not grow while the rows come in.
     */
    private void reserveRows(
            final List<CheckpointInfo> chain, final java.util.Set<String> tableNames, final BitSet slots)
            throws InterruptedException {
        final Map<String, Long> rows = new LinkedHashMap<>();
        for (final CheckpointInfo link : chain) {
            for (final Manifest.FileEntry entry : link.manifest().files()) {
                final int[] fileSlots = entry.file().slots();
                if (entry.removedKeys() || !tableNames.contains(entry.table()) || fileSlots.length == 0) {
                    continue;
                }
                int wanted = 0;
                for (final int slot : fileSlots) {
                    if (slots.get(slot)) {
                        wanted++;
                    }
                }
                rows.merge(entry.table(), entry.file().rows() * wanted / fileSlots.length, Long::sum);
            }
        }
        for (final Map.Entry<String, Long> table : rows.entrySet()) {
            table(table.getKey()).reserveRows(table.getValue(), slots);
        }
    }

    /** Removes the keys a delta's file lists (of the slots {@code slots} holds) from the table. */
    private void removeKeysOf(
            final FileSystem fs,
            final CheckpointInfo checkpoint,
            final Manifest.FileEntry entry,
            final BitSet slots,
            final Progress progress)
            throws IOException, InterruptedException {
        final ParameterTable table = table(entry.table());
        final long[] keys = new long[RESTORE_BATCH_ROWS];
        final int[] count = {0};
        final FileProgress counted = new FileProgress(progress, entry.file());
        try {
            RowFileReader.read(fs, checkpoint.dir(), entry.file(), slots::get, (slot, key, record) -> {
                keys[count[0]] = key;
                if (++count[0] == RESTORE_BATCH_ROWS) {
                    try {
                        table.removeKeys(keys, count[0]);
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                        throw PsException.unavailable("restore of table '" + table.name() + "' was interrupted");
                    }
                    counted.rows(count[0]);
                    count[0] = 0;
                    faultDelay();
                }
            });
        } catch (CheckpointCorruptException damaged) {
            // The file is the chain link's (a delta's parent, perhaps), not necessarily the checkpoint being restored.
            throw damaged.inCheckpoint(checkpoint.id());
        }
        table.removeKeys(keys, count[0]);
        counted.rows(count[0]);
        counted.end();
    }

    /**
     * Counts one file's rows into a restore's progress, and its bytes in proportion to them (a reader skips the slots
     * it does not want, so bytes read are not known row by row); the file's whole length once it is read.
     */
    private static final class FileProgress {
        private final Progress progress;
        private final long length;
        private final long fileRows;
        private long rows;
        private long bytes;

        FileProgress(final Progress progress, final io.pscluster.checkpoint.RowFileInfo file) {
            this.progress = progress;
            this.length = file.length();
            this.fileRows = Math.max(1, file.rows());
        }

        void rows(final int count) {
            rows += count;
            progress.addRows(count);
            final long now = Math.min(length, (long) ((double) length * rows / fileRows));
            progress.addBytes(now - bytes);
            bytes = now;
        }

        void end() {
            progress.addBytes(length - bytes);
            bytes = length;
        }
    }

    /**
     * Loads one row file's rows of {@code slots}: the rows go as stored, split by partition on this thread, to the
     * writers, which put them in while this thread reads and decodes on (see {@link RowLoader}).
     */
    private long restoreFile(
            final FileSystem fs,
            final CheckpointInfo checkpoint,
            final Manifest.FileEntry entry,
            final BitSet slots,
            final Progress progress)
            throws IOException, InterruptedException {
        final ParameterTable table = table(entry.table());
        final int width = table.rowWidth();
        final RowLoader loader = table.loader();
        final FileProgress counted = new FileProgress(progress, entry.file());
        final long[] sinceDelay = {0};
        final long rows;
        try {
            rows = RowFileReader.readRuns(
                    fs, checkpoint.dir(), entry.file(), slots::get, (slot, bytes, at, n, rowWidth) -> {
                        if (rowWidth != width) {
                            throw PsException.dataLoss("checkpoint row of table '" + table.name() + "' has " + rowWidth
                                    + " floats; the table's rows have " + width);
                        }
                        try {
                            loader.add(slot, bytes, at, n);
                        } catch (InterruptedException e) {
                            // Stop reading at once: the loader is abandoned, writers may still be copying its batches.
                            Thread.currentThread().interrupt();
                            throw PsException.unavailable("restore of table '" + table.name() + "' was interrupted");
                        }
                        counted.rows(n);
                        sinceDelay[0] += n;
                        if (sinceDelay[0] >= RESTORE_BATCH_ROWS) {
                            sinceDelay[0] = 0;
                            faultDelay();
                        }
                    });
        } catch (CheckpointCorruptException damaged) {
            throw damaged.inCheckpoint(checkpoint.id());
        }
        loader.finish();
        counted.end();
        return rows;
    }

    /**
     * Adopts the push sequences the shards had accepted at {@code checkpoint}'s cut (its {@link
     * Manifest#PUSH_WINDOWS_PROPERTY} properties) for {@code slots}, whose rows were just loaded from it, before they
     * serve: a push whose answer was lost and that is retried here, its effect in those rows, is a repeat in the slots
     * whose rows came from this checkpoint, and only its keys in other slots are applied (a re-split part keeps its
     * request's sequence; a sequence accepted whole covers every part of it, one accepted in parts only the slots of
     * those parts). A property that
     * does not decode is skipped, said in {@code notes} (the restore's report) and logged: it costs that dedupe, not the
     * restore.
     */
    private void adoptPushWindows(final CheckpointInfo checkpoint, final BitSet slots, final StringBuilder notes) {
        // The rows of these slots are this checkpoint's now: no other capture vouches for them.
        sequences.rowsReplaced(slots);
        int adopted = 0;
        for (final Map.Entry<String, String> property :
                checkpoint.manifest().properties().entrySet()) {
            if (!property.getKey().startsWith(Manifest.PUSH_WINDOWS_PROPERTY)) {
                continue;
            }
            try {
                sequences.adopt(
                        checkpoint.id(),
                        property.getKey(),
                        PushWindows.parseFrom(java.util.Base64.getDecoder().decode(property.getValue())),
                        slots);
                adopted++;
            } catch (IllegalArgumentException | InvalidProtocolBufferException e) {
                final String note = "checkpoint " + checkpoint.id() + "'s " + property.getKey() + " does not decode ("
                        + e.getMessage() + "): retries of the pushes it names may be applied again";
                note(notes, note);
            }
        }
        if (adopted > 0) {
            LOG.info(
                    "shard {} took the push sequences of {} shards at checkpoint {}", name(), adopted, checkpoint.id());
        }
    }

    /** Refuses requests for {@code slots} (retryably) until a restore of them ends. */
    void markRestoring(final BitSet slots) {
        synchronized (keptMoved) {
            // A restore replaces their rows (a take-back first counted those still here as kept: keepStillOwned).
            returnedEmpty.andNot(slots);
        }
        ownership.beginRestore(slots);
    }

    /**
     * A move's restore order, loaded and kept refused until its proxy heard it is done, is done: those of
     * {@code slots} this shard owns serve now; the others are another shard's (see {@link #abandonRestore}).
     */
    void serveRestored(final BitSet slots) throws InterruptedException {
        final BitSet owned = (BitSet) slots.clone();
        owned.and(ownership.view().owned());
        ownership.endRestore(owned);
        abandonRestore(slots);
    }

    /**
     * A restore order of {@code slots} was taken back (the proxy gave them to another shard): drops what it loaded of
     * those this shard does not own (nor keeps from a move), and ends their restore mark, so that their requests are
     * refused as another shard's, which sends clients to the routing.
     */
    void abandonRestore(final BitSet slots) throws InterruptedException {
        final BitSet others = (BitSet) slots.clone();
        synchronized (keptMoved) {
            others.andNot(ownership.view().owned());
            others.andNot(keptMoved);
            if (others.isEmpty()) {
                return;
            }
            clearRows(others);
        }
        sequences.rowsReplaced(others);
        ownership.endRestore(others);
    }

    /** Says in every refusal of {@code slots} why their restore has not ended yet (see SlotOwnership). */
    void restoreFailed(final BitSet slots, final String why) {
        ownership.restoreFailed(slots, why);
    }

    private static boolean intersects(final int[] fileSlots, final BitSet slots) {
        for (final int slot : fileSlots) {
            if (slots.get(slot)) {
                return true;
            }
        }
        return false;
    }

    private static TableSchema parseSchema(final Manifest.TableEntry entry) throws IOException {
        try {
            return TableSchema.parseFrom(entry.schema());
        } catch (InvalidProtocolBufferException e) {
            throw new IOException("checkpoint manifest holds an unreadable schema for table '" + entry.name() + "'", e);
        }
    }

    private CheckpointStore store(final URI root) {
        return stores.computeIfAbsent(root, uri -> {
            try {
                return new CheckpointStore(uri, hadoopConf);
            } catch (IOException e) {
                throw PsException.unavailable("cannot open checkpoint root " + uri + ": " + e.getMessage());
            }
        });
    }

    // ---- jobs

    /**
     * A job's worker ended {@code ended} on this shard (see {@link JobClocks#report}). SSP: once the writers have
     * applied every push accepted before, so that the worker reads its own pushes. The future completes with the
     * answer, never on a gRPC thread's time.
     */
    public CompletableFuture<JobClocks.Reported> endClock(
            final String jobId, final int workerId, final long ended, final boolean join) {
        requests.incrementAndGet();
        if (jobs.modeOf(jobId) == UpdateMode.SYNC) {
            return CompletableFuture.completedFuture(jobs.report(
                    jobId, workerId, ended, join, ownership.view().owned().isEmpty()));
        }
        return flush().thenApplyAsync(
                        done -> jobs.report(
                                jobId,
                                workerId,
                                ended,
                                join,
                                ownership.view().owned().isEmpty()),
                        clockExecutor);
    }

    /** Completes once every push accepted before the call has been applied. */
    public CompletableFuture<Void> flush() {
        return writers.runOnAll(partition -> null).thenApply(done -> null);
    }

    /**
     * Runs {@code ready} once worker {@code tag} may read at its clock (at once, on this thread, when it may now or is
     * not in a SYNC/SSP job); see {@link JobClocks#whenReadable}. Returns the wait to cancel when the call ends first.
     */
    public JobClocks.Wait whenReadable(final JobTag tag, final Runnable ready, final Consumer<Throwable> failed) {
        if (!tag.inJob()) {
            ready.run();
            return null;
        }
        return jobs.whenReadable(tag.jobId(), tag.workerId(), tag.clock(), ready, failed);
    }

    /** SYNC gradient bytes this shard holds for clocks not yet applied, over every job (tests, diagnostics). */
    public long syncBufferedBytes() {
        return jobs.bufferedBytes();
    }

    /** A job's clocks on this shard, null when it does not know the job (tests, diagnostics). */
    public JobClocks.Snapshot jobClocks(final String jobId) {
        return jobs.snapshot(jobId);
    }

    /**
     * Waits until every clock up to {@code clock} of a job is applied here (a checkpoint cut at that clock boundary).
     *
     * @throws PsException UNAVAILABLE when it is not within {@code timeoutMs}, or the job ended meanwhile.
     */
    public void awaitClockApplied(final String jobId, final long clock, final long timeoutMs)
            throws InterruptedException {
        final CompletableFuture<Void> applied = jobs.whenApplied(jobId, clock);
        try {
            applied.get(timeoutMs, TimeUnit.MILLISECONDS);
        } catch (InterruptedException e) {
            applied.cancel(false);
            throw e;
        } catch (java.util.concurrent.TimeoutException e) {
            // Forgets the wait: a cut that gave up must not leave it registered until the clock is applied.
            applied.cancel(false);
            throw PsException.unavailable("job '" + jobId + "' has not applied clock " + clock + " here within "
                    + timeoutMs + " ms; a checkpoint cannot be cut at that clock");
        } catch (java.util.concurrent.ExecutionException e) {
            throw PsException.unavailable("job '" + jobId + "' clock " + clock + " will not be applied here: "
                    + e.getCause().getMessage());
        }
    }

    /** Pulls waiting for a clock (each holds no thread). */
    public int waitingPulls() {
        return jobs.waiting();
    }

    /**
     * Combines one SYNC clock's gradients per table (worker id order, then push sequence, so that runs agree to the
     * bit), divides by the participants for MEAN tables, and queues each table's sum as one push.
     */
    private CompletableFuture<Void> applyClock(
            final String jobId, final long clock, final JobClocks.ClockUpdates updates, final int participants) {
        return CompletableFuture.supplyAsync(() -> queueClock(jobId, clock, updates, participants), applyExecutor)
                .thenCompose(queued -> flush());
    }

    private Void queueClock(
            final String jobId, final long clock, final JobClocks.ClockUpdates updates, final int participants) {
        // One clock, every table, on one side of a checkpoint's cut.
        enterOffers();
        try {
            queueClockTables(jobId, clock, updates, participants);
        } finally {
            pushesInFlight.decrementAndGet();
        }
        return null;
    }

    private void queueClockTables(
            final String jobId, final long clock, final JobClocks.ClockUpdates updates, final int participants) {
        for (final var entry : updates.byTable.entrySet()) {
            final ParameterTable table = tables.get(entry.getKey());
            if (table == null) {
                updates.releaseRows(entry.getKey());
                LOG.warn(
                        "job {} clock {}: table '{}' was dropped before the clock was applied",
                        jobId,
                        clock,
                        entry.getKey());
                continue;
            }
            if (entry.getValue().values().stream().anyMatch(held -> held.dim() != table.dim())) {
                // A dropped table's (dropTable forgets them; one of another dim would throw below and lose the other
                // tables of the clock).
                updates.releaseRows(entry.getKey());
                LOG.warn(
                        "job {} clock {}: gradients of table '{}' have another dim than the table: not applied",
                        jobId,
                        clock,
                        entry.getKey());
                continue;
            }
            // Worker id order, in float64 (ClockSum): a MEAN of gradients within float32's range stays within it.
            final ClockSum sum = new ClockSum(table.dim());
            entry.getValue().values().forEach(sum::add);
            if (table.schema().getAggregation() == Aggregation.MEAN) {
                sum.divide(participants);
            }
            final long[] keys = sum.keys();
            final float[] gradients = sum.gradients();
            final int[] slots = table.slotsOf(keys);
            // The new rows the clock's pushes held (see holdNewRows) go to the sum's push.
            final ParameterTable.ClockRows held = updates.takeRows(entry.getKey());
            if (held != null && !held.isOf(table)) {
                // Dropped and created again while the clock was being applied (dropTable forgets the gradients of
                // clocks still to be applied, not of this one): the table created again must not get them.
                held.release();
                LOG.warn(
                        "job {} clock {}: table '{}' was dropped and created again before the clock was applied: not"
                                + " applied",
                        jobId,
                        clock,
                        entry.getKey());
                continue;
            }
            final ParameterTable.RowPromise promise = held == null ? ParameterTable.RowPromise.NONE : held.take();
            while (!table.offerPush(keys, slots, gradients, promise)) {
                if (writers.isClosing()) {
                    table.release(promise);
                    throw new IllegalStateException("shard closing: clock " + clock + " of job " + jobId);
                }
                LockSupport.parkNanos(TimeUnit.MICROSECONDS.toNanos(200));
            }
        }
    }

    /**
     * A draining shard waits up to {@code timeoutMs} for the SYNC clocks it holds gradients of to be applied (their
     * workers still end clocks here); returns "" when none is left, else what is lost, for the hand-over report.
     */
    String awaitSyncClocks(final long timeoutMs) throws InterruptedException {
        final long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMs);
        String unapplied = jobs.unapplied();
        while (!unapplied.isEmpty() && System.nanoTime() < deadline) {
            TimeUnit.MILLISECONDS.sleep(20);
            unapplied = jobs.unapplied();
        }
        if (!unapplied.isEmpty()) {
            LOG.warn("shard {} drains with sync gradients not applied: {}", name(), unapplied);
        }
        return unapplied;
    }

    /** Takes the proxy's job list (from UpdateJobs or a heartbeat answer) unless it holds that version already. */
    public void updateJobs(final UpdateJobsRequest request) {
        jobs.update(request, false);
    }

    /**
     * The job list from a heartbeat answer: the proxy sends it when its version differs from {@link #jobsVersion()},
     * so it is taken whatever its version (a proxy that lost its state numbers its lists from 1 again).
     */
    public void updateJobsFromHeartbeat(final UpdateJobsRequest request) {
        jobs.update(request, true);
    }

    /** The version of the job list this shard holds, reported in heartbeats (0: none yet). */
    public long jobsVersion() {
        return jobs.version();
    }

    // ---- load

    public long requestCount() {
        return requests.get();
    }

    public int applyQueueDepth() {
        return writers.pending();
    }

    /** Heap bytes the pushes accepted and not yet applied hold, against {@link #limitQueuedPushBytes}. */
    public long applyQueueBytes() {
        return writers.queuedBytes();
    }

    /**
     * Fault point {@link FaultPoints#HOLD_WRITERS}: on, every writer stops behind what it has queued until it is
     * switched off (tests: a push is acknowledged before it is applied).
     */
    synchronized void holdWriters(final boolean hold) {
        if (hold && heldWriters == null) {
            final java.util.concurrent.CountDownLatch release = new java.util.concurrent.CountDownLatch(1);
            heldWriters = release;
            writers.runOnAll(partition -> {
                try {
                    release.await();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
                return null;
            });
        } else if (!hold && heldWriters != null) {
            heldWriters.countDown();
            heldWriters = null;
        }
    }

    /** Blocks until every push accepted so far is applied. */
    public void awaitQuiescent() throws InterruptedException {
        writers.runOnAll(partition -> null).join();
    }

    @Override
    public void close() {
        writers.close();
        clockExecutor.shutdownNow();
        applyExecutor.shutdownNow();
        checkpointOutput.shutdownNow();
    }
}
