package io.pscluster.cli;

import static io.pscluster.cli.PsctlRun.psctl;
import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.Manifest;
import io.pscluster.local.AdminCalls;
import io.pscluster.local.LocalCluster;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Random;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * "Load the latest model" into a running cluster is {@code psctl checkpoint restore} without {@code --id}: on a real
 * local cluster it brings back the newest checkpoint, and when that one is damaged the previous one, saying which it
 * loaded and which it skipped.
 */
class RestoreLatestTest {
    @TempDir
    Path tmp;

    @Test
    void shouldLoadTheNewestIntactCheckpointAndNameTheDamagedOneItSkipped() throws Exception {
        final Path root = tmp.resolve("checkpoints");
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(2)
                        .checkpointRoot(root.toUri().toString())
                        .start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable table = client.createTable(TableSchema.newBuilder()
                    .setName("emb")
                    .setKind(TableKind.SPARSE)
                    .setDim(3)
                    .setOptimizer(OptimizerSpec.newBuilder()
                            .setKind(OptimizerKind.SGD)
                            .setLearningRate(1f))
                    .build());
            final Random random = new Random(5);
            final long[] keys = random.longs(300).toArray();
            final float[][] atCheckpoint = new float[3][];
            for (int id = 1; id <= 2; id++) {
                table.push(keys, gradients(random, keys.length * 3));
                client.flush();
                atCheckpoint[id] = table.pull(keys);
                assertThat(AdminCalls.checkpointNow(cluster.proxyAddress())).isEqualTo(id);
            }
            table.push(keys, gradients(random, keys.length * 3));
            client.flush();
            assertThat(table.pull(keys)).isNotEqualTo(atCheckpoint[2]);

            final PsctlRun latest = psctl("checkpoint", "restore", "--proxy", cluster.proxyAddress());
            assertThat(latest.exit()).as(latest.text()).isZero();
            assertThat(latest.out()).startsWith("restored 300 rows from #2 ").doesNotContain("fell back");
            assertThat(table.pull(keys)).containsExactly(atCheckpoint[2]);

            final CheckpointStore store = new CheckpointStore(root.toUri(), new Configuration());
            final Manifest.FileEntry victim =
                    store.get(2).orElseThrow().manifest().files().get(0);
            final Path file =
                    root.resolve("ckpt-000000000002").resolve(victim.file().path());
            final byte[] bytes = Files.readAllBytes(file);
            bytes[bytes.length / 2] ^= 0x01;
            Files.write(file, bytes);
            Files.deleteIfExists(file.resolveSibling("." + file.getFileName() + ".crc"));
            table.push(keys, gradients(random, keys.length * 3));
            client.flush();

            final PsctlRun fallback = psctl("checkpoint", "restore", "--proxy", cluster.proxyAddress());
            assertThat(fallback.exit()).as(fallback.text()).isZero();
            assertThat(fallback.out())
                    .startsWith("restored 300 rows from #1 ")
                    .contains("fell back to checkpoint 1, passing over:\n  #2: damaged: ");
            assertThat(table.pull(keys)).containsExactly(atCheckpoint[1]);

            // A newer checkpoint whose manifest does not decode is not among the complete ones listed: it is named
            // all the same, with the damaged one.
            assertThat(AdminCalls.checkpointNow(cluster.proxyAddress())).isEqualTo(3);
            final Path manifest = root.resolve("ckpt-000000000003").resolve(CheckpointStore.MANIFEST);
            Files.writeString(manifest, "{ not a manifest");
            Files.deleteIfExists(manifest.resolveSibling("." + manifest.getFileName() + ".crc"));
            final PsctlRun unreadable = psctl("checkpoint", "restore", "--proxy", cluster.proxyAddress());
            assertThat(unreadable.exit()).as(unreadable.text()).isZero();
            assertThat(unreadable.out())
                    .startsWith("restored 300 rows from #1 ")
                    .contains("passing over:\n  #3: manifest unreadable: ")
                    .contains("\n  #2: damaged: ");
            assertThat(table.pull(keys)).containsExactly(atCheckpoint[1]);

            final PsctlRun named = psctl("checkpoint", "restore", "--proxy", cluster.proxyAddress(), "--id", "2");
            assertThat(named.exit()).as(named.text()).isEqualTo(1);
            assertThat(named.err()).contains("DATA_LOSS: checkpoint 2 is damaged: ");
            assertThat(table.pull(keys)).containsExactly(atCheckpoint[1]);
        }
    }

    private static float[] gradients(final Random random, final int count) {
        final float[] gradients = new float[count];
        for (int i = 0; i < count; i++) {
            gradients[i] = (float) random.nextGaussian();
        }
        return gradients;
    }
}
