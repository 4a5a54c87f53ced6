package io.pscluster.local;

import static org.assertj.core.api.Assertions.assertThat;

import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.pscluster.example.Dataset;
import io.pscluster.example.LogisticRegression;
import io.pscluster.proto.v1.AdminServiceGrpc;
import io.pscluster.proto.v1.CheckpointNowRequest;
import io.pscluster.proto.v1.CheckpointNowResponse;
import io.pscluster.proto.v1.ListCheckpointsRequest;
import io.pscluster.testing.MiniHdfs;
import io.pscluster.worker.PsClient;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The whole path as a user runs it: a proxy and 2 shards on loopback, 2 workers training the example, a checkpoint
 * on a real HDFS, every shard stopped, new shards restoring from the checkpoint, and every parameter and optimizer
 * slot compared bit for bit.
 */
class CheckpointRestoreIntegrationTest {
    private static MiniDFSCluster hdfs;

    @BeforeAll
    static void startHdfs() throws Exception {
        hdfs = MiniHdfs.start(CheckpointRestoreIntegrationTest.class, 1);
    }

    @AfterAll
    static void stopHdfs() throws java.io.IOException {
        MiniHdfs.stop(hdfs);
    }

    @Test
    void shouldTrainCheckpointToHdfsAndRestoreBitIdenticalIntoNewShards() throws Exception {
        final String root = hdfs.getURI() + "/pscluster/it";
        try (LocalCluster cluster = LocalCluster.builder()
                .shards(2)
                .checkpointRoot(root)
                .hadoopConf(hdfs.getConfiguration(0))
                .start()) {
            final Dataset data = Dataset.synthetic(11, 8_000, 1_000, 10);
            final LogisticRegression.Settings settings = LogisticRegression.Settings.defaults(2, 3);
            final List<LogisticRegression.EpochResult> epochs =
                    LogisticRegression.train(cluster.proxyAddress(), data, settings, epoch -> {});
            assertThat(epochs).hasSize(3);
            assertThat(epochs.get(2).accuracy()).isGreaterThanOrEqualTo(0.90);
            assertThat(epochs.get(2).loss()).isLessThan(epochs.get(0).loss());

            final ManagedChannel channel = ManagedChannelBuilder.forTarget(cluster.proxyAddress())
                    .usePlaintext()
                    .build();
            final CheckpointNowResponse checkpoint;
            try {
                final AdminServiceGrpc.AdminServiceBlockingStub admin =
                        AdminServiceGrpc.newBlockingStub(channel).withDeadlineAfter(2, TimeUnit.MINUTES);
                checkpoint = admin.checkpointNow(CheckpointNowRequest.getDefaultInstance());
                assertThat(admin.listCheckpoints(ListCheckpointsRequest.getDefaultInstance())
                                .getCheckpointsList())
                        .extracting(io.pscluster.proto.v1.CheckpointInfo::getId)
                        .containsExactly(checkpoint.getCheckpoint().getId());
            } finally {
                channel.shutdownNow();
            }
            assertThat(checkpoint.getCheckpoint().getUri()).startsWith("hdfs://");
            final Map<Long, float[]> before = cluster.dumpTable(settings.table());
            assertThat(before).hasSize(1_001); // every feature and the bias were pushed
            assertThat(checkpoint.getCheckpoint().getRows()).isEqualTo(before.size());
            final long[] keys =
                    before.keySet().stream().mapToLong(Long::longValue).toArray();
            final float[] pulledBefore;
            try (PsClient client = PsClient.connect(cluster.proxyAddress())) {
                pulledBefore = client.table(settings.table()).pull(keys);
            }

            final List<String> oldIds = new ArrayList<>();
            for (int i = 0; i < 2; i++) {
                oldIds.add(cluster.shard(i).shardId());
                cluster.crashShard(i);
            }
            final int first = cluster.addShard();
            final int second = cluster.addShard();
            cluster.awaitHealthy(120_000);
            assertThat(List.of(
                            cluster.shard(first).shardId(),
                            cluster.shard(second).shardId()))
                    .doesNotContainAnyElementsOf(oldIds);

            final Map<Long, float[]> after = cluster.dumpTable(settings.table());
            assertThat(after.keySet()).isEqualTo(before.keySet());
            for (final Map.Entry<Long, float[]> row : before.entrySet()) {
                final float[] restored = after.get(row.getKey());
                assertThat(restored).hasSize(2); // weight + Adagrad accumulator
                for (int i = 0; i < restored.length; i++) {
                    assertThat(Float.floatToRawIntBits(restored[i]))
                            .as("key %d element %d", row.getKey(), i)
                            .isEqualTo(Float.floatToRawIntBits(row.getValue()[i]));
                }
            }
            try (PsClient client = PsClient.connect(cluster.proxyAddress())) {
                final float[] pulledAfter = client.table(settings.table()).pull(keys);
                assertThat(pulledAfter).containsExactly(pulledBefore);
                final LogisticRegression.EpochResult resumed =
                        LogisticRegression.evaluate(client.table(settings.table()), data, 4, 0);
                assertThat(resumed.accuracy()).isEqualTo(epochs.get(2).accuracy());
            }
        }
    }
}
