package io.pscluster.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.grpc.Status;
import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.Manifest;
import io.pscluster.checkpoint.RowFileWriter;
import io.pscluster.proto.v1.CheckpointFile;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.server.table.SlotSnapshot;
import io.pscluster.wire.PsException;
import io.pscluster.wire.Slots;
import java.net.URI;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Incremental checkpoints: a base, then deltas that hold only the rows changed (values and optimizer state) and the
 * keys removed since the previous checkpoint; a restore of any checkpoint of the chain (base, then each delta's
 * removals and rows, in order) gives back exactly the table as it was at that checkpoint. Manifests are committed
 * as the proxy commits them.
 */
class DeltaCheckpointTest {
    private static final String TABLE = "emb";
    private static final int DIM = 4;
    private static final int ROWS = 20_000;
    private static final TableSchema SCHEMA = TableSchema.newBuilder()
            .setName(TABLE)
            .setKind(TableKind.SPARSE)
            .setDim(DIM)
            .setOptimizer(
                    OptimizerSpec.newBuilder().setKind(OptimizerKind.ADAGRAD).setLearningRate(0.1f))
            .build();

    @TempDir
    Path directory;

    private final List<Shard> shards = new ArrayList<>();
    private final Random random = new Random(7);

    @AfterEach
    void closeShards() {
        shards.forEach(Shard::close);
    }

    private Shard shard(final String name) throws Exception {
        final Shard shard = new Shard(name, 1 << 20, 4, 4096, new Configuration());
        shards.add(shard);
        TestRouting.serve(shard, TestRouting.allSlotsTo(name, 1));
        return shard;
    }

    @Test
    void shouldRestoreEveryCheckpointOfABaseAndFiveDeltasExactly() throws Exception {
        final URI root = directory.toUri();
        final Shard shard = shard("writer");
        shard.createTable(SCHEMA);
        final CheckpointStore store = new CheckpointStore(root, new Configuration());
        final List<Long> live = new ArrayList<>();
        for (long key = 0; key < ROWS; key++) {
            live.add(key * 31 + 5);
        }
        push(shard, live);
        commit(store, 1, shard.writeCheckpoint(root, 1), 0, 0);
        final Map<Long, Map<Long, List<Integer>>> expected = new HashMap<>();
        expected.put(1L, records(shard));

        long nextKey = -1;
        for (long id = 2; id <= 6; id++) {
            // 1% of the rows change, 50 are created, 30 removed (some of them changed or created since the parent).
            final List<Long> changed = new ArrayList<>();
            for (int i = 0; i < ROWS / 100; i++) {
                changed.add(live.get(random.nextInt(live.size())));
            }
            for (int i = 0; i < 50; i++) {
                changed.add(nextKey);
                live.add(nextKey--);
            }
            push(shard, changed);
            final long[] removed = new long[30];
            for (int i = 0; i < removed.length; i++) {
                removed[i] = live.remove(random.nextInt(live.size()));
            }
            shard.table(TABLE).removeKeys(removed, removed.length);

            final Shard.WrittenCheckpoint delta =
                    shard.writeCheckpoint(root, id, RowFileWriter.Options.defaults(), null, id - 1, true);
            commit(store, id, delta, 1, id - 1);
            expected.put(id, records(shard));
            assertThat(delta.files())
                    .anySatisfy(file -> assertThat(file.getRemovedKeys()).isTrue());
        }

        final Manifest base = store.get(1).orElseThrow().manifest();
        final Manifest last = store.get(6).orElseThrow().manifest();
        assertThat(last.totalRows()).as("rows in the last delta").isLessThan(ROWS / 100 + 60);
        System.out.printf(
                "delta %d bytes (%d rows), base %d bytes (%d rows): %.2f%%%n",
                last.totalBytes(),
                last.totalRows(),
                base.totalBytes(),
                base.totalRows(),
                100.0 * last.totalBytes() / base.totalBytes());
        assertThat((double) last.totalBytes() / base.totalBytes())
                .as("delta bytes / base bytes with 1% of rows changed")
                .isLessThan(0.03);

        for (final long id : List.of(6L, 3L, 1L)) {
            final Shard restored = shard("restored-" + id);
            final BitSet all = new BitSet(Slots.SLOT_COUNT);
            all.set(0, Slots.SLOT_COUNT);
            assertThat(restored.restore(root, id, all))
                    .as("rows restored from checkpoint %d (each counted once, not once per link holding it)", id)
                    .isEqualTo(expected.get(id).size());
            assertThat(records(restored))
                    .as("table restored from checkpoint %d", id)
                    .isEqualTo(expected.get(id));
        }
    }

