package io.pscluster.server;

import com.google.protobuf.InvalidProtocolBufferException;
import io.pscluster.checkpoint.CheckpointCorruptException;
import io.pscluster.checkpoint.CheckpointInfo;
import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.Manifest;
import io.pscluster.checkpoint.RowFileInfo;
import io.pscluster.checkpoint.RowFileReader;
import io.pscluster.checkpoint.RowFileWriter;
import io.pscluster.proto.v1.CheckpointFile;
import io.pscluster.proto.v1.RoutingTable;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.proto.v1.TableStats;
import io.pscluster.server.table.ParameterTable;
import io.pscluster.server.table.SlotSnapshot;
import io.pscluster.wire.PsException;
import io.pscluster.wire.Slots;
import io.pscluster.wire.TableSchemas;
import java.io.IOException;
import java.net.URI;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A shard's state and operations, independent of gRPC: its tables, the slots it owns, the queue that applies
 * pushes, and checkpoint writing and restoring. The gRPC services are thin adapters over this class.
 *
 * <p>Every request is validated completely before anything is queued, so a bad request changes nothing.
 */
public final class Shard implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(Shard.class);

    private final Map<String, ParameterTable> tables = new ConcurrentHashMap<>();
    private final SlotOwnership ownership = new SlotOwnership();
    private final Map<URI, CheckpointStore> stores = new ConcurrentHashMap<>();
    private final AtomicLong requests = new AtomicLong();
    private final ApplyQueue applyQueue;
    private final Configuration hadoopConf;
    private final int maxKeysPerRequest;
    private volatile String shardId;

    public Shard(
            final String name, final int maxKeysPerRequest, final int applyQueueCapacity, final Configuration conf) {
        this.shardId = name;
        this.maxKeysPerRequest = maxKeysPerRequest;
        this.applyQueue = new ApplyQueue(name, applyQueueCapacity);
        this.hadoopConf = conf;
    }

    public String shardId() {
        return shardId;
    }

    void assignId(final String id) {
        this.shardId = id;
    }

    // ---- tables

    /** Creates a table; returns false if an identical one exists. */
    public boolean createTable(final TableSchema requested) {
        final TableSchema schema = TableSchemas.normalize(requested);
        final ParameterTable created = new ParameterTable(schema);
        final ParameterTable existing = tables.putIfAbsent(schema.getName(), created);
        if (existing != null) {
            if (!existing.schema().equals(schema)) {
                throw PsException.alreadyExists("table '" + schema.getName() + "' exists with a different schema: "
                        + existing.schema() + "; requested " + schema);
            }
            return false;
        }
        final BitSet owned = ownership.view().owned();
        created.materializeDense(owned::get);
        LOG.info("shard {} created table {}", shardId, schema.getName());
        return true;
    }

    public ParameterTable table(final String name) {
        final ParameterTable table = tables.get(name);
        if (table == null) {
            throw PsException.notFound("table '" + name + "' does not exist on shard " + shardId);
        }
        return table;
    }

    public boolean dropTable(final String name) {
        return tables.remove(name) != null;
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
                    .build());
        }
        return stats;
    }

    // ---- data plane

    /**
     * Validates a push and queues it to be applied. Returns once it is queued (async mode).
     *
     * @throws PsException NOT_FOUND, INVALID_ARGUMENT, wrong-owner, restoring or RESOURCE_EXHAUSTED; in every case
     *     nothing was applied.
     */
    public int push(final String tableName, final long[] keys, final float[] gradients) {
        requests.incrementAndGet();
        final ParameterTable table = table(tableName);
        checkKeys(table, keys);
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
        if (!applyQueue.offer(() -> table.push(keys, gradients))) {
            throw PsException.resourceExhausted("shard " + shardId + " apply queue is full (" + applyQueue.depth()
                    + " pushes waiting); retry after a backoff");
        }
        return keys.length;
    }

    /** Reads the values of {@code keys} as they are now. */
    public float[] pull(final String tableName, final long[] keys) {
        requests.incrementAndGet();
        final ParameterTable table = table(tableName);
        checkKeys(table, keys);
        final float[] values = new float[keys.length * table.dim()];
        table.pull(keys, values);
        return values;
    }

    private void checkKeys(final ParameterTable table, final long[] keys) {
        if (keys.length > maxKeysPerRequest) {
            throw PsException.invalidArgument("request has " + keys.length + " keys, more than the limit of "
                    + maxKeysPerRequest + " keys per request; split it");
        }
        final SlotOwnership.View view = ownership.view();
        final long denseRows = table.schema().getRows();
        final boolean dense = denseRows > 0;
        for (final long key : keys) {
            if (dense && (key < 0 || key >= denseRows)) {
                throw PsException.invalidArgument("key " + key + " is outside dense table '" + table.name()
                        + "' (rows 0.." + (denseRows - 1) + ")");
            }
            view.check(table.slotOf(key), shardId, table.name(), key);
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

    /** Takes the proxy's routing table: serves the slots it assigns here and drops the rows of slots it moved away. */
    void applyRouting(final RoutingTable routing) {
        final BitSet owned = new BitSet(Slots.SLOT_COUNT);
        int mine = -1;
        for (int i = 0; i < routing.getShardsCount(); i++) {
            if (routing.getShards(i).getShardId().equals(shardId)) {
                mine = i;
            }
        }
        for (int slot = 0; slot < routing.getSlotOwnerCount(); slot++) {
            if (mine >= 0 && routing.getSlotOwner(slot) == mine) {
                owned.set(slot);
            }
        }
        final BitSet before = (BitSet) ownership.view().owned().clone();
        final BitSet lost = ownership.route(routing.getEpoch(), owned);
        final BitSet gained = (BitSet) owned.clone();
        gained.andNot(before);
        if (!gained.isEmpty()) {
            for (final ParameterTable table : tables.values()) {
                table.materializeDense(gained::get);
            }
        }
        if (!lost.isEmpty()) {
            applyQueue.runAfterQueued(() -> {
                tables.values().forEach(table -> table.clearSlots(lost::get));
                return null;
            });
        }
        LOG.info(
                "shard {} at routing epoch {}: owns {} slots (gained {}, lost {})",
                shardId,
                routing.getEpoch(),
                owned.cardinality(),
                gained.cardinality(),
                lost.cardinality());
    }

    // ---- checkpoints

    /**
     * Writes every table's rows for the owned slots as checkpoint {@code checkpointId} under {@code root}. Pushes
     * wait only while the rows are copied; the copy is written to the filesystem afterwards.
     */
    public WrittenCheckpoint writeCheckpoint(final URI root, final long checkpointId)
            throws IOException, InterruptedException {
        final SlotOwnership.View view = ownership.view();
        if (!view.restoring().isEmpty()) {
            throw PsException.unavailable("shard " + shardId + " is restoring "
                    + view.restoring().cardinality() + " slots; a checkpoint now would miss their rows");
        }
        final long start = System.nanoTime();
        final Map<ParameterTable, List<SlotSnapshot>> snapshots = awaitApplied(() -> {
            final Map<ParameterTable, List<SlotSnapshot>> copies = new java.util.LinkedHashMap<>();
            for (final ParameterTable table : tables.values()) {
                copies.put(table, table.snapshot(view.owned()::get));
            }
            return copies;
        });
        final long snapshotMicros = (System.nanoTime() - start) / 1000;

        final CheckpointStore store = store(root);
        final Path dir = store.checkpointDir(checkpointId);
        final List<CheckpointFile> files = new ArrayList<>();
        for (final Map.Entry<ParameterTable, List<SlotSnapshot>> entry : snapshots.entrySet()) {
            final ParameterTable table = entry.getKey();
            if (entry.getValue().isEmpty()) {
                continue;
            }
            final String relative = CheckpointStore.fileName(shardId, table.name(), checkpointId);
            final RowFileInfo info;
            try (RowFileWriter writer = RowFileWriter.create(store.fileSystem(), dir, relative, table.rowWidth())) {
                for (final SlotSnapshot slot : entry.getValue()) {
                    writer.beginSlot(slot.slot());
                    for (int row = 0; row < slot.rows(); row++) {
                        writer.writeRow(slot.keys()[row], slot.records(), row * slot.rowWidth());
                    }
                }
                info = writer.finish();
            }
            final CheckpointFile.Builder file = CheckpointFile.newBuilder()
                    .setPath(info.path())
                    .setTable(table.name())
                    .setLength(info.length())
                    .setCrc32C(info.crc32c())
                    .setRows(info.rows());
            for (final int slot : info.slots()) {
                file.addSlots(slot);
            }
            files.add(file.build());
        }
        LOG.info(
                "shard {} wrote checkpoint {}: {} files, snapshot held pushes for {} us",
                shardId,
                checkpointId,
                files.size(),
                snapshotMicros);
        return new WrittenCheckpoint(files, snapshotMicros);
    }

    /** What a shard wrote for one checkpoint. */
    public record WrittenCheckpoint(List<CheckpointFile> files, long snapshotMicros) {}

    /**
     * Replaces the rows of {@code slots} with those of checkpoint {@code checkpointId}, after verifying its
     * checksums. Requests for those slots are refused with a retryable status until the restore ends. Tables the
     * checkpoint holds and the shard lacks are created.
     *
     * @return rows restored.
     */
    public long restore(final URI root, final long checkpointId, final BitSet slots)
            throws IOException, InterruptedException {
        markRestoring(slots);
        final CheckpointStore store = store(root);
        final CheckpointInfo checkpoint;
        try {
            checkpoint = store.get(checkpointId)
                    .orElseThrow(() -> PsException.notFound(
                            "checkpoint " + checkpointId + " under " + root + " does not exist or has no manifest"));
            try {
                store.verify(checkpoint);
            } catch (CheckpointCorruptException corrupt) {
                throw PsException.dataLoss("checkpoint " + checkpointId + " is damaged: " + corrupt.getMessage());
            }
            for (final Manifest.TableEntry entry : checkpoint.manifest().tables()) {
                createTable(parseSchema(entry));
            }
        } catch (IOException | RuntimeException e) {
            // Nothing was changed yet: the slots keep serving what they held.
            ownership.endRestore(slots);
            throw e;
        }
        // From here a failure leaves the slots refusing requests: better unavailable than half restored.
        // Pushes queued before the restore began are applied (then overwritten) before the slots are cleared.
        awaitApplied(() -> {
            tables.values().forEach(table -> table.clearSlots(slots::get));
            return null;
        });
        long rows = 0;
        final FileSystem fs = store.fileSystem();
        for (final Manifest.FileEntry entry : checkpoint.manifest().files()) {
            if (!intersects(entry.file().slots(), slots)) {
                continue;
            }
            final ParameterTable table = table(entry.table());
            rows += RowFileReader.read(
                    fs,
                    checkpoint.dir(),
                    entry.file(),
                    slots::get,
                    (slot, key, record) -> table.putRecord(key, record));
        }
        for (final ParameterTable table : tables.values()) {
            table.materializeDense(slots::get);
        }
        ownership.endRestore(slots);
        LOG.info(
                "shard {} restored {} rows of {} slots from checkpoint {}",
                shardId,
                rows,
                slots.cardinality(),
                checkpointId);
        return rows;
    }

    /** Refuses requests for {@code slots} (retryably) until a restore of them ends. */
    void markRestoring(final BitSet slots) {
        ownership.beginRestore(slots);
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

    private <T> T awaitApplied(final java.util.concurrent.Callable<T> task) throws IOException, InterruptedException {
        try {
            return applyQueue.runAfterQueued(task).get();
        } catch (ExecutionException e) {
            if (e.getCause() instanceof IOException io) {
                throw io;
            }
            if (e.getCause() instanceof RuntimeException runtime) {
                throw runtime;
            }
            throw new IOException(e.getCause());
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

    // ---- load

    public long requestCount() {
        return requests.get();
    }

    public int applyQueueDepth() {
        return applyQueue.depth();
    }

    /** Blocks until every push accepted so far is applied. */
    public void awaitQuiescent() throws IOException, InterruptedException {
        awaitApplied(() -> null);
    }

    @Override
    public void close() throws InterruptedException {
        applyQueue.close();
    }
}
