package io.pscluster.checkpoint;

import java.io.IOException;
import java.io.OutputStream;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FSError;
import org.apache.hadoop.fs.StreamCapabilities;
import org.apache.hadoop.fs.Syncable;

/**
 * Hadoop's local filesystem reports a write the operating system refused (a full disk: "No space left on device") as
 * {@link FSError}, an {@link Error}, where HDFS throws an {@link IOException}. Code that handles I/O failures catches
 * {@code IOException}; an {@code Error} went past it and ended the thread it met (a proxy's claim renewal and its
 * periodic checkpoints stopped for good after a few seconds of full disk). The streams checkpoints write through turn it
 * back into the {@code IOException} it wraps.
 */
final class FsErrorStreams {
    /** Less room than this on a local disk is taken for none: a file is not even begun. */
    static final long LOCAL_ROOM_BYTES = 64 * 1024;

    private FsErrorStreams() {}

    /**
     * On the local filesystem, refuses to begin {@code file} when its disk is (nearly) full. A local file whose writes
     * fail stays open (Hadoop's checksummed stream does not close its files when its last flush fails), so a refusal
     * retried on a full disk (a claim's renewal, periodic checkpoints) would hold one more descriptor, and the space of
     * a deleted file, each time.
     */
    static void checkLocalRoom(org.apache.hadoop.fs.FileSystem fs, org.apache.hadoop.fs.Path file) throws IOException {
        if (!"file".equals(fs.getUri().getScheme())) {
            return;
        }
        java.io.File existing = new java.io.File(file.toUri().getPath()).getParentFile();
        while (existing != null && !existing.exists()) {
            existing = existing.getParentFile();
        }
        if (existing != null && existing.getUsableSpace() < LOCAL_ROOM_BYTES) {
            throw new IOException("No space left on device: " + existing.getUsableSpace()
                    + " bytes free on the disk of " + existing + ", so " + file + " is not begun");
        }
    }

    /**
     * On the local filesystem, syncs directory {@code dir} to the disk, so that the names created or renamed in it
     * survive a power cut (a file's own sync does not cover its name on Linux); nothing on other filesystems, whose
     * namespace is durable once an operation returns (HDFS's NameNode logs it).
     *
     * @throws IOException when the directory cannot be opened or synced.
     */
    static void syncLocalDirectory(org.apache.hadoop.fs.FileSystem fs, org.apache.hadoop.fs.Path dir)
            throws IOException {
        if (!"file".equals(fs.getUri().getScheme())) {
            return;
        }
        java.nio.file.Path local = java.nio.file.Path.of(dir.toUri().getPath());
        try (java.nio.channels.FileChannel channel =
                java.nio.channels.FileChannel.open(local, java.nio.file.StandardOpenOption.READ)) {
            channel.force(true);
        }
    }

    /** {@code out}, its writes, flushes, syncs and close throwing {@code IOException} where they threw {@code FSError}. */
    static FSDataOutputStream ioExceptions(FSDataOutputStream out) throws IOException {
        return new FSDataOutputStream(new Translating(out), null);
    }

    private static IOException asIo(FSError e) {
        return e.getCause() instanceof IOException io ? new IOException(io.getMessage(), e) : new IOException(e);
    }

    /** An I/O call whose {@code FSError} becomes the {@code IOException} it wraps. */
    @FunctionalInterface
    private interface Io {
        void run() throws IOException;
    }

    private static void translated(Io call) throws IOException {
        try {
            call.run();
        } catch (FSError e) {
            throw asIo(e);
        }
    }

    private static final class Translating extends OutputStream implements Syncable, StreamCapabilities {
        private final FSDataOutputStream out;

        Translating(FSDataOutputStream out) {
            this.out = out;
        }

        @Override
        public void write(int b) throws IOException {
            translated(() -> out.write(b));
        }

        @Override
        public void write(byte[] bytes, int offset, int length) throws IOException {
            translated(() -> out.write(bytes, offset, length));
        }

        @Override
        public void flush() throws IOException {
            translated(out::flush);
        }

        @Override
        public void hflush() throws IOException {
            translated(out::hflush);
        }

        @Override
        public void hsync() throws IOException {
            translated(out::hsync);
        }

        @Override
        public boolean hasCapability(String capability) {
            return out.hasCapability(capability);
        }

        @Override
        public void close() throws IOException {
            translated(out::close);
        }
    }
}
