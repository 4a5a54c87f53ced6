package io.pscluster.faults;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

import io.pscluster.checkpoint.CheckpointInfo;
import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.local.AdminCalls;
import io.pscluster.local.CounterTable;
import io.pscluster.local.LocalCluster;
import io.pscluster.testing.MiniHdfs;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.net.URI;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.hdfs.DFSTestUtil;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A DataNode that is only down for a while (it comes back with every block) during a restore: the checkpoints it
 * holds cannot be read, and the restore fails or falls back, but they are not marked damaged (retention would keep
 * them uncounted for good). A mark left from earlier goes once a restore verifies the checkpoint intact.
 */
@Tag("slow")
class DamageMarkAfterOutageTest {
    private static MiniDFSCluster hdfs;
    private static Configuration conf;

    @TempDir
    Path stateDir;

    @BeforeAll
    static void startHdfs() throws Exception {
        hdfs = MiniHdfs.start(DamageMarkAfterOutageTest.class, 1, base -> base.setInt("dfs.replication", 1));
        conf = new Configuration(hdfs.getConfiguration(0));
        // A block with no replica should be reported at once, not after the client's default retry windows.
        conf.setInt("dfs.client.max.block.acquire.failures", 0);
        conf.setInt("dfs.client.retry.window.base", 10);
        conf.setInt("dfs.client.block.write.locateFollowingBlock.retries", 1);
    }

    @AfterAll
    static void stopHdfs() throws java.io.IOException {
        MiniHdfs.stop(hdfs);
    }

    @Test
    void shouldNotMarkCheckpointsWhoseBlocksAreOnlyUnreadableAndClearAMarkOnceOneVerifies() throws Exception {
        final String root = hdfs.getURI() + "/pscluster/outage";
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(2)
                        .checkpointRoot(root)
                        .stateDir(stateDir.toString())
                        .hadoopConf(conf)
                        .deltasPerBase(0)
                        .keepCheckpoints(2)
                        .start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable table = client.createTable(CounterTable.schema("counter"));
            final long[] keys = {1, 2, 3, 4, 5, 6, 7, 8};
            final float[] minusOnes = new float[keys.length];
            Arrays.fill(minusOnes, -1f);
            table.push(keys, minusOnes);
            await().atMost(Duration.ofSeconds(20)).until(() -> table.pull(keys)[0] == 1f);
            final long first = AdminCalls.checkpointNow(cluster.proxyAddress());
            table.push(keys, minusOnes);
            await().atMost(Duration.ofSeconds(20)).until(() -> table.pull(keys)[0] == 2f);
            final long second = AdminCalls.checkpointNow(cluster.proxyAddress());

            // Every block so far is on DataNode 0. A second DataNode joins and the manifests get a replica there too
            // (as with replication 2 or more and a partial outage: some blocks stay readable, others do not).
            hdfs.startDataNodes(conf, 1, true, null, null);
            hdfs.waitActive();
            final CheckpointStore store = new CheckpointStore(URI.create(root), conf);
            final FileSystem fs = store.fileSystem();
            for (final long id : new long[] {first, second}) {
                final org.apache.hadoop.fs.Path manifest =
                        new org.apache.hadoop.fs.Path(store.checkpointDir(id), CheckpointStore.MANIFEST);
                fs.setReplication(manifest, (short) 2);
                DFSTestUtil.waitReplication(fs, manifest, (short) 2);
            }
            final MiniDFSCluster.DataNodeProperties down = hdfs.stopDataNode(0);
            assertThatThrownBy(() -> AdminCalls.restore(cluster.proxyAddress(), 0))
                    .as("a restore of the latest while no row block can be read")
                    .isNotNull();
            assertThat(store.damageMarks())
                    .as("checkpoints whose blocks are only unreadable now")
                    .isEmpty();
            // While the proxy runs it does not count them toward the newest 2: it cannot restore them now either.
            final long third = AdminCalls.checkpointNow(cluster.proxyAddress());
            assertThat(store.list().stream().map(CheckpointInfo::id).toList())
                    .as("checkpoints kept (keep 2) with the two older ones unreadable")
                    .containsExactly(third, second, first);

            hdfs.restartDataNode(down, true);
            hdfs.waitActive();
            await().atMost(Duration.ofSeconds(60)).untilAsserted(() -> {
                for (final CheckpointInfo checkpoint : store.list()) {
                    store.verify(checkpoint);
                }
            });
            // A mark from earlier (written when a block was unreadable, before this version): the next restore that
            // loads the checkpoint's every row takes it away.
            store.markDamaged(third, "a block no replica could serve");
            assertThat(AdminCalls.restore(cluster.proxyAddress(), 0)).isPositive();

            assertThat(store.damageMarks())
                    .as("marks of checkpoint %d, loaded whole by the restore", third)
                    .isEmpty();
            assertThat(table.pull(keys)).containsOnly(2f);
        }
    }
}
