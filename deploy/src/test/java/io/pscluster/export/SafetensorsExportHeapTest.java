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
 * A dense table whose values (134 MiB) are more than twice the heap of the {@code psctl} process that exports it (-Xmx64m):
 * the export streams, so it completes, and every value lands at its row.
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

    private static void fill(final float[] row, final long key) {
        for (int i = 0; i < DIM; i++) {
            row[i] = key * DIM + i + 0.25f;
        }
    }
}
