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
import io.pscluster.wire.Slots;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.io.File;
import java.net.URI;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.List;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.hdfs.DFSTestUtil;
import org.apache.hadoop.hdfs.DistributedFileSystem;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.hdfs.protocol.LocatedBlock;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Damage on a real HDFS with two DataNodes and every file replicated twice, met by a restore: a shard is lost and the
 * other adopts its slots from the newest checkpoint, whose files the lost shard wrote are damaged first.
 *
 * <ul>
 *   <li>the replica on one DataNode of every block corrupt (bytes past the block's first checksum chunk, so that only
 *       the restore's reads meet them, not the verification's one-byte probe): the client reads the other replica; the
 *       newest checkpoint is restored.
 *   <li>one corrupt replica of every block, on alternating DataNodes: HDFS's client marks a DataNode dead for the rest
 *       of a stream at its first bad replica, so one stream runs out of DataNodes; the reader opens the file again
 *       (the NameNode now leaves the reported bad replicas out) and the newest checkpoint is restored.
 *   <li>both replicas of a block corrupt the same way: the file checksum (which the DataNodes combine from the stored
 *       block checksums) still matches, so only the load finds it; a truncated file (HDFS truncate); a byte flipped in
 *       a rewritten file: the restore falls back to the previous checkpoint and the reported rollback names the
 *       damaged checkpoint, the file and the damage.
 * </ul>
 *
 * Rows are written uncompressed into 32 KiB blocks, so that each file has more than 10 blocks: a restore that reads each
 * block from a randomly ordered replica (the NameNode shuffles replicas at the same distance per block) meets no
 * corrupt one with a chance below 2^-10.
 */