    /**
     * A shard that restored a checkpoint (a fresh one, as after a restart) takes the restore as that checkpoint's
     * cut: its next delta holds only the rows changed and removed since, not every row it loaded, and the chain
     * restores exactly. The size fails if restored rows keep the marks of their load; the contents fail if the cut is
     * taken before the load ends or the removal log does not start at it.
     */
    @Test
    void shouldWriteASmallExactDeltaOfTheCheckpointARestoreLoaded() throws Exception {
        final URI root = directory.toUri();
        final CheckpointStore store = new CheckpointStore(root, new Configuration());
        final Shard writer = shard("writer");
        writer.createTable(SCHEMA);
        final List<Long> live = new ArrayList<>();
        for (long key = 0; key < ROWS; key++) {
            live.add(key * 31 + 5);
        }
        push(writer, live);
        commit(store, 1, writer.writeCheckpoint(root, 1), 0, 0);
        final Manifest base = store.get(1).orElseThrow().manifest();

        final Shard restarted = shard("restarted");
        final BitSet all = new BitSet(Slots.SLOT_COUNT);
        all.set(0, Slots.SLOT_COUNT);
        assertThat(restarted.restore(root, 1, all)).isEqualTo(ROWS);
        long nextKey = -1;
        final Map<Long, Map<Long, List<Integer>>> expected = new HashMap<>();
        for (long id = 2; id <= 3; id++) {
            // 1% of the rows change, 50 are created and 30 removed (restored ones, and ones created since).
            final List<Long> changed = new ArrayList<>();
            for (int i = 0; i < ROWS / 100; i++) {
                changed.add(live.get(random.nextInt(live.size())));
            }
            for (int i = 0; i < 50; i++) {
                changed.add(nextKey);
                live.add(nextKey--);
            }
            push(restarted, changed);
            final long[] removed = new long[30];
            for (int i = 0; i < removed.length; i++) {
                removed[i] = live.remove(random.nextInt(live.size()));
            }
            restarted.table(TABLE).removeKeys(removed, removed.length);
            commit(
                    store,
                    id,
                    restarted.writeCheckpoint(root, id, RowFileWriter.Options.defaults(), null, id - 1, true),
                    1,
                    id - 1);
            expected.put(id, records(restarted));
        }

        final Manifest first = store.get(2).orElseThrow().manifest();
        System.out.printf(
                "first delta after a restore: %d bytes (%d rows), base %d bytes: %.2f%%%n",
                first.totalBytes(),
                first.totalRows(),
                base.totalBytes(),
                100.0 * first.totalBytes() / base.totalBytes());
        assertThat(first.totalRows())
                .as("rows in the first delta after the restore")
                .isLessThan(ROWS / 100 + 60);
        assertThat((double) first.totalBytes() / base.totalBytes())
                .as("bytes of the first delta after the restore / its base's")
                .isLessThan(0.03);
        for (final long id : List.of(2L, 3L)) {
            final Shard reader = shard("reader-" + id);
            assertThat(reader.restore(root, id, all)).isEqualTo(expected.get(id).size());
            assertThat(records(reader))
                    .as("table restored from checkpoint %d (base 1 written, deltas after a restore)", id)
                    .isEqualTo(expected.get(id));
        }
    }

