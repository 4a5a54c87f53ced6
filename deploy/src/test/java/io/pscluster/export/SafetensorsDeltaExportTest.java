package io.pscluster.export;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.pscluster.checkpoint.CheckpointInfo;
import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.Manifest;
import io.pscluster.checkpoint.Progress;
import io.pscluster.cli.Psctl;
import io.pscluster.local.AdminCalls;
import io.pscluster.local.LocalCluster;
import io.pscluster.proto.v1.InitializerKind;
import io.pscluster.proto.v1.InitializerSpec;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.server.ShardServer;
import io.pscluster.server.table.ShardSnapshot;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.TreeMap;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Export of incremental checkpoints on a real cluster (two shards, three deltas per base, part files of 64 KiB so
 * that each shard writes a table as several parts whose slots overlap): a base, three deltas in which rows change,
 * sparse keys are created, removed, created again in a later delta and removed and created again within one, then a
 * base of the same model. The export of the last delta (base and three deltas applied in order) has the same bytes
 * as the export of that base, and every export of the chain equals what the cluster held at its checkpoint, also
 * when the sparse table is merged in many small groups of slots. The whole chain is verified: without {@code --id} a
 * damaged newest checkpoint falls back to the delta before it, and a damaged base makes every delta on it refused.
 */
class SafetensorsDeltaExportTest {
    private static final int DENSE_ROWS = 300;
    private static final int DENSE_DIM = 5;
    private static final int SPARSE_DIM = 4;
    private static final int SPARSE_KEYS = 12_000;

    @TempDir
    Path tmp;

    private final Random random = new Random(17);

    @Test
    void shouldExportEachDeltaAsTheModelAtItsCheckpointAndTheLastOneAsItsBaseDoes() throws Exception {
        final Path root = tmp.resolve("checkpoints");
        final Map<Long, Map<Long, float[]>> dense = new HashMap<>();
        final Map<Long, Map<Long, float[]>> sparse = new HashMap<>();
        final List<Long> ids = new ArrayList<>();
        final Set<Long> removedThenCreated = new LinkedHashSet<>();
        final long[] againInOneDelta = new long[1];
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(2)
                        .checkpointRoot(root.toUri().toString())
                        .deltasPerBase(3)
                        .keepCheckpoints(0)
                        .start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            for (int i = 0; i < cluster.shardCount(); i++) {
                cluster.shard(i).shard().tuneCheckpoints(ShardSnapshot.Limits.defaults(), 64 << 10);
            }
            final PsTable w = client.createTable(TableSchema.newBuilder()
                    .setName("w")
                    .setKind(TableKind.DENSE)
                    .setRows(DENSE_ROWS)
                    .setDim(DENSE_DIM)
                    .setOptimizer(OptimizerSpec.newBuilder()
                            .setKind(OptimizerKind.ADAM)
                            .setLearningRate(0.01f))
                    .setInitializer(InitializerSpec.newBuilder()
                            .setKind(InitializerKind.NORMAL)
                            .setScale(0.1f)
                            .setSeed(7))
                    .build());
            final PsTable emb = client.createTable(TableSchema.newBuilder()
                    .setName("emb")
                    .setKind(TableKind.SPARSE)
                    .setDim(SPARSE_DIM)
                    .setOptimizer(OptimizerSpec.newBuilder()
                            .setKind(OptimizerKind.ADAGRAD)
                            .setLearningRate(0.05f))
                    .build());
            final List<Long> live = new ArrayList<>();
            for (int i = 0; i < SPARSE_KEYS; i++) {
                live.add(random.nextLong());
            }
            push(w, range(0, DENSE_ROWS), DENSE_DIM);
            push(emb, live, SPARSE_DIM);
            final List<Long> removed = new ArrayList<>();
            for (int round = 0; round < 5; round++) {
                if (round > 0 && round < 4) {
                    // Dense: a third of the rows change, some of them in every delta. Sparse: 3% change, 50 are
                    // created, 40 removed (some of
                    // them changed or created in this round), and keys removed in an earlier round come back.
                    push(w, range(round * 40, round * 40 + 100), DENSE_DIM);
                    final List<Long> changed = new ArrayList<>();
                    for (int i = 0; i < SPARSE_KEYS / 33; i++) {
                        changed.add(live.get(random.nextInt(live.size())));
                    }
                    for (int i = 0; i < 50; i++) {
                        final long key = random.nextLong();
                        changed.add(key);
                        live.add(key);
                    }
                    final List<Long> back = new ArrayList<>(removed.subList(0, Math.min(20, removed.size())));
                    removed.removeAll(back);
                    removedThenCreated.addAll(back);
                    changed.addAll(back);
                    live.addAll(back);
                    push(emb, changed, SPARSE_DIM);
                    final long[] gone = new long[40];
                    for (int i = 0; i < gone.length; i++) {
                        gone[i] = live.remove(live.size() - 1 - random.nextInt(200));
                        removed.add(gone[i]);
                    }
                    removeKeys(cluster, gone);
                    if (round == 3) {
                        // Removed and created again within one delta: in its removed keys and in its rows.
                        final long again = removed.remove(removed.size() - 1);
                        againInOneDelta[0] = again;
                        push(emb, List.of(again), SPARSE_DIM);
                        live.add(again);
                        removedThenCreated.add(again);
                    }
                }
                client.flush();
                final long id = AdminCalls.checkpointNow(cluster.proxyAddress());
                ids.add(id);
                dense.put(id, values(cluster.dumpTable("w"), DENSE_DIM));
                sparse.put(id, values(cluster.dumpTable("emb"), SPARSE_DIM));
            }
            final Set<Long> atLastDelta = sparse.get(ids.get(3)).keySet();
            assertThat(removedThenCreated.stream().filter(atLastDelta::contains))
                    .as("keys removed, then created again")
                    .hasSizeGreaterThanOrEqualTo(20)
                    .contains(againInOneDelta[0]);
            assertThat(atLastDelta).doesNotContainAnyElementsOf(removed);
        }

