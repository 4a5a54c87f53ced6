package io.pscluster.local;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.pscluster.proto.v1.InitializerKind;
import io.pscluster.proto.v1.InitializerSpec;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.worker.PsClient;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.stream.LongStream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * An operator's restore of a checkpoint that predates some of the cluster's tables, on a real cluster (proxy and two
 * shards on loopback): a restore replaces the rows of every slot in every table, so those tables would stay with all
 * their rows back at initial values (served as such, and recorded by the next checkpoint). The restore is refused up
 * front, naming the tables, with every table's values unchanged; once the operator drops them it goes through.
 */
class RestoreMissingTablesTest {
    private static final int DENSE_ROWS = 500;
    private static final long[] SPARSE_KEYS =
            LongStream.range(0, 300).map(i -> i * 7919 + 3).toArray();

    @TempDir
    Path dir;

    @Test
    void shouldRefuseRestoreNamingTablesWhenTheCheckpointPredatesThem() throws Exception {
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(2)
                        .checkpointRoot(dir.resolve("checkpoints").toUri().toString())
                        .keepCheckpoints(0)
                        .start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            client.createTable(sparse("lr_weights", 2));
            push(client, "lr_weights", SPARSE_KEYS, 2, 1f);
            final long old = AdminCalls.checkpointNow(cluster.proxyAddress());
            final float[] lrAtOld = client.table("lr_weights").pull(SPARSE_KEYS);

            client.createTable(dense("dn", 4));
            client.createTable(sparse("tt", 3));
            push(client, "dn", denseKeys(), 4, 1f);
            push(client, "tt", SPARSE_KEYS, 3, 2f);
            push(client, "lr_weights", SPARSE_KEYS, 2, 5f);
            final long newer = AdminCalls.checkpointNow(cluster.proxyAddress());
            assertThat(newer).isGreaterThan(old);
            final Map<String, float[]> before = pullAll(client);
            assertThat(before.get("dn")).startsWith(1f, 2f, 3f, 4f).doesNotContain(0f);

            final StatusRuntimeException refused = catchThrowableOfType(
                    () -> AdminCalls.restore(cluster.proxyAddress(), old), StatusRuntimeException.class);

            assertThat(refused)
                    .as("restore of checkpoint %d, which holds only lr_weights", old)
                    .isNotNull();
            assertThat(refused.getStatus().getCode()).isEqualTo(Status.Code.FAILED_PRECONDITION);
            assertThat(refused.getStatus().getDescription())
                    .contains("cannot restore checkpoint " + old)
                    .contains("table(s) [dn, tt]")
                    .contains("drop those tables first");
            assertThat(AdminCalls.tableNames(cluster.proxyAddress()))
                    .containsExactlyInAnyOrder("lr_weights", "dn", "tt");
            final Map<String, float[]> after = pullAll(client);
            for (final String table : before.keySet()) {
                assertThat(after.get(table)).as("values of table %s", table).containsExactly(before.get(table));
            }
            // No restore was recorded as begun: a checkpoint is not refused as of a mixed model.
            assertThat(AdminCalls.checkpointNow(cluster.proxyAddress())).isGreaterThan(newer);

            // The operator really wants that model: dropping the newer tables lets the restore through.
            assertThat(client.dropTable("dn")).isTrue();
            assertThat(client.dropTable("tt")).isTrue();
            assertThat(AdminCalls.restore(cluster.proxyAddress(), old)).isEqualTo(SPARSE_KEYS.length);
            assertThat(AdminCalls.tableNames(cluster.proxyAddress())).containsExactly("lr_weights");
            assertThat(client.table("lr_weights").pull(SPARSE_KEYS)).containsExactly(lrAtOld);
        }
    }

    private static Map<String, float[]> pullAll(final PsClient client) {
        final Map<String, float[]> values = new LinkedHashMap<>();
        values.put("lr_weights", client.table("lr_weights").pull(SPARSE_KEYS));
        values.put("dn", client.table("dn").pull(denseKeys()));
        values.put("tt", client.table("tt").pull(SPARSE_KEYS));
        return values;
    }

    /** Pushes gradient {@code -scale * (column + 1)} to every key: with SGD at rate 1 from zeros, known values. */
    private static void push(
            final PsClient client, final String table, final long[] keys, final int dim, final float scale) {
        final float[] gradients = new float[keys.length * dim];
        for (int i = 0; i < gradients.length; i++) {
            gradients[i] = -scale * (i % dim + 1);
        }
        client.table(table).push(keys, gradients);
        client.flush();
    }

    private static long[] denseKeys() {
        return LongStream.range(0, DENSE_ROWS).toArray();
    }

    private static TableSchema sparse(final String name, final int dim) {
        return schema(name, dim).setKind(TableKind.SPARSE).build();
    }

    private static TableSchema dense(final String name, final int dim) {
        return schema(name, dim).setKind(TableKind.DENSE).setRows(DENSE_ROWS).build();
    }

    private static TableSchema.Builder schema(final String name, final int dim) {
        return TableSchema.newBuilder()
                .setName(name)
                .setDim(dim)
                .setOptimizer(
                        OptimizerSpec.newBuilder().setKind(OptimizerKind.SGD).setLearningRate(1f))
                .setInitializer(InitializerSpec.newBuilder().setKind(InitializerKind.ZEROS));
    }
}
