package io.pscluster.faults;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.pscluster.checkpoint.CheckpointInfo;
import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.Manifest;
import io.pscluster.local.AdminCalls;
import io.pscluster.local.LocalCluster;
import io.pscluster.testing.MiniHdfs;
import io.pscluster.testing.TestTables;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.io.File;
import java.net.URI;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.DFSTestUtil;
import org.apache.hadoop.hdfs.DistributedFileSystem;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.hdfs.protocol.LocatedBlock;
import org.assertj.core.api.SoftAssertions;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Both replicas of a block of the newest checkpoint rot the same way, on a real HDFS (two DataNodes, every file
 * replicated twice): permanent damage, not an outage, whether the rot is in the block's first checksum chunk (the
 * verifier's probe meets it) or past it (only a load that reads the rows does).
 *
 * <ol>
 *   <li>the failover restore falls back, and the newest checkpoint is marked damaged;
 *   <li>an operator's restore of the latest does not take the mark away: its verification (the file checksums the
 *       DataNodes combine from their stored block checksums) may pass, but the load fails, and only a restore that
 *       loaded every row clears a mark;
 *   <li>so retention (keep 2) keeps the intact checkpoint behind it.
 * </ol>
 */
@Tag("slow")
class RottenReplicasDamageMarkTest {
    private static final int KEYS = 20_000;
    private static final int DIM = 16;
    private static final int BLOCK = 32 * 1024;
    private static MiniDFSCluster hdfs;
    private static Configuration conf;

    @TempDir
    Path stateDir;

    @BeforeAll
    static void startHdfs() throws Exception {
        hdfs = MiniHdfs.start(
                RottenReplicasDamageMarkTest.class,
                2,
                base -> base.setLong("dfs.namenode.fs-limits.min-block-size", 512));
        conf = new Configuration(hdfs.getConfiguration(0));
        conf.setInt("dfs.replication", 2);
        conf.setLong("dfs.blocksize", BLOCK);
        conf.setInt("dfs.client.retry.window.base", 10);
    }

    @AfterAll
    static void stopHdfs() throws java.io.IOException {
        MiniHdfs.stop(hdfs);
    }

    @ParameterizedTest(name = "rotten at: {0}")
    @ValueSource(strings = {"mid-block", "first-chunk"})
    void shouldKeepARottenCheckpointMarkedAndTheIntactOneBehindIt(final String where) throws Exception {
        final String root = hdfs.getURI() + "/pscluster/rotten-" + where;
        try (LocalCluster cluster = start(root, 0, 2);
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable table = client.createTable(TestTables.counting("t", DIM));
            final long[] keys = keys();
            final float[] minusOne = minusOnes();
            table.push(keys, minusOne);
            client.flush();
            final long previous = AdminCalls.checkpointNow(cluster.proxyAddress());
            table.push(keys, minusOne);
            client.flush();
            final long newest = AdminCalls.checkpointNow(cluster.proxyAddress());

            final String lost = cluster.shard(0).shardId();
            final CheckpointStore store = new CheckpointStore(URI.create(root), conf);
            final CheckpointInfo checkpoint = store.get(newest).orElseThrow();
            final List<org.apache.hadoop.fs.Path> files = new ArrayList<>();
            for (final Manifest.FileEntry entry : checkpoint.manifest().files()) {
                if (entry.shardId().equals(lost)) {
                    files.add(checkpoint.resolve(entry.file()));
                }
            }
            final DistributedFileSystem fs = (DistributedFileSystem) store.fileSystem();
            // Both replicas of one block rot (the same disk fault on both DataNodes, or bit rot never scrubbed).
            final LocatedBlock block =
                    DFSTestUtil.getAllBlocks(fs, files.get(0)).get(0);
            assertThat(block.getLocations()).hasSize(2);
            flipByte(hdfs.getBlockFile(0, block.getBlock()), where);
            flipByte(hdfs.getBlockFile(1, block.getBlock()), where);

            cluster.crashShard(0);
            cluster.awaitHealthy(60_000);
            client.refreshRouting();
            await().atMost(Duration.ofSeconds(60))
                    .untilAsserted(() -> assertThat(
                                    AdminCalls.status(cluster.proxyAddress()).getRollbacksList())
                            .anySatisfy(
                                    event -> assertThat(event.getCheckpointId()).isEqualTo(previous)));
            AdminCalls.status(cluster.proxyAddress())
                    .getRollbacksList()
                    .forEach(event ->
                            System.out.println("ROLLBACK to " + event.getCheckpointId() + ": " + event.getReason()));

            final SoftAssertions softly = new SoftAssertions();
            softly.assertThat(store.damageMarks())
                    .as(
                            "1. marks after the failover fell back from checkpoint %d (both replicas of a block rotten)",
                            newest)
                    .containsKey(newest);

            // 2. Whatever the failover did, a mark is on it now (as an earlier restore would have left).
            if (!store.damageMarks().containsKey(newest)) {
                store.markDamaged(newest, "written by the test, as a load that failed would");
            }
            Exception operatorRestore = null;
            try {
                AdminCalls.restore(cluster.proxyAddress(), 0);
            } catch (RuntimeException e) {
                operatorRestore = e;
            }
            System.out.println("OPERATOR RESTORE OF THE LATEST (" + where + "): " + operatorRestore);
            softly.assertThat(store.damageMarks())
                    .as(
                            "2. marks after an operator's restore of the latest (verification passed, the load failed: %s)",
                            operatorRestore)
                    .containsKey(newest);

            // 3. The operator restores the previous one explicitly; the next checkpoint's retention keeps 2.
            AdminCalls.restore(cluster.proxyAddress(), previous);
            final long next = AdminCalls.checkpointNow(cluster.proxyAddress());
            final List<Long> left =
                    store.list().stream().map(CheckpointInfo::id).toList();
            System.out.println("CHECKPOINTS LEFT (" + where + ") after checkpoint " + next + ": " + left + ", marks "
                    + store.damageMarks());
            softly.assertThat(left)
                    .as(
                            "3. checkpoints left by retention (keep 2) after checkpoint %d; %d is damaged, %d intact",
                            next, newest, previous)
                    .contains(previous);
            softly.assertAll();
        }
    }

