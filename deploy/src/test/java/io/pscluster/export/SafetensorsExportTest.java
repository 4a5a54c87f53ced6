package io.pscluster.export;

import static io.pscluster.cli.PsctlRun.psctl;
import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.Manifest;
import io.pscluster.checkpoint.RowFileInfo;
import io.pscluster.checkpoint.RowFileWriter;
import io.pscluster.cli.PsctlRun;
import io.pscluster.local.AdminCalls;
import io.pscluster.local.LocalCluster;
import io.pscluster.proto.v1.InitializerKind;
import io.pscluster.proto.v1.InitializerSpec;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.wire.TableSchemas;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code psctl checkpoint export --format safetensors}, offline, on the checkpoints of a real local cluster (2 shards
 * over loopback gRPC): a dense table with Adam (values, two slots and a counter per record) and a sparse one with
 * Adagrad, read back by a reader that shares no code with the exporter and by numpy, and compared bit for bit with
 * what the cluster served when each checkpoint was taken.
 */
class SafetensorsExportTest {
    private static final int DENSE_ROWS = 300;
    private static final int DENSE_DIM = 5;
    private static final int SPARSE_DIM = 4;

    @TempDir
    static Path tmp;

    private static Path root;
    /** What the cluster served at checkpoint 1 and at checkpoint 2, per table: key -> values. */
    private static final Map<Long, float[]> dense1 = new TreeMap<>();

    private static final Map<Long, float[]> sparse1 = new TreeMap<>();
    private static final Map<Long, float[]> dense2 = new TreeMap<>();
    private static final Map<Long, float[]> sparse2 = new TreeMap<>();

    @BeforeAll
    static void trainAndCheckpointTwice() throws Exception {
        root = tmp.resolve("checkpoints");
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(2)
                        .checkpointRoot(root.toUri().toString())
                        .start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable dense = client.createTable(TableSchema.newBuilder()
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
            final PsTable sparse = client.createTable(TableSchema.newBuilder()
                    .setName("emb")
                    .setKind(TableKind.SPARSE)
                    .setDim(SPARSE_DIM)
                    .setOptimizer(OptimizerSpec.newBuilder()
                            .setKind(OptimizerKind.ADAGRAD)
                            .setLearningRate(0.05f))
                    .setInitializer(InitializerSpec.newBuilder()
                            .setKind(InitializerKind.UNIFORM)
                            .setScale(0.5f)
                            .setSeed(3))
                    .build());
            final Random random = new Random(42);
            final long[] denseKeys = new long[DENSE_ROWS];
            for (int k = 0; k < DENSE_ROWS; k++) {
                denseKeys[k] = k;
            }
            final List<Long> sparseKeys = new ArrayList<>();
            for (int round = 0; round < 2; round++) {
                // Keys across the whole 64-bit range, negative ones too; the second round adds new ones.
                for (int i = 0; i < 200; i++) {
                    sparseKeys.add(random.nextLong());
                }
                for (int step = 0; step < 3; step++) {
                    dense.push(denseKeys, gradients(random, DENSE_ROWS * DENSE_DIM));
                    final long[] keys =
                            sparseKeys.stream().mapToLong(Long::longValue).toArray();
                    sparse.push(keys, gradients(random, keys.length * SPARSE_DIM));
                }
                client.flush();
                final long[] keys =
                        sparseKeys.stream().mapToLong(Long::longValue).toArray();
                put(round == 0 ? dense1 : dense2, denseKeys, dense.pull(denseKeys), DENSE_DIM);
                put(round == 0 ? sparse1 : sparse2, keys, sparse.pull(keys), SPARSE_DIM);
                assertThat(AdminCalls.checkpointNow(cluster.proxyAddress())).isEqualTo(round + 1L);
            }
        }
        assertThat(sparse2).hasSize(400);
    }

