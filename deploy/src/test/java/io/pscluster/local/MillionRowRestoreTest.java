package io.pscluster.local;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.proto.v1.InitializerKind;
import io.pscluster.proto.v1.InitializerSpec;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Issue 9: a restore of more than a million rows, which the shards load in many batches (8,192 rows each), is exact.
 * Every row of a dim-1 SGD table holds a value the test computes from its key alone; after both shards are lost and
 * two new ones restore the checkpoint, every key is pulled and compared with that value (a row that was dropped reads
 * as its initial 0, which no row holds), and the shards hold exactly as many rows as were written (no row twice, none
 * invented).
 */
class MillionRowRestoreTest {
    private static final int ROWS = 1_100_000;
    private static final int CHUNK = 1 << 17;

    @TempDir
    Path dir;

    @Test
    void shouldRestoreEveryRowExactlyWhenTheCheckpointHoldsMoreThanAMillionRows() throws Exception {
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(2)
                        .checkpointRoot(dir.resolve("checkpoints").toUri().toString())
                        .leaseMs(1_000)
                        .leaseMarginMs(300)
                        .heartbeatIntervalMs(200)
                        .start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable table = client.createTable(schema());
            for (int from = 0; from < ROWS; from += CHUNK) {
                final int n = Math.min(CHUNK, ROWS - from);
                final long[] keys = new long[n];
                final float[] gradients = new float[n];
                for (int i = 0; i < n; i++) {
                    keys[i] = key(from + i);
                    gradients[i] = -expected(from + i);
                }
                table.push(keys, gradients);
            }
            client.flush();
            assertThat(rowsHeld(cluster)).isEqualTo(ROWS);
            AdminCalls.checkpointNow(cluster.proxyAddress());
            assertThat(AdminCalls.checkpoints(cluster.proxyAddress()).get(0).getRows())
                    .isEqualTo(ROWS);

            final List<Integer> fresh = new ArrayList<>();
            for (int i = 0; i < 2; i++) {
                cluster.crashShard(i);
            }
            fresh.add(cluster.addShard());
            fresh.add(cluster.addShard());
            cluster.awaitHealthy(120_000);
            // Each new shard restored about half the rows, so each loaded dozens of full batches.
            for (final int index : fresh) {
                assertThat(cluster.shard(index).shard().table("big").rowCount()).isGreaterThan(20 * 8_192);
            }
            assertThat(rowsHeld(cluster)).isEqualTo(ROWS);
            // Not through the lost shards' addresses: on a shared machine another process may listen there by now.
            client.refreshRouting();

            final List<String> wrong = new ArrayList<>();
            long checked = 0;
            for (int from = 0; from < ROWS; from += CHUNK) {
                final int n = Math.min(CHUNK, ROWS - from);
                final long[] keys = new long[n];
                for (int i = 0; i < n; i++) {
                    keys[i] = key(from + i);
                }
                final float[] values = table.pull(keys);
                for (int i = 0; i < n; i++) {
                    if (Float.floatToRawIntBits(values[i]) != Float.floatToRawIntBits(expected(from + i))) {
                        if (wrong.size() < 10) {
                            wrong.add("row " + (from + i) + " (key " + keys[i] + ") reads " + values[i] + ", expected "
                                    + expected(from + i));
                        }
                    }
                    checked++;
                }
            }
            assertThat(checked).isEqualTo(ROWS);
            assertThat(wrong).as("rows that differ after the restore").isEmpty();
        }
    }

    private static long rowsHeld(final LocalCluster cluster) {
        long rows = 0;
        for (int i = 0; i < cluster.shardCount(); i++) {
            if (cluster.shard(i) != null) {
                rows += cluster.shard(i).shard().table("big").rowCount();
            }
        }
        return rows;
    }

    private static TableSchema schema() {
        return TableSchema.newBuilder()
                .setName("big")
                .setKind(TableKind.SPARSE)
                .setDim(1)
                .setOptimizer(
                        OptimizerSpec.newBuilder().setKind(OptimizerKind.SGD).setLearningRate(1f))
                .setInitializer(InitializerSpec.newBuilder().setKind(InitializerKind.ZEROS))
                .build();
    }

    /** Distinct keys over the whole 64-bit range (an odd multiplier is a bijection). */
    private static long key(final int row) {
        return (row + 1L) * 0xD1B54A32D192ED03L;
    }

    /** Row {@code row}'s value after one SGD step from 0: never 0, and neighbours differ. */
    private static float expected(final int row) {
        return 1 + (row * 7_919L % 65_521) / 64f;
    }
}