@Tag("slow")
class ReplicaDamageRestoreTest {
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
                ReplicaDamageRestoreTest.class, 2, base -> base.setLong("dfs.namenode.fs-limits.min-block-size", 512));
        conf = new Configuration(hdfs.getConfiguration(0));
        conf.setInt("dfs.replication", 2);
        conf.setLong("dfs.blocksize", BLOCK);
        // The client's retries after a block found no good replica wait milliseconds, not seconds; their number stays
        // the default (3), as in production.
        conf.setInt("dfs.client.retry.window.base", 10);
    }

    @AfterAll
    static void stopHdfs() throws java.io.IOException {
        MiniHdfs.stop(hdfs);
    }

    @ParameterizedTest(name = "damage: {0}")
    @ValueSource(
            strings = {
                "one-corrupt-replica",
                "bad-replicas-on-both-datanodes",
                "all-replicas-corrupt",
                "truncated",
                "flipped-byte"
            })
    void shouldRestoreTheNewestCheckpointOnlyWhenEveryBlockHasAGoodReplica(final String damage) throws Exception {
        final String root = hdfs.getURI() + "/pscluster/" + damage;
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(2)
                        .checkpointRoot(root)
                        .checkpointCodec("none")
                        .stateDir(stateDir.toString())
                        .leaseMs(1_000)
                        .leaseMarginMs(300)
                        .heartbeatIntervalMs(200)
                        .hadoopConf(conf)
                        .start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable table = client.createTable(TestTables.counting("t", DIM));
            final long[] keys = new long[KEYS];
            for (int i = 0; i < KEYS; i++) {
                keys[i] = (i + 1) * 0x9E3779B97F4A7C15L;
            }
            final float[] minusOne = new float[KEYS * DIM];
            Arrays.fill(minusOne, -1f);
            table.push(keys, minusOne);
            client.flush();
            final long previous = AdminCalls.checkpointNow(cluster.proxyAddress());
            table.push(keys, minusOne);
            client.flush();
            final long newest = AdminCalls.checkpointNow(cluster.proxyAddress());

            final String lost = cluster.shard(0).shardId();
            final BitSet lostSlots = cluster.shard(0).shard().ownedSlots();
            final CheckpointStore store = new CheckpointStore(URI.create(root), conf);
            final CheckpointInfo checkpoint = store.get(newest).orElseThrow();
            final List<org.apache.hadoop.fs.Path> files = new ArrayList<>();
            for (final Manifest.FileEntry entry : checkpoint.manifest().files()) {
                if (entry.shardId().equals(lost)) {
                    files.add(checkpoint.resolve(entry.file()));
                }
            }
            assertThat(files).isNotEmpty();
            final DistributedFileSystem fs = (DistributedFileSystem) store.fileSystem();
            final String expectedWhy = damage(fs, files, damage);

            cluster.crashShard(0);
            cluster.awaitHealthy(60_000);
            // Not through the lost shard's address: on a shared machine another process may listen there by now.
            client.refreshRouting();
            final boolean fallBack =
                    !damage.equals("one-corrupt-replica") && !damage.equals("bad-replicas-on-both-datanodes");
            final float[] values = table.pull(keys);
            final long hash = Slots.tableHash("t");
            final List<String> wrong = new ArrayList<>();
            for (int i = 0; i < KEYS && wrong.size() < 10; i++) {
                final boolean restored = lostSlots.get(Slots.slotOf(hash, keys[i]));
                final float want = restored && fallBack ? 1f : 2f;
                for (int d = 0; d < DIM; d++) {
                    if (values[i * DIM + d] != want) {
                        wrong.add("key " + keys[i] + " (restored: " + restored + ") element " + d + " reads "
                                + values[i * DIM + d] + ", expected " + want);
                    }
                }
            }
            assertThat(wrong).isEmpty();

            if (fallBack) {
                // The adopter reports the fallback in a heartbeat after its restore.
                await().atMost(Duration.ofSeconds(30))
                        .untilAsserted(() -> assertThat(AdminCalls.status(cluster.proxyAddress())
                                        .getRollbacksList())
                                .as("the fallback is reported, naming the checkpoint and the damage")
                                .anySatisfy(event -> {
                                    assertThat(event.getCheckpointId()).isEqualTo(previous);
                                    assertThat(event.getReason())
                                            .contains("checkpoint " + newest + " damaged")
                                            .contains(expectedWhy)
                                            .contains("restored checkpoint " + previous);
                                }));
            } else {
                assertThat(AdminCalls.status(cluster.proxyAddress()).getRollbacksList())
                        .isNotEmpty()
                        .allSatisfy(event -> assertThat(event.getCheckpointId()).isEqualTo(newest));
            }
        }
    }

    /** Damages {@code files} as {@code how} says; returns what the note must name. */
    private static String damage(
            final DistributedFileSystem fs, final List<org.apache.hadoop.fs.Path> files, final String how)
            throws Exception {
        final org.apache.hadoop.fs.Path first = files.get(0);
        switch (how) {
            case "one-corrupt-replica", "bad-replicas-on-both-datanodes", "all-replicas-corrupt" -> {
                int corrupted = 0;
                for (final org.apache.hadoop.fs.Path file : files) {
                    final List<LocatedBlock> blocks = DFSTestUtil.getAllBlocks(fs, file);
                    assertThat(blocks).hasSizeGreaterThan(how.equals("all-replicas-corrupt") ? 0 : 10);
                    for (final LocatedBlock block : blocks) {
                        assertThat(block.getLocations()).hasSize(2);
                        if (block.getBlockSize() < 1_024) {
                            continue;
                        }
                        // The replica of every block on one DataNode (its disk rotted), or both of the first block.
                        if (how.equals("one-corrupt-replica")) {
                            flipByteMidBlock(hdfs.getBlockFile(0, block.getBlock()));
                        } else if (how.equals("bad-replicas-on-both-datanodes")) {
                            flipByteMidBlock(hdfs.getBlockFile(corrupted % 2, block.getBlock()));
                        } else {
                            flipByteMidBlock(hdfs.getBlockFile(0, block.getBlock()));
                            flipByteMidBlock(hdfs.getBlockFile(1, block.getBlock()));
                        }
                        corrupted++;
                        if (how.equals("all-replicas-corrupt")) {
                            break;
                        }
                    }
                }
                assertThat(corrupted).isPositive();
                return "row file " + first;
            }
            case "truncated" -> {
                final long length = fs.getFileStatus(first).getLen();
                fs.truncate(first, length - 1);
                await().atMost(Duration.ofSeconds(30)).until(() -> fs.isFileClosed(first));
                return "file " + first + ": length expected " + length + " bytes, actual " + (length - 1)
                        + " (truncated)";
            }
            case "flipped-byte" -> {
                final byte[] bytes;
                try (FSDataInputStream in = fs.open(first)) {
                    bytes = in.readAllBytes();
                }
                bytes[bytes.length / 2] ^= 0x10;
                try (FSDataOutputStream out = fs.create(first, true)) {
                    out.write(bytes);
                }
                return "file " + first + ": crc32c expected ";
            }
            default -> throw new IllegalArgumentException(how);
        }
    }

    /** Flips one bit in the middle of a replica's block file, past its first 512-byte checksum chunk. */
    private static void flipByteMidBlock(final File blockFile) throws Exception {
        final long at = blockFile.length() / 2;
        assertThat(at).isGreaterThanOrEqualTo(512);
        io.pscluster.local.CheckpointFiles.flipBit(blockFile.toPath(), at);
    }
}