    @Test
    void shouldExportTheLatestCheckpointBitExactForAReaderThatSharesNoCode() throws Exception {
        final Path out = tmp.resolve("latest");
        final PsctlRun run = psctl(
                "checkpoint",
                "export",
                "--checkpoint-dir",
                root.toString(),
                "--format",
                "safetensors",
                "--out",
                out.toString());
        assertThat(run.exit()).as(run.text()).isZero();
        assertThat(run.out())
                .contains("exporting checkpoint 2 (created ")
                .contains("  w: dense, 300 rows x dim 5, ")
                .contains("  emb: sparse, 400 rows x dim 4, ")
                .contains("exported checkpoint 2");
        try (Stream<Path> files = Files.list(out)) {
            assertThat(files.map(file -> file.getFileName().toString()))
                    .containsExactlyInAnyOrder("w.safetensors", "emb.safetensors");
        }
        // Readable as any new file of its user is (the umask's), not private like a temporary file.
        assertThat(Files.getPosixFilePermissions(out.resolve("w.safetensors")))
                .isEqualTo(Files.getPosixFilePermissions(Files.createFile(tmp.resolve("probe"))));

        final PlainSafetensorsReader w = new PlainSafetensorsReader(out.resolve("w.safetensors"));
        assertThat(w.metadata)
                .containsEntry("checkpoint_id", "2")
                .containsEntry("table", "w")
                .containsEntry("kind", "dense")
                .containsEntry("dim", "5")
                .containsEntry("optimizer", "adam")
                .containsKey("created");
        assertThat((w.headerLength + 8) % 8)
                .as("the byte buffer starts 8-byte aligned")
                .isZero();
        assertDense(w, dense2);

        final PlainSafetensorsReader emb = new PlainSafetensorsReader(out.resolve("emb.safetensors"));
        assertThat(emb.metadata)
                .containsEntry("checkpoint_id", "2")
                .containsEntry("table", "emb")
                .containsEntry("kind", "sparse")
                .containsEntry("dim", "4")
                .containsEntry("optimizer", "adagrad");
        assertSparse(emb, sparse2);

        final Path older = tmp.resolve("older");
        final PsctlRun first = psctl(
                "checkpoint",
                "export",
                "--checkpoint-dir",
                root.toUri().toString(),
                "--id",
                "1",
                "--table",
                "emb",
                "--out",
                older.toString());
        assertThat(first.exit()).as(first.text()).isZero();
        assertThat(older.resolve("w.safetensors")).doesNotExist();
        final PlainSafetensorsReader emb1 = new PlainSafetensorsReader(older.resolve("emb.safetensors"));
        assertThat(emb1.metadata).containsEntry("checkpoint_id", "1");
        assertSparse(emb1, sparse1);
    }

    @Test
    void shouldBeReadByNumpyBitExact() throws Exception {
        Assumptions.assumeTrue(
                NUMPY_PYTHON != null, "python3 with numpy is not installed (.ci/run installs python3-numpy)");
        final Path out = tmp.resolve("numpy");
        final PsctlRun run =
                psctl("checkpoint", "export", "--checkpoint-dir", root.toString(), "--out", out.toString());
        assertThat(run.exit()).as(run.text()).isZero();
        // The README's three lines, then one line per row: key and the values' bits.
        final String script = String.join(
                "\n",
                "import json, sys, numpy as np",
                "def load(path):",
                "    b = open(path, 'rb').read(); n = int.from_bytes(b[:8], 'little'); h = json.loads(b[8:8 + n])",
                "    return h['__metadata__'], {k: np.frombuffer(b[8 + n + v['data_offsets'][0]:8 + n"
                        + " + v['data_offsets'][1]], {'F32': '<f4', 'I64': '<i8'}[v['dtype']]).reshape(v['shape'])"
                        + " for k, v in h.items() if k != '__metadata__'}",
                "meta, t = load(sys.argv[1])",
                "keys = t['keys'] if 'keys' in t else np.arange(t['values'].shape[0])",
                "assert t['values'].dtype == np.float32 and t['values'].shape == (len(keys), int(meta['dim']))",
                "bits = t['values'].view(np.uint32)",
                "for i in range(len(keys)):",
                "    print(int(keys[i]), ' '.join(str(int(x)) for x in bits[i]))",
                "");
        assertThat(numpyRows(script, out.resolve("w.safetensors"))).isEqualTo(bits(dense2));
        assertThat(numpyRows(script, out.resolve("emb.safetensors"))).isEqualTo(bits(sparse2));
    }

