package io.pscluster.faults;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.testing.MiniHdfs;
import java.net.URI;
import java.nio.file.Path;
import java.time.Duration;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@link GracefulStopTest} with the checkpoints on HDFS: the drain's checkpoint is written by the stopping shard's
 * process while its shutdown hook runs, so the filesystem it writes through must still be open then (Hadoop closes
 * its cached filesystems in a shutdown hook of its own).
 */
@Tag("slow")
class GracefulStopHdfsTest {
    private static MiniDFSCluster hdfs;
    private static Path hadoopConf;

    @TempDir
    Path dir;

    @BeforeAll
    static void startHdfs(@TempDir final Path confDir) throws Exception {
        hdfs = MiniHdfs.start(GracefulStopHdfsTest.class, 1);
        hadoopConf = CheckpointCrashTest.writeHadoopConf(confDir, 1);
    }

    @AfterAll
    static void stopHdfs() throws java.io.IOException {
        MiniHdfs.stop(hdfs);
    }

    /** A proxy stopped with SIGTERM deletes its claim on an HDFS root, so that the next proxy starts at once. */
    @Test
    void shouldDeleteTheProxysClaimOnHdfsWhenItIsStoppedWithSigterm() throws Exception {
        final String root = hdfs.getURI() + "/claim";
        try (ProcessCluster cluster = new ProcessCluster(dir, 3_000, 500, 300)) {
            cluster.checkpointRoot(root);
            cluster.startProxy("--hadoop-conf", hadoopConf.toString());
            final CheckpointStore store =
                    new CheckpointStore(URI.create(root), new Configuration(hdfs.getConfiguration(0)));
            assertThat(store.proxyClaimNames()).as("the running proxy's claim").isNotEmpty();

            cluster.terminate("proxy");

            assertThat(cluster.awaitExit("proxy", 60_000)).as(cluster.logs()).isEqualTo(143);
            assertThat(store.proxyClaimNames())
                    .as("claims left: %s", cluster.logs())
                    .isEmpty();
        }
    }

    @Test
    void shouldLoseNoAcknowledgedPushWhenAShardWritingToHdfsIsStoppedWithSigterm() throws Exception {
        try (ProcessCluster cluster = new ProcessCluster(dir, 3_000, 500, 300)) {
            cluster.checkpointRoot(hdfs.getURI() + "/graceful");
            cluster.startProxy("--hadoop-conf", hadoopConf.toString());
            cluster.startShard("s0", "--hadoop-conf", hadoopConf.toString());
            cluster.startShard("s1", "--hadoop-conf", hadoopConf.toString());
            await().atMost(Duration.ofSeconds(30)).until(cluster::allSlotsServed);
            GracefulStopTest.stopWithSigtermUnderLoad(cluster, "s1");
        }
    }
}