    /**
     * The rot is in a base that the newest checkpoint, a delta, restores on: the load of the delta's chain fails in the
     * base's file, and the mark goes on the base, whose bytes are bad, not on the delta that only names it.
     */
    @Test
    void shouldMarkTheBaseWhoseFileRottedNotTheDeltaRestoredOnIt() throws Exception {
        final String root = hdfs.getURI() + "/pscluster/rotten-base";
        try (LocalCluster cluster = start(root, 1, 4);
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable table = client.createTable(TestTables.counting("t", DIM));
            final long[] keys = keys();
            final float[] minusOne = minusOnes();
            table.push(keys, minusOne);
            final long[] ids = new long[4];
            for (int i = 0; i < ids.length; i++) {
                // A few rows change between checkpoints, so that every second one is a delta (deltasPerBase 1).
                final long[] few = Arrays.copyOfRange(keys, i * 100, i * 100 + 100);
                table.push(few, Arrays.copyOf(minusOne, few.length * DIM));
                client.flush();
                ids[i] = AdminCalls.checkpointNow(cluster.proxyAddress());
            }
            final CheckpointStore store = new CheckpointStore(URI.create(root), conf);
            final Manifest delta = store.get(ids[3]).orElseThrow().manifest();
            assertThat(delta.kind()).as("checkpoint %d's kind", ids[3]).isEqualTo(Manifest.Kind.DELTA);
            assertThat(delta.baseId()).as("checkpoint %d's base", ids[3]).isEqualTo(ids[2]);

            final String lost = cluster.shard(0).shardId();
            final CheckpointInfo base = store.get(ids[2]).orElseThrow();
            final org.apache.hadoop.fs.Path file = base.manifest().files().stream()
                    .filter(entry -> entry.shardId().equals(lost))
                    .map(entry -> base.resolve(entry.file()))
                    .findFirst()
                    .orElseThrow();
            final DistributedFileSystem fs = (DistributedFileSystem) store.fileSystem();
            final LocatedBlock block = DFSTestUtil.getAllBlocks(fs, file).get(0);
            flipByte(hdfs.getBlockFile(0, block.getBlock()), "mid-block");
            flipByte(hdfs.getBlockFile(1, block.getBlock()), "mid-block");

            cluster.crashShard(0);
            cluster.awaitHealthy(60_000);
            await().atMost(Duration.ofSeconds(60))
                    .untilAsserted(() -> assertThat(
                                    AdminCalls.status(cluster.proxyAddress()).getRollbacksList())
                            .anySatisfy(
                                    event -> assertThat(event.getCheckpointId()).isEqualTo(ids[1])));
            assertThat(store.damageMarks().keySet())
                    .as(
                            "checkpoints marked damaged after the failover fell back from delta %d past its rotten base %d",
                            ids[3], ids[2])
                    .containsExactly(ids[2]);
        }
    }

    /** Two shards on {@code root}, uncompressed checkpoints, leases short enough for a failover within seconds. */
    private LocalCluster start(final String root, final int deltasPerBase, final int keep) throws Exception {
        return LocalCluster.builder()
                .shards(2)
                .checkpointRoot(root)
                .checkpointCodec("none")
                .deltasPerBase(deltasPerBase)
                .keepCheckpoints(keep)
                .stateDir(stateDir.toString())
                .leaseMs(1_000)
                .leaseMarginMs(300)
                .heartbeatIntervalMs(200)
                .hadoopConf(conf)
                .start();
    }

    private static long[] keys() {
        final long[] keys = new long[KEYS];
        for (int i = 0; i < KEYS; i++) {
            keys[i] = (i + 1) * 0x9E3779B97F4A7C15L;
        }
        return keys;
    }

    private static float[] minusOnes() {
        final float[] minusOne = new float[KEYS * DIM];
        Arrays.fill(minusOne, -1f);
        return minusOne;
    }

    /**
     * Flips one bit of a replica's block file: in its middle, past its first 512-byte checksum chunk, or in that first
     * chunk (which the verification's one-byte probe reads).
     */
    private static void flipByte(final File blockFile, final String where) throws Exception {
        assertThat(blockFile.length()).isGreaterThanOrEqualTo(1024);
        io.pscluster.local.CheckpointFiles.flipBit(
                blockFile.toPath(), where.equals("mid-block") ? blockFile.length() / 2 : 100);
    }
}