        final CheckpointStore store = new CheckpointStore(root.toUri(), new Configuration());
        final List<String> kinds = new ArrayList<>();
        for (final long id : ids) {
            kinds.add(store.get(id).orElseThrow().manifest().kind().toString());
        }
        assertThat(kinds).containsExactly("base", "delta", "delta", "delta", "base");
        final Manifest lastDelta = store.get(ids.get(3)).orElseThrow().manifest();
        assertThat(lastDelta.files())
                .anySatisfy(file -> assertThat(file.removedKeys()).isTrue());
        final Map<String, Set<Integer>> slotsByShard = new HashMap<>();
        boolean overlapping = false;
        for (final Manifest.FileEntry file :
                store.get(ids.get(0)).orElseThrow().manifest().filesOf("emb")) {
            final Set<Integer> seen = slotsByShard.computeIfAbsent(file.shardId(), shard -> new java.util.HashSet<>());
            for (final int slot : file.file().slots()) {
                overlapping |= !seen.add(slot);
            }
        }
        assertThat(overlapping)
                .as(
                        "a shard's part files of the base share slots: %s",
                        store.get(ids.get(0)).orElseThrow().manifest().filesOf("emb"))
                .isTrue();

        // Through psctl: the last delta, then the base of the same model taken after it.
        final Path fromChain = export(root, ids.get(3), "chain");
        final Path fromBase = export(root, ids.get(4), "base");
        for (final String table : List.of("w", "emb")) {
            assertThat(tensorBytes(fromChain.resolve(table + ".safetensors")))
                    .as("table %s exported from base and deltas, and from a base of the same model", table)
                    .isEqualTo(tensorBytes(fromBase.resolve(table + ".safetensors")));
        }
        assertExported(fromChain, dense.get(ids.get(3)), sparse.get(ids.get(3)));
        assertExported(fromBase, dense.get(ids.get(4)), sparse.get(ids.get(4)));

        // A file that appears under the last table's name while the export writes fails it, and the export leaves
        // nothing under a final name: the tables already renamed into place are taken back (found by a hostile review).
        final Path raced = Files.createDirectories(tmp.resolve("raced"));
        final SafetensorsExport racing =
                SafetensorsExport.plan(store.chain(store.get(ids.get(3)).orElseThrow()), List.of(), raced);
        final String lastTable = racing.tables().get(racing.tables().size() - 1);
        assertThat(racing.tables()).as("tables exported").hasSizeGreaterThan(1);
        assertThatThrownBy(() -> racing.write(store.fileSystem(), table -> {
                    if (table.table().equals(lastTable)) {
                        try {
                            Files.writeString(raced.resolve(lastTable + ".safetensors"), "another export's");
                        } catch (java.io.IOException e) {
                            throw new java.io.UncheckedIOException(e);
                        }
                    }
                }))
                .isInstanceOf(java.nio.file.FileAlreadyExistsException.class);
        try (java.util.stream.Stream<Path> left = Files.list(raced)) {
            assertThat(left.map(path -> path.getFileName().toString())).containsExactly(lastTable + ".safetensors");
        }

