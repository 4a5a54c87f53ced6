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
import io.pscluster.server.table.PartitionWriters;
import io.pscluster.server.table.SlotSnapshot;
import io.pscluster.wire.PsException;
import io.pscluster.wire.Slots;
import io.pscluster.wire.TableSchemas;
import java.io.IOException;
import java.net.URI;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
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
 */
public final class Shard implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(Shard.class);
    private static final int RESTORE_BATCH_ROWS = 8192;

    private final Map<String, ParameterTable> tables = new ConcurrentHashMap<>();
    private final SlotOwnership ownership = new SlotOwnership();
    private final Map<URI, CheckpointStore> stores = new ConcurrentHashMap<>();
    private final AtomicLong requests = new AtomicLong();
    private final PartitionWriters writers;
    private final Configuration hadoopConf;
    private final int maxKeysPerRequest;
    private volatile String shardId;

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
        this.shardId = name;
        this.maxKeysPerRequest = maxKeysPerRequest;
        this.writers = new PartitionWriters("ps-writer", partitions, applyCapacity, tables::values);
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
                created.materializeDense(owned::get);
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
        final int[] slots = checkKeys(table, keys);
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
        final long maxRows = table.maxRows();
        if (maxRows > 0) {
            final long rows = table.rowCount();
            final int absent = table.countAbsent(keys, slots);
            if (absent > 0 && rows + absent > maxRows) {
                throw PsException.resourceExhausted("table '" + tableName + "' holds " + rows + " rows on shard "
                        + shardId + "; " + absent + " new rows would pass its cap of " + maxRows + " rows");
            }
        }
        if (!table.offerPush(keys, slots, gradients)) {
            throw PsException.backpressure("shard " + shardId + " has " + writers.pending()
                    + " pushes waiting to be applied; retry after a backoff");
        }
        return keys.length;
    }

    /** Reads the values of {@code keys} as they are now, as little-endian float32 bytes, row after row. */
    public byte[] pull(final String tableName, final long[] keys) {
        requests.incrementAndGet();
        final ParameterTable table = table(tableName);
        final int[] slots = checkKeys(table, keys);
        final long bytes = 4L * keys.length * table.dim();
        if (bytes > Integer.MAX_VALUE - 64) {
            throw PsException.invalidArgument("pull of " + keys.length + " keys x dim " + table.dim() + " is " + bytes
                    + " bytes, more than one response can carry; split it");
        }
        final byte[] values = new byte[(int) bytes];
        table.pull(keys, slots, values);
        return values;
    }

    /** Checks the request's size, key range and slot ownership; returns the slot of each key. */
    private int[] checkKeys(final ParameterTable table, final long[] keys) {
        if (keys.length > maxKeysPerRequest) {
            throw PsException.invalidArgument("request has " + keys.length + " keys, more than the limit of "
                    + maxKeysPerRequest + " keys per request; split it");
        }
        final SlotOwnership.View view = ownership.view();
        final long denseRows = table.schema().getRows();
        final boolean dense = denseRows > 0;
        final int[] slots = table.slotsOf(keys);
        for (int i = 0; i < keys.length; i++) {
            final long key = keys[i];
            if (dense && (key < 0 || key >= denseRows)) {
                throw PsException.invalidArgument("key " + key + " is outside dense table '" + table.name()
                        + "' (rows 0.." + (denseRows - 1) + ")");
            }
            view.check(slots[i], shardId, table.name(), key);
        }
        return slots;
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
    void applyRouting(final RoutingTable routing) throws InterruptedException {
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
        final BitSet before = ownership.view().owned();
        final BitSet lost = ownership.route(routing.getEpoch(), owned);
        final BitSet gained = (BitSet) owned.clone();
        gained.andNot(before);
        for (final ParameterTable table : tables.values()) {
            if (!gained.isEmpty()) {
                table.materializeDense(gained::get);
            }
            if (!lost.isEmpty()) {
                table.clearSlots(lost::get);
            }
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
     * Writes every table's rows for the owned slots as checkpoint {@code checkpointId} under {@code root}. The
     * writers copy their partitions after the pushes queued before (pushes wait only for that copy); the copy is
     * written to the filesystem afterwards.
     */
    public WrittenCheckpoint writeCheckpoint(final URI root, final long checkpointId)
            throws IOException, InterruptedException {
        final SlotOwnership.View view = ownership.view();
        if (!view.restoring().isEmpty()) {
            throw PsException.unavailable("shard " + shardId + " is restoring "
                    + view.restoring().cardinality() + " slots; a checkpoint now would miss their rows");
        }
        final long start = System.nanoTime();
        final Map<ParameterTable, List<SlotSnapshot>> snapshots = new LinkedHashMap<>();
        for (final ParameterTable table : tables.values()) {
            snapshots.put(table, table.snapshot(view.owned()::get));
        }
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
        for (final ParameterTable table : tables.values()) {
            table.clearSlots(slots::get);
        }
        long rows = 0;
        final FileSystem fs = store.fileSystem();
        for (final Manifest.FileEntry entry : checkpoint.manifest().files()) {
            if (intersects(entry.file().slots(), slots)) {
                rows += restoreFile(fs, checkpoint, entry, slots);
            }
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

    /** Loads one row file's rows of {@code slots}, handing them to the writers in batches. */
    private long restoreFile(
            final FileSystem fs, final CheckpointInfo checkpoint, final Manifest.FileEntry entry, final BitSet slots)
            throws IOException, InterruptedException {
        final ParameterTable table = table(entry.table());
        final int width = table.rowWidth();
        final long[] keys = new long[RESTORE_BATCH_ROWS];
        final float[] records = new float[RESTORE_BATCH_ROWS * width];
        final int[] count = {0};
        final long rows = RowFileReader.read(fs, checkpoint.dir(), entry.file(), slots::get, (slot, key, record) -> {
            if (record.length != width) {
                throw PsException.dataLoss("checkpoint row of table '" + table.name() + "' has " + record.length
                        + " floats; the table's rows have " + width);
            }
            keys[count[0]] = key;
            System.arraycopy(record, 0, records, count[0] * width, width);
            if (++count[0] == RESTORE_BATCH_ROWS) {
                try {
                    table.putRecords(keys, records, count[0]);
                } catch (InterruptedException e) {
                    // Stop reading at once: the writers may still be copying this batch out of the arrays.
                    Thread.currentThread().interrupt();
                    throw PsException.unavailable("restore of table '" + table.name() + "' was interrupted");
                }
                count[0] = 0;
            }
        });
        table.putRecords(keys, records, count[0]);
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
        return writers.pending();
    }

    /** Blocks until every push accepted so far is applied. */
    public void awaitQuiescent() throws InterruptedException {
        writers.runOnAll(partition -> null).join();
    }

    @Override
    public void close() {
        writers.close();
    }
}
