package io.pscluster.export;

import static org.assertj.core.api.Assertions.assertThat;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.ChunkCodec;
import io.pscluster.checkpoint.Manifest;
import io.pscluster.checkpoint.RowFileWriter;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.wire.TableSchemas;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Tables larger than the heap of the {@code psctl} process that exports them (-Xmx64m): a dense table of 134 MiB of
 * values, whose rows stream to their places, and a sparse base of 73 MiB of values and two deltas, merged a group of
 * slots at a time. Both complete, and every value lands where it belongs.
 */
@Tag("slow")
class SafetensorsExportHeapTest {
    private static final int ROWS = 2_200_000;
    private static final int DIM = 16;
    private static final int SLOTS = 16;
    private static final String HEAP = "-Xmx64m";

    @TempDir
    Path tmp;

    @Test
    void shouldExportADenseTableLargerThanTheHeap() throws Exception {
        final Path root = tmp.resolve("checkpoints");
        final CheckpointStore store = new CheckpointStore(root.toUri(), new Configuration());
        final TableSchema schema = TableSchemas.normalize(TableSchema.newBuilder()
                .setName("big")
                .setKind(TableKind.DENSE)
                .setRows(ROWS)
                .setDim(DIM)
                .setOptimizer(
                        OptimizerSpec.newBuilder().setKind(OptimizerKind.SGD).setLearningRate(0.1f))
                .build());
        final float[] row = new float[DIM];
        final List<Manifest.FileEntry> files = new ArrayList<>();
        // Two part files, the slots (key % 16) split between them, so rows arrive far from their final order.
        for (int part = 0; part < 2; part++) {
            try (RowFileWriter writer = RowFileWriter.create(
                    store.fileSystem(),
                    store.checkpointDir(1),
                    "shard-0/big.part" + part + ".rows",
                    DIM,
                    RowFileWriter.Options.defaults().withCodec(ChunkCodec.NONE))) {
                for (int slot = part; slot < SLOTS; slot += 2) {
                    writer.beginSlot(slot);
                    for (long key = slot; key < ROWS; key += SLOTS) {
                        fill(row, key);
                        writer.writeRow(key, row, 0);
                    }
                }
                files.add(new Manifest.FileEntry("big", "0", writer.finish()));
            }
        }
        store.commit(new Manifest(
                1,
                System.currentTimeMillis(),
                SLOTS,
                List.of(new Manifest.TableEntry("big", schema.toByteArray())),
                files,
                Map.of()));

        final Path out = tmp.resolve("out");
        final Path log = tmp.resolve("export.log");
        final Process psctl = new ProcessBuilder(
                        Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                        HEAP,
                        "-XX:+UseSerialGC",
                        "-XX:TieredStopAtLevel=1",
                        "-cp",
                        System.getProperty("java.class.path"),
                        "io.pscluster.cli.Psctl",
                        "checkpoint",
                        "export",
                        "--checkpoint-dir",
                        root.toString(),
                        "--out",
                        out.toString())
                .redirectErrorStream(true)
                .redirectOutput(log.toFile())
                .start();
        assertThat(psctl.waitFor(5, TimeUnit.MINUTES)).isTrue();
        assertThat(psctl.exitValue()).as(Files.readString(log)).isZero();
        assertThat(Files.readString(log)).contains("big: dense, 2200000 rows x dim 16, ");

        final long valueBytes = 4L * ROWS * DIM;
        assertThat(valueBytes).isGreaterThan(2 * 64L * 1024 * 1024);
        try (FileChannel file = FileChannel.open(out.resolve("big.safetensors"))) {
            final ByteBuffer prefix = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
            file.read(prefix, 0);
            final long headerLength = prefix.getLong(0);
            final ByteBuffer headerBytes = ByteBuffer.allocate((int) headerLength);
            file.read(headerBytes, 8);
            final JsonObject values = JsonParser.parseString(new String(headerBytes.array(), StandardCharsets.UTF_8))
                    .getAsJsonObject()
                    .getAsJsonObject("values");
            assertThat(values.get("shape").toString()).isEqualTo("[" + ROWS + "," + DIM + "]");
            assertThat(values.get("data_offsets").toString()).isEqualTo("[0," + valueBytes + "]");
            assertThat(file.size()).isEqualTo(8 + headerLength + valueBytes);

            final ByteBuffer chunk = ByteBuffer.allocate(4 * DIM * 4096).order(ByteOrder.LITTLE_ENDIAN);
            long position = 8 + headerLength;
            for (long key = 0; key < ROWS; ) {
                chunk.clear();
                while (chunk.hasRemaining() && position < file.size()) {
                    position += file.read(chunk, position);
                }
                chunk.flip();
                for (; chunk.remaining() >= 4 * DIM; key++) {
                    fill(row, key);
                    for (int i = 0; i < DIM; i++) {
                        final float value = chunk.getFloat();
                        if (Float.floatToRawIntBits(value) != Float.floatToRawIntBits(row[i])) {
                            assertThat(value).as("row %d value %d", key, i).isEqualTo(row[i]);
                        }
                    }
                }
            }
        }
    }

