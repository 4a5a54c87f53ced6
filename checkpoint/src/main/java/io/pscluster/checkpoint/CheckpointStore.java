package io.pscluster.checkpoint;

import java.io.FileNotFoundException;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HexFormat;
import java.util.List;
import java.util.Objects;
import java.util.Optional;
import java.util.UUID;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.zip.CRC32C;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.ChecksumException;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FileAlreadyExistsException;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.hdfs.BlockMissingException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The catalog of checkpoints under one root directory, on any Hadoop {@link FileSystem} ({@code hdfs://},
 * {@code file://}, ...).
 *
 * <p>Layout: {@code <root>/ckpt-<id, 12 digits>/} holds the checkpoint's data files and, once committed, its
 * {@code _MANIFEST}. The invariant: <b>a checkpoint exists if and only if its directory holds a {@code _MANIFEST}</b>,
 * and the manifest is written last, so a reader never sees a checkpoint whose files are still being written. Files
 * are created with {@code overwrite=false} and ids are never reused ({@link #nextId()} counts incomplete
 * directories too), so a committed file is never replaced.
 *
 * <p>Commit = write the manifest to a unique temporary name, {@code hsync}, close, rename to {@code _MANIFEST}. HDFS
 * renames atomically but returns {@code false} (no exception) when the target file exists and moves the source
 * <i>into</i> the target when it is a directory, so {@link #commit} checks for the target first, checks the boolean
 * and checks afterwards that {@code _MANIFEST} is a file. On {@code file://} a rename replaces an existing target, so
 * there the check-then-rename relies on one committer per checkpoint id (the coordinator that picked the id).
 *
 * <p>Thread-safe: the store holds no mutable state besides the (thread-safe) {@link FileSystem}.
 */
public final class CheckpointStore {
    private static final Logger LOG = LoggerFactory.getLogger(CheckpointStore.class);

    /** The name that commits a checkpoint. */
    public static final String MANIFEST = "_MANIFEST";

    private static final String DIR_PREFIX = "ckpt-";
    private static final Pattern DIR_NAME = Pattern.compile("ckpt-(\\d{1,18})");
    private static final String TMP_PREFIX = MANIFEST + ".tmp-";
    private static final int VERIFY_BUFFER_BYTES = 1024 * 1024;
    /** Manifests are a few KiB; anything larger than this is damage, not a manifest. */
    private static final long MAX_MANIFEST_BYTES = 256L * 1024 * 1024;
    /** HDFS limits a path component to 255 bytes by default; longer encoded names are shortened with a hash. */
    private static final int MAX_NAME_CHARS = 200;

    private static final HexFormat UPPER_HEX = HexFormat.of().withUpperCase();

    private final FileSystem fs;
    private final Path root;

    /**
     * Opens (and creates if missing) the store at {@code root}, e.g. {@code file:///var/ps-data} or
     * {@code hdfs://namenode:8020/ps}. The {@link FileSystem} comes from Hadoop's cache and is not closed by the
     * store.
     */
    public CheckpointStore(URI root, Configuration conf) throws IOException {
        Objects.requireNonNull(root, "root");
        Objects.requireNonNull(conf, "conf");
        this.fs = FileSystem.get(root, conf);
        this.root = fs.makeQualified(new Path(root));
        if (!fs.mkdirs(this.root)) {
            throw new IOException("cannot create checkpoint root " + this.root);
        }
    }

    public URI root() {
        return root.toUri();
    }

    public FileSystem fileSystem() {
        return fs;
    }

    /** {@code <root>/ckpt-<id zero-padded to 12 digits>}. */
    public Path checkpointDir(long id) {
        if (id < 1) {
            throw new IllegalArgumentException("checkpoint id=" + id + " must be >= 1");
        }
        return new Path(root, String.format("%s%012d", DIR_PREFIX, id));
    }

    /**
     * One more than the highest id of any {@code ckpt-*} directory, complete or not, so an id is never reused; 1 when
     * there is none. Not a reservation: the caller (one coordinator) must not hand out the same id twice.
     */
    public long nextId() throws IOException {
        long highest = 0;
        for (FileStatus status : fs.listStatus(root)) {
            long id = checkpointId(status);
            highest = Math.max(highest, id);
        }
        return highest + 1;
    }

    /**
     * Commits a checkpoint whose data files have been written, closed and listed in {@code manifest}: checks that
     * every file exists with its listed length, then writes and renames the manifest into place.
     *
     * @throws FileAlreadyExistsException if the checkpoint already has a manifest, which is left untouched.
     * @throws IOException if a listed file is missing or has the wrong length, or the rename fails; the temporary
     *     manifest is deleted.
     */
    public void commit(Manifest manifest) throws IOException {
        Path dir = checkpointDir(manifest.id());
        for (Manifest.FileEntry entry : manifest.files()) {
            Path file = new Path(dir, entry.file().path());
            FileStatus status;
            try {
                status = fs.getFileStatus(file);
            } catch (FileNotFoundException e) {
                throw new IOException(
                        "cannot commit checkpoint " + manifest.id() + ": listed file " + file + " does not exist", e);
            }
            if (!status.isFile() || status.getLen() != entry.file().length()) {
                throw new IOException("cannot commit checkpoint " + manifest.id() + ": listed file " + file + " has "
                        + (status.isFile() ? status.getLen() + " bytes" : "is a directory") + ", manifest says "
                        + entry.file().length() + " bytes");
            }
        }
        Path target = new Path(dir, MANIFEST);
        if (fs.exists(target)) {
            throw new FileAlreadyExistsException(
                    "cannot commit checkpoint " + manifest.id() + ": " + target + " already exists");
        }
        byte[] bytes = manifest.encode();
        Path tmp = new Path(dir, TMP_PREFIX + UUID.randomUUID());
        boolean renamed = false;
        try {
            try (FSDataOutputStream out = fs.create(tmp, false)) {
                out.write(bytes);
                out.hsync();
            }
            // Checked again right before the rename: the write above can take a while on a busy cluster.
            if (fs.exists(target)) {
                throw new FileAlreadyExistsException(
                        "cannot commit checkpoint " + manifest.id() + ": " + target + " appeared during the commit");
            }
            renamed = fs.rename(tmp, target);
            if (!renamed) {
                throw new IOException("cannot commit checkpoint " + manifest.id() + ": rename " + tmp + " -> " + target
                        + " returned false" + (fs.exists(target) ? " (" + target + " exists)" : ""));
            }
        } finally {
            if (!renamed) {
                deleteQuietly(tmp);
            }
        }
        FileStatus committed = fs.getFileStatus(target);
        if (!committed.isFile() || committed.getLen() != bytes.length) {
            throw new IOException("commit of checkpoint " + manifest.id() + " left " + target + " as "
                    + (committed.isFile() ? "a " + committed.getLen() + "-byte file" : "a directory")
                    + ", expected a " + bytes.length + "-byte file");
        }
        LOG.info(
                "Committed checkpoint {} ({} files, {} rows, {} bytes) at {}",
                manifest.id(),
                manifest.files().size(),
                manifest.totalRows(),
                manifest.totalBytes(),
                dir);
    }

    /**
     * The complete checkpoints, newest (highest id) first. Directories without a manifest are not checkpoints and are
     * left out silently; a manifest that does not decode is left out with a WARN log naming it. Files are not
     * verified.
     */
    public List<CheckpointInfo> list() throws IOException {
        List<Long> ids = new ArrayList<>();
        for (FileStatus status : fs.listStatus(root)) {
            long id = checkpointId(status);
            if (id > 0) {
                ids.add(id);
            }
        }
        ids.sort(Comparator.reverseOrder());
        List<CheckpointInfo> checkpoints = new ArrayList<>(ids.size());
        for (long id : ids) {
            try {
                readCheckpoint(id).ifPresent(checkpoints::add);
            } catch (CheckpointCorruptException e) {
                LOG.warn("Skipping checkpoint {}: unreadable manifest: {}", id, e.getMessage());
            }
        }
        return checkpoints;
    }

    /**
     * The newest checkpoint whose manifest decodes and whose files {@linkplain #verify verify}. A damaged checkpoint
     * is skipped with a WARN log naming it and the problem, for the previous one. Reads every byte of each checkpoint
     * it verifies.
     *
     * @throws IOException if the filesystem fails in a way that is not damage (then no older checkpoint is chosen).
     */
    public Optional<CheckpointInfo> latest() throws IOException {
        for (CheckpointInfo checkpoint : list()) {
            try {
                verify(checkpoint);
                return Optional.of(checkpoint);
            } catch (UncheckedIOException e) {
                throw e.getCause();
            } catch (CheckpointCorruptException e) {
                LOG.warn(
                        "Skipping damaged checkpoint {} at {}, falling back to the previous one: {}",
                        checkpoint.id(),
                        checkpoint.dir(),
                        e.getMessage());
            }
        }
        return Optional.empty();
    }

    /**
     * The checkpoint with this id, or empty if its directory has no manifest. Files are not verified.
     *
     * @throws CheckpointCorruptException if the manifest does not decode.
     */
    public Optional<CheckpointInfo> get(long id) throws IOException {
        return readCheckpoint(id);
    }

    /**
     * Checks every file of the checkpoint: it exists, has the listed length, and the CRC32C of its whole content
     * matches the manifest. Streams each file once through a 1 MiB buffer.
     *
     * @throws CheckpointCorruptException naming the first bad file and the expected versus actual value.
     * @throws UncheckedIOException if the filesystem fails in a way that is not damage (unreachable, permission), so
     *     that a caller never mistakes an outage for a damaged checkpoint.
     */
    public void verify(CheckpointInfo checkpoint) throws CheckpointCorruptException {
        byte[] buffer = new byte[VERIFY_BUFFER_BYTES];
        for (Manifest.FileEntry entry : checkpoint.manifest().files()) {
            try {
                verifyFile(checkpoint, entry.file(), buffer);
            } catch (CheckpointCorruptException e) {
                throw e;
            } catch (IOException e) {
                throw new UncheckedIOException(
                        "checkpoint " + checkpoint.id() + ": cannot read " + checkpoint.resolve(entry.file()), e);
            }
        }
    }

    private void verifyFile(CheckpointInfo checkpoint, RowFileInfo expected, byte[] buffer) throws IOException {
        Path file = checkpoint.resolve(expected);
        String name = "checkpoint " + checkpoint.id() + ": file " + file;
        long length;
        try {
            length = fs.getFileStatus(file).getLen();
        } catch (FileNotFoundException e) {
            throw new CheckpointCorruptException(name + " is missing", e);
        }
        if (length != expected.length()) {
            throw new CheckpointCorruptException(
                    name + ": length expected " + expected.length() + " bytes, actual " + length);
        }
        CRC32C crc = new CRC32C();
        long read = 0;
        try (InputStream in = fs.open(file, VERIFY_BUFFER_BYTES)) {
            for (int n; (n = in.read(buffer)) > 0; ) {
                crc.update(buffer, 0, n);
                read += n;
            }
        } catch (ChecksumException e) {
            // The filesystem's own block checksums failed (HDFS, or the .crc files of file://).
            throw new CheckpointCorruptException(name + ": filesystem checksum error: " + e.getMessage(), e);
        } catch (BlockMissingException e) {
            // No DataNode holds a live replica of a block: the file cannot be read back whole, which is damage
            // (fall back to an older checkpoint), not an outage to wait out.
            throw new CheckpointCorruptException(name + ": a block has no live replica: " + e.getMessage(), e);
        }
        if (read != expected.length()) {
            throw new CheckpointCorruptException(
                    name + ": length expected " + expected.length() + " bytes, read " + read);
        }
        int actual = (int) crc.getValue();
        if (actual != expected.crc32c()) {
            throw new CheckpointCorruptException(
                    String.format("%s: crc32c expected %08x, actual %08x", name, expected.crc32c(), actual));
        }
    }

    /**
     * A path, relative to the checkpoint directory, for one shard's file of one table:
     * {@code shard-<shardId>/<table>.<checkpointId, 12 digits>.rows}. Shard id and table name are escaped so that
     * any string gives one safe path component: letters, digits and {@code -} stay, every other UTF-8 byte becomes
     * {@code _XX}; a very long name is cut and suffixed with a hash of the full name to fit HDFS's 255-byte limit.
     */
    public static String fileName(String shardId, String table, long checkpointId) {
        if (shardId.isEmpty() || table.isEmpty()) {
            throw new IllegalArgumentException("shardId '" + shardId + "' and table '" + table + "' must be non-empty");
        }
        return "shard-" + escapeName(shardId) + "/" + escapeName(table) + String.format(".%012d.rows", checkpointId);
    }

    static String escapeName(String name) {
        byte[] utf8 = name.getBytes(StandardCharsets.UTF_8);
        StringBuilder out = new StringBuilder(utf8.length + 16);
        for (byte value : utf8) {
            int b = value & 0xff;
            if ((b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9') || b == '-') {
                out.append((char) b);
            } else {
                out.append('_').append(UPPER_HEX.toHexDigits((byte) b));
            }
        }
        if (out.length() <= MAX_NAME_CHARS) {
            return out.toString();
        }
        try {
            byte[] digest = MessageDigest.getInstance("SHA-256").digest(utf8);
            return out.substring(0, MAX_NAME_CHARS - 34) + "--" + HexFormat.of().formatHex(digest, 0, 16);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 is required on every JVM", e);
        }
    }

    private Optional<CheckpointInfo> readCheckpoint(long id) throws IOException {
        Path dir = checkpointDir(id);
        Path manifestPath = new Path(dir, MANIFEST);
        FileStatus status;
        try {
            status = fs.getFileStatus(manifestPath);
        } catch (FileNotFoundException e) {
            return Optional.empty();
        }
        if (!status.isFile() || status.getLen() > MAX_MANIFEST_BYTES) {
            throw new CheckpointCorruptException(manifestPath + ": "
                    + (status.isFile() ? status.getLen() + " bytes is too large for a manifest" : "is a directory"));
        }
        byte[] bytes;
        try (InputStream in = fs.open(manifestPath)) {
            bytes = in.readNBytes((int) status.getLen() + 1);
        } catch (ChecksumException e) {
            throw new CheckpointCorruptException(manifestPath + ": filesystem checksum error: " + e.getMessage(), e);
        }
        if (bytes.length != status.getLen()) {
            throw new CheckpointCorruptException(
                    manifestPath + ": read " + bytes.length + " bytes, status says " + status.getLen());
        }
        Manifest manifest = Manifest.decode(bytes, manifestPath.toString());
        if (manifest.id() != id) {
            throw new CheckpointCorruptException(
                    manifestPath + ": manifest id " + manifest.id() + " in directory of " + "checkpoint " + id);
        }
        return Optional.of(new CheckpointInfo(id, dir, manifest));
    }

    /** The id in a {@code ckpt-<id>} directory's name, or 0 if this is not such a directory. */
    private static long checkpointId(FileStatus status) {
        if (!status.isDirectory()) {
            return 0;
        }
        Matcher matcher = DIR_NAME.matcher(status.getPath().getName());
        return matcher.matches() ? Long.parseLong(matcher.group(1)) : 0;
    }

    private void deleteQuietly(Path tmp) {
        try {
            fs.delete(tmp, false);
        } catch (IOException e) {
            LOG.warn("Could not delete temporary manifest {}: {}", tmp, e.toString());
        }
    }
}