    @Test
    void shouldSkipADamagedLatestCheckpointAndFailOnOneNamedWithNothingLeftBehind() throws Exception {
        final Path copy = tmp.resolve("damaged-copy");
        copyTree(root, copy);
        final CheckpointStore store = new CheckpointStore(copy.toUri(), new Configuration());
        final Manifest.FileEntry victim =
                store.get(2).orElseThrow().manifest().files().get(0);
        final Path file =
                copy.resolve("ckpt-000000000002").resolve(victim.file().path());
        final byte[] bytes = Files.readAllBytes(file);
        bytes[bytes.length / 2] ^= 0x10;
        Files.write(file, bytes);
        Files.deleteIfExists(file.resolveSibling("." + file.getFileName() + ".crc"));

        final Path fallback = tmp.resolve("fallback");
        final PsctlRun latest =
                psctl("checkpoint", "export", "--checkpoint-dir", copy.toString(), "--out", fallback.toString());
        assertThat(latest.exit()).as(latest.text()).isZero();
        assertThat(latest.out())
                .contains("checkpoint 2: DAMAGED (1 of 4 files); skipped for the previous one")
                .contains(victim.file().path())
                .contains("exporting checkpoint 1 (created ");
        assertDense(new PlainSafetensorsReader(fallback.resolve("w.safetensors")), dense1);
        assertSparse(new PlainSafetensorsReader(fallback.resolve("emb.safetensors")), sparse1);

        final Path refused = tmp.resolve("refused");
        final PsctlRun named = psctl(
                "checkpoint", "export", "--checkpoint-dir", copy.toString(), "--id", "2", "--out", refused.toString());
        assertThat(named.exit()).as(named.text()).isEqualTo(1);
        assertThat(named.out())
                .contains("checkpoint 2: DAMAGED (1 of 4 files)")
                .contains(victim.file().path())
                .doesNotContain("exporting");
        assertThat(refused).doesNotExist();
    }

    @Test
    void shouldRefuseBadOptionsWithExit2NamingTheProblem() throws Exception {
        final Path out = Files.createDirectories(tmp.resolve("bad"));
        final String dir = root.toString();
        final PsctlRun format =
                psctl("checkpoint", "export", "--checkpoint-dir", dir, "--format", "npz", "--out", "" + out);
        assertThat(format.exit()).isEqualTo(2);
        assertThat(format.err()).contains("--format=npz is not supported; the one format is safetensors");
        final PsctlRun negative =
                psctl("checkpoint", "export", "--checkpoint-dir", dir, "--id", "-3", "--out", "" + out);
        assertThat(negative.exit()).isEqualTo(2);
        assertThat(negative.err()).contains("--id=-3 must be a checkpoint id (>= 1)");
        final PsctlRun absent = psctl("checkpoint", "export", "--checkpoint-dir", dir, "--id", "9", "--out", "" + out);
        assertThat(absent.exit()).as("not there, as in verify and delete").isEqualTo(1);
        assertThat(absent.err())
                .contains("--id=9: no such checkpoint under ")
                .contains("complete ones: [2, 1]")
                .doesNotContain("Usage:");
        final PsctlRun table =
                psctl("checkpoint", "export", "--checkpoint-dir", dir, "--table", "nope", "--out", "" + out);
        assertThat(table.exit()).isEqualTo(1);
        assertThat(table.err())
                .contains("checkpoint 2 has no table 'nope'; its tables: [")
                .doesNotContain("Usage:");
        final PsctlRun noOut = psctl("checkpoint", "export", "--checkpoint-dir", dir);
        assertThat(noOut.exit()).isEqualTo(2);
        assertThat(noOut.err()).contains("--out");

        final Path existing = Files.writeString(out.resolve("emb.safetensors"), "keep me");
        final PsctlRun clobber = psctl("checkpoint", "export", "--checkpoint-dir", dir, "--out", "" + out);
        assertThat(clobber.exit()).isEqualTo(2);
        assertThat(clobber.err()).contains(existing + " exists; the export never replaces a file");
        assertThat(existing).hasContent("keep me");
        try (Stream<Path> files = Files.list(out)) {
            assertThat(files).containsExactly(existing);
        }
        final PsctlRun notDir = psctl("checkpoint", "export", "--checkpoint-dir", dir, "--out", "" + existing);
        assertThat(notDir.exit()).isEqualTo(2);
        assertThat(notDir.err()).contains("--out=" + existing + " exists and is not a directory");

        final PsctlRun empty = psctl(
                "checkpoint", "export", "--checkpoint-dir", tmp.resolve("none").toString(), "--out", "" + out);
        assertThat(empty.exit()).isEqualTo(1);
        assertThat(empty.err())
                .contains("--checkpoint-dir=" + tmp.resolve("none") + ": checkpoint root ", " does not exist");
        assertThat(tmp.resolve("none")).doesNotExist();
    }