    /**
     * A sparse table's base (1.2M rows, 73 MiB of values) and two deltas (a tenth of the rows rewritten twice, a tenth
     * removed, a hundredth of those written again), exported by a {@code psctl} with a 64 MiB heap: the chain is
     * merged a group of slots at a time, and every key the model holds is there once, with its latest values.
     */
    @Test
    void shouldExportASparseChainLargerThanTheHeap() throws Exception {
        final int rows = 1_200_000;
        final Path root = tmp.resolve("sparse-checkpoints");
        final CheckpointStore store = new CheckpointStore(root.toUri(), new Configuration());
        final TableSchema schema = TableSchemas.normalize(TableSchema.newBuilder()
                .setName("emb")
                .setKind(TableKind.SPARSE)
                .setDim(DIM)
                .setOptimizer(
                        OptimizerSpec.newBuilder().setKind(OptimizerKind.SGD).setLearningRate(0.1f))
                .build());
        final float[] row = new float[DIM];
        for (long id = 1; id <= 3; id++) {
            final List<Manifest.FileEntry> files = new ArrayList<>();
            try (RowFileWriter writer = RowFileWriter.create(
                    store.fileSystem(),
                    store.checkpointDir(id),
                    "shard-0/emb.rows",
                    DIM,
                    RowFileWriter.Options.defaults().withCodec(ChunkCodec.NONE))) {
                for (int slot = 0; slot < SLOTS; slot++) {
                    writer.beginSlot(slot);
                    for (long key = slot; key < rows; key += SLOTS) {
                        if (id == 1 || key % 10 == 3 || (id == 3 && key % 100 == 7)) {
                            fillSparse(row, key, id);
                            writer.writeRow(key, row, 0);
                        }
                    }
                }
                files.add(new Manifest.FileEntry("emb", "0", writer.finish()));
            }
            if (id == 2) {
                try (RowFileWriter writer =
                        RowFileWriter.create(store.fileSystem(), store.checkpointDir(id), "shard-0/emb.removed", 0)) {
                    for (int slot = 0; slot < SLOTS; slot++) {
                        writer.beginSlot(slot);
                        for (long key = slot; key < rows; key += SLOTS) {
                            if (key % 10 == 7) {
                                writer.writeRow(key, new float[0], 0);
                            }
                        }
                    }
                    files.add(new Manifest.FileEntry("emb", "0", writer.finish(), true));
                }
            }
            final List<Manifest.TableEntry> tables = List.of(new Manifest.TableEntry("emb", schema.toByteArray()));
            store.commit(
                    id == 1
                            ? new Manifest(id, System.currentTimeMillis(), SLOTS, tables, files, Map.of())
                            : new Manifest(
                                    id,
                                    System.currentTimeMillis(),
                                    SLOTS,
                                    Manifest.Kind.DELTA,
                                    1,
                                    id - 1,
                                    tables,
                                    files,
                                    Map.of()));
        }

        final Path out = tmp.resolve("sparse-out");
        final Path log = tmp.resolve("sparse-export.log");
        final Process psctl = psctl(root, out, log);
        assertThat(psctl.waitFor(5, TimeUnit.MINUTES)).isTrue();
        assertThat(psctl.exitValue()).as(Files.readString(log)).isZero();
        final long expected = rows - rows / 10 + rows / 100;
        assertThat(Files.readString(log)).contains("emb: sparse, " + expected + " rows x dim 16, ");
        assertThat(4L * DIM * rows).isGreaterThan(64L * 1024 * 1024);

        final PlainSafetensorsReader file = new PlainSafetensorsReader(out.resolve("emb.safetensors"));
        final long[] keys = file.tensors.get("keys").longs();
        final float[] values = file.tensors.get("values").floats();
        assertThat(keys).hasSize((int) expected);
        for (int i = 0; i < keys.length; i++) {
            final long key = keys[i];
            if (i > 0) {
                final long previous = keys[i - 1];
                // Slot by slot (key % 16 here), by key within a slot.
                assertThat(previous % SLOTS < key % SLOTS || (previous % SLOTS == key % SLOTS && previous < key))
                        .as("key %d after %d", key, previous)
                        .isTrue();
            }
            assertThat(key % 10 != 7 || key % 100 == 7)
                    .as("key %d was removed", key)
                    .isTrue();
            fillSparse(row, key, key % 100 == 7 ? 3 : key % 10 == 3 ? 3 : 1);
            for (int v = 0; v < DIM; v++) {
                if (Float.floatToRawIntBits(values[i * DIM + v]) != Float.floatToRawIntBits(row[v])) {
                    assertThat(values[i * DIM + v])
                            .as("key %d value %d", key, v)
                            .isEqualTo(row[v]);
                }
            }
        }
    }

    private static Process psctl(final Path root, final Path out, final Path log) throws java.io.IOException {
        return new ProcessBuilder(
                        Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                        HEAP,
                        "-XX:+UseSerialGC",
                        "-XX:TieredStopAtLevel=1",
                        "-cp",
                        System.getProperty("java.class.path"),
                        "io.pscluster.cli.Psctl",
                        "checkpoint",
                        "export",
                        "--checkpoint-dir",
                        root.toString(),
                        "--out",
                        out.toString())
                .redirectErrorStream(true)
                .redirectOutput(log.toFile())
                .start();
    }

    /** The values checkpoint {@code id} writes for {@code key}. */
    private static void fillSparse(final float[] row, final long key, final long id) {
        for (int i = 0; i < DIM; i++) {
            row[i] = (key * DIM + i) * (id == 1 ? 1 : -id) + 0.5f;
        }
    }

    private static void fill(final float[] row, final long key) {
        for (int i = 0; i < DIM; i++) {
            row[i] = key * DIM + i + 0.25f;
        }
    }
}
