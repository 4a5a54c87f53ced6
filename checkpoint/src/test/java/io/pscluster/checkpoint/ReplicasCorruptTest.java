package io.pscluster.checkpoint;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowable;

import java.io.File;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.util.Arrays;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.hdfs.BlockMissingException;
import org.apache.hadoop.hdfs.DFSTestUtil;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@link CheckpointVerifier#replicasCorrupt} on a real HDFS (one DataNode, replication 1): after a block no replica
 * served, it tells a replica that rotted (damage: the checkpoint is marked) from a DataNode that was down (an outage:
 * not marked), also when the DataNode is back by the time it asks.
 */
class ReplicasCorruptTest {
    @TempDir
    static java.nio.file.Path baseDir;

    private static MiniDFSCluster cluster;

    @BeforeAll
    static void start() throws IOException {
        final Configuration conf = new Configuration();
        conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, baseDir.toString());
        // A block with no good replica is reported after milliseconds, not the client's default retry windows.
        conf.setInt("dfs.client.retry.window.base", 10);
        cluster = new MiniDFSCluster.Builder(conf, baseDir.toFile())
                .numDataNodes(1)
                .build();
        cluster.waitActive();
    }

    @AfterAll
    static void stop() throws IOException {
        FileSystem.closeAll();
        if (cluster != null) {
            cluster.shutdown();
        }
    }

    @Test
    void shouldTakeADataNodeThatWasDownForAnOutageAlsoOnceItIsBack() throws Exception {
        final FileSystem fs = cluster.getFileSystem();
        final Path file = write(fs, "outage");
        final MiniDFSCluster.DataNodeProperties down = cluster.stopDataNode(0);
        final BlockMissingException missing = readFirstByte(fs, file);

        assertThat(CheckpointVerifier.replicasCorrupt(fs, file, missing))
                .as("while the DataNode is down")
                .isFalse();
        cluster.restartDataNode(down, true);
        cluster.waitActive();
        assertThat(CheckpointVerifier.replicasCorrupt(fs, file, missing))
                .as("the DataNode back, its replica intact")
                .isFalse();
    }

    @Test
    void shouldTakeAReplicaThatFailsItsChecksumForDamage() throws Exception {
        final FileSystem fs = cluster.getFileSystem();
        final Path file = write(fs, "rotten");
        flipBit(fs, file, 100);
        final BlockMissingException missing = readFirstByte(fs, file);

        assertThat(CheckpointVerifier.replicasCorrupt(fs, file, missing)).isTrue();
    }

    /**
     * The rot is past the block's first checksum chunk, where a one-byte read of the block's start does not reach, but a
     * read of the start that fetched the rest of the packet met it (as a row file's header read does): damage too.
     */
    @Test
    void shouldTakeARotPastTheBlocksFirstChunkForDamage() throws Exception {
        final FileSystem fs = cluster.getFileSystem();
        final Path file = write(fs, "rotten-mid-block");
        flipBit(fs, file, 5000);
        // What a read that met it through every replica of two throws: the exception names only the block's start.
        final BlockMissingException missing = new BlockMissingException(file.toString(), "no live nodes", 0);

        assertThat(CheckpointVerifier.replicasCorrupt(fs, file, missing)).isTrue();
    }

    /** Flips a bit of the byte at {@code offset} of the file's first block, in its only replica. */
    private static void flipBit(final FileSystem fs, final Path file, final long offset) throws IOException {
        final File blockFile = cluster.getBlockFile(0, DFSTestUtil.getFirstBlock(fs, file));
        try (RandomAccessFile raw = new RandomAccessFile(blockFile, "rw")) {
            raw.seek(offset);
            final int b = raw.read();
            raw.seek(offset);
            raw.write(b ^ 0x10);
        }
    }

    private static Path write(final FileSystem fs, final String name) throws IOException {
        final Path file = new Path("/replicas/" + name);
        final byte[] bytes = new byte[8192];
        Arrays.fill(bytes, (byte) 7);
        try (FSDataOutputStream out = fs.create(file, (short) 1)) {
            out.write(bytes);
        }
        return file;
    }

    /** Reads the file's first byte, which must fail with no replica served. */
    private static BlockMissingException readFirstByte(final FileSystem fs, final Path file) {
        final Throwable failed = catchThrowable(() -> {
            try (FSDataInputStream in = fs.open(file)) {
                in.readFully(0, new byte[1]);
            }
        });
        assertThat(failed).isInstanceOf(BlockMissingException.class);
        return (BlockMissingException) failed;
    }
}
