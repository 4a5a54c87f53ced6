package io.pscluster.local;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.nio.file.Path;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * A cluster checkpointed by 3 shards, stopped, and started again with only 2: every slot must be served (the third
 * shard's group split over the two) and every row must come back. Once with the proxy's state directory kept, once
 * with it lost (the proxy then starts from the newest checkpoint manifest).
 */
class FewerShardsRestartTest {
    @TempDir
    Path dir;

    @ParameterizedTest(name = "proxy state kept: {0}")
    @ValueSource(booleans = {true, false})
    void shouldServeEverySlotAndEveryRowWhenRestartedWithFewerShards(final boolean stateKept) throws Exception {
        final String root = dir.resolve("checkpoints").toUri().toString();
        final long[] keys = new long[3_000];
        final float[] gradients = new float[keys.length];
        for (int i = 0; i < keys.length; i++) {
            keys[i] = i * 7_919L + 3;
            gradients[i] = -(i % 13 + 1);
        }
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(3)
                        .checkpointRoot(root)
                        .stateDir(dir.resolve("state-1").toString())
                        .leaseMs(1_000)
                        .leaseMarginMs(300)
                        .heartbeatIntervalMs(200)
                        .start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable table = client.createTable(CounterTable.schema("counter"));
            table.push(keys, gradients);
            for (int i = 0; i < 3; i++) {
                cluster.shard(i).shard().awaitQuiescent();
            }
            AdminCalls.checkpointNow(cluster.proxyAddress());
        }
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(2)
                        .checkpointRoot(root)
                        .stateDir(dir.resolve(stateKept ? "state-1" : "state-2").toString())
                        .leaseMs(1_000)
                        .leaseMarginMs(300)
                        .heartbeatIntervalMs(200)
                        .start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final float[] values = client.table("counter").pull(keys);
            for (int i = 0; i < keys.length; i++) {
                assertThat(values[i]).as("key %d", keys[i]).isEqualTo(-gradients[i]);
            }
        }
    }
}
