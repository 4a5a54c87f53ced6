package io.pscluster.proxy;

import com.google.protobuf.InvalidProtocolBufferException;
import io.pscluster.proto.v1.ProxyStateRecord;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.OverlappingFileLockException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.Optional;
import java.util.UUID;
import java.util.zip.CRC32C;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The proxy state in one local file, {@code <dir>/proxy-state.bin}.
 *
 * <p>Format: a 16-byte header (magic {@code PSPX}, format version, payload length, CRC32C of the payload; big-endian
 * ints) followed by the serialized {@link ProxyStateRecord}. A file whose header, length or checksum does not match
 * fails {@link #load} with an {@link IOException} naming the file: the proxy must not start empty over a damaged
 * state, since it would then tell shards to drop what they hold.
 *
 * <p>Save: write a temporary file in the same directory, {@code fsync} it, rename it atomically over the old file,
 * then {@code fsync} the directory so that the rename itself survives a power loss. A crash at any point leaves the
 * old file or the new one, never a torn one (leftover temporary files are deleted by the next load). Saves are
 * serialized by the caller ({@link ClusterState} holds its monitor); this class adds a monitor for safety.
 */
public final class LocalFileStateStore implements ProxyStateStore {
    private static final Logger LOG = LoggerFactory.getLogger(LocalFileStateStore.class);

    static final String FILE_NAME = "proxy-state.bin";
    static final String LOCK_NAME = "proxy-state.lock";
    private static final String TMP_PREFIX = FILE_NAME + ".tmp-";
    private static final int MAGIC = 0x50535058; // "PSPX"
    private static final int VERSION = 1;
    private static final int HEADER_BYTES = 16;
    /** A record is a few tens of KiB; anything near this is damage. */
    private static final int MAX_PAYLOAD_BYTES = 64 << 20;

    private final Path dir;
    private final Path file;
    private final FileChannel lockChannel;
    private final FileLock lock;

    /**
     * Opens the store in {@code dir}, creating the directory if it is missing, and locks it: two proxies writing one
     * state would each undo the other's changes.
     *
     * @throws IOException naming the directory when it cannot be created or written, or another process (or another
     *     store in this JVM) holds its lock.
     */
    public LocalFileStateStore(final Path dir) throws IOException {
        this.dir = dir.toAbsolutePath();
        try {
            Files.createDirectories(this.dir);
        } catch (IOException e) {
            throw new IOException("cannot create the proxy state directory " + this.dir + ": " + e, e);
        }
        this.file = this.dir.resolve(FILE_NAME);
        final Path lockFile = this.dir.resolve(LOCK_NAME);
        try {
            lockChannel = FileChannel.open(lockFile, StandardOpenOption.CREATE, StandardOpenOption.WRITE);
        } catch (IOException e) {
            throw new IOException("cannot write in the proxy state directory " + this.dir + ": " + e, e);
        }
        FileLock taken;
        try {
            taken = lockChannel.tryLock();
        } catch (OverlappingFileLockException e) {
            taken = null;
        }
        if (taken == null) {
            lockChannel.close();
            throw new IOException("the proxy state directory " + this.dir + " is in use by another proxy (" + lockFile
                    + " is locked): stop that proxy, or give this one its own --state-dir");
        }
        lock = taken;
    }

    @Override
    public synchronized void close() throws IOException {
        if (lock.isValid()) {
            lock.release();
        }
        lockChannel.close();
    }

    /** The file the record lives in. */
    public Path file() {
        return file;
    }

    @Override
    public synchronized Optional<ProxyStateRecord> load() throws IOException {
        deleteLeftoverTemporaries();
        if (!Files.exists(file)) {
            return Optional.empty();
        }
        final byte[] bytes = Files.readAllBytes(file);
        if (bytes.length < HEADER_BYTES) {
            throw damaged(bytes.length + " bytes is shorter than the " + HEADER_BYTES + "-byte header");
        }
        final ByteBuffer header = ByteBuffer.wrap(bytes, 0, HEADER_BYTES).order(ByteOrder.BIG_ENDIAN);
        final int magic = header.getInt();
        final int version = header.getInt();
        final int length = header.getInt();
        final int crc = header.getInt();
        if (magic != MAGIC) {
            throw damaged(String.format("magic %08x, expected %08x", magic, MAGIC));
        }
        if (version != VERSION) {
            throw damaged("format version " + version + ", this proxy reads version " + VERSION);
        }
        if (length < 0 || length != bytes.length - HEADER_BYTES) {
            throw damaged("header says " + length + " payload bytes, the file holds " + (bytes.length - HEADER_BYTES));
        }
        final int actual = crc32c(bytes, HEADER_BYTES, length);
        if (actual != crc) {
            throw damaged(String.format("crc32c expected %08x, actual %08x", crc, actual));
        }
        try {
            return Optional.of(ProxyStateRecord.parseFrom(ByteBuffer.wrap(bytes, HEADER_BYTES, length)));
        } catch (InvalidProtocolBufferException e) {
            throw damaged("the record does not decode: " + e.getMessage());
        }
    }

    @Override
    public synchronized void save(final ProxyStateRecord record) throws IOException {
        final byte[] payload = record.toByteArray();
        if (payload.length > MAX_PAYLOAD_BYTES) {
            throw new IOException("proxy state record of " + payload.length + " bytes is too large for " + file);
        }
        final ByteBuffer out =
                ByteBuffer.allocate(HEADER_BYTES + payload.length).order(ByteOrder.BIG_ENDIAN);
        out.putInt(MAGIC).putInt(VERSION).putInt(payload.length).putInt(crc32c(payload, 0, payload.length));
        out.put(payload).flip();
        final Path tmp = dir.resolve(TMP_PREFIX + UUID.randomUUID());
        boolean moved = false;
        try {
            try (FileChannel channel = FileChannel.open(tmp, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
                while (out.hasRemaining()) {
                    channel.write(out);
                }
                channel.force(true);
            }
            Files.move(tmp, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            moved = true;
        } finally {
            if (!moved) {
                Files.deleteIfExists(tmp);
            }
        }
        // The rename is in the directory's entries: without this a power loss may bring back the old file.
        try (FileChannel directory = FileChannel.open(dir, StandardOpenOption.READ)) {
            directory.force(true);
        }
    }

    @Override
    public String describe() {
        return file.toString();
    }

    @Override
    public String toString() {
        return "LocalFileStateStore[" + file + "]";
    }

    private IOException damaged(final String why) {
        return new IOException("proxy state file " + file + " is damaged: " + why + ". The proxy will not start"
                + " without its state: restore the file from a backup, or move it away to rebuild the state from the"
                + " newest checkpoint and the shards' reports");
    }

    private void deleteLeftoverTemporaries() throws IOException {
        try (DirectoryStream<Path> leftovers = Files.newDirectoryStream(dir, TMP_PREFIX + "*")) {
            for (final Path leftover : leftovers) {
                LOG.info("deleting {}, left by a save that did not finish", leftover);
                Files.deleteIfExists(leftover);
            }
        }
    }

    private static int crc32c(final byte[] bytes, final int offset, final int length) {
        final CRC32C crc = new CRC32C();
        crc.update(bytes, offset, length);
        return (int) crc.getValue();
    }
}