    /**
     * A checkpoint written by hand as a shard may soon write one: a table's rows in several part files per shard.
     * Every part is read; a dense row missing from all of them fails the whole export (no file of any table left,
     * not even a temporary one), never a silent zero.
     */
    @Test
    void shouldReadEveryPartFileAndFailWholeOnAMissingDenseRow() throws Exception {
        final Path handmade = tmp.resolve("handmade");
        final CheckpointStore store = new CheckpointStore(handmade.toUri(), new Configuration());
        final TableSchema dense = TableSchemas.normalize(TableSchema.newBuilder()
                .setName("d")
                .setKind(TableKind.DENSE)
                .setRows(10)
                .setDim(2)
                .setOptimizer(OptimizerSpec.newBuilder()
                        .setKind(OptimizerKind.MOMENTUM)
                        .setLearningRate(0.1f))
                .build());
        final TableSchema sparse = TableSchemas.normalize(TableSchema.newBuilder()
                .setName("s/p a")
                .setKind(TableKind.SPARSE)
                .setDim(1)
                .setOptimizer(
                        OptimizerSpec.newBuilder().setKind(OptimizerKind.SGD).setLearningRate(0.1f))
                .build());
        for (long id = 1; id <= 2; id++) {
            final long missing = id == 2 ? 4 : -1;
            final List<Manifest.FileEntry> files = new ArrayList<>();
            // Dense keys 0..9 over three files of two shards, two of them parts of one shard's table.
            files.add(new Manifest.FileEntry(
                    "d",
                    "a",
                    denseFile(
                            store,
                            id,
                            "shard-a/d.part0.rows",
                            Map.of(1, new long[] {0, 3, 6}, 3, new long[] {9}),
                            missing)));
            files.add(new Manifest.FileEntry(
                    "d",
                    "a",
                    denseFile(
                            store,
                            id,
                            "shard-a/d.part1.rows",
                            Map.of(2, new long[] {1, 4}, 5, new long[] {7}),
                            missing)));
            files.add(new Manifest.FileEntry(
                    "d", "b", denseFile(store, id, "shard-b/d.rows", Map.of(0, new long[] {2, 5, 8}), missing)));
            try (RowFileWriter writer =
                    RowFileWriter.create(store.fileSystem(), store.checkpointDir(id), "shard-b/s.rows", 1)) {
                writer.beginSlot(7);
                writer.writeRow(-5, new float[] {-0.0f}, 0);
                writer.writeRow(Long.MAX_VALUE, new float[] {Float.intBitsToFloat(0x7fc00123)}, 0);
                files.add(new Manifest.FileEntry("s/p a", "b", writer.finish()));
            }
            store.commit(new Manifest(
                    id,
                    System.currentTimeMillis(),
                    16,
                    // The sparse table first: it is whole when the dense one fails, and must not be left either.
                    List.of(
                            new Manifest.TableEntry("s/p a", sparse.toByteArray()),
                            new Manifest.TableEntry("d", dense.toByteArray())),
                    files,
                    Map.of()));
        }

        final Path whole = tmp.resolve("handmade-1");
        final PsctlRun good = psctl(
                "checkpoint", "export", "--checkpoint-dir", handmade.toString(), "--id", "1", "--out", "" + whole);
        assertThat(good.exit()).as(good.text()).isZero();
        final PlainSafetensorsReader d = new PlainSafetensorsReader(whole.resolve("d.safetensors"));
        assertThat(d.tensors.get("values").shape()).containsExactly(10, 2);
        final float[] values = d.tensors.get("values").floats();
        for (int k = 0; k < 10; k++) {
            assertThat(values[2 * k]).isEqualTo(k);
            assertThat(values[2 * k + 1]).isEqualTo(-k - 0.5f);
        }
        final PlainSafetensorsReader s = new PlainSafetensorsReader(whole.resolve("s%2Fp%20a.safetensors"));
        assertThat(s.metadata).containsEntry("table", "s/p a");
        assertThat(s.tensors.get("keys").longs()).containsExactly(-5, Long.MAX_VALUE);
        final float[] sparseValues = s.tensors.get("values").floats();
        assertThat(Float.floatToRawIntBits(sparseValues[0])).isEqualTo(0x80000000);
        assertThat(Float.floatToRawIntBits(sparseValues[1])).isEqualTo(0x7fc00123);

        final Path broken = tmp.resolve("handmade-2");
        final PsctlRun missing =
                psctl("checkpoint", "export", "--checkpoint-dir", handmade.toString(), "--out", "" + broken);
        assertThat(missing.exit()).as(missing.text()).isEqualTo(1);
        assertThat(missing.out())
                .contains("checkpoint 2, table 'd': the checkpoint lacks 1 of the dense table's 10 rows (the first:"
                        + " [4]); a missing row is never exported as zeros")
                .contains("nothing exported");
        try (Stream<Path> files = Files.list(broken)) {
            assertThat(files).as("no file, whole or temporary").isEmpty();
        }

        // A delta on base 2 (its dense table not exported) that removes both sparse keys and writes -5 again: the
        // chain's last word wins.
        final RowFileInfo changed;
        try (RowFileWriter writer =
                RowFileWriter.create(store.fileSystem(), store.checkpointDir(3), "shard-b/s.rows", 1)) {
            writer.beginSlot(7);
            writer.writeRow(-5, new float[] {1f}, 0);
            changed = writer.finish();
        }
        final RowFileInfo removed;
        try (RowFileWriter writer =
                RowFileWriter.create(store.fileSystem(), store.checkpointDir(3), "shard-b/s.removed", 0)) {
            writer.beginSlot(7);
            writer.writeRow(Long.MAX_VALUE, new float[0], 0);
            writer.writeRow(-5, new float[0], 0);
            removed = writer.finish();
        }
        store.commit(new Manifest(
                3,
                System.currentTimeMillis(),
                16,
                Manifest.Kind.DELTA,
                2,
                2,
                List.of(new Manifest.TableEntry("s/p a", sparse.toByteArray())),
                List.of(
                        new Manifest.FileEntry("s/p a", "b", changed),
                        new Manifest.FileEntry("s/p a", "b", removed, true)),
                Map.of()));
        final Path chained = tmp.resolve("handmade-3");
        final PsctlRun delta = psctl(
                "checkpoint", "export", "--checkpoint-dir", handmade.toString(), "--id", "3", "--out", "" + chained);
        assertThat(delta.exit()).as(delta.text()).isZero();
        assertThat(delta.out())
                .contains("exporting checkpoint 3 (created ")
                .contains("; a delta, read with its chain [2, 3])");
        final PlainSafetensorsReader s3 = new PlainSafetensorsReader(chained.resolve("s%2Fp%20a.safetensors"));
        assertThat(s3.metadata).containsEntry("checkpoint_id", "3");
        assertThat(s3.tensors.get("keys").longs()).containsExactly(-5);
        assertThat(s3.tensors.get("values").floats()).containsExactly(1f);
    }

