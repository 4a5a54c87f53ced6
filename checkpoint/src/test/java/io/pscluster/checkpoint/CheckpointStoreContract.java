package io.pscluster.checkpoint;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileAlreadyExistsException;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.junit.jupiter.api.Test;

/**
 * The behaviour every filesystem must give {@link CheckpointStore}; subclasses supply a fresh root per test. The
 * checkpoints written here have two shards of one table with slots split between them, as a real cluster writes.
 */
abstract class CheckpointStoreContract {
    private static final int WIDTH = 4;
    private static final int SLOTS = 64;

    /** A new, empty root directory for one test. */
    abstract URI newRoot() throws IOException;

    abstract Configuration conf();

    /** Whether the filesystem gives a CRC32C file checksum (HDFS's COMPOSITE_CRC), so files verify unread. */
    abstract boolean hasFileChecksum();

    @Test
    void shouldListNewestFirstWhenTwoCheckpointsAreCommitted() throws IOException {
        CheckpointStore store = new CheckpointStore(newRoot(), conf());
        assertThat(store.nextId()).isEqualTo(1);
        assertThat(store.list()).isEmpty();
        assertThat(store.latest()).isEmpty();

        Manifest first = writeAndCommit(store, store.nextId());
        Manifest second = writeAndCommit(store, store.nextId());

        assertThat(second.id()).isEqualTo(2);
        assertThat(store.list()).extracting(CheckpointInfo::id).containsExactly(2L, 1L);
        assertThat(store.list().get(1).manifest()).isEqualTo(first);
        CheckpointInfo latest = store.latest().orElseThrow();
        assertThat(latest.id()).isEqualTo(2);
        assertThat(latest.dir()).isEqualTo(store.checkpointDir(2));
        assertThat(latest.manifest()).isEqualTo(second);
        assertThat(store.get(1).orElseThrow().manifest()).isEqualTo(first);
        assertThat(store.nextId()).isEqualTo(3);
        assertThat(names(store.checkpointDir(2))).containsExactlyInAnyOrder("_MANIFEST", "shard-s0", "shard-s1");

        // Reading slots 10..19 from both shards, as a new shard owning those slots would after a reshard.
        List<Long> keys = new ArrayList<>();
        for (Manifest.FileEntry entry : latest.manifest().files()) {
            RowFileReader.read(
                    store.fileSystem(),
                    latest.dir(),
                    entry.file(),
                    slot -> slot >= 10 && slot < 20,
                    (slot, key, row) -> {
                        assertThat(row[0]).isEqualTo(valueOf(2, key));
                        keys.add(key);
                    });
        }
        assertThat(keys).containsExactlyInAnyOrder(keysOf(10, 20));
    }

    @Test
    void shouldSkipIdOfIncompleteDirectoryWhenItHasNoManifest() throws IOException {
        CheckpointStore store = new CheckpointStore(newRoot(), conf());
        writeAndCommit(store, 1);
        writeFiles(store, 2); // a checkpoint whose shards wrote their files but whose coordinator died

        assertThat(store.list()).extracting(CheckpointInfo::id).containsExactly(1L);
        assertThat(store.get(2)).isEmpty();
        assertThat(store.latest().orElseThrow().id()).isEqualTo(1);
        assertThat(store.nextId()).isEqualTo(3);
    }