    /**
     * A restore of an older checkpoint makes the shard forget its cut of a newer one (a delta of that would hold every
     * row) and take the older one's: the delta is of the checkpoint restored, small and exact. Slots restored that are
     * fewer than the shard serves carry no cut a delta of all of them could use.
     */
    @Test
    void shouldTakeTheCutOfTheCheckpointRestoredAndForgetNewerOnes() throws Exception {
        final URI root = directory.toUri();
        final CheckpointStore store = new CheckpointStore(root, new Configuration());
        final Shard shard = shard("rewinding");
        shard.createTable(SCHEMA);
        final List<Long> keys = new ArrayList<>();
        for (long key = 0; key < ROWS; key++) {
            keys.add(key * 17 + 1);
        }
        push(shard, keys);
        commit(store, 1, shard.writeCheckpoint(root, 1), 0, 0);
        final Map<Long, List<Integer>> atOne = records(shard);
        push(shard, keys.subList(0, ROWS / 2));
        commit(store, 2, shard.writeCheckpoint(root, 2, RowFileWriter.Options.defaults(), null, 1, true), 1, 1);

        final BitSet all = new BitSet(Slots.SLOT_COUNT);
        all.set(0, Slots.SLOT_COUNT);
        shard.restore(root, 1, all);
        assertThat(records(shard)).isEqualTo(atOne);
        assertThatThrownBy(() -> shard.writeCheckpoint(root, 3, RowFileWriter.Options.defaults(), null, 2, true))
                .isInstanceOfSatisfying(
                        PsException.class,
                        e -> assertThat(e.getMessage()).contains("cannot write a delta since checkpoint 2"));
        push(shard, keys.subList(0, 10));
        final Shard.WrittenCheckpoint delta =
                shard.writeCheckpoint(root, 4, RowFileWriter.Options.defaults(), null, 1, true);
        commit(store, 4, delta, 1, 1);
        assertThat(store.get(4).orElseThrow().manifest().totalRows()).isEqualTo(10);
        final Shard reader = shard("reader");
        reader.restore(root, 4, all);
        assertThat(records(reader)).isEqualTo(records(shard));

        final BitSet half = new BitSet(Slots.SLOT_COUNT);
        half.set(0, Slots.SLOT_COUNT / 2);
        shard.restore(root, 4, half);
        assertThatThrownBy(() -> shard.writeCheckpoint(root, 5, RowFileWriter.Options.defaults(), null, 4, true))
                .isInstanceOfSatisfying(
                        PsException.class, e -> assertThat(e.getMessage()).contains("its slots changed since"));
    }

    /**
     * A restore that ends while a checkpoint is being written on the shard (here parked mid row file by pause point
     * {@link io.pscluster.checkpoint.PausePoints#MID_ROW_FILE}) neither waits for it nor takes a cut (the snapshot
     * owns the epochs): a delta of the restored slots since the checkpoint restored is refused, and the proxy would
     * take a base. The restore would hang if it waited for the checkpoint; the delta would be written if it took the
     * cut.
     */
    @Test
    void shouldTakeNoCutForARestoreThatEndsWhileACheckpointIsBeingWritten() throws Exception {
        final URI root = directory.toUri();
        final CheckpointStore store = new CheckpointStore(root, new Configuration());
        final Shard shard = shard("busy");
        shard.createTable(SCHEMA);
        final List<Long> keys = new ArrayList<>();
        for (long key = 0; key < 4 * ROWS; key++) {
            keys.add(key * 13 + 7);
        }
        push(shard, keys);
        commit(store, 1, shard.writeCheckpoint(root, 1), 0, 0);
        final BitSet written = new BitSet(Slots.SLOT_COUNT);
        written.set(0, Slots.SLOT_COUNT / 2);
        final BitSet restored = new BitSet(Slots.SLOT_COUNT);
        restored.set(Slots.SLOT_COUNT / 2, Slots.SLOT_COUNT);

        io.pscluster.checkpoint.PausePoints.arm(io.pscluster.checkpoint.PausePoints.MID_ROW_FILE);
        final java.util.concurrent.CompletableFuture<Shard.WrittenCheckpoint> writing;
        try {
            writing = java.util.concurrent.CompletableFuture.supplyAsync(() -> {
                try {
                    return shard.writeCheckpoint(root, 2, RowFileWriter.Options.defaults(), written, 1, false);
                } catch (Exception e) {
                    throw new java.util.concurrent.CompletionException(e);
                }
            });
            org.awaitility.Awaitility.await()
                    .atMost(java.time.Duration.ofSeconds(30))
                    .until(() -> !io.pscluster.checkpoint.PausePoints.armed(
                            io.pscluster.checkpoint.PausePoints.MID_ROW_FILE));
            final java.util.concurrent.CompletableFuture<Long> restoring =
                    java.util.concurrent.CompletableFuture.supplyAsync(() -> {
                        try {
                            return shard.restore(root, 1, restored);
                        } catch (Exception e) {
                            throw new java.util.concurrent.CompletionException(e);
                        }
                    });
            assertThat(restoring)
                    .as("a restore while a checkpoint is parked mid row file")
                    .succeedsWithin(java.time.Duration.ofSeconds(30));
            assertThat(writing).isNotDone();
        } finally {
            io.pscluster.checkpoint.PausePoints.disarm(io.pscluster.checkpoint.PausePoints.MID_ROW_FILE);
        }
        assertThat(writing).succeedsWithin(java.time.Duration.ofSeconds(30));
        assertThatThrownBy(() -> shard.writeCheckpoint(root, 3, RowFileWriter.Options.defaults(), restored, 1, true))
                .isInstanceOfSatisfying(
                        PsException.class,
                        e -> assertThat(e.getMessage()).contains("cannot write a delta since checkpoint 1"));
    }

