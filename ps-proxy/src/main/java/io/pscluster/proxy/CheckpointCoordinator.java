package io.pscluster.proxy;

import io.pscluster.checkpoint.CheckpointInfo;
import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.Manifest;
import io.pscluster.checkpoint.RowFileInfo;
import io.pscluster.proto.v1.CheckpointFile;
import io.pscluster.proto.v1.RestoreCheckpointRequest;
import io.pscluster.proto.v1.ShardAdminServiceGrpc;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.proto.v1.WriteCheckpointRequest;
import io.pscluster.proto.v1.WriteCheckpointResponse;
import io.pscluster.wire.PsException;
import io.pscluster.wire.Slots;
import java.io.IOException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.TimeUnit;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Takes cluster-wide checkpoints and restores them. A checkpoint asks every slot owner to write its rows under a
 * new checkpoint directory, then writes the manifest (tables, files with lengths and CRC32C, slot owners, epoch)
 * last; the manifest's rename is the commit. One checkpoint or restore runs at a time.
 */
final class CheckpointCoordinator {
    private static final Logger LOG = LoggerFactory.getLogger(CheckpointCoordinator.class);
    static final String SLOT_OWNERS = "slot-owners";
    static final String ROUTING_EPOCH = "routing-epoch";

    private final ClusterState state;
    private final CheckpointStore store;
    private final ShardChannels channels;
    private final ExecutorService calls;
    private final long callDeadlineMs;

    CheckpointCoordinator(
            final ClusterState state,
            final CheckpointStore store,
            final ShardChannels channels,
            final ExecutorService calls,
            final long callDeadlineMs) {
        this.state = state;
        this.store = store;
        this.channels = channels;
        this.calls = calls;
        this.callDeadlineMs = callDeadlineMs;
    }

    CheckpointStore store() {
        return store;
    }

    /** The result of a checkpoint: what was committed and the longest push stall a shard reported. */
    record Taken(CheckpointInfo checkpoint, long maxSnapshotMicros) {}

    synchronized Taken checkpointNow() throws IOException, InterruptedException {
        final List<ClusterState.Owner> owners = state.ownersForClusterOperation("a checkpoint");
        final List<TableSchema> tables = state.tables();
        final String[] slotOwners = state.slotOwners();
        final long epoch = state.epoch();
        final long id = store.nextId();
        store.fileSystem().mkdirs(store.checkpointDir(id));

        final Map<ClusterState.Owner, CompletableFuture<WriteCheckpointResponse>> writes = new LinkedHashMap<>();
        for (final ClusterState.Owner owner : owners) {
            writes.put(
                    owner,
                    CompletableFuture.supplyAsync(
                            () -> ShardAdminServiceGrpc.newBlockingStub(channels.channel(owner.address()))
                                    .withDeadlineAfter(callDeadlineMs, TimeUnit.MILLISECONDS)
                                    .writeCheckpoint(WriteCheckpointRequest.newBuilder()
                                            .setCheckpointRoot(store.root().toString())
                                            .setCheckpointId(id)
                                            .build()),
                            calls));
        }
        final List<Manifest.FileEntry> files = new ArrayList<>();
        long maxStall = 0;
        for (final Map.Entry<ClusterState.Owner, CompletableFuture<WriteCheckpointResponse>> write :
                writes.entrySet()) {
            final WriteCheckpointResponse response =
                    await(write.getValue(), "shard " + write.getKey().shardId());
            maxStall = Math.max(maxStall, response.getSnapshotMicros());
            for (final CheckpointFile file : response.getFilesList()) {
                files.add(new Manifest.FileEntry(
                        file.getTable(),
                        write.getKey().shardId(),
                        new RowFileInfo(
                                file.getPath(),
                                file.getLength(),
                                file.getCrc32C(),
                                file.getRows(),
                                file.getSlotsList().stream()
                                        .mapToInt(Integer::intValue)
                                        .toArray())));
            }
        }
        final List<Manifest.TableEntry> tableEntries = new ArrayList<>();
        tables.forEach(schema -> tableEntries.add(new Manifest.TableEntry(schema.getName(), schema.toByteArray())));
        final Map<String, String> properties = new LinkedHashMap<>();
        properties.put(SLOT_OWNERS, SlotOwners.encode(slotOwners));
        properties.put(ROUTING_EPOCH, Long.toString(epoch));
        final Manifest manifest =
                new Manifest(id, System.currentTimeMillis(), Slots.SLOT_COUNT, tableEntries, files, properties);
        store.commit(manifest);
        state.checkpointCommitted(id);
        LOG.info(
                "checkpoint {} committed: {} files, {} rows, {} bytes; longest push stall {} us",
                id,
                files.size(),
                manifest.totalRows(),
                manifest.totalBytes(),
                maxStall);
        return new Taken(new CheckpointInfo(id, store.checkpointDir(id), manifest), maxStall);
    }

