package io.pscluster.faults;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.pscluster.checkpoint.CheckpointInfo;
import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.PausePoints;
import io.pscluster.local.AdminCalls;
import io.pscluster.proto.v1.RestoreResponse;
import io.pscluster.testing.MiniHdfs;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.io.FileOutputStream;
import java.io.OutputStream;
import java.net.URI;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.regex.Pattern;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.DistributedFileSystem;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.hdfs.protocol.DatanodeInfo;
import org.apache.hadoop.hdfs.protocol.LocatedBlock;
import org.apache.hadoop.hdfs.server.datanode.DataNode;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A DataNode of a data file's write pipeline stops while a shard is in the middle of that file (replication 3). With
 * a fourth DataNode to take its place the checkpoint commits and verifies; with exactly three live DataNodes it fails
 * cleanly: no manifest, the previous checkpoint stays the latest and restores.
 *
 * <p>What the test relies on is the HDFS client's default {@code dfs.client.block.write.replace-datanode-on-failure}
 * settings, written out explicitly for the shards: {@code enable=true}, {@code policy=DEFAULT}, {@code
 * best-effort=false}. DEFAULT with replication r = 3 and n = 2 DataNodes left replaces the lost one only if the block
 * was hflushed (or appended to), otherwise only when n <= r / 2. The pause point hflushes the file before it stops,
 * so here the lost DataNode must be replaced: with four there is one to take, with three the write fails ("Failed to
 * replace a bad datanode"), which best-effort=false turns into a failed checkpoint. Caveat: RowFileWriter itself never
 * hflushes before its final hsync, so in production a DataNode lost mid-file under DEFAULT lets the file complete on
 * two replicas (the NameNode re-replicates it later); only policy ALWAYS would make that checkpoint fail instead.
 */
@Tag("slow")
class CheckpointDataNodeLossTest {
    private static final int DATANODES = 4;
    private static MiniDFSCluster hdfs;
    private static Configuration conf;
    private static Path hadoopConf;
    private final List<MiniDFSCluster.DataNodeProperties> stopped = new ArrayList<>();

    @TempDir
    Path dir;

    @BeforeAll
    static void startHdfs(@TempDir final Path confDir) throws Exception {
        hdfs = MiniHdfs.start(CheckpointDataNodeLossTest.class, DATANODES);
        conf = new Configuration(hdfs.getConfiguration(0));
        final Configuration site = new Configuration(false);
        site.setInt("dfs.replication", 3);
        site.setBoolean("dfs.client.block.write.replace-datanode-on-failure.enable", true);
        site.set("dfs.client.block.write.replace-datanode-on-failure.policy", "DEFAULT");
        site.setBoolean("dfs.client.block.write.replace-datanode-on-failure.best-effort", false);
        Files.createDirectories(confDir);
        try (OutputStream out =
                new FileOutputStream(confDir.resolve("hdfs-site.xml").toFile())) {
            site.writeXml(out);
        }
        hadoopConf = confDir;
    }

    @AfterAll
    static void stopHdfs() throws java.io.IOException {
        MiniHdfs.stop(hdfs);
    }

    /** Every DataNode a test stopped comes back, on its ports, before the next test. */
    @AfterEach
    void restartDataNodes() throws Exception {
        for (final MiniDFSCluster.DataNodeProperties dataNode : stopped) {
            hdfs.restartDataNode(dataNode, true);
        }
        stopped.clear();
        hdfs.waitActive();
    }

    @Test
    void shouldCommitAndVerifyWhenADataNodeStopsMidWriteAndAnotherCanReplaceIt() throws Exception {
        final Outcome outcome = checkpointLosingADataNode("replaced");
        assertThat(outcome.error).as("the checkpoint that lost a DataNode").isNull();
        final CheckpointStore store = outcome.store;
        assertThat(store.list().stream().map(CheckpointInfo::id)).containsExactly(outcome.crashed, outcome.previous);
        final CheckpointInfo committed = store.get(outcome.crashed).orElseThrow();
        store.verify(committed);
        for (final var entry : committed.manifest().files()) {
            final org.apache.hadoop.fs.Path file = committed.resolve(entry.file());
            final LocatedBlock block = lastBlock(store, file);
            if (file.toUri()
                    .getPath()
                    .equals(new org.apache.hadoop.fs.Path(outcome.pausedFile)
                            .toUri()
                            .getPath())) {
                // hflushed before the loss: DEFAULT replaced the lost DataNode.
                assertThat(block.getLocations()).as("replicas of %s", file).hasSize(3);
            } else {
                // The other shard's file: 3 if it was closed before the loss, 2 if it was still being written (never
                // hflushed, so DEFAULT went on without a replacement).
                assertThat(block.getLocations().length)
                        .as("replicas of %s", file)
                        .isBetween(2, 3);
            }
        }
        assertThat(outcome.restored.getCheckpoint().getId()).isEqualTo(outcome.crashed);
        assertThat(outcome.valuesAfterRestore).isEqualTo(outcome.newValues);
    }

    @Test
    void shouldFailCleanlyAndKeepThePreviousCheckpointWhenNoDataNodeCanReplaceTheLostOne() throws Exception {
        // Three live DataNodes for replication 3: the fourth is stopped and declared dead before anything is written.
        final DataNode spare = hdfs.getDataNodes().get(DATANODES - 1);
        final var spareId = spare.getDatanodeId();
        stopped.add(hdfs.stopDataNode(DATANODES - 1));
        hdfs.setDataNodeDead(spareId);

        final Outcome outcome = checkpointLosingADataNode("not-replaced");
        assertThat(outcome.error).as("the checkpoint that lost a DataNode").isNotNull();
        // The cause, from the shard's HDFS client: the DEFAULT policy found no DataNode to replace the lost one.
        assertThat(outcome.error.getMessage() + "\n" + outcome.logs).contains("Failed to replace a bad datanode");
        final CheckpointStore store = outcome.store;
        assertThat(store.list().stream().map(CheckpointInfo::id)).containsExactly(outcome.previous);
        assertThat(store.fileSystem()
                        .exists(new org.apache.hadoop.fs.Path(
                                store.checkpointDir(outcome.crashed), CheckpointStore.MANIFEST)))
                .isFalse();
        assertThat(store.latest()).map(CheckpointInfo::id).contains(outcome.previous);
        assertThat(outcome.restored.getCheckpoint().getId()).isEqualTo(outcome.previous);
        assertThat(outcome.valuesAfterRestore).isEqualTo(outcome.previousValues);
    }

    /** What happened to a checkpoint during which a DataNode of the shard's pipeline stopped. */
    private record Outcome(
            CheckpointStore store,
            long previous,
            long crashed,
            String pausedFile,
            Throwable error,
            String logs,
            int[] previousValues,
            int[] newValues,
            RestoreResponse restored,
            int[] valuesAfterRestore) {}

    /**
     * Checkpoint 1, new values, then checkpoint 2 with shard s0 stopped after its first chunk; one DataNode of that
     * file's pipeline is stopped, the shard goes on; then the latest checkpoint is restored.
     */
    private Outcome checkpointLosingADataNode(final String name) throws Exception {
        final String root = hdfs.getURI() + "/datanode-loss/" + name;
        final CheckpointStore store = new CheckpointStore(URI.create(root), conf);
        try (ProcessCluster cluster = new ProcessCluster(dir, 3_000, 500, 300)) {
            cluster.checkpointRoot(root);
            cluster.startProxy("--hadoop-conf", hadoopConf.toString());
            cluster.startShard("s0", "--hadoop-conf", hadoopConf.toString());
            cluster.startShard("s1", "--hadoop-conf", hadoopConf.toString());
            await().atMost(Duration.ofSeconds(30)).until(cluster::allSlotsServed);
            final long[] keys = ModelRows.keys();
            try (PsClient client = PsClient.connect(
                    new PsClient.Context().proxyAddress(cluster.proxyAddress()).deadlineMs(60_000))) {
                final PsTable table = client.createTable(ModelRows.schema("emb"));
                final int[] previousValues = ModelRows.pushRound(table, keys, 1, ModelRows.pull(table, keys));
                final long previous = AdminCalls.checkpointNow(cluster.proxyAddress());
                final int[] newValues = ModelRows.pushRound(table, keys, 2, previousValues);

                cluster.injectFault("s0", PausePoints.MID_ROW_FILE, true, 1);
                final CompletableFuture<Long> checkpoint =
                        CompletableFuture.supplyAsync(() -> AdminCalls.checkpointNow(cluster.proxyAddress()));
                final String file = cluster.awaitLine(
                                "s0",
                                Pattern.compile(
                                        Pattern.quote(PausePoints.MARKER + PausePoints.MID_ROW_FILE) + " at (.+)"),
                                60_000)
                        .group(1);
                final DatanodeInfo[] pipeline =
                        lastBlock(store, new org.apache.hadoop.fs.Path(file)).getLocations();
                assertThat(pipeline).as("the pipeline of %s", file).hasSize(3);
                stopped.add(stopDataNode(pipeline[0]));
                cluster.injectFault("s0", PausePoints.MID_ROW_FILE, false, 0);

                Throwable error = null;
                try {
                    assertThat(checkpoint.get(120, TimeUnit.SECONDS)).isEqualTo(previous + 1);
                } catch (java.util.concurrent.ExecutionException failed) {
                    error = failed.getCause();
                }
                final RestoreResponse restored = CheckpointCrashTest.restoreLatest(cluster.proxyAddress());
                return new Outcome(
                        store,
                        previous,
                        previous + 1,
                        file,
                        error,
                        cluster.log("s0") + cluster.log("proxy"),
                        previousValues,
                        newValues,
                        restored,
                        ModelRows.pull(table, keys));
            }
        }
    }

    /** The file's last block as the NameNode has it, under construction or not, with its DataNodes. */
    private static LocatedBlock lastBlock(final CheckpointStore store, final org.apache.hadoop.fs.Path file)
            throws Exception {
        final DistributedFileSystem fs = (DistributedFileSystem) store.fileSystem();
        final var blocks = fs.getClient().getLocatedBlocks(file.toUri().getPath(), 0);
        return blocks.getLastLocatedBlock() != null
                ? blocks.getLastLocatedBlock()
                : blocks.get(blocks.locatedBlockCount() - 1);
    }

    private static MiniDFSCluster.DataNodeProperties stopDataNode(final DatanodeInfo target) {
        final List<DataNode> dataNodes = hdfs.getDataNodes();
        for (int i = 0; i < dataNodes.size(); i++) {
            if (dataNodes.get(i).getXferPort() == target.getXferPort()) {
                return hdfs.stopDataNode(i);
            }
        }
        throw new AssertionError("no running DataNode at " + target);
    }
}
