package io.pscluster.cli;

import static io.pscluster.cli.PsctlRun.psctl;
import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.checkpoint.CheckpointInfo;
import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.ChunkCodec;
import io.pscluster.example.Dataset;
import io.pscluster.example.LogisticRegression;
import io.pscluster.local.AdminCalls;
import io.pscluster.local.LocalCluster;
import java.io.File;
import java.io.IOException;
import java.io.OutputStream;
import java.net.URI;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.hdfs.DFSTestUtil;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code psctl checkpoint list / verify / delete} on a real HDFS with no cluster running, found through
 * {@code --hadoop-conf} alone (the checkpoint URI names no NameNode), after a cluster trained the example and kept its
 * last two checkpoints (bases: deltas off): the output, the damage each command names, and the exit codes.
 */
class CheckpointToolsTest {
    @TempDir
    static Path tmp;

    private static MiniDFSCluster hdfs;
    private static Path hadoopConf;

    @BeforeAll
    static void startHdfs() throws Exception {
        final Configuration base = new Configuration();
        final File dir = tmp.resolve("hdfs").toFile();
        base.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, dir.getAbsolutePath());
        hdfs = new MiniDFSCluster.Builder(base, dir).numDataNodes(1).build();
        hdfs.waitActive();
        // What an operator's $HADOOP_CONF_DIR holds: where the NameNode is, and client settings.
        final Configuration site = new Configuration(false);
        site.set("fs.defaultFS", hdfs.getURI().toString());
        site.setInt("dfs.client.retry.window.base", 10);
        hadoopConf = Files.createDirectory(tmp.resolve("hadoop-conf"));
        try (OutputStream out = Files.newOutputStream(hadoopConf.resolve("core-site.xml"))) {
            site.writeXml(out);
        }
    }

    @AfterAll
    static void stopHdfs() {
        if (hdfs != null) {
            hdfs.shutdown();
        }
    }

    @Test
    void shouldListVerifyAndDeleteOfflineAndNameEveryDamagedFileWithExit1() throws Exception {
        final String uri = "hdfs:///pscluster/tools";
        try (LocalCluster cluster = LocalCluster.builder()
                .shards(2)
                .checkpointRoot(hdfs.getURI() + "/pscluster/tools")
                .hadoopConf(hdfs.getConfiguration(0))
                .keepCheckpoints(2)
                // Bases: each damaged checkpoint below is one whose own two files are damaged (no chain). The tools on
                // deltas: shouldRefuseToDeleteABaseAKeptDeltaNeedsUnlessForced, and IncrementalCheckpointsTest.
                .deltasPerBase(0)
                .start()) {
            LogisticRegression.train(
                    cluster.proxyAddress(),
                    Dataset.synthetic(3, 4_000, 500, 10),
                    LogisticRegression.Settings.defaults(2, 1),
                    epoch -> {});
            for (int i = 0; i < 3; i++) {
                AdminCalls.checkpointNow(cluster.proxyAddress());
            }
        }

        // As a fresh psctl process would: no HDFS client left from the cluster, only what --hadoop-conf says.
        FileSystem.closeAll();
        // Retention ran after each commit: the last two are kept, the first is gone.
        final PsctlRun list =
                psctl("checkpoint", "list", "--checkpoint-dir", uri, "--hadoop-conf", hadoopConf.toString());
        assertThat(list.exit()).as(list.text()).isZero();
        assertThat(list.out().lines().filter(line -> line.matches("^\\d+ .*")))
                .hasSize(2)
                .allSatisfy(line -> assertThat(line).contains(" base ", " present", "lr_weights"));
        assertThat(list.out())
                .startsWith("ID ")
                .contains("\n3 ")
                .contains("\n2 ")
                .doesNotContain("\n1 ");

        final PsctlRun good =
                psctl("checkpoint", "verify", "--checkpoint-dir", uri, "--hadoop-conf", hadoopConf.toString());
        assertThat(good.exit()).as(good.text()).isZero();
        assertThat(good.out())
                .contains("checkpoint 3: intact (2 files by the filesystem's CRC32C file checksum, not read)")
                .contains("checkpoint 2: intact");

        final CheckpointStore store = new CheckpointStore(URI.create(hdfs.getURI() + "/pscluster/tools"), conf());
        final CheckpointInfo newest = store.get(3).orElseThrow();
        assertThat(newest.manifest().files())
                .allSatisfy(entry -> assertThat(entry.file().codec()).isEqualTo(ChunkCodec.ZSTD));
        final org.apache.hadoop.fs.Path flipped = file(newest, 0);
        final org.apache.hadoop.fs.Path truncated = file(newest, 1);
        final byte[] bytes = read(store.fileSystem(), flipped);
        bytes[bytes.length / 3] ^= 0x04;
        write(store.fileSystem(), flipped, bytes);
        final byte[] whole = read(store.fileSystem(), truncated);
        write(store.fileSystem(), truncated, Arrays.copyOf(whole, whole.length - 1));
        final org.apache.hadoop.fs.Path lost = file(store.get(2).orElseThrow(), 0);
        assertThat(hdfs.corruptBlockOnDataNodesByDeletingBlockFile(DFSTestUtil.getFirstBlock(store.fileSystem(), lost)))
                .isEqualTo(1);

        final PsctlRun bad =
                psctl("checkpoint", "verify", "--checkpoint-dir", uri, "--hadoop-conf", hadoopConf.toString());
        assertThat(bad.exit()).as(bad.text()).isEqualTo(1);
        assertThat(bad.out())
                .contains("checkpoint 3: DAMAGED (2 of 2 files)")
                .contains("  file " + flipped + ": crc32c expected ")
                .contains("  file " + truncated + ": length expected " + whole.length + " bytes, actual "
                        + (whole.length - 1) + " (truncated)")
                .contains("checkpoint 2: DAMAGED (1 of 2 files)")
                .contains("  file " + lost + ": block at offset 0 ");
        final PsctlRun one = psctl(
                "checkpoint", "verify", "--checkpoint-dir", uri, "--id", "2", "--hadoop-conf", hadoopConf.toString());
        assertThat(one.exit()).isEqualTo(1);
        assertThat(one.out()).contains("missing block").doesNotContain("checkpoint 3");
        final PsctlRun damagedList = psctl(
                "checkpoint", "list", "--checkpoint-dir", uri, "--verify", "--hadoop-conf", hadoopConf.toString());
        assertThat(damagedList.exit()).isEqualTo(1);
        assertThat(damagedList.out()).contains("DAMAGED").contains("checkpoint 3: file " + flipped);

        final PsctlRun delete = psctl(
                "checkpoint", "delete", "--checkpoint-dir", uri, "--id", "3", "--hadoop-conf", hadoopConf.toString());
        assertThat(delete.exit()).as(delete.text()).isZero();
        assertThat(store.list()).extracting(CheckpointInfo::id).containsExactly(2L);
        final PsctlRun missing = psctl(
                "checkpoint", "delete", "--checkpoint-dir", uri, "--id", "3", "--hadoop-conf", hadoopConf.toString());
        assertThat(missing.exit()).isEqualTo(1);
        assertThat(missing.err()).contains("no checkpoint 3 under " + hdfs.getURI() + "/pscluster/tools");
    }

    @Test
    void shouldRefuseToDeleteABaseAKeptDeltaNeedsUnlessForced() throws Exception {
        final Path root = OfflineCheckpointCommandsTest.baseAndDeltas(tmp.resolve("local-ckpt"), 2);
        final CheckpointStore store = new CheckpointStore(root.toUri(), new Configuration());

        final PsctlRun list = psctl("checkpoint", "list", "--checkpoint-dir", root.toString(), "--verify");
        assertThat(list.exit()).as(list.text()).isZero();
        assertThat(list.out()).contains(" delta:1 ").contains(" base ").contains(" verified");
        final PsctlRun verify = psctl("checkpoint", "verify", "--checkpoint-dir", root.toString(), "--id", "1");
        assertThat(verify.exit()).isZero();
        assertThat(verify.out()).contains("checkpoint 1: intact (1 files read back, ");
        final PsctlRun refused = psctl("checkpoint", "delete", "--checkpoint-dir", root.toString(), "--id", "1");
        assertThat(refused.exit()).isEqualTo(1);
        assertThat(refused.err()).contains("checkpoint 1 is needed by checkpoint(s) [2]");
        final PsctlRun forced =
                psctl("checkpoint", "delete", "--checkpoint-dir", root.toString(), "--id", "1", "--force");
        assertThat(forced.exit()).isZero();
        assertThat(forced.out()).contains("forced: checkpoints [2] needed it");
        assertThat(store.list()).extracting(CheckpointInfo::id).containsExactly(2L);
        assertThat(forced.err()).doesNotContain("warning");

        // The newest: deleted with a warning, and its id is not handed out again.
        final PsctlRun newest = psctl("checkpoint", "delete", "--checkpoint-dir", root.toString(), "--id", "2");
        assertThat(newest.exit()).as(newest.text()).isZero();
        assertThat(newest.err())
                .contains("warning: checkpoint 2 was the newest; no complete checkpoint is left")
                .contains("Id 2 stays used");
        assertThat(new CheckpointStore(root.toUri(), new Configuration()).nextId())
                .isEqualTo(3);
    }

    @Test
    void shouldRejectBadCheckpointOptionsNamingThem() {
        assertThat(psctl("checkpoint", "verify").exit()).isEqualTo(2);
        assertThat(psctl("checkpoint").exit()).isEqualTo(2);
        final PsctlRun both = psctl("checkpoint", "list", "--checkpoint-dir", "/x", "--proxy", "localhost:1");
        assertThat(both.exit()).isEqualTo(1);
        assertThat(both.err()).contains("one of the two");
        final PsctlRun half = psctl(
                "checkpoint", "list", "--checkpoint-dir", tmp.toString(), "--kerberos-principal", "ps@EXAMPLE.COM");
        assertThat(half.exit()).isEqualTo(1);
        assertThat(half.err()).contains("--kerberos-principal and --kerberos-keytab go together");
        final PsctlRun noConf =
                psctl("checkpoint", "list", "--checkpoint-dir", tmp.toString(), "--hadoop-conf", tmp + "/none");
        assertThat(noConf.exit()).isEqualTo(1);
        assertThat(noConf.err()).contains("--hadoop-conf=" + tmp + "/none is not a directory");
        final PsctlRun age = psctl("proxy", "--checkpoint-dir", tmp.toString(), "--max-checkpoint-age", "7 weeks");
        assertThat(age.exit()).isEqualTo(1);
        assertThat(age.err()).contains("--max-checkpoint-age=7 weeks must be a number with s, m, h or d");
        final PsctlRun codec = psctl("proxy", "--checkpoint-dir", tmp.toString(), "--checkpoint-codec", "brotli");
        assertThat(codec.exit()).isEqualTo(1);
        assertThat(codec.err()).contains("codec 'brotli' is not one of none, zstd, lz4");
        final PsctlRun block = psctl("proxy", "--checkpoint-dir", tmp.toString(), "--checkpoint-block-size", "1000");
        assertThat(block.exit()).isEqualTo(1);
        assertThat(block.err()).contains("checkpointBlockSize=1000 must be 0");
    }

    private static Configuration conf() {
        return new Configuration(hdfs.getConfiguration(0));
    }

    private static org.apache.hadoop.fs.Path file(final CheckpointInfo checkpoint, final int index) {
        return checkpoint.resolve(checkpoint.manifest().files().get(index).file());
    }

    private static byte[] read(final FileSystem fs, final org.apache.hadoop.fs.Path file) throws IOException {
        try (FSDataInputStream in = fs.open(file)) {
            return in.readAllBytes();
        }
    }

    /** Replaces a file through HDFS: new blocks, new block checksums, so only our CRC32C can tell. */
    private static void write(final FileSystem fs, final org.apache.hadoop.fs.Path file, final byte[] bytes)
            throws IOException {
        try (FSDataOutputStream out = fs.create(file, true)) {
            out.write(bytes);
        }
    }
}