    @Test
    void shouldRefuseADeltaSinceACheckpointItDidNotWrite() throws Exception {
        final URI root = directory.toUri();
        final Shard shard = shard("fresh");
        shard.createTable(SCHEMA);
        push(shard, List.of(1L, 2L, 3L));
        assertThatThrownBy(() -> shard.writeCheckpoint(root, 2, RowFileWriter.Options.defaults(), null, 1, true))
                .isInstanceOfSatisfying(PsException.class, e -> {
                    assertThat(e.code()).isEqualTo(Status.Code.FAILED_PRECONDITION);
                    assertThat(e.getMessage()).contains("cannot write a delta since checkpoint 1");
                });

        shard.writeCheckpoint(root, 1);
        shard.dropTable(TABLE);
        shard.createTable(SCHEMA);
        assertThatThrownBy(() -> shard.writeCheckpoint(root, 2, RowFileWriter.Options.defaults(), null, 1, true))
                .isInstanceOfSatisfying(
                        PsException.class, e -> assertThat(e.getMessage()).contains("table 'emb' was created since"));
    }

    @Test
    void shouldKeepTheCommittedParentThroughAnyNumberOfFailedCheckpoints() throws Exception {
        final URI root = directory.toUri();
        final Shard shard = shard("retrying");
        shard.createTable(SCHEMA);
        push(shard, List.of(1L, 2L, 3L));
        final CheckpointStore store = new CheckpointStore(root, new Configuration());
        commit(store, 1, shard.writeCheckpoint(root, 1), 0, 0);
        final Map<Long, List<Integer>> atOne = records(shard);
        // Ten checkpoints written here and never committed (their proxy failed them): 1 stays the latest committed.
        for (long id = 2; id <= 11; id++) {
            push(shard, List.of(id + 10));
            shard.writeCheckpoint(root, id, RowFileWriter.Options.defaults(), null, 1, true);
        }
        final Shard.WrittenCheckpoint delta =
                shard.writeCheckpoint(root, 12, RowFileWriter.Options.defaults(), null, 1, true);
        commit(store, 12, delta, 1, 1);
        assertThat(delta.files().stream()
                        .filter(file -> !file.getRemovedKeys())
                        .mapToLong(CheckpointFile::getRows)
                        .sum())
                .as("rows written since checkpoint 1 (keys 12 to 21)")
                .isEqualTo(10);
        final Shard restored = shard("restored");
        final BitSet all = new BitSet(Slots.SLOT_COUNT);
        all.set(0, Slots.SLOT_COUNT);
        restored.restore(root, 12, all);
        assertThat(records(restored)).isEqualTo(records(shard)).isNotEqualTo(atOne);
    }

    /**
     * A checkpoint that fails after its cut has still pruned the removal log up to its parent's cut; a delta asked
     * for since an older cut the shard remembers (the one before that parent) would miss the removals pruned, so the
     * shard refuses it and a base is taken.
     */
    @Test
    void shouldRefuseADeltaSinceACutOlderThanTheRemovalLogWasPrunedTo() throws Exception {
        final Map<Long, List<Integer>> restored = refuseDeltaSinceCutBeforeAFailedCheckpoint(
                "pruning", shard -> shard.table(TABLE).removeKeys(new long[] {7}, 1));
        assertThat(restored).doesNotContainKey(7L);
    }

    /**
     * The same with no removal at all: the failed checkpoint's cut also forgot which records were written up to its
     * parent's cut, so a delta since the cut before would miss those writes.
     */
    @Test
    void shouldRefuseADeltaSinceACutOlderThanTheWritesWerePrunedTo() throws Exception {
        final Map<Long, List<Integer>> restored =
                refuseDeltaSinceCutBeforeAFailedCheckpoint("marks", shard -> push(shard, List.of(7L, 300L)));
        assertThat(restored).containsKeys(7L, 200L, 300L);
    }