    /** Rows {@code [k, -k - 0.5]} and two momentum floats that must not be exported. */
    private static RowFileInfo denseFile(
            final CheckpointStore store,
            final long id,
            final String path,
            final Map<Integer, long[]> slots,
            final long skip)
            throws IOException {
        try (RowFileWriter writer = RowFileWriter.create(store.fileSystem(), store.checkpointDir(id), path, 4)) {
            for (final int slot : new TreeMap<>(slots).keySet()) {
                writer.beginSlot(slot);
                for (final long key : slots.get(slot)) {
                    if (key != skip) {
                        writer.writeRow(key, new float[] {key, -key - 0.5f, 99f, 99f}, 0);
                    }
                }
            }
            return writer.finish();
        }
    }

    private static void assertDense(final PlainSafetensorsReader file, final Map<Long, float[]> expected) {
        assertThat(file.tensors).containsOnlyKeys("values");
        final PlainSafetensorsReader.Tensor values = file.tensors.get("values");
        assertThat(values.dtype()).isEqualTo("F32");
        assertThat(values.shape()).containsExactly(DENSE_ROWS, DENSE_DIM);
        final Map<Long, float[]> rows = new TreeMap<>();
        final float[] all = values.floats();
        for (int k = 0; k < DENSE_ROWS; k++) {
            rows.put((long) k, java.util.Arrays.copyOfRange(all, k * DENSE_DIM, (k + 1) * DENSE_DIM));
        }
        assertThat(bits(rows)).isEqualTo(bits(expected));
    }

