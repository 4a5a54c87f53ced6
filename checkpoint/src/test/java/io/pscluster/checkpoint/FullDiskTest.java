package io.pscluster.checkpoint;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.file.Files;
import java.util.concurrent.TimeUnit;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * A real full disk under a {@code file://} checkpoint root (a 2 MiB tmpfs, filled up): Hadoop's local filesystem
 * reports the refused writes as {@code FSError}, an {@code Error}, which went past every {@code IOException} handler and
 * ended the proxy's claim renewal and periodic checkpoints for good. Every write a checkpoint makes (row files,
 * manifests, marks, the proxy's claim) now fails with an {@code IOException} naming the cause, and works again once
 * there is room. Needs root to mount the tmpfs (as CI runs); skipped, and reported so, where it cannot.
 */
class FullDiskTest {
    private static File mount;
    private static boolean mounted;

    @BeforeAll
    static void mountSmallDisk() throws Exception {
        mount = Files.createTempDirectory("ps-fulldisk").toFile();
        mounted = run("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mount.getAbsolutePath());
    }

    @AfterAll
    static void unmount() throws Exception {
        if (mounted) {
            org.apache.hadoop.fs.FileSystem.closeAll();
            // A stream the failed write left open may hold the mount for a moment.
            for (int attempt = 0; attempt < 50 && !run("umount", mount.getAbsolutePath()); attempt++) {
                System.gc();
                Thread.sleep(100);
            }
        }
        Files.deleteIfExists(mount.toPath());
    }

    @Test
    void shouldFailEveryCheckpointWriteWithAnIoExceptionWhileTheDiskIsFullAndWorkOnceThereIsRoom() throws Exception {
        assumeTrue(mounted, "cannot mount a tmpfs here (not root?)");
        final CheckpointStore store = new CheckpointStore(new File(mount, "ckpt").toURI(), new Configuration());
        final File filler = new File(mount, "filler");

        // Full: nothing is begun (a local file whose writes fail stays open), so retries hold no descriptor.
        fill(filler, 0);
        assertThatThrownBy(() -> store.createProxyClaim(CheckpointStore.PROXY_CLAIM_PREFIX + "a.r1", "claim"))
                .isInstanceOf(IOException.class)
                .hasMessageContaining("No space left on device");
        assertThatThrownBy(() -> writeRows(store, 1, 1_000))
                .isInstanceOf(IOException.class)
                .hasMessageContaining("No space left on device");
        assertThat(openFilesUnder(mount))
                .as("files the refused writes left open")
                .isEmpty();

        // Room for the file to begin, not to end: the local filesystem's FSError comes out as an IOException.
        Files.delete(filler.toPath());
        fill(filler, 256 * 1024);
        assertThatThrownBy(() -> writeRows(store, 2, 50_000))
                .isInstanceOf(IOException.class)
                .hasMessageContaining("No space left on device");
        assertThat(openFilesUnder(mount))
                .as("files a write that ran out of room left open")
                .isEmpty();

        Files.delete(filler.toPath());
        store.createProxyClaim(CheckpointStore.PROXY_CLAIM_PREFIX + "a.r2", "claim");
        assertThat(store.proxyClaimNames()).contains(CheckpointStore.PROXY_CLAIM_PREFIX + "a.r2");
        assertThat(writeRows(store, 3, 1_000).rows()).isEqualTo(1_000);
    }

    /**
     * A checkpoint's files on file:// are synced to the disk by {@code hsync}: the local filesystem's checksummed stream
     * only flushed to the operating system (it is no {@code Syncable}), so a committed checkpoint's files could be lost
     * to a power cut after its manifest was renamed into place.
     */
    @Test
    void shouldWriteLocalCheckpointFilesThroughAStreamThatSyncsToTheDisk() throws Exception {
        final java.nio.file.Path dir = Files.createTempDirectory("ps-sync");
        final org.apache.hadoop.fs.FileSystem local = org.apache.hadoop.fs.FileSystem.getLocal(new Configuration());
        final Path file = new Path(dir.toUri().toString(), "t.rows");
        try (org.apache.hadoop.fs.FSDataOutputStream out =
                RowFileWriter.createDurable(local, file, RowFileWriter.Options.defaults())) {
            assertThat(out.hasCapability(org.apache.hadoop.fs.StreamCapabilities.HSYNC))
                    .as("hsync reaches the disk")
                    .isTrue();
            out.write(1);
            out.hsync();
        }
        assertThat(local.getFileStatus(file).getLen()).isEqualTo(1);
        local.delete(new Path(dir.toUri().toString()), true);
    }

    /**
     * Every file a checkpoint root holds on file:// (row files, manifest, the cluster mark, a proxy's claim, a damage
     * mark, written again over an earlier one) is written through the stream that syncs to the disk: none leaves the
     * {@code .crc} side file of the checksummed stream, which cannot sync.
     */
    @Test
    void shouldWriteEveryLocalRootFileThroughTheSyncingStream() throws Exception {
        final java.nio.file.Path dir = Files.createTempDirectory("ps-sync-root");
        final CheckpointStore store = new CheckpointStore(dir.toUri(), new Configuration());
        store.markCluster("cluster");
        store.createProxyClaim(CheckpointStore.PROXY_CLAIM_PREFIX + "a.r1", "claim");
        store.commit(new Manifest(
                1,
                System.currentTimeMillis(),
                64,
                Manifest.Kind.BASE,
                0,
                0,
                java.util.List.of(new Manifest.TableEntry("emb", new byte[0])),
                CheckpointStoreContract.writeFiles(store, 1),
                java.util.Map.of()));
        store.markDamaged(1, "first");
        store.markDamaged(1, "second");

        assertThat(store.damageMarks()).containsEntry(1L, "second");
        try (java.util.stream.Stream<java.nio.file.Path> files = Files.walk(dir)) {
            assertThat(files.map(path -> dir.relativize(path).toString()))
                    .as("files under the root")
                    .contains("ckpt-000000000001/_MANIFEST")
                    .noneMatch(name -> name.endsWith(".crc"));
        }
    }

    /**
     * A local directory is synced by opening it and forcing it to the disk (the names a commit creates and renames
     * survive a power cut only so); a directory that is not there fails, rather than passing for synced.
     */
    @Test
    void shouldSyncALocalDirectoryAndFailOnOneThatIsNotThere() throws Exception {
        final java.nio.file.Path dir = Files.createTempDirectory("ps-dirsync");
        final org.apache.hadoop.fs.FileSystem local = org.apache.hadoop.fs.FileSystem.getLocal(new Configuration());
        FsErrorStreams.syncLocalDirectory(local, new Path(dir.toUri().toString()));
        assertThatThrownBy(() -> FsErrorStreams.syncLocalDirectory(
                        local, new Path(dir.resolve("gone").toUri().toString())))
                .isInstanceOf(java.nio.file.NoSuchFileException.class);
        Files.delete(dir);
    }

    private static RowFileInfo writeRows(final CheckpointStore store, final long id, final int rows)
            throws IOException {
        final Path dir = store.checkpointDir(id);
        final RowFileWriter writer = RowFileWriter.create(store.fileSystem(), dir, "shard-a/t.rows", 16);
        final float[] row = new float[16];
        // As a shard writes a part: on failure the writer is closed, leaving an incomplete file for retention.
        try {
            writer.beginSlot(0);
            final java.util.SplittableRandom random = new java.util.SplittableRandom(id);
            for (int key = 0; key < rows; key++) {
                for (int i = 0; i < row.length; i++) {
                    row[i] = (float) random.nextGaussian(); // incompressible, whatever the codec
                }
                writer.writeRow(key, row, 0);
            }
            return writer.finish();
        } catch (IOException | RuntimeException e) {
            try {
                writer.close();
            } catch (IOException closing) {
                e.addSuppressed(closing);
            }
            throw e;
        }
    }

    /** The files under {@code dir} this process holds open (Linux: its descriptors' links). */
    private static java.util.List<String> openFilesUnder(final File dir) throws IOException {
        final java.util.List<String> open = new java.util.ArrayList<>();
        try (var fds = Files.list(java.nio.file.Paths.get("/proc/self/fd"))) {
            for (final java.nio.file.Path fd : fds.toList()) {
                try {
                    final String target = Files.readSymbolicLink(fd).toString();
                    if (target.startsWith(dir.getAbsolutePath())) {
                        open.add(target);
                    }
                } catch (IOException closedMeanwhile) {
                    // The directory stream's own descriptor, or one closed while listing.
                }
            }
        }
        return open;
    }

    /** Writes zeros to {@code file} until the disk has {@code leave} bytes free or fewer. */
    private static void fill(final File file, final long leave) throws IOException {
        final byte[] block = new byte[16 * 1024];
        try (OutputStream out = new FileOutputStream(file)) {
            while (file.getParentFile().getUsableSpace() > leave) {
                out.write(block);
                out.flush();
            }
        } catch (IOException full) {
            assertThat(full).hasMessageContaining("No space left on device");
        }
    }

    private static boolean run(final String... command) throws Exception {
        try {
            final Process process =
                    new ProcessBuilder(command).redirectErrorStream(true).start();
            return process.waitFor(30, TimeUnit.SECONDS) && process.exitValue() == 0;
        } catch (IOException noSuchCommand) {
            return false;
        }
    }
}
