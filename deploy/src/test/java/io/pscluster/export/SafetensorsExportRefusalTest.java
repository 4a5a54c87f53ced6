package io.pscluster.export;

import static io.pscluster.cli.PsctlRun.psctl;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.Manifest;
import io.pscluster.checkpoint.RowFileInfo;
import io.pscluster.checkpoint.RowFileWriter;
import io.pscluster.cli.PsctlRun;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.wire.TableSchemas;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * What {@code psctl checkpoint export} refuses though its options are well formed and the checkpoint intact: a plain
 * error naming the table (exit 1, no usage text), nothing written.
 */
class SafetensorsExportRefusalTest {
    @TempDir
    Path tmp;

    @Test
    void shouldRefuseADenseTableTooLargeToExportNamingItsSize() throws Exception {
        final Path root = checkpoint(tmp.resolve("huge"), 1_000_000_000_000L);
        final Path out = tmp.resolve("model");

        final PsctlRun export =
                psctl("checkpoint", "export", "--checkpoint-dir", root.toString(), "--out", out.toString());
        assertThat(export.exit()).as(export.text()).isEqualTo(1);
        assertThat(export.err())
                .contains("table 'huge' is dense with 1000000000000 rows: its export keeps two bits per row in"
                        + " memory, 250000000000 bytes, more than a Java array holds (at most ")
                .doesNotContain("Usage:");
        assertThat(export.out()).contains("nothing exported");
        assertThat(out).doesNotExist();
    }

    @Test
    void shouldRefuseAnUnknownTableAsAPlainErrorNotAUsageError() throws Exception {
        final Path root = checkpoint(tmp.resolve("small"), 10);
        final Path out = tmp.resolve("model");

        final PsctlRun export = psctl(
                "checkpoint", "export", "--checkpoint-dir", root.toString(), "--table", "nosuch", "--out", "" + out);
        assertThat(export.exit()).as(export.text()).isEqualTo(1);
        assertThat(export.err())
                .isEqualTo("psctl checkpoint export: checkpoint 1 has no table 'nosuch'; its tables: [huge]"
                        + System.lineSeparator());
        assertThat(out).doesNotExist();
    }

    @Test
    void shouldRefuseADenseTableWhoseBitsDoNotFitInHalfTheHeap() {
        // 2^33 rows: two bitmaps of 2^27 words each, 2 GiB, against a 1 GiB heap.
        assertThatThrownBy(() -> SafetensorsExport.checkDenseFits("emb", 1L << 33, 1L << 30))
                .isInstanceOf(SafetensorsExport.Refused.class)
                .hasMessage("table 'emb' is dense with 8589934592 rows: its export keeps two bits per row in memory,"
                        + " 2147483648 bytes, more than half of this JVM's heap of 1073741824 bytes (raise -Xmx in"
                        + " PSCTL_JAVA_OPTS)");
    }

    /** One base checkpoint holding a dense table of {@code rows} rows (dim 1), whose file holds row 0 only. */
    private static Path checkpoint(final Path root, final long rows) throws IOException {
        final TableSchema schema = TableSchemas.normalize(TableSchema.newBuilder()
                .setName("huge")
                .setKind(TableKind.DENSE)
                .setRows(rows)
                .setDim(1)
                .setOptimizer(
                        OptimizerSpec.newBuilder().setKind(OptimizerKind.SGD).setLearningRate(0.1f))
                .build());
        try (CheckpointStore store = new CheckpointStore(root.toUri(), new Configuration())) {
            final RowFileInfo file;
            try (RowFileWriter writer =
                    RowFileWriter.create(store.fileSystem(), store.checkpointDir(1), "shard-a/huge.rows", 1)) {
                writer.beginSlot(0);
                writer.writeRow(0, new float[] {1f}, 0);
                file = writer.finish();
            }
            store.commit(new Manifest(
                    1,
                    System.currentTimeMillis(),
                    16,
                    List.of(new Manifest.TableEntry("huge", schema.toByteArray())),
                    List.of(new Manifest.FileEntry("huge", "a", file)),
                    Map.of()));
        }
        return root;
    }
}