        // Every checkpoint of the chain, the sparse table merged in groups of a few slots (about 40 rows each).
        for (int i = 0; i < 4; i++) {
            final long id = ids.get(i);
            final CheckpointInfo checkpoint = store.get(id).orElseThrow();
            final Path out = Files.createDirectories(tmp.resolve("small-groups-" + id));
            final SafetensorsExport export = SafetensorsExport.plan(
                    store.chain(checkpoint), List.of(), out, 40 * MergedRows.bytesPerRow(SPARSE_DIM));
            export.write(store.fileSystem(), table -> {});
            assertExported(out, dense.get(id), sparse.get(id));
            // Every file read counted once per read, against totals that count those reads: 100% at the end.
            final Progress.View done = export.progress().view();
            assertThat(done.rowsDone()).as("rows of checkpoint %d's chain", id).isEqualTo(done.rowsTotal());
            assertThat(done.bytesDone())
                    .as("bytes of checkpoint %d's chain", id)
                    .isEqualTo(done.bytesTotal());
            if (i == 3) {
                assertThat(tensorBytes(out.resolve("emb.safetensors")))
                        .isEqualTo(tensorBytes(fromChain.resolve("emb.safetensors")));
            }
        }

        // Without --id, the newest checkpoint whose whole chain verifies: the last base is damaged, the delta before.
        final String lastBaseFile = damage(store, ids.get(4), "emb");
        final Path newest = tmp.resolve("newest");
        final Run fallback = psctl("checkpoint", "export", "--checkpoint-dir", root.toString(), "--out", "" + newest);
        assertThat(fallback.exit()).as(fallback.out()).isZero();
        assertThat(fallback.out())
                .contains("checkpoint " + ids.get(4) + ": DAMAGED (1 of ")
                .contains(lastBaseFile)
                .contains("exporting checkpoint " + ids.get(3) + " (created ")
                .contains("; a delta, read with its chain " + ids.subList(0, 4) + ")");
        assertExported(newest, dense.get(ids.get(3)), sparse.get(ids.get(3)));