    @Test
    void shouldNeverReuseAnIdWhenTheNewestCheckpointIsDeleted() throws IOException {
        URI root = newRoot();
        CheckpointStore store = new CheckpointStore(root, conf());
        writeAndCommit(store, store.nextId());
        writeAndCommit(store, store.nextId());
        writeAndCommit(store, store.nextId());

        assertThat(store.delete(3, false)).isEmpty();

        assertThat(store.list()).extracting(CheckpointInfo::id).containsExactly(2L, 1L);
        assertThat(store.nextId()).isEqualTo(4);
        // A restarted proxy opens a new store on the same root: it must not hand out 3 either.
        CheckpointStore restarted = new CheckpointStore(root, conf());
        assertThat(restarted.nextId()).isEqualTo(4);
        writeAndCommit(restarted, restarted.nextId());
        restarted.delete(4, false);
        restarted.delete(2, false); // not the newest: 4's mark still holds the ids
        assertThat(new CheckpointStore(root, conf()).nextId()).isEqualTo(5);
        // Deleting the newest again leaves one mark, not one per deletion.
        assertThat(names(new Path(root)).stream().filter(name -> name.startsWith("_ID-")))
                .containsExactly("_ID-000000000004");
        restarted.delete(1, false);
        assertThat(restarted.list()).isEmpty();
        assertThat(new CheckpointStore(root, conf()).nextId()).isEqualTo(5);
        // A failed checkpoint's directory (no manifest) deleted as the newest keeps its id used too.
        writeFiles(restarted, 5);
        restarted.delete(5, false);
        assertThat(new CheckpointStore(root, conf()).nextId()).isEqualTo(6);
    }

    @Test
    void shouldRefuseCommitAndKeepManifestWhenManifestAlreadyExists() throws IOException {
        CheckpointStore store = new CheckpointStore(newRoot(), conf());
        Manifest committed = writeAndCommit(store, 1);
        Manifest other = new Manifest(1, 0, SLOTS, committed.tables(), committed.files(), Map.of("attempt", "second"));

        assertThatThrownBy(() -> store.commit(other))
                .isInstanceOf(FileAlreadyExistsException.class)
                .hasMessageContaining(store.checkpointDir(1) + "/_MANIFEST");

        assertThat(store.get(1).orElseThrow().manifest()).isEqualTo(committed);
        assertThat(names(store.checkpointDir(1))).containsExactlyInAnyOrder("_MANIFEST", "shard-s0", "shard-s1");
    }

    @Test
    void shouldRefuseCommitWhenListedFileHasWrongLength() throws IOException {
        CheckpointStore store = new CheckpointStore(newRoot(), conf());
        List<Manifest.FileEntry> files = writeFiles(store, 1);
        RowFileInfo real = files.get(0).file();
        RowFileInfo wrong = new RowFileInfo(real.path(), real.length() + 1, real.crc32c(), real.rows(), real.slots());
        Manifest manifest = manifest(1, List.of(new Manifest.FileEntry("emb", "s0", wrong), files.get(1)));

        assertThatThrownBy(() -> store.commit(manifest))
                .isInstanceOf(IOException.class)
                .hasMessageContaining(real.path())
                .hasMessageContaining("has " + real.length() + " bytes, manifest says " + (real.length() + 1));

        assertThat(store.list()).isEmpty();
        assertThat(names(store.checkpointDir(1))).containsExactlyInAnyOrder("shard-s0", "shard-s1");
    }

    @Test
    void shouldFallBackToPreviousWhenNewestHasCorruptFile() throws IOException {
        CheckpointStore store = new CheckpointStore(newRoot(), conf());
        writeAndCommit(store, 1);
        Manifest newest = writeAndCommit(store, 2);
        RowFileInfo damaged = newest.files().get(1).file();
        Path file = new Path(store.checkpointDir(2), damaged.path());
        byte[] bytes = readAll(store.fileSystem(), file);
        bytes[RowFileFormat.HEADER_BYTES + 9] ^= 0x40; // a float of the first row: same length, valid structure
        rewrite(store.fileSystem(), file, bytes);

        assertThat(store.latest().orElseThrow().id()).isEqualTo(1);
        CheckpointInfo corrupt = store.get(2).orElseThrow();
        assertThatThrownBy(() -> store.verify(corrupt))
                .isInstanceOf(CheckpointCorruptException.class)
                .hasMessageContaining(file.toString())
                .hasMessageContaining(String.format("crc32c expected %08x, ", damaged.crc32c()));
        assertThat(store.list()).extracting(CheckpointInfo::id).containsExactly(2L, 1L);
    }