    private static void assertSparse(final PlainSafetensorsReader file, final Map<Long, float[]> expected) {
        assertThat(file.tensors).containsOnlyKeys("keys", "values");
        final long[] keys = file.tensors.get("keys").longs();
        assertThat(file.tensors.get("keys").dtype()).isEqualTo("I64");
        assertThat(file.tensors.get("values").shape()).containsExactly(keys.length, SPARSE_DIM);
        final float[] all = file.tensors.get("values").floats();
        final Map<Long, float[]> rows = new TreeMap<>();
        for (int i = 0; i < keys.length; i++) {
            assertThat(rows.put(keys[i], java.util.Arrays.copyOfRange(all, i * SPARSE_DIM, (i + 1) * SPARSE_DIM)))
                    .as("key %d exported once", keys[i])
                    .isNull();
        }
        assertThat(bits(rows)).isEqualTo(bits(expected));
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

    private static Map<Long, String> numpyRows(final String script, final Path file) throws Exception {
        final Process python = new ProcessBuilder(NUMPY_PYTHON, "-c", script, file.toString())
                .redirectErrorStream(true)
                .start();
        final String output = new String(python.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertThat(python.waitFor(60, TimeUnit.SECONDS)).isTrue();
        assertThat(python.exitValue()).as(output).isZero();
        final Map<Long, String> rows = new TreeMap<>();
        output.lines().forEach(line -> {
            final int space = line.indexOf(' ');
            rows.put(Long.parseLong(line.substring(0, space)), line.substring(space + 1));
        });
        return rows;
    }

    /**
     * A python that imports numpy: Debian's (where .ci/run's apt-get puts python3-numpy) first, then the PATH's (which
     * may be a pyenv shim without it); null if neither does.
     */
    private static final String NUMPY_PYTHON = findNumpyPython();

    private static String findNumpyPython() {
        for (final String candidate : new String[] {"/usr/bin/python3", "python3"}) {
            try {
                final Process probe = new ProcessBuilder(candidate, "-c", "import numpy")
                        .redirectErrorStream(true)
                        .start();
                probe.getInputStream().readAllBytes();
                if (probe.waitFor(60, TimeUnit.SECONDS) && probe.exitValue() == 0) {
                    return candidate;
                }
            } catch (IOException notThere) {
                // try the next one
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return null;
            }
        }
        return null;
    }

    private static float[] gradients(final Random random, final int count) {
        final float[] gradients = new float[count];
        for (int i = 0; i < count; i++) {
            gradients[i] = (float) random.nextGaussian();
        }
        return gradients;
    }

    private static void put(final Map<Long, float[]> into, final long[] keys, final float[] values, final int dim) {
        for (int i = 0; i < keys.length; i++) {
            into.put(keys[i], java.util.Arrays.copyOfRange(values, i * dim, (i + 1) * dim));
        }
    }

    private static void copyTree(final Path from, final Path to) throws IOException {
        try (Stream<Path> paths = Files.walk(from)) {
            for (final Path path : (Iterable<Path>) paths::iterator) {
                final Path target = to.resolve(from.relativize(path).toString());
                if (Files.isDirectory(path)) {
                    Files.createDirectories(target);
                } else {
                    Files.copy(path, target, StandardCopyOption.COPY_ATTRIBUTES);
                }
            }
        }
    }
}