        // A damaged base: every delta on it is damaged too, named with the checkpoint it needs.
        final String baseFile = damage(store, ids.get(0), "w");
        final Path refused = tmp.resolve("refused");
        final Run named = psctl(
                "checkpoint",
                "export",
                "--checkpoint-dir",
                root.toString(),
                "--id",
                "" + ids.get(3),
                "--out",
                "" + refused);
        assertThat(named.exit()).as(named.out()).isEqualTo(1);
        assertThat(named.out())
                .contains("checkpoint " + ids.get(3) + ": DAMAGED (it needs checkpoint " + ids.get(0) + ": 1 of ")
                .contains(baseFile)
                .doesNotContain("exporting");
        assertThat(refused).doesNotExist();
        final Run none = psctl("checkpoint", "export", "--checkpoint-dir", root.toString(), "--out", "" + refused);
        assertThat(none.exit()).as(none.out()).isEqualTo(1);
        assertThat(none.out())
                .contains("checkpoint " + ids.get(1) + ": DAMAGED (it needs checkpoint " + ids.get(0))
                .contains("no intact checkpoint under ");
        assertThat(refused).doesNotExist();
    }

    private Path export(final Path root, final long id, final String name) {
        final Path out = tmp.resolve(name);
        final Run run = psctl(
                "checkpoint",
                "export",
                "--checkpoint-dir",
                root.toString(),
                "--id",
                Long.toString(id),
                "--out",
                "" + out);
        assertThat(run.exit()).as(run.out()).isZero();
        return out;
    }

    private record Run(int exit, String out) {}

    private static Run psctl(final String... args) {
        final StringWriter out = new StringWriter();
        final int exit = Psctl.run(new PrintWriter(out, true), new PrintWriter(out, true), args);
        return new Run(exit, out.toString());
    }

    /** Flips a byte in the middle of the checkpoint's first file of {@code table} (and drops its .crc); its path. */
    private static String damage(final CheckpointStore store, final long id, final String table) throws Exception {
        final Manifest.FileEntry victim =
                store.get(id).orElseThrow().manifest().filesOf(table).get(0);
        final Path file =
                Path.of(store.checkpointDir(id).toUri()).resolve(victim.file().path());
        final byte[] bytes = Files.readAllBytes(file);
        bytes[bytes.length / 2] ^= 0x10;
        Files.write(file, bytes);
        Files.deleteIfExists(file.resolveSibling("." + file.getFileName() + ".crc"));
        return victim.file().path();
    }

    private static void assertExported(final Path out, final Map<Long, float[]> dense, final Map<Long, float[]> sparse)
            throws Exception {
        final PlainSafetensorsReader w = new PlainSafetensorsReader(out.resolve("w.safetensors"));
        final float[] all = w.tensors.get("values").floats();
        final Map<Long, float[]> denseRows = new TreeMap<>();
        for (int k = 0; k < DENSE_ROWS; k++) {
            denseRows.put((long) k, Arrays.copyOfRange(all, k * DENSE_DIM, (k + 1) * DENSE_DIM));
        }
        assertThat(bits(denseRows)).isEqualTo(bits(dense));

        final PlainSafetensorsReader emb = new PlainSafetensorsReader(out.resolve("emb.safetensors"));
        final long[] keys = emb.tensors.get("keys").longs();
        final float[] values = emb.tensors.get("values").floats();
        final Map<Long, float[]> sparseRows = new TreeMap<>();
        for (int i = 0; i < keys.length; i++) {
            assertThat(sparseRows.put(keys[i], Arrays.copyOfRange(values, i * SPARSE_DIM, (i + 1) * SPARSE_DIM)))
                    .as("key %d exported once", keys[i])
                    .isNull();
        }
        assertThat(bits(sparseRows)).isEqualTo(bits(sparse));
    }

    /** The file's tensor bytes (after the header, whose metadata names the checkpoint). */
    private static byte[] tensorBytes(final Path file) throws Exception {
        final byte[] bytes = Files.readAllBytes(file);
        final long header =
                ByteBuffer.wrap(bytes, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        return Arrays.copyOfRange(bytes, (int) (8 + header), bytes.length);
    }

    private static void removeKeys(final LocalCluster cluster, final long[] keys) throws InterruptedException {
        // Each shard removes those it holds; the other has none of them.
        for (int i = 0; i < cluster.shardCount(); i++) {
            final ShardServer shard = cluster.shard(i);
            shard.shard().table("emb").removeKeys(keys, keys.length);
        }
    }

    private void push(final PsTable table, final List<Long> keys, final int dim) {
        final long[] batch = keys.stream().mapToLong(Long::longValue).toArray();
        final float[] gradients = new float[batch.length * dim];
        for (int i = 0; i < gradients.length; i++) {
            gradients[i] = (float) random.nextGaussian();
        }
        table.push(batch, gradients);
    }

    private static List<Long> range(final long from, final long to) {
        final List<Long> keys = new ArrayList<>();
        for (long key = from; key < to; key++) {
            keys.add(key);
        }
        return keys;
    }

    /** The values (the first {@code dim} floats) of each record. */
    private static Map<Long, float[]> values(final Map<Long, float[]> records, final int dim) {
        final Map<Long, float[]> values = new TreeMap<>();
        records.forEach((key, record) -> values.put(key, Arrays.copyOf(record, dim)));
        return values;
    }

    /** key -> the values' raw bits, as text: equal only when every float is bit-identical. */
    private static Map<Long, String> bits(final Map<Long, float[]> rows) {
        final Map<Long, String> bits = new TreeMap<>();
        rows.forEach((key, values) -> {
            final StringBuilder text = new StringBuilder();
            for (final float value : values) {
                text.append(text.length() == 0 ? "" : " ")
                        .append(Integer.toUnsignedString(Float.floatToRawIntBits(value)));
            }
            bits.put(key, text.toString());
        });
        return bits;
    }
}