    /**
     * Checkpoint 1 (a base) of 100 keys, {@code change}, checkpoint 2 (a delta since 1), a push of key 200, checkpoint
     * 3 (a delta since 2) cut and then failed: a delta since 1 must be refused as a failed precondition naming the
     * pruning, and the base taken instead restores into a fresh shard exactly. Returns that shard's records.
     */
    private Map<Long, List<Integer>> refuseDeltaSinceCutBeforeAFailedCheckpoint(
            final String name, final ShardChange change) throws Exception {
        final URI root = directory.toUri();
        final Shard shard = shard(name);
        shard.createTable(SCHEMA);
        final CheckpointStore store = new CheckpointStore(root, new Configuration());
        final List<Long> keys = new ArrayList<>();
        for (long key = 1; key <= 100; key++) {
            keys.add(key);
        }
        push(shard, keys);
        commit(store, 1, shard.writeCheckpoint(root, 1), 0, 0);
        change.apply(shard);
        commit(store, 2, shard.writeCheckpoint(root, 2, RowFileWriter.Options.defaults(), null, 1, true), 1, 1);

        // Checkpoint 3 (a delta since 2) is cut, which prunes what the shard kept up to cut 2, then fails writing.
        push(shard, List.of(200L));
        final java.nio.file.Path taken =
                directory.resolve("ckpt-000000000003").resolve(CheckpointStore.fileName(name, TABLE, 3));
        java.nio.file.Files.createDirectories(taken.getParent());
        java.nio.file.Files.createFile(taken);
        assertThatThrownBy(() -> shard.writeCheckpoint(root, 3, RowFileWriter.Options.defaults(), null, 2, true))
                .isInstanceOf(java.io.IOException.class);

        // Checkpoint 2 is gone (deleted, or the proxy started over from checkpoint 1): a delta since 1 is asked for.
        assertThatThrownBy(() -> shard.writeCheckpoint(root, 4, RowFileWriter.Options.defaults(), null, 1, true))
                .as("a delta since checkpoint 1 would miss what changed before cut 2")
                .isInstanceOfSatisfying(PsException.class, e -> {
                    assertThat(e.code()).isEqualTo(Status.Code.FAILED_PRECONDITION);
                    assertThat(e.getMessage())
                            .contains("cannot write a delta since checkpoint 1")
                            .contains("pruned");
                });
        commit(store, 5, shard.writeCheckpoint(root, 5, RowFileWriter.Options.defaults(), null, 1, false), 0, 0);
        final Shard restored = shard(name + "-restored");
        final BitSet all = new BitSet(Slots.SLOT_COUNT);
        all.set(0, Slots.SLOT_COUNT);
        restored.restore(root, 5, all);
        final Map<Long, List<Integer>> records = records(restored);
        assertThat(records).isEqualTo(records(shard));
        return records;
    }

    /** A change made to a shard between two checkpoints. */
    @FunctionalInterface
    private interface ShardChange {
        void apply(Shard shard) throws Exception;
    }

    private void push(final Shard shard, final List<Long> keys) throws InterruptedException {
        final long[] batch = keys.stream().mapToLong(Long::longValue).toArray();
        final float[] gradients = new float[batch.length * DIM];
        for (int i = 0; i < gradients.length; i++) {
            gradients[i] = (float) random.nextGaussian();
        }
        shard.table(TABLE).push(batch, gradients);
    }

    /** Key -> raw bits of the whole record (values, Adagrad's accumulators). */
    private static Map<Long, List<Integer>> records(final Shard shard) throws InterruptedException {
        final Map<Long, List<Integer>> records = new HashMap<>();
        for (final SlotSnapshot slot : shard.table(TABLE).snapshot(s -> true)) {
            for (int row = 0; row < slot.rows(); row++) {
                final List<Integer> bits = new ArrayList<>();
                for (int i = 0; i < slot.rowWidth(); i++) {
                    bits.add(Float.floatToRawIntBits(slot.records()[row * slot.rowWidth() + i]));
                }
                records.put(slot.keys()[row], bits);
            }
        }
        return records;
    }

    /** Commits what the shard wrote as the proxy does: a base (baseId 0) or a delta of {@code parentId}. */
    private static void commit(
            final CheckpointStore store,
            final long id,
            final Shard.WrittenCheckpoint written,
            final long baseId,
            final long parentId)
            throws Exception {
        final List<Manifest.FileEntry> files = new ArrayList<>();
        for (final CheckpointFile file : written.files()) {
            files.add(WrittenFiles.entry("writer", file));
        }
        final List<Manifest.TableEntry> tables = List.of(new Manifest.TableEntry(TABLE, SCHEMA.toByteArray()));
        store.commit(
                baseId == 0
                        ? new Manifest(id, System.currentTimeMillis(), Slots.SLOT_COUNT, tables, files, Map.of())
                        : new Manifest(
                                id,
                                System.currentTimeMillis(),
                                Slots.SLOT_COUNT,
                                Manifest.Kind.DELTA,
                                baseId,
                                parentId,
                                tables,
                                files,
                                Map.of()));
    }
}