    @Test
    void shouldSkipCheckpointInListWhenManifestDoesNotDecode() throws IOException {
        CheckpointStore store = new CheckpointStore(newRoot(), conf());
        writeAndCommit(store, 1);
        writeAndCommit(store, 2);
        Path manifest = new Path(store.checkpointDir(2), CheckpointStore.MANIFEST);
        byte[] bytes = readAll(store.fileSystem(), manifest);
        rewrite(store.fileSystem(), manifest, Arrays.copyOf(bytes, bytes.length / 2));

        assertThat(store.list()).extracting(CheckpointInfo::id).containsExactly(1L);
        assertThat(store.latest().orElseThrow().id()).isEqualTo(1);
        assertThatThrownBy(() -> store.get(2))
                .isInstanceOf(CheckpointCorruptException.class)
                .hasMessageContaining(manifest.toString());
    }

    @Test
    void shouldNameEveryDamagedFileAndTheProblemWhenChecking() throws IOException {
        CheckpointStore store = new CheckpointStore(newRoot(), conf());
        writeAndCommit(store, 1);
        Manifest flipped = writeAndCommit(store, 2);
        Manifest truncated = writeAndCommit(store, 3);
        Manifest missing = writeAndCommit(store, 4);
        FileSystem fs = store.fileSystem();
        Path flippedFile = file(store, flipped, 0);
        byte[] bytes = readAll(fs, flippedFile);
        bytes[bytes.length / 2] ^= 0x01;
        rewrite(fs, flippedFile, bytes);
        Path truncatedFile = file(store, truncated, 1);
        byte[] whole = readAll(fs, truncatedFile);
        rewrite(fs, truncatedFile, Arrays.copyOf(whole, whole.length - 7));
        Path missingFile = file(store, missing, 0);
        fs.delete(missingFile, false);
        rewrite(fs, file(store, missing, 1), new byte[0]); // and an empty one beside it

        assertThat(store.check(store.get(1).orElseThrow(), VerifyReport.Depth.CHECKSUM)
                        .intact())
                .isTrue();
        assertThat(problems(store, 2, VerifyReport.Depth.CHECKSUM))
                .singleElement(org.assertj.core.api.InstanceOfAssertFactories.STRING)
                .startsWith("file " + flippedFile + ": crc32c expected "
                        + String.format("%08x", flipped.files().get(0).file().crc32c()));
        assertThat(problems(store, 3, VerifyReport.Depth.CHECKSUM))
                .containsExactly("file " + truncatedFile + ": length expected " + whole.length + " bytes, actual "
                        + (whole.length - 7) + " (truncated)");
        assertThat(problems(store, 4, VerifyReport.Depth.PRESENCE))
                .containsExactly(
                        "file " + missingFile + ": is missing",
                        "file " + file(store, missing, 1) + ": length expected "
                                + missing.files().get(1).file().length() + " bytes, actual 0 (truncated)");
        // The cheap check sees lengths only; the full ones see the content.
        assertThat(problems(store, 2, VerifyReport.Depth.PRESENCE)).isEmpty();
        assertThat(problems(store, 2, VerifyReport.Depth.READ_BACK))
                .singleElement(org.assertj.core.api.InstanceOfAssertFactories.STRING)
                .contains(flippedFile.toString(), "crc32c expected");
        assertThat(store.latest().orElseThrow().id()).isEqualTo(1);
    }

    @Test
    void shouldVerifyWithoutReadingBackExactlyWhenTheFilesystemHasAFileChecksum() throws IOException {
        CheckpointStore store = new CheckpointStore(newRoot(), conf());
        Manifest manifest = writeAndCommit(store, 1);
        CheckpointInfo checkpoint = store.get(1).orElseThrow();
        String scheme = store.fileSystem().getScheme();

        long before = bytesRead(scheme);
        VerifyReport report = store.check(checkpoint, VerifyReport.Depth.CHECKSUM);
        long read = bytesRead(scheme) - before;

        assertThat(report.intact()).isTrue();
        if (hasFileChecksum()) {
            assertThat(report.filesByChecksum()).isEqualTo(2);
            assertThat(report.filesReadBack()).isZero();
            // One probe byte per block; not the files.
            assertThat(read).isLessThanOrEqualTo(2);
        } else {
            assertThat(report.filesByChecksum()).isZero();
            assertThat(report.filesReadBack()).isEqualTo(2);
            assertThat(read).isGreaterThanOrEqualTo(manifest.totalBytes());
        }
        VerifyReport full = store.check(checkpoint, VerifyReport.Depth.READ_BACK);
        assertThat(full.filesReadBack()).isEqualTo(2);
        assertThat(full.bytesReadBack()).isEqualTo(manifest.totalBytes());
        assertThat(full.intact()).isTrue();
    }

