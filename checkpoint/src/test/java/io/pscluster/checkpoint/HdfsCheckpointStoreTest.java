package io.pscluster.checkpoint;

import static io.pscluster.checkpoint.CheckpointStoreContract.manifest;
import static io.pscluster.checkpoint.CheckpointStoreContract.writeFiles;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.URI;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.CreateFlag;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.hdfs.DFSTestUtil;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.hdfs.protocol.ExtendedBlock;
import org.apache.hadoop.util.DataChecksum;
import org.awaitility.Awaitility;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@link CheckpointStore} on a real (in-process) HDFS: one NameNode, one DataNode, shared by the class. Besides the
 * contract: what HDFS is asked for when files are created, multi-block checksums, and a DataNode losing a block.
 */
class HdfsCheckpointStoreTest extends CheckpointStoreContract {
    @TempDir
    static java.nio.file.Path baseDir;

    private static MiniDFSCluster cluster;
    private static Configuration conf;
    private static final AtomicInteger ROOTS = new AtomicInteger();

    @BeforeAll
    static void startCluster() throws IOException {
        conf = new Configuration();
        conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, baseDir.toString());
        // A block no DataNode can serve fails a read after a few quick retries, not after seconds of back-off.
        conf.setInt("dfs.client.retry.window.base", 10);
        cluster = new MiniDFSCluster.Builder(conf, baseDir.toFile())
                .numDataNodes(1)
                .build();
        cluster.waitActive();
        // The cached client is made first without COMPOSITE_CRC, as another user of the filesystem may make it: the
        // store must still get comparable checksums (it opens a client of its own).
        assertThat(cluster.getFileSystem().getConf().get(CheckpointStore.CHECKSUM_COMBINE_MODE, "MD5MD5CRC"))
                .isEqualTo("MD5MD5CRC");
    }

    @Test
    void shouldCreateRowFilesWithSyncBlockCrc32cAndTheRequestedReplicationAndBlockSize() throws IOException {
        Configuration recording = new Configuration(conf);
        recording.setClass("fs.hdfs.impl", RecordingDistributedFileSystem.class, FileSystem.class);
        recording.setBoolean("fs.hdfs.impl.disable.cache", true);
        try (CheckpointStore store = new CheckpointStore(newRoot(), recording)) {
            RowFileWriter.Options options = RowFileWriter.Options.defaults()
                    .withCodec(ChunkCodec.NONE)
                    .withReplication((short) 2)
                    .withBlockSize(1 << 20);
            Path dir = store.checkpointDir(1);
            RowFileInfo info;
            // 3.5 MiB of plain rows: four blocks of 1 MiB, so the file checksum combines several blocks.
            int width = 254;
            float[] row = new float[width];
            try (RowFileWriter writer =
                    RowFileWriter.create(store.fileSystem(), dir, "shard-s0/big.rows", width, options)) {
                writer.beginSlot(0);
                for (int key = 0; key < 3584; key++) {
                    Arrays.fill(row, key * 0.001f);
                    writer.writeRow(key, row, 0);
                }
                info = writer.finish();
            }
            Path file = new Path(dir, info.path());

            RecordingDistributedFileSystem.Create create = RecordingDistributedFileSystem.CREATES.get(file.toString());
            assertThat(create.flags()).containsExactlyInAnyOrder(CreateFlag.CREATE, CreateFlag.SYNC_BLOCK);
            assertThat(create.checksumOpt().getChecksumType()).isEqualTo(DataChecksum.Type.CRC32C);
            FileStatus status = store.fileSystem().getFileStatus(file);
            assertThat(status.getReplication()).isEqualTo((short) 2);
            assertThat(status.getBlockSize()).isEqualTo(1 << 20);
            assertThat(store.fileSystem().getFileBlockLocations(status, 0, status.getLen()))
                    .hasSize(4);

            store.commit(new Manifest(
                    1,
                    0,
                    1,
                    List.of(new Manifest.TableEntry("big", new byte[0])),
                    List.of(new Manifest.FileEntry("big", "s0", info)),
                    Map.of()));
            VerifyReport report = store.check(store.get(1).orElseThrow(), VerifyReport.Depth.CHECKSUM);
            assertThat(report.problems()).isEmpty();
            assertThat(report.filesByChecksum()).isEqualTo(1);
            // Everything written was hsync'ed whole before it was closed.
            assertThat(RecordingDistributedFileSystem.SYNCED_THEN_CLOSED).containsEntry(file.toString(), info.length());
            assertThat(RecordingDistributedFileSystem.SYNCED_THEN_CLOSED.keySet())
                    .containsAll(RecordingDistributedFileSystem.CREATES.keySet());
            // The manifest is written the same durable way.
            assertThat(RecordingDistributedFileSystem.CREATES.keySet())
                    .anyMatch(path -> path.startsWith(dir + "/_MANIFEST.tmp-"));
            assertThat(RecordingDistributedFileSystem.CREATES.values())
                    .allSatisfy(each -> assertThat(each.flags()).contains(CreateFlag.SYNC_BLOCK));
        }
    }

    /**
     * Two committers of one id (a proxy thought dead and its successor): the first stops right before its rename, the
     * second commits meanwhile. HDFS's rename onto the existing manifest returns false without throwing, so only the
     * check of that result keeps the first from reporting a commit that did not happen.
     */
    @Test
    void shouldRefuseTheCommitWhoseRenameLostToAnotherCommitOfTheSameId() throws Exception {
        CheckpointStore store = new CheckpointStore(newRoot(), conf);
        List<Manifest.FileEntry> files = writeFiles(store, 1);
        Manifest first = manifest(1, files);
        // Another manifest of the same length, so that the size check after the rename cannot tell them apart.
        Manifest second;
        long created = first.createdMillis();
        do {
            second = new Manifest(1, ++created, first.slotCount(), first.tables(), files, first.properties());
        } while (second.encode().length != first.encode().length);
        PausePoints.arm(PausePoints.BEFORE_RENAME);
        CompletableFuture<Void> paused = CompletableFuture.runAsync(() -> {
            try {
                store.commit(first);
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        });
        try {
            Awaitility.await()
                    .atMost(Duration.ofSeconds(30))
                    .until(() -> !PausePoints.armed(PausePoints.BEFORE_RENAME));
            store.commit(second);
        } finally {
            PausePoints.disarm(PausePoints.BEFORE_RENAME);
        }

        assertThatThrownBy(() -> paused.get(30, TimeUnit.SECONDS))
                .hasCauseInstanceOf(UncheckedIOException.class)
                .hasMessageContaining("returned false");
        assertThat(store.get(1).orElseThrow().manifest()).isEqualTo(second);
        assertThat(Arrays.stream(store.fileSystem().listStatus(store.checkpointDir(1)))
                        .map(status -> status.getPath().getName()))
                .as("the loser's temporary manifest is gone")
                .containsExactlyInAnyOrder("_MANIFEST", "shard-s0", "shard-s1");
    }

    @Test
    void shouldFailTheCommitAndLeaveTheRivalManifestAloneWhenTheRenameReturnsFalse() throws IOException {
        Configuration rival = new Configuration(conf);
        rival.setClass("fs.hdfs.impl", RivalCommitDistributedFileSystem.class, FileSystem.class);
        rival.setBoolean("fs.hdfs.impl.disable.cache", true);
        try (CheckpointStore store = new CheckpointStore(newRoot(), rival)) {
            List<Manifest.FileEntry> files = writeFiles(store, 1);
            Path dir = store.checkpointDir(1);
            Path target = store.fileSystem().makeQualified(new Path(dir, CheckpointStore.MANIFEST));

            assertThatThrownBy(() -> store.commit(manifest(1, files)))
                    .isInstanceOf(IOException.class)
                    .hasMessageContaining("cannot commit checkpoint 1: rename ")
                    .hasMessageContaining(" returned false (")
                    .hasMessageEndingWith(CheckpointStore.MANIFEST + " exists)");
            byte[] committed;
            try (FSDataInputStream in = store.fileSystem().open(target)) {
                committed = in.readAllBytes();
            }
            assertThat(committed).isEqualTo(RivalCommitDistributedFileSystem.RIVALS.get(target.toString()));
            assertThat(store.fileSystem().listStatus(dir))
                    .extracting(status -> status.getPath().getName())
                    .as("our temporary manifest is removed")
                    .noneMatch(name -> name.startsWith(CheckpointStore.MANIFEST + "."));
        }
    }

    @Test
    void shouldReportTheFileAndBlockWhenADataNodeLostTheBlockFile() throws IOException {
        try (CheckpointStore store = new CheckpointStore(newRoot(), conf)) {
            List<Manifest.FileEntry> files = writeFiles(store, 1);
            store.commit(manifest(1, files));
            files = writeFiles(store, 2);
            store.commit(manifest(2, files));
            Path file = new Path(store.checkpointDir(2), files.get(1).file().path());
            ExtendedBlock block = DFSTestUtil.getFirstBlock(store.fileSystem(), file);
            assertThat(cluster.getBlockFile(0, block).delete()).isTrue();

            CheckpointInfo checkpoint = store.get(2).orElseThrow();
            // The NameNode does not know yet: names and lengths look whole.
            assertThat(store.check(checkpoint, VerifyReport.Depth.PRESENCE).intact())
                    .isTrue();
            assertThat(store.check(checkpoint, VerifyReport.Depth.CHECKSUM).problems())
                    .singleElement(org.assertj.core.api.InstanceOfAssertFactories.STRING)
                    .startsWith("file " + file + ": block at offset 0 ")
                    .contains("missing block");
            assertThat(store.latest().orElseThrow().id()).isEqualTo(1);
        }
    }

    @AfterAll
    static void stopCluster() {
        if (cluster != null) {
            cluster.shutdown();
        }
    }

    @Override
    URI newRoot() {
        return URI.create(cluster.getURI() + "/ps-" + ROOTS.incrementAndGet());
    }

    @Override
    Configuration conf() {
        return conf;
    }

    @Override
    boolean hasFileChecksum() {
        return true;
    }
}