    /** Loads checkpoint {@code id} (0: the latest complete one) into every slot owner; returns rows restored. */
    synchronized Restored restore(final long id) throws IOException, InterruptedException {
        final CheckpointInfo checkpoint;
        if (id == 0) {
            // latest() verifies checksums, skipping damaged checkpoints for older ones.
            checkpoint = store.latest()
                    .orElseThrow(() -> PsException.notFound("no complete checkpoint under " + store.root()));
        } else {
            checkpoint = store.get(id)
                    .orElseThrow(() -> PsException.notFound(
                            "checkpoint " + id + " under " + store.root() + " does not exist or has no manifest"));
            try {
                store.verify(checkpoint);
            } catch (io.pscluster.checkpoint.CheckpointCorruptException corrupt) {
                throw PsException.dataLoss("checkpoint " + id + " is damaged: " + corrupt.getMessage());
            }
        }
        final List<ClusterState.Owner> owners = state.ownersForClusterOperation("a restore");
        for (final TableSchema schema : schemasOf(checkpoint.manifest())) {
            try {
                state.addTable(schema);
            } catch (PsException differentSchema) {
                throw PsException.failedPrecondition("cannot restore checkpoint " + checkpoint.id() + ": "
                        + differentSchema.getMessage() + "; drop the table first");
            }
        }
        final List<CompletableFuture<Long>> restores = new ArrayList<>();
        for (final ClusterState.Owner owner : owners) {
            restores.add(CompletableFuture.supplyAsync(
                    () -> ShardAdminServiceGrpc.newBlockingStub(channels.channel(owner.address()))
                            .withDeadlineAfter(callDeadlineMs, TimeUnit.MILLISECONDS)
                            .restoreCheckpoint(RestoreCheckpointRequest.newBuilder()
                                    .setCheckpointRoot(store.root().toString())
                                    .setCheckpointId(checkpoint.id())
                                    .addAllSlots(owner.slots())
                                    .build())
                            .getRowsRestored(),
                    calls));
        }
        long rows = 0;
        for (int i = 0; i < restores.size(); i++) {
            rows += await(restores.get(i), "shard " + owners.get(i).shardId());
        }
        LOG.info("restored checkpoint {}: {} rows into {} shards", checkpoint.id(), rows, owners.size());
        return new Restored(checkpoint, rows);
    }

    record Restored(CheckpointInfo checkpoint, long rows) {}

    static List<TableSchema> schemasOf(final Manifest manifest) throws IOException {
        final List<TableSchema> schemas = new ArrayList<>();
        for (final Manifest.TableEntry entry : manifest.tables()) {
            schemas.add(TableSchema.parseFrom(entry.schema()));
        }
        return schemas;
    }

    private static <T> T await(final CompletableFuture<T> future, final String who) throws InterruptedException {
        try {
            return future.get();
        } catch (ExecutionException e) {
            throw PsException.unavailable(
                    who + " failed: " + PsException.toStatus(e.getCause()).getStatus());
        }
    }
}