    private static List<String> problems(CheckpointStore store, long id, VerifyReport.Depth depth) throws IOException {
        return store.check(store.get(id).orElseThrow(), depth).problems();
    }

    private static Path file(CheckpointStore store, Manifest manifest, int index) {
        return new Path(
                store.checkpointDir(manifest.id()),
                manifest.files().get(index).file().path());
    }

    @SuppressWarnings("deprecation") // getAllStatistics: the per-scheme byte counters every FileSystem keeps
    static long bytesRead(String scheme) {
        long total = 0;
        for (FileSystem.Statistics statistics : FileSystem.getAllStatistics()) {
            if (statistics.getScheme().equals(scheme)) {
                total += statistics.getBytesRead();
            }
        }
        return total;
    }

    private Manifest writeAndCommit(CheckpointStore store, long id) throws IOException {
        Manifest manifest = manifest(id, writeFiles(store, id));
        store.commit(manifest);
        return manifest;
    }

    static Manifest manifest(long id, List<Manifest.FileEntry> files) {
        byte[] schema = "dim=2 optimizer=adagrad".getBytes(StandardCharsets.UTF_8);
        return new Manifest(
                id, 1_700_000_000_000L + id, SLOTS, List.of(new Manifest.TableEntry("emb", schema)), files, Map.of());
    }

    /** Shard s0 owns the even slots, s1 the odd ones; each slot holds keys slot*10 .. slot*10+2. */
    static List<Manifest.FileEntry> writeFiles(CheckpointStore store, long id) throws IOException {
        List<Manifest.FileEntry> files = new ArrayList<>();
        for (int shard = 0; shard < 2; shard++) {
            String shardId = "s" + shard;
            String path = CheckpointStore.fileName(shardId, "emb", id);
            try (RowFileWriter writer =
                    RowFileWriter.create(store.fileSystem(), store.checkpointDir(id), path, WIDTH)) {
                float[] row = new float[WIDTH];
                for (int slot = shard; slot < SLOTS; slot += 2) {
                    writer.beginSlot(slot);
                    for (long key = slot * 10L; key < slot * 10L + 3; key++) {
                        Arrays.fill(row, valueOf(id, key));
                        writer.writeRow(key, row, 0);
                    }
                }
                files.add(new Manifest.FileEntry("emb", shardId, writer.finish()));
            }
        }
        return files;
    }

    private static float valueOf(long checkpointId, long key) {
        return checkpointId * 1000 + key;
    }

    private static Long[] keysOf(int fromSlot, int toSlot) {
        List<Long> keys = new ArrayList<>();
        for (long slot = fromSlot; slot < toSlot; slot++) {
            for (long key = slot * 10; key < slot * 10 + 3; key++) {
                keys.add(key);
            }
        }
        return keys.toArray(Long[]::new);
    }

    /** Names in a directory, without file://'s hidden .crc side files. */
    private static List<String> names(Path dir) throws IOException {
        FileSystem fs = dir.getFileSystem(new Configuration());
        List<String> names = new ArrayList<>();
        for (FileStatus status : fs.listStatus(dir)) {
            if (!status.getPath().getName().endsWith(".crc")) {
                names.add(status.getPath().getName());
            }
        }
        return names;
    }

    private static byte[] readAll(FileSystem fs, Path file) throws IOException {
        try (InputStream in = fs.open(file)) {
            return in.readAllBytes();
        }
    }

    private static void rewrite(FileSystem fs, Path file, byte[] bytes) throws IOException {
        try (OutputStream out = fs.create(file, true)) {
            out.write(bytes);
        }
    }
}
