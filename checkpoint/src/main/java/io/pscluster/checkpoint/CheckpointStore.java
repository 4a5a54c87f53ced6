package io.pscluster.checkpoint;

import java.io.Closeable;
import java.io.FileNotFoundException;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.Deque;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.Set;
import java.util.TreeSet;
import java.util.UUID;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.ChecksumException;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FileAlreadyExistsException;
import org.apache.hadoop.fs.FileChecksum;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
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
 * directories too, and the id marks a deletion leaves, below), so a committed file is never replaced.
 *
 * <p>Id marks: deleting the checkpoint with the highest id would free its id for the next checkpoint, and rollback
 * reports, restore orders and the proxy's records name checkpoints by id. So before the highest id's directory goes,
 * an empty-ish file {@code <root>/_ID-<id, 12 digits>} is created (without overwrite) and {@code hsync}ed; the id is
 * in the name, so a mark that exists at all counts, even one whose write was cut short. A crash after the mark and
 * before the deletion leaves a checkpoint that still exists and a mark that changes nothing; lower marks are deleted
 * after a higher one is durable (a leftover one costs a file, nothing else).
 *
 * <p>Commit = write the manifest to a unique temporary name, {@code hsync}, close, rename to {@code _MANIFEST}. HDFS
 * renames atomically but returns {@code false} (no exception) when the target file exists and moves the source
 * <i>into</i> the target when it is a directory, so {@link #commit} checks for the target first, checks the boolean
 * and checks afterwards that {@code _MANIFEST} is a file. On {@code file://} a rename replaces an existing target, so
 * there the check-then-rename relies on one committer per checkpoint id (the coordinator that picked the id). Fault
 * points {@link PausePoints#BEFORE_MANIFEST}, {@link PausePoints#BEFORE_RENAME} and {@link PausePoints#AFTER_RENAME}
 * stop a commit at each of its steps.
 *
 * <p>Verification ({@link #check}) uses HDFS's {@code COMPOSITE_CRC} file checksums, which equal the CRC32C the
 * writer recorded, so a checkpoint on HDFS is verified without reading it back; other filesystems read it back.
 * Retention ({@link #retain}) and {@link #delete} remove a checkpoint by deleting its manifest first (it stops
 * existing at once) and its directory after, and never remove a checkpoint that a kept delta depends on unless told
 * to; a directory without a manifest whose id is below the newest committed checkpoint's is an orphan of a failed
 * checkpoint (ids only grow, so one in progress always has a higher id) and is removed with the old checkpoints.
 *
 * <p>Thread-safe: the store's only mutable state is the lazily opened checksum client, guarded by its monitor.
 */
public final class CheckpointStore implements Closeable {
    private static final Logger LOG = LoggerFactory.getLogger(CheckpointStore.class);

    /** The name that commits a checkpoint. */
    public static final String MANIFEST = "_MANIFEST";

    /** The file that says a cluster used this root (see {@link #hasClusterMark}). */
    public static final String CLUSTER_MARK = "_CLUSTER";

    /** How the name of a running proxy's claim on this root begins (see {@link #createProxyClaim}). */
    public static final String PROXY_CLAIM_PREFIX = "_PROXY-";

    /**
     * A file in a checkpoint's directory saying that a restore found its bytes damaged (its text says why): retention
     * keeps the checkpoint without counting it, as for damage its caller passes ({@link #retain(RetentionPolicy, long,
     * Set, Set)}), after a restart too. Restores never trust it: they verify for themselves.
     */
    public static final String DAMAGE_MARK = "_DAMAGED";

    private static final int MAX_CLAIM_BYTES = 4096;
    /** A claim's text while it is written, before it is renamed to its name. */
    private static final String PROXY_CLAIM_ASIDE_PREFIX = "_PROXY.tmp-";
    /**
     * A claim's text left aside longer than this was abandoned (its proxy died between writing and renaming it, which
     * takes milliseconds): retention removes it. Long, as the filesystem's clock, not the caller's, dates the file.
     */
    private static final long ABANDONED_CLAIM_MILLIS = java.util.concurrent.TimeUnit.HOURS.toMillis(1);

    private static final String DIR_PREFIX = "ckpt-";
    private static final Pattern DIR_NAME = Pattern.compile("ckpt-(\\d{1,18})");
    private static final String TMP_PREFIX = MANIFEST + ".tmp-";
    private static final String ID_MARK_PREFIX = "_ID-";
    private static final Pattern ID_MARK_NAME = Pattern.compile("_ID-(\\d{12})");
    private static final int VERIFY_BUFFER_BYTES = 1024 * 1024;
    /** Manifests are a few KiB; anything larger than this is damage, not a manifest. */
    private static final long MAX_MANIFEST_BYTES = 256L * 1024 * 1024;
    /** HDFS limits a path component to 255 bytes by default; longer encoded names are shortened with a hash. */
    private static final int MAX_NAME_CHARS = 200;

    private static final HexFormat UPPER_HEX = HexFormat.of().withUpperCase();

    /** The HDFS client setting that makes {@code getFileChecksum} a CRC32C of the content, whatever the blocks. */
    static final String CHECKSUM_COMBINE_MODE = "dfs.checksum.combine.mode";

    private final FileSystem fs;
    private final Path root;
    private final Configuration conf;
    private FileSystem compositeChecksumFs;

    /**
     * Opens (and creates if missing) the store at {@code root}, e.g. {@code file:///var/ps-data} or
     * {@code hdfs://namenode:8020/ps}. The {@link FileSystem} comes from Hadoop's cache and is not closed by the
     * store.
     */
    public CheckpointStore(URI root, Configuration conf) throws IOException {
        this(root, conf, true);
    }

    /**
     * Opens the store at an existing {@code root}, creating nothing: for tools that only read or delete checkpoints,
     * where a mistyped root must be an error, not a new empty directory that holds no checkpoints.
     *
     * @throws FileNotFoundException naming the root if it does not exist or is not a directory.
     */
    public static CheckpointStore openExisting(URI root, Configuration conf) throws IOException {
        return new CheckpointStore(root, conf, false);
    }

    private CheckpointStore(URI root, Configuration conf, boolean create) throws IOException {
        Objects.requireNonNull(root, "root");
        Objects.requireNonNull(conf, "conf");
        this.conf = new Configuration(conf);
        this.conf.set(CHECKSUM_COMBINE_MODE, "COMPOSITE_CRC");
        this.fs = FileSystem.get(root, this.conf);
        this.root = fs.makeQualified(new Path(root));
        if (create) {
            if (!fs.mkdirs(this.root)) {
                throw new IOException("cannot create checkpoint root " + this.root);
            }
        } else {
            FileStatus status;
            try {
                status = fs.getFileStatus(this.root);
            } catch (FileNotFoundException e) {
                throw new FileNotFoundException("checkpoint root " + this.root + " does not exist");
            }
            if (!status.isDirectory()) {
                throw new FileNotFoundException("checkpoint root " + this.root + " is not a directory");
            }
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
     * One more than the highest id of any {@code ckpt-*} directory, complete or not, and of any id mark a deletion
     * left, so an id is never reused, even after the newest checkpoint is deleted; 1 when there is none. Not a
     * reservation: the caller (one coordinator) must not hand out the same id twice.
     */
    public long nextId() throws IOException {
        long highest = 0;
        for (FileStatus status : fs.listStatus(root)) {
            highest = Math.max(highest, Math.max(checkpointId(status), idMark(status)));
        }
        return highest + 1;
    }

    /**
     * The ids of the {@code ckpt-*} directories above {@code id}, complete or not, highest first: one listing of the
     * root, no manifest read.
     */
    public List<Long> idsAbove(long id) throws IOException {
        List<Long> ids = new ArrayList<>();
        for (FileStatus status : fs.listStatus(root)) {
            long dirId = checkpointId(status);
            if (dirId > id) {
                ids.add(dirId);
            }
        }
        ids.sort(Comparator.reverseOrder());
        return ids;
    }

    /**
     * Keeps {@code id} from being handed out again once its directory is gone: unless another directory or an id mark
     * already holds an id as high, creates the mark {@code _ID-<id>} and {@code hsync}s it, then deletes lower marks.
     * Called before anything of the checkpoint is deleted.
     */
    private void markIdUsed(long id) throws IOException {
        List<Path> marks = new ArrayList<>();
        long highestElse = 0;
        for (FileStatus status : fs.listStatus(root)) {
            long dirId = checkpointId(status);
            long markId = idMark(status);
            if (markId > 0) {
                marks.add(status.getPath());
            }
            highestElse = Math.max(highestElse, Math.max(markId, dirId == id ? 0 : dirId));
        }
        if (highestElse >= id) {
            return;
        }
        Path mark = new Path(root, String.format("%s%012d", ID_MARK_PREFIX, id));
        // False: a concurrent delete of the same checkpoint created it.
        if (!createMark(mark, "checkpoint " + id + " was deleted; checkpoint ids stay above it\n")) {
            return;
        }
        for (Path lower : marks) {
            deleteQuietly(lower);
        }
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
        PausePoints.reach(PausePoints.BEFORE_MANIFEST, "checkpoint " + manifest.id() + " in " + dir);
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
            final FSDataOutputStream out = RowFileWriter.createDurable(fs, tmp, RowFileWriter.Options.defaults());
            try {
                out.write(bytes);
                out.hsync();
            } catch (IOException | RuntimeException | Error e) {
                Closing.closeAfter(e, out);
                throw e;
            }
            out.close();
            // On file://, the names of the files, of their directories and of the checkpoint's directory reach the
            // disk before the manifest's can: a power cut after the rename never leaves a manifest naming lost files.
            java.util.Set<Path> dirs = new java.util.TreeSet<>();
            dirs.add(dir);
            for (Manifest.FileEntry entry : manifest.files()) {
                // Every directory between the file and the checkpoint's, each once.
                Path parent = new Path(dir, entry.file().path()).getParent();
                while (parent != null && dirs.add(parent)) {
                    parent = parent.getParent();
                }
            }
            dirs.add(dir.getParent());
            for (Path named : dirs) {
                FsErrorStreams.syncLocalDirectory(fs, named);
            }
            // Checked again right before the rename: the write above can take a while on a busy cluster.
            if (fs.exists(target)) {
                throw new FileAlreadyExistsException(
                        "cannot commit checkpoint " + manifest.id() + ": " + target + " appeared during the commit");
            }
            PausePoints.reach(PausePoints.BEFORE_RENAME, "checkpoint " + manifest.id() + ": " + tmp);
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
        FsErrorStreams.syncLocalDirectory(fs, dir);
        FileStatus committed = fs.getFileStatus(target);
        if (!committed.isFile() || committed.getLen() != bytes.length) {
            throw new IOException("commit of checkpoint " + manifest.id() + " left " + target + " as "
                    + (committed.isFile() ? "a " + committed.getLen() + "-byte file" : "a directory")
                    + ", expected a " + bytes.length + "-byte file");
        }
        PausePoints.reach(PausePoints.AFTER_RENAME, "checkpoint " + manifest.id() + ": " + target);
        LOG.info(
                "Committed checkpoint {} ({} files, {} rows, {} bytes) at {}",
                manifest.id(),
                manifest.files().size(),
                manifest.totalRows(),
                manifest.totalBytes(),
                dir);
    }

    /**
     * Whether {@link #markCluster} ran under this root: a cluster's proxy created a table here once. A proxy that
     * starts without its state record and finds the mark (and no checkpoint) knows it lost its state rather than
     * starting a new cluster, so live shards may hold rows it has not heard of yet.
     */
    public boolean hasClusterMark() throws IOException {
        return fs.exists(new Path(root, CLUSTER_MARK));
    }

    /**
     * Marks the root as a cluster's (see {@link #hasClusterMark}): a small text file, created without overwrite and
     * {@code hsync}ed, so that it is durable before the change it announces is acknowledged. Idempotent. Retention,
     * listing and verification ignore it (it is not a {@code ckpt-} directory).
     */
    public void markCluster(String text) throws IOException {
        Path mark = new Path(root, CLUSTER_MARK);
        if (fs.exists(mark)) {
            return;
        }
        createMark(mark, text);
    }

    /**
     * Creates the small text file {@code mark} without overwrite and {@code hsync}s it; false if another caller
     * created it meanwhile (HDFS says AlreadyBeingCreated while that one still writes it).
     */
    private boolean createMark(Path mark, String text) throws IOException {
        final FSDataOutputStream out;
        try {
            out = RowFileWriter.createDurable(fs, mark, RowFileWriter.Options.defaults());
        } catch (IOException e) {
            if (fs.exists(mark)) {
                return false;
            }
            throw e;
        }
        try {
            out.write(text.getBytes(StandardCharsets.UTF_8));
            out.hsync();
        } catch (IOException | RuntimeException | Error e) {
            Closing.closeAfter(e, out);
            throw e;
        }
        out.close();
        return true;
    }

    /**
     * The names of the files under this root that start with {@link #PROXY_CLAIM_PREFIX}: running proxies' claims on
     * it (their format is the proxy's). Directories are left out.
     */
    public List<String> proxyClaimNames() throws IOException {
        List<String> names = new ArrayList<>();
        for (FileStatus status : fs.listStatus(root)) {
            String name = status.getPath().getName();
            if (status.isFile() && name.startsWith(PROXY_CLAIM_PREFIX)) {
                names.add(name);
            }
        }
        return names;
    }

    /** The text of claim {@code name} (at most 4 KiB of it); empty if it is gone. */
    public String readProxyClaim(String name) throws IOException {
        try (InputStream in = fs.open(proxyClaim(name))) {
            return new String(in.readNBytes(MAX_CLAIM_BYTES), StandardCharsets.UTF_8);
        } catch (FileNotFoundException gone) {
            return "";
        }
    }

    /**
     * Creates claim {@code name} holding {@code text}, never replacing one: a proxy renews its claim by creating the
     * next name and deleting the previous, so that a reader always finds one whole. Listing, retention and
     * verification ignore claims (they are not {@code ckpt-} directories).
     */
    public void createProxyClaim(String name, String text) throws IOException {
        Path claim = proxyClaim(name);
        // Written aside and renamed, so that the name never shows without its text.
        Path aside = new Path(root, PROXY_CLAIM_ASIDE_PREFIX + UUID.randomUUID());
        boolean renamed = false;
        try {
            // Synced before the rename: after a power cut the claim's name never shows without its text.
            try (FSDataOutputStream out = RowFileWriter.createDurable(fs, aside, RowFileWriter.Options.defaults())) {
                out.write(text.getBytes(StandardCharsets.UTF_8));
                out.hsync();
            }
            renamed = fs.rename(aside, claim);
            if (!renamed) {
                throw new IOException("cannot rename " + aside + " to " + claim + " (is it there already?)");
            }
        } finally {
            if (!renamed) {
                fs.delete(aside, false);
            }
        }
    }

    /** Deletes claim {@code name}, if it is there. */
    public void deleteProxyClaim(String name) throws IOException {
        fs.delete(proxyClaim(name), false);
    }

    private Path proxyClaim(String name) {
        if (!name.startsWith(PROXY_CLAIM_PREFIX) || name.contains("/")) {
            throw new IllegalArgumentException("not a proxy claim's name: '" + name + "'");
        }
        return new Path(root, name);
    }

    /**
     * The complete checkpoints, newest (highest id) first. Directories without a manifest are not checkpoints and are
     * left out silently; a manifest that does not decode is left out with a WARN log naming it. Files are not
     * verified.
     */
    public List<CheckpointInfo> list() throws IOException {
        return scan().committed();
    }

    /**
     * The newest checkpoint whose manifest decodes and whose files {@linkplain #verify verify}. A damaged checkpoint
     * is skipped with a WARN log naming it and the problem, for the previous one. Reads every byte of each checkpoint
     * it verifies.
     *
     * @throws IOException if the filesystem fails in a way that is not damage (then no older checkpoint is chosen).
     */
    public Optional<CheckpointInfo> latest() throws IOException {
        return latest(null);
    }

    /**
     * As {@link #latest()}, counting what it verifies into {@code progress} (null: none); each checkpoint it tries
     * adds its files to the totals.
     */
    public Optional<CheckpointInfo> latest(Progress progress) throws IOException {
        return latest(progress, new java.util.TreeMap<>());
    }

    /**
     * As {@link #latest(Progress)}, putting into {@code passedOver} every checkpoint newer than the one chosen (all of
     * them when none is) that it passed over, by id, with why: a manifest that does not decode, or damage found by
     * verification.
     */
    public Optional<CheckpointInfo> latest(Progress progress, Map<Long, String> passedOver) throws IOException {
        return latest(progress, passedOver, new HashMap<>());
    }

    /** As {@link #latest(Progress, Map)}, also putting into {@code damage} what verification threw, by id. */
    public Optional<CheckpointInfo> latest(
            Progress progress, Map<Long, String> passedOver, Map<Long, CheckpointCorruptException> damage)
            throws IOException {
        Scan scan = scan();
        Optional<CheckpointInfo> chosen = Optional.empty();
        for (CheckpointInfo checkpoint : scan.committed()) {
            try {
                verify(checkpoint, progress);
                chosen = Optional.of(checkpoint);
                break;
            } catch (UncheckedIOException e) {
                throw e.getCause();
            } catch (CheckpointCorruptException e) {
                LOG.warn(
                        "Skipping damaged checkpoint {} at {}, falling back to the previous one: {}",
                        checkpoint.id(),
                        checkpoint.dir(),
                        e.getMessage());
                passedOver.put(checkpoint.id(), "damaged: " + e.getMessage());
                damage.put(checkpoint.id(), e);
            }
        }
        long chosenId = chosen.map(CheckpointInfo::id).orElse(0L);
        scan.unreadable().forEach((id, why) -> {
            if (id > chosenId) {
                passedOver.put(id, "manifest unreadable: " + why);
            }
        });
        return chosen;
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
     * Checks every file of the checkpoint to {@link VerifyReport.Depth#CHECKSUM}: it exists with the listed length, no
     * block is lost, and its CRC32C matches the manifest (from HDFS's file checksum, or read back elsewhere).
     *
     * @throws CheckpointCorruptException naming the first bad file and the expected versus actual value.
     * @throws UncheckedIOException if the filesystem fails in a way that is not damage (unreachable, permission), so
     *     that a caller never mistakes an outage for a damaged checkpoint.
     */
    public void verify(CheckpointInfo checkpoint) throws CheckpointCorruptException {
        verify(checkpoint, null);
    }

    /**
     * As {@link #verify(CheckpointInfo)}, counting into {@code progress} (null: none) every file of the chain (rows and
     * bytes as the manifests list them) once it is checked.
     */
    public void verify(CheckpointInfo checkpoint, Progress progress) throws CheckpointCorruptException {
        List<CheckpointInfo> chain;
        try {
            chain = chain(checkpoint);
        } catch (CheckpointCorruptException e) {
            throw e;
        } catch (IOException e) {
            throw new UncheckedIOException("checkpoint " + checkpoint.id() + ": cannot read its chain", e);
        }
        if (progress != null) {
            for (CheckpointInfo link : chain) {
                progress.addTotals(link.manifest().totalRows(), link.manifest().totalBytes());
            }
        }
        for (CheckpointInfo link : chain) {
            VerifyReport report;
            try {
                report = check(link, VerifyReport.Depth.CHECKSUM, progress);
            } catch (IOException e) {
                throw new UncheckedIOException("checkpoint " + link.id() + ": cannot check its files", e);
            }
            if (!report.intact()) {
                throw new CheckpointCorruptException(
                        (link.id() == checkpoint.id()
                                        ? "checkpoint " + link.id()
                                        : "checkpoint " + checkpoint.id() + " (a delta) needs checkpoint " + link.id())
                                + ": " + report.problems().get(0)
                                + (report.problems().size() > 1
                                        ? " (and " + (report.problems().size() - 1) + " more)"
                                        : ""),
                        null,
                        link.id(),
                        report.missingBlocksOnly());
            }
        }
    }

    /**
     * What restores {@code checkpoint}, oldest first: itself for a base; for a delta its base, every delta between,
     * then itself. Files are not verified.
     *
     * @throws CheckpointCorruptException if a checkpoint of the chain has no manifest or does not lead to the base.
     */
    public List<CheckpointInfo> chain(CheckpointInfo checkpoint) throws IOException {
        java.util.ArrayDeque<CheckpointInfo> chain = new java.util.ArrayDeque<>();
        CheckpointInfo link = checkpoint;
        chain.addFirst(link);
        while (link.manifest().kind() == Manifest.Kind.DELTA) {
            long parentId = link.manifest().parentId();
            long baseId = link.manifest().baseId();
            CheckpointInfo child = link;
            link = get(parentId)
                    .orElseThrow(() -> new CheckpointCorruptException("checkpoint " + checkpoint.id()
                            + " (a delta) needs checkpoint " + parentId + ", which has no manifest under " + root));
            if (link.manifest().kind() == Manifest.Kind.BASE
                    ? link.id() != baseId
                    : link.manifest().baseId() != baseId) {
                throw new CheckpointCorruptException("checkpoint " + child.id() + " names base " + baseId
                        + " but its parent " + parentId + " leads to another");
            }
            chain.addFirst(link);
        }
        return new ArrayList<>(chain);
    }

    /**
     * Checks every file of the checkpoint to {@code depth} and reports each damaged one (see {@link VerifyReport}).
     *
     * @throws IOException if the filesystem fails in a way that is not damage (unreachable, permission).
     */
    public VerifyReport check(CheckpointInfo checkpoint, VerifyReport.Depth depth) throws IOException {
        return check(checkpoint, depth, null);
    }

    /**
     * As {@link #check(CheckpointInfo, VerifyReport.Depth)}, adding to {@code progress} (null: none) each file's rows
     * and bytes once it is checked, and the bytes of a file read back as they are read. Totals are the caller's to
     * add.
     */
    public VerifyReport check(CheckpointInfo checkpoint, VerifyReport.Depth depth, Progress progress)
            throws IOException {
        return new CheckpointVerifier(fs, this::checksumOf, progress).check(checkpoint, depth);
    }

    /**
     * The filesystem's checksum of a file. HDFS computes it in the mode its client was created with; the cached
     * client may come from someone else's configuration (without {@code COMPOSITE_CRC}), and then a client of our
     * own, in that mode, is opened once and kept until {@link #close()}.
     */
    private FileChecksum checksumOf(Path file) throws IOException {
        FileChecksum checksum = fs.getFileChecksum(file);
        if (checksum == null || !checksum.getAlgorithmName().startsWith("MD5-of-")) {
            return checksum;
        }
        return compositeChecksumFs().getFileChecksum(file);
    }

    private synchronized FileSystem compositeChecksumFs() throws IOException {
        if (compositeChecksumFs == null) {
            compositeChecksumFs = FileSystem.newInstance(root.toUri(), conf);
        }
        return compositeChecksumFs;
    }

    /** Closes the checksum client the store may have opened; the shared {@link #fileSystem()} stays open. */
    @Override
    public synchronized void close() throws IOException {
        if (compositeChecksumFs != null) {
            compositeChecksumFs.close();
            compositeChecksumFs = null;
        }
    }

    /**
     * Deletes checkpoint {@code id}: its manifest first (from then on it does not exist), then its directory. A
     * directory without a manifest (a failed checkpoint) is deleted too.
     *
     * @param force delete even if kept checkpoints depend on it (deltas on it), which makes them unrestorable.
     * @return the committed checkpoints that depended on it, now broken (empty unless {@code force}).
     * @throws java.util.NoSuchElementException if there is no directory for {@code id}.
     * @throws IllegalStateException if other checkpoints depend on it and {@code force} is false; nothing is deleted.
     */
    public List<Long> delete(long id, boolean force) throws IOException {
        Path dir = checkpointDir(id);
        if (!fs.exists(dir)) {
            throw new java.util.NoSuchElementException("no checkpoint " + id + " under " + root);
        }
        Scan scan = scan();
        List<Long> dependents = new ArrayList<>();
        for (CheckpointInfo other : scan.committed()) {
            if (other.id() != id && scan.closure(other.id()).contains(id)) {
                dependents.add(other.id());
            }
        }
        if (!dependents.isEmpty() && !force) {
            throw new IllegalStateException("checkpoint " + id + " is needed by checkpoint(s) " + dependents
                    + " (deltas on it); deleting it would leave them unrestorable. Delete them first, or force it");
        }
        remove(id);
        return dependents;
    }

    /**
     * Applies {@code policy} (see {@link RetentionPolicy}) at time {@code nowMillis}, then removes orphaned
     * directories: those without a manifest whose id is below the newest committed checkpoint's; and a proxy claim's
     * text left aside for over an hour (its proxy died before it renamed it).
     */
    public RetentionPolicy.Outcome retain(RetentionPolicy policy, long nowMillis) throws IOException {
        return retain(policy, nowMillis, Set.of());
    }

    /**
     * As {@link #retain(RetentionPolicy, long)}, also keeping the {@code pinned} checkpoints (and what they depend on):
     * those a coordinator may still order restored.
     */
    public RetentionPolicy.Outcome retain(RetentionPolicy policy, long nowMillis, Set<Long> pinned) throws IOException {
        return retain(policy, nowMillis, pinned, Set.of());
    }

    /**
     * As {@link #retain(RetentionPolicy, long, Set)}, with the checkpoints the caller found {@code damaged} (their
     * bytes failed verification): they, and checkpoints whose chain holds one, do not count toward
     * {@link RetentionPolicy#keepLast}, so that damaged checkpoints never push the intact ones they stand in front of
     * out of the count; and the newest chain kept whatever the limits is one with none of them. They are kept
     * themselves (logged), for the operator to look at and delete. Checkpoints marked damaged ({@link #markDamaged}) count
     * as found damaged.
     */
    public RetentionPolicy.Outcome retain(RetentionPolicy policy, long nowMillis, Set<Long> pinned, Set<Long> damaged)
            throws IOException {
        Scan scan = scan();
        List<CheckpointInfo> committed = scan.committed();
        Set<Long> found = new TreeSet<>(Comparator.reverseOrder());
        found.addAll(damaged);
        found.addAll(damageMarks(scan).keySet());
        Set<Long> keep = new TreeSet<>(Comparator.reverseOrder());
        Set<Long> damagedChains = new TreeSet<>(Comparator.reverseOrder());
        int counted = 0;
        for (CheckpointInfo checkpoint : committed) {
            if (found.contains(checkpoint.id())
                    || !java.util.Collections.disjoint(scan.closure(checkpoint.id()), found)) {
                damagedChains.add(checkpoint.id());
                keep.add(checkpoint.id());
                continue;
            }
            boolean inCount = policy.keepLast() == 0 || counted < policy.keepLast();
            counted++;
            boolean young = policy.maxAge().isZero()
                    || checkpoint.manifest().createdMillis()
                            >= nowMillis - policy.maxAge().toMillis();
            if (inCount && young) {
                keep.add(checkpoint.id());
            }
        }
        for (CheckpointInfo checkpoint : committed) {
            if (pinned.contains(checkpoint.id())) {
                keep.add(checkpoint.id());
            }
        }
        if (!committed.isEmpty()) {
            // Limits never leave nothing to restore: the newest stays, and so does the newest whose chain (itself, and
            // for a delta its base and parents) has every file there and was not found damaged.
            keep.add(committed.get(0).id());
            Map<Long, Boolean> present = new HashMap<>();
            for (CheckpointInfo checkpoint : committed) {
                if (!damagedChains.contains(checkpoint.id()) && chainPresent(checkpoint, scan, present)) {
                    keep.add(checkpoint.id());
                    break;
                }
            }
        }
        if (!damagedChains.isEmpty()) {
            LOG.warn(
                    "Retention keeps checkpoints {} without counting them: their bytes, or those of a checkpoint of"
                            + " their chain, were found damaged ({}); delete them with `psctl checkpoint delete` once"
                            + " looked at",
                    damagedChains,
                    found);
        }
        for (Long id : List.copyOf(keep)) {
            keep.addAll(scan.closure(id));
        }
        List<Long> deleted = new ArrayList<>();
        for (CheckpointInfo checkpoint : committed) {
            if (!keep.contains(checkpoint.id())) {
                remove(checkpoint.id());
                deleted.add(checkpoint.id());
            }
        }
        List<Path> orphans = new ArrayList<>();
        for (FileStatus aside : scan.claimsAside()) {
            if (aside.getModificationTime() < nowMillis - ABANDONED_CLAIM_MILLIS && fs.delete(aside.getPath(), false)) {
                orphans.add(aside.getPath());
            }
        }
        long newest = committed.isEmpty() ? 0 : committed.get(0).id();
        for (long id : scan.withoutManifest()) {
            if (id < newest) {
                Path dir = checkpointDir(id);
                if (fs.delete(dir, true)) {
                    orphans.add(dir);
                }
            }
        }
        if (!deleted.isEmpty() || !orphans.isEmpty()) {
            LOG.info(
                    "Retention ({} newest, max age {}) deleted checkpoints {} and orphaned directories {}; kept {}",
                    policy.keepLast() == 0 ? "all" : policy.keepLast(),
                    policy.maxAge().isZero() ? "none" : policy.maxAge(),
                    deleted,
                    orphans,
                    keep);
        }
        return new RetentionPolicy.Outcome(List.copyOf(keep), deleted, orphans);
    }

    /**
     * Whether {@code checkpoint} and every checkpoint it needs are committed with every file there (each checked once,
     * the results kept in {@code present}).
     */
    private boolean chainPresent(CheckpointInfo checkpoint, Scan scan, Map<Long, Boolean> present) throws IOException {
        Map<Long, CheckpointInfo> byId = new HashMap<>();
        scan.committed().forEach(info -> byId.put(info.id(), info));
        Set<Long> chain = new LinkedHashSet<>(scan.closure(checkpoint.id()));
        chain.add(checkpoint.id());
        for (long id : chain) {
            CheckpointInfo link = byId.get(id);
            if (link == null) {
                return false;
            }
            Boolean intact = present.get(id);
            if (intact == null) {
                intact = check(link, VerifyReport.Depth.PRESENCE).intact();
                present.put(id, intact);
            }
            if (!intact) {
                return false;
            }
        }
        return true;
    }

    /**
     * Marks checkpoint {@code id} as found damaged ({@link #DAMAGE_MARK}), replacing an earlier mark; nothing when its
     * directory is gone (deleted meanwhile).
     *
     * @throws IOException when the mark cannot be written.
     */
    public void markDamaged(long id, String why) throws IOException {
        Path mark = new Path(checkpointDir(id), DAMAGE_MARK);
        byte[] text = why.getBytes(StandardCharsets.UTF_8);
        FsErrorStreams.checkLocalRoom(fs, mark);
        if (!fs.exists(mark.getParent())) {
            // Deleted meanwhile. (The raw local filesystem would create it: its createNonRecursive makes parents.)
            return;
        }
        // An earlier mark goes first through fs (on file:// with its .crc, which would no longer match), the new one
        // is synced to the disk.
        fs.delete(mark, false);
        FileSystem syncing = RowFileWriter.syncing(fs);
        try (FSDataOutputStream out = FsErrorStreams.ioExceptions(syncing.createNonRecursive(
                mark, false, 4096, fs.getDefaultReplication(mark), fs.getDefaultBlockSize(mark), null))) {
            out.write(text, 0, Math.min(text.length, MAX_CLAIM_BYTES));
            out.hsync();
        } catch (FileNotFoundException gone) {
            return;
        } catch (FileAlreadyExistsException marked) {
            // Another restore marked it meanwhile: it stays marked.
        }
        LOG.warn("Marked checkpoint {} damaged ({}): {}", id, mark, why);
    }

    /**
     * Marks the checkpoint that {@code damage} (found restoring checkpoint {@code restoring}) is about as damaged: the
     * one whose own file or manifest is bad when the exception names it (for a delta whose parent is bad, the parent),
     * else {@code restoring}. Nothing when all that is wrong is blocks no replica could serve
     * ({@link CheckpointCorruptException#missingBlocksOnly}): a DataNode that comes back brings them back.
     */
    public void markDamaged(long restoring, CheckpointCorruptException damage) throws IOException {
        if (damage.missingBlocksOnly()) {
            LOG.info(
                    "Not marking checkpoint {} damaged: only blocks no replica could serve ({})",
                    restoring,
                    damage.getMessage());
            return;
        }
        markDamaged(damage.checkpointIdOr(restoring), damage.getMessage());
    }

    /** Whether {@code checkpoint} is marked damaged ({@link #markDamaged}). */
    public boolean isMarkedDamaged(CheckpointInfo checkpoint) throws IOException {
        return fs.exists(new Path(checkpoint.dir(), DAMAGE_MARK));
    }

    /**
     * Removes the damage marks ({@link #markDamaged}) of {@code checkpoint}'s chain (itself, and for a delta the
     * checkpoints it needs): for a restore to call once the chain verified intact.
     */
    public void clearDamageMarks(CheckpointInfo checkpoint) throws IOException {
        for (CheckpointInfo link : chain(checkpoint)) {
            Path mark = new Path(link.dir(), DAMAGE_MARK);
            if (fs.delete(mark, false)) {
                LOG.info("Checkpoint {} verified intact: removed its damage mark {}", link.id(), mark);
            }
        }
    }

    /**
     * The committed checkpoints marked damaged ({@link #markDamaged}), newest first, with what the mark says (a mark
     * that cannot be read says so; it still marks).
     */
    public Map<Long, String> damageMarks() throws IOException {
        return damageMarks(scan());
    }

    private Map<Long, String> damageMarks(Scan scan) throws IOException {
        Map<Long, String> marks = new java.util.TreeMap<>(Comparator.reverseOrder());
        for (CheckpointInfo checkpoint : scan.committed()) {
            Path mark = new Path(checkpoint.dir(), DAMAGE_MARK);
            String why;
            try (InputStream in = fs.open(mark)) {
                why = new String(in.readNBytes(MAX_CLAIM_BYTES), StandardCharsets.UTF_8);
            } catch (FileNotFoundException none) {
                continue;
            } catch (IOException unreadable) {
                why = "(the mark does not read: " + unreadable.getMessage() + ")";
            }
            marks.put(checkpoint.id(), why);
        }
        return marks;
    }

    /** Manifest first, so that the checkpoint stops existing before any of its files goes. */
    private void remove(long id) throws IOException {
        markIdUsed(id);
        Path dir = checkpointDir(id);
        Path manifest = new Path(dir, MANIFEST);
        if (fs.exists(manifest) && !fs.delete(manifest, false)) {
            throw new IOException("cannot delete " + manifest);
        }
        if (!fs.delete(dir, true) && fs.exists(dir)) {
            throw new IOException("deleted the manifest of checkpoint " + id + " but not its directory " + dir
                    + "; it is an orphan now, removed by the next retention");
        }
        LOG.info("Deleted checkpoint {} at {}", id, dir);
    }

    /** The checkpoint directories under the root, sorted out. */
    private Scan scan() throws IOException {
        List<Long> ids = new ArrayList<>();
        List<FileStatus> claimsAside = new ArrayList<>();
        for (FileStatus status : fs.listStatus(root)) {
            long id = checkpointId(status);
            if (id > 0) {
                ids.add(id);
            } else if (status.isFile() && status.getPath().getName().startsWith(PROXY_CLAIM_ASIDE_PREFIX)) {
                claimsAside.add(status);
            }
        }
        ids.sort(Comparator.reverseOrder());
        List<CheckpointInfo> committed = new ArrayList<>(ids.size());
        List<Long> withoutManifest = new ArrayList<>();
        Map<Long, String> unreadable = new java.util.TreeMap<>(Comparator.reverseOrder());
        for (long id : ids) {
            try {
                Optional<CheckpointInfo> checkpoint = readCheckpoint(id);
                if (checkpoint.isPresent()) {
                    committed.add(checkpoint.get());
                } else {
                    withoutManifest.add(id);
                }
            } catch (CheckpointCorruptException e) {
                LOG.warn("Skipping checkpoint {}: unreadable manifest: {}", id, e.getMessage());
                unreadable.put(id, e.getMessage());
            }
        }
        return new Scan(committed, withoutManifest, unreadable, claimsAside);
    }

    /**
     * Checkpoint directories whose manifest exists but does not decode (damage: {@link #list()} leaves them out), by
     * id, newest first, with what is wrong.
     */
    public Map<Long, String> damagedManifests() throws IOException {
        return scan().unreadable();
    }

    /**
     * @param committed checkpoints with a decodable manifest, newest first.
     * @param withoutManifest ids of directories without a manifest, newest first.
     * @param unreadable ids of directories whose manifest does not decode, with the reason.
     * @param claimsAside proxy claims' texts not (yet) renamed to their names.
     */
    private record Scan(
            List<CheckpointInfo> committed,
            List<Long> withoutManifest,
            Map<Long, String> unreadable,
            List<FileStatus> claimsAside) {
        /** The checkpoints {@code id} needs to restore, transitively (not itself). */
        Set<Long> closure(long id) {
            Map<Long, Manifest> byId = new HashMap<>();
            committed.forEach(checkpoint -> byId.put(checkpoint.id(), checkpoint.manifest()));
            Set<Long> needed = new LinkedHashSet<>();
            Deque<Long> pending = new ArrayDeque<>();
            pending.push(id);
            while (!pending.isEmpty()) {
                Manifest manifest = byId.get(pending.pop());
                if (manifest == null) {
                    continue;
                }
                for (long dependency : manifest.dependsOn()) {
                    if (needed.add(dependency)) {
                        pending.push(dependency);
                    }
                }
            }
            return needed;
        }
    }

    /**
     * A path, relative to the checkpoint directory, for one shard's file of one table:
     * {@code shard-<shardId>/<table>.<checkpointId, 12 digits>.rows}. Shard id and table name are escaped so that
     * any string gives one safe path component: letters, digits and {@code -} stay, every other UTF-8 byte becomes
     * {@code _XX}; a very long name is cut and suffixed with a hash of the full name to fit HDFS's 255-byte limit.
     */
    public static String fileName(String shardId, String table, long checkpointId) {
        return fileName(shardId, table, checkpointId, 0);
    }

    /**
     * As {@link #fileName(String, String, long)}, for part {@code part} of a shard's rows of the table: part 0 has that
     * name, part {@code n > 0} ends {@code .<checkpointId>-<n, 5 digits>.rows}.
     */
    /**
     * A path for part {@code part} of the keys a delta removed from one shard's rows of the table: as
     * {@link #fileName(String, String, long, int)}, ending {@code .removed} instead of {@code .rows}.
     */
    public static String removedKeysFileName(String shardId, String table, long checkpointId, int part) {
        String rows = fileName(shardId, table, checkpointId, part);
        return rows.substring(0, rows.length() - ".rows".length()) + ".removed";
    }

    public static String fileName(String shardId, String table, long checkpointId, int part) {
        if (shardId.isEmpty() || table.isEmpty()) {
            throw new IllegalArgumentException("shardId '" + shardId + "' and table '" + table + "' must be non-empty");
        }
        if (part < 0) {
            throw new IllegalArgumentException("part=" + part + " must be >= 0");
        }
        String base = "shard-" + escapeName(shardId) + "/" + escapeName(table) + String.format(".%012d", checkpointId);
        return part == 0 ? base + ".rows" : base + String.format("-%05d.rows", part);
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

    /** The id in an {@code _ID-<id>} mark's name, or 0 if this is not such a file. */
    private static long idMark(FileStatus status) {
        if (!status.isFile()) {
            return 0;
        }
        Matcher matcher = ID_MARK_NAME.matcher(status.getPath().getName());
        return matcher.matches() ? Long.parseLong(matcher.group(1)) : 0;
    }

    private void deleteQuietly(Path file) {
        try {
            fs.delete(file, false);
        } catch (IOException e) {
            LOG.warn("Could not delete {}: {}", file, e.toString());
        }
    }
}
