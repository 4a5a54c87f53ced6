package io.pscluster.checkpoint;

import java.io.IOException;
import java.io.InterruptedIOException;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.EnumSet;
import java.util.Objects;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CancellationException;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.Executor;
import java.util.concurrent.TimeUnit;
import java.util.zip.CRC32C;
import org.apache.hadoop.fs.ChecksumFileSystem;
import org.apache.hadoop.fs.CreateFlag;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FileAlreadyExistsException;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Options.ChecksumOpt;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.permission.FsPermission;
import org.apache.hadoop.util.DataChecksum;

/**
 * Writes the rows of one table of one shard into a new row file (layout in {@link RowFileFormat}).
 *
 * <p>Usage: {@code beginSlot(s)} then {@code writeRow} for each row of slot {@code s}, for each slot in ascending
 * order, then {@link #finish()}, which writes the last chunk and the slot index, {@code hsync}s, closes and returns
 * the {@link RowFileInfo} to list in the manifest. Rows go into one reused chunk buffer (about 1 MiB); a full chunk is
 * shuffled, compressed ({@link Options#codec}) and written, so memory stays at a few chunk buffers whatever the
 * number of rows. The CRC32C of the file is computed over the bytes as stored, the same value as HDFS's
 * {@code COMPOSITE_CRC} file checksum, so a checkpoint on HDFS verifies without reading it back.
 *
 * <p>Durability: the file is created with {@link CreateFlag#SYNC_BLOCK}, so HDFS DataNodes force every block to disk
 * as it is completed, not only the last one that {@code hsync} reaches, and with CRC32C block checksums whatever the
 * cluster's default. {@code overwrite} is never set: checkpoint paths are never reused, so an existing file means a
 * bug or a second writer and is reported, never replaced. A file closed without {@code finish()} is incomplete; it is
 * harmless because only a manifest makes a file part of a checkpoint. Fault point {@link PausePoints#MID_ROW_FILE}
 * stops the writer after its first chunk.
 *
 * <p>Not thread-safe: one thread fills a writer. With an output executor ({@link #create(FileSystem, Path, String, int,
 * Options, Executor)}) the stream is written there, a chunk at a time and in order, while the filling thread goes on.
 */
public final class RowFileWriter implements AutoCloseable {
    /** Chunks being written on the output side at once, besides the one being filled. */
    static final int CHUNKS_IN_FLIGHT = 2;

    private static final VarHandle LONG_LE =
            MethodHandles.byteArrayViewVarHandle(long[].class, ByteOrder.LITTLE_ENDIAN);
    private static final VarHandle INT_LE = MethodHandles.byteArrayViewVarHandle(int[].class, ByteOrder.LITTLE_ENDIAN);

    private final FSDataOutputStream out;
    private final Path file;
    private final String relativePath;
    private final int rowWidth;
    private final int rowBytes;
    private final ChunkCodec codec;
    private final ChunkCodec.Compressor compressor;

    /** The chunk being filled: its rows in {@code filling.raw[0 .. rawLength)}. */
    private Chunk filling;
    /** Bytes of rows in the chunk being filled. */
    private int rawLength;

    private final byte[] shuffled;
    private final CRC32C chunkCrc = new CRC32C();
    /** Chunks free to be filled: the stored forms of the others are being written. */
    private final BlockingQueue<Chunk> free;
    /** Where chunks are written to the stream, one after the other; see {@link #submit}. */
    private final Executor output;
    /** The last chunk handed to {@link #output}: each write runs after the one before it. */
    private CompletableFuture<Void> tail = CompletableFuture.completedFuture(null);
    /** The first failure of a chunk's write; the chunks after it are not written. */
    private volatile Throwable outputFailure;

    // Written on the output side only; read by the filling thread after it waited for the last write (tail).
    private final CRC32C fileCrc = new CRC32C();
    private long bytesWritten;
    /** The file offset of each chunk, by its number. */
    private long[] chunkOffsets = new long[64];

    // The filling thread's.
    private long uncompressedBytes;
    private int chunkCount;
    private int rowsInChunk;
    private long totalRows;
    private int currentSlot = -1;
    private long currentSlotRows;
    /** The number of the chunk that holds the first row of the current slot (its offset is known once written). */
    private int slotChunk;

    private int slotRowInChunk;

    private int slotEntries;
    private int[] entrySlots = new int[16];
    private int[] entryChunks = new int[16];
    private int[] entryRowInChunk = new int[16];
    private long[] entryRows = new long[16];

    private boolean finished;
    private boolean closed;

    private RowFileWriter(
            FSDataOutputStream out, Path file, String relativePath, int rowWidth, Options options, Executor output) {
        this.out = out;
        this.file = file;
        this.relativePath = relativePath;
        this.rowWidth = rowWidth;
        this.rowBytes = (int) RowFileFormat.rowBytes(rowWidth);
        this.codec = options.codec();
        this.output = output == null ? Runnable::run : output;
        int chunkBytes = RowFileFormat.rowsPerChunk(rowWidth, options.chunkBytes()) * rowBytes;
        this.shuffled = codec == ChunkCodec.NONE ? null : new byte[chunkBytes];
        int chunks = output == null ? 1 : CHUNKS_IN_FLIGHT + 1;
        this.free = new ArrayBlockingQueue<>(chunks);
        for (int i = 0; i < chunks; i++) {
            free.add(new Chunk(chunkBytes, codec));
        }
        this.filling = free.remove();
        this.compressor = codec.newCompressor();
    }

    /**
     * A chunk's buffers: its rows as given, and what is stored (the chunk header, then the compressed rows; plain
     * chunks are written from the rows themselves, their stored buffer holds only the header).
     */
    private static final class Chunk {
        final byte[] raw;
        final byte[] stored;
        final ByteBuffer storedView;
        int rawLength;
        int storedLength;
        int number;

        Chunk(int chunkBytes, ChunkCodec codec) {
            raw = new byte[chunkBytes];
            stored = new byte
                    [RowFileFormat.CHUNK_HEADER_BYTES
                            + (codec == ChunkCodec.NONE ? 0 : Math.max(chunkBytes, codec.maxStoredBytes(chunkBytes)))];
            storedView = ByteBuffer.wrap(stored).order(ByteOrder.LITTLE_ENDIAN);
        }
    }

    /**
     * Creates {@code checkpointDir/relativePath} (and its parents) with the default {@link Options} (zstd, the
     * filesystem's replication and block size) and writes the header.
     *
     * @param rowWidth floats per row, values plus optimizer slots; at least 1.
     * @throws FileAlreadyExistsException if the file exists; the message names it.
     */
    public static RowFileWriter create(FileSystem fs, Path checkpointDir, String relativePath, int rowWidth)
            throws IOException {
        return create(fs, checkpointDir, relativePath, rowWidth, Options.defaults());
    }

    /**
     * Creates {@code checkpointDir/relativePath} (and its parents) with {@code options} and writes the header.
     *
     * @param rowWidth floats per row, values plus optimizer slots; at least 1.
     * @throws FileAlreadyExistsException if the file exists; the message names it.
     */
    public static RowFileWriter create(
            FileSystem fs, Path checkpointDir, String relativePath, int rowWidth, Options options) throws IOException {
        return create(fs, checkpointDir, relativePath, rowWidth, options, null);
    }

    /**
     * As {@link #create(FileSystem, Path, String, int, Options)}, the chunks written to the stream on {@code output}
     * (null: on the calling thread), up to {@value #CHUNKS_IN_FLIGHT} at a time, while the caller fills and
     * compresses the next: the filesystem's own work (its checksums, the copies into its buffers, the system calls)
     * overlaps the caller's. A chunk's write that fails comes back from the next {@code writeRow}, {@code finish} or
     * {@code close}.
     */
    public static RowFileWriter create(
            FileSystem fs, Path checkpointDir, String relativePath, int rowWidth, Options options, Executor output)
            throws IOException {
        Objects.requireNonNull(fs, "fs");
        Objects.requireNonNull(checkpointDir, "checkpointDir");
        Objects.requireNonNull(options, "options");
        RowFileInfo.checkRelativePath(relativePath);
        if (rowWidth < 0 || rowWidth > RowFileFormat.MAX_ROW_WIDTH) {
            throw new IllegalArgumentException(
                    "rowWidth=" + rowWidth + " must be in [0, " + RowFileFormat.MAX_ROW_WIDTH + "] (0: keys only)");
        }
        Path file = new Path(checkpointDir, relativePath);
        FSDataOutputStream out;
        try {
            out = createDurable(fs, file, options);
        } catch (FileAlreadyExistsException e) {
            throw new FileAlreadyExistsException("row file " + file + " already exists; checkpoint paths are never"
                    + " reused (" + e.getMessage() + ")");
        }
        RowFileWriter writer;
        try {
            writer = new RowFileWriter(out, file, relativePath, rowWidth, options, output);
            writer.writeHeader();
        } catch (IOException | RuntimeException e) {
            out.close();
            throw e;
        }
        return writer;
    }

    /**
     * {@code create} without overwrite, with {@code SYNC_BLOCK}, CRC32C block checksums and the options' replication
     * and block size. Filesystems other than HDFS ignore what they do not have (flags, checksum type) but keep the
     * refusal to overwrite. The stream throws {@code IOException} where the local filesystem throws {@code FSError}
     * ({@link FsErrorStreams}).
     */
    public static FSDataOutputStream createDurable(FileSystem fs, Path file, Options options) throws IOException {
        short replication = options.replication() > 0 ? options.replication() : fs.getDefaultReplication(file);
        long blockSize = options.blockSize() > 0 ? options.blockSize() : fs.getDefaultBlockSize(file);
        FsPermission permission = FsPermission.getFileDefault().applyUMask(FsPermission.getUMask(fs.getConf()));
        int bufferSize = fs.getConf().getInt("io.file.buffer.size", 4096);
        FsErrorStreams.checkLocalRoom(fs, file);
        return FsErrorStreams.ioExceptions(syncing(fs)
                .create(
                        file,
                        permission,
                        EnumSet.of(CreateFlag.CREATE, CreateFlag.SYNC_BLOCK),
                        bufferSize,
                        replication,
                        blockSize,
                        null,
                        new ChecksumOpt(DataChecksum.Type.CRC32C, -1)));
    }

    /**
     * The filesystem to create a file through whose {@code hsync} must reach the disk: {@code fs} itself, but for the
     * local filesystem's checksummed one (file://), whose stream cannot sync (its hsync only flushes to the operating
     * system: it is no Syncable) and leaves its file open when its last flush fails. Its raw filesystem's stream syncs
     * and closes on failure; our files carry their own CRC32C, so a .crc file adds nothing.
     */
    public static FileSystem syncing(FileSystem fs) {
        return fs instanceof ChecksumFileSystem checksummed ? checksummed.getRawFileSystem() : fs;
    }

    /** The absolute path of the file being written. */
    public Path file() {
        return file;
    }

    public int rowWidth() {
        return rowWidth;
    }

    public ChunkCodec codec() {
        return codec;
    }

    /**
     * Starts a slot: the rows written next belong to it. A slot that gets no rows is left out of the index.
     *
     * @throws IllegalStateException if {@code slot} is not greater than the previous slot, naming both.
     */
    public void beginSlot(int slot) {
        checkOpen();
        if (slot < 0) {
            throw new IllegalArgumentException("slot=" + slot + " must be >= 0 (" + file + ")");
        }
        if (slot <= currentSlot) {
            throw new IllegalStateException("slot " + slot + " after slot " + currentSlot
                    + ": slots must be given in strictly increasing order (" + file + ")");
        }
        endSlot();
        currentSlot = slot;
    }

    /** Writes one row: {@code key}, then {@code rowWidth} floats from {@code source[offset..]}, bit-exact. */
    public void writeRow(long key, float[] source, int offset) throws IOException {
        Objects.checkFromIndexSize(offset, rowWidth, source.length);
        int at = startRow();
        byte[] raw = filling.raw;
        LONG_LE.set(raw, at, key);
        at += 8;
        // The raw bits: NaN payloads and -0.0 survive.
        for (int i = offset, end = offset + rowWidth; i < end; i++, at += 4) {
            INT_LE.set(raw, at, Float.floatToRawIntBits(source[i]));
        }
    }

    /**
     * Writes one row as a row file stores it: the {@code 8 + 4 * rowWidth} bytes at {@code source[offset..]}, the key
     * then the floats' raw bits, little-endian (as {@link RowFileReader#readRuns} hands rows out). Copied as they are.
     */
    public void writeStoredRow(byte[] source, int offset) throws IOException {
        Objects.checkFromIndexSize(offset, rowBytes, source.length);
        int at = startRow();
        System.arraycopy(source, offset, filling.raw, at, rowBytes);
    }

    /** Makes room for one more row of the current slot in the chunk, counts it, and returns where it goes. */
    private int startRow() throws IOException {
        checkOpen();
        if (currentSlot < 0) {
            throw new IllegalStateException("writeRow before beginSlot (" + file + ")");
        }
        if (filling.raw.length - rawLength < rowBytes) {
            flushChunk();
        }
        if (currentSlotRows == 0) {
            slotChunk = chunkCount;
            slotRowInChunk = rowsInChunk;
        }
        int at = rawLength;
        rawLength += rowBytes;
        rowsInChunk++;
        currentSlotRows++;
        totalRows++;
        return at;
    }

    /**
     * Writes the last chunk, the slot index and trailer, {@code hsync}s and closes the file.
     *
     * @return what the manifest must record about the file.
     */
    public RowFileInfo finish() throws IOException {
        checkOpen();
        endSlot();
        flushChunk();
        awaitOutput();
        long footerStart = bytesWritten;
        ByteBuffer footer = ByteBuffer.allocate(
                        slotEntries * RowFileFormat.SLOT_ENTRY_BYTES + RowFileFormat.TRAILER_BYTES)
                .order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < slotEntries; i++) {
            footer.putInt(entrySlots[i])
                    .putLong(chunkOffsets[entryChunks[i]])
                    .putInt(entryRowInChunk[i])
                    .putLong(entryRows[i]);
        }
        footer.putInt(slotEntries).putLong(footerStart).putInt(chunkCount).put(RowFileFormat.MAGIC);
        write(footer.array(), 0, footer.position());
        out.hsync();
        finished = true;
        closed = true;
        try {
            out.close();
        } finally {
            closeCompressor();
        }
        return new RowFileInfo(
                relativePath,
                bytesWritten,
                (int) fileCrc.getValue(),
                totalRows,
                Arrays.copyOf(entrySlots, slotEntries),
                codec,
                uncompressedBytes);
    }

    /** No-op after {@link #finish()}; otherwise closes the stream, leaving an incomplete file. */
    @Override
    public void close() throws IOException {
        if (!closed) {
            closed = true;
            try {
                // The stream is the output side's until its last write is done.
                try {
                    awaitOutput();
                } catch (IOException abandoned) {
                    // Closing without finish leaves an incomplete file anyway; the stream is closed below.
                }
                out.close();
            } finally {
                closeCompressor();
            }
        }
    }

    /**
     * Waits until every chunk handed over is written, then throws the first write's failure, if any. Afterwards the
     * output side's fields are this thread's (the wait orders its writes before this thread's reads).
     */
    private void awaitOutput() throws IOException {
        try {
            tail.join();
        } catch (CompletionException | CancellationException e) {
            // Only a refused execution ends here: the writes themselves catch what they throw.
            throw new IOException("writing " + file + " failed: " + e.getCause(), e.getCause());
        }
        throwOutputFailure();
    }

    private void throwOutputFailure() throws IOException {
        Throwable failure = outputFailure;
        if (failure instanceof IOException io) {
            throw io;
        }
        if (failure instanceof RuntimeException runtime) {
            throw runtime;
        }
        if (failure instanceof Error error) {
            throw error;
        }
        if (failure != null) {
            throw new IOException(failure);
        }
    }

    private void writeHeader() throws IOException {
        ByteBuffer header = ByteBuffer.allocate(RowFileFormat.HEADER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        header.put(RowFileFormat.MAGIC)
                .putInt(RowFileFormat.VERSION)
                .putInt(rowWidth)
                .putInt(codec.id());
        write(header.array(), 0, header.position());
    }

    private void endSlot() {
        if (currentSlotRows == 0) {
            return;
        }
        if (slotEntries == entrySlots.length) {
            int capacity = slotEntries * 2;
            entrySlots = Arrays.copyOf(entrySlots, capacity);
            entryChunks = Arrays.copyOf(entryChunks, capacity);
            entryRowInChunk = Arrays.copyOf(entryRowInChunk, capacity);
            entryRows = Arrays.copyOf(entryRows, capacity);
        }
        entrySlots[slotEntries] = currentSlot;
        entryChunks[slotEntries] = slotChunk;
        entryRowInChunk[slotEntries] = slotRowInChunk;
        entryRows[slotEntries] = currentSlotRows;
        slotEntries++;
        currentSlotRows = 0;
    }

    /**
     * Stores the rows buffered so far as one chunk: shuffled and compressed here, or raw if that is not smaller, then
     * handed to the output side to write, and the next free chunk taken to fill (waiting while all are in flight).
     */
    private void flushChunk() throws IOException {
        if (rowsInChunk == 0) {
            return;
        }
        Chunk chunk = filling;
        byte[] raw = chunk.raw;
        chunkCrc.reset();
        chunkCrc.update(raw, 0, rawLength);
        int storedLength = rawLength;
        if (compressor != null) {
            RowFileFormat.shuffle(raw, shuffled, rawLength);
            int capacity = chunk.stored.length - RowFileFormat.CHUNK_HEADER_BYTES;
            int compressed =
                    compressor.compress(shuffled, rawLength, chunk.stored, RowFileFormat.CHUNK_HEADER_BYTES, capacity);
            if (compressed < rawLength) {
                storedLength = compressed;
            }
        }
        chunk.storedView.putInt(0, storedLength).putInt(4, rawLength).putInt(8, (int) chunkCrc.getValue());
        chunk.rawLength = rawLength;
        chunk.storedLength = storedLength;
        chunk.number = chunkCount;
        submit(chunk);
        uncompressedBytes += rawLength;
        chunkCount++;
        rowsInChunk = 0;
        rawLength = 0;
        filling = takeFree();
        throwOutputFailure();
    }

    /** The next chunk to fill, once one is written; fails if the output side cannot run (its executor refused). */
    private Chunk takeFree() throws IOException {
        try {
            while (true) {
                Chunk chunk = free.poll(100, TimeUnit.MILLISECONDS);
                if (chunk != null) {
                    return chunk;
                }
                if (tail.isCompletedExceptionally()) {
                    awaitOutput();
                }
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new InterruptedIOException("interrupted while writing " + file);
        }
    }

    /**
     * Hands {@code chunk} to the output side, to be written after the chunks before it (each write is queued once the
     * previous one is done, so {@link #output} may have any number of threads), and given back to {@link #free}
     * written or not. After a failure the chunks behind it are only given back.
     */
    private void submit(Chunk chunk) {
        tail = tail.thenRunAsync(
                () -> {
                    try {
                        if (outputFailure == null) {
                            writeChunk(chunk);
                        }
                    } catch (Throwable failure) {
                        outputFailure = failure;
                    } finally {
                        free.add(chunk);
                    }
                },
                output);
    }

    /** The output side: writes one chunk's stored form and notes where it starts. */
    private void writeChunk(Chunk chunk) throws IOException {
        if (chunk.number == chunkOffsets.length) {
            chunkOffsets = Arrays.copyOf(chunkOffsets, 2 * chunkOffsets.length);
        }
        chunkOffsets[chunk.number] = bytesWritten;
        if (chunk.storedLength == chunk.rawLength) {
            write(chunk.stored, 0, RowFileFormat.CHUNK_HEADER_BYTES);
            write(chunk.raw, 0, chunk.rawLength);
        } else {
            write(chunk.stored, 0, RowFileFormat.CHUNK_HEADER_BYTES + chunk.storedLength);
        }
        if (chunk.number == 0 && PausePoints.armed(PausePoints.MID_ROW_FILE)) {
            // A test stops the process here to kill it: the partial file should be on the DataNodes, not in a buffer.
            out.hflush();
            PausePoints.reach(PausePoints.MID_ROW_FILE, file.toString());
        }
    }

    private void write(byte[] bytes, int offset, int length) throws IOException {
        out.write(bytes, offset, length);
        fileCrc.update(bytes, offset, length);
        bytesWritten += length;
    }

    private void closeCompressor() {
        if (compressor != null) {
            compressor.close();
        }
    }

    private void checkOpen() {
        if (closed) {
            throw new IllegalStateException((finished ? "already finished: " : "closed without finish: ") + file);
        }
    }

    /**
     * How a row file is written: codec, replication, block size, chunk size. Immutable; validated when built, with
     * messages naming the field and the value.
     *
     * @param codec how chunks are stored.
     * @param replication replicas of the file's blocks; 0 takes the filesystem's default ({@code dfs.replication}).
     * @param blockSize bytes per block; 0 takes the filesystem's default ({@code dfs.blocksize}); else a multiple of
     *     512 (HDFS checks it against {@code dfs.namenode.fs-limits.min-block-size}).
     * @param chunkBytes raw bytes per chunk the writer aims at; a chunk always holds at least one row.
     */
    public record Options(ChunkCodec codec, short replication, long blockSize, int chunkBytes) {
        public Options {
            Objects.requireNonNull(codec, "codec");
            if (replication < 0) {
                throw new IllegalArgumentException("replication=" + replication + " must be >= 0 (0: default)");
            }
            if (blockSize < 0 || blockSize % 512 != 0) {
                throw new IllegalArgumentException(
                        "blockSize=" + blockSize + " must be 0 (default) or a positive multiple of 512");
            }
            if (chunkBytes < 1 || chunkBytes > RowFileFormat.MAX_CHUNK_BYTES) {
                throw new IllegalArgumentException(
                        "chunkBytes=" + chunkBytes + " must be in [1, " + RowFileFormat.MAX_CHUNK_BYTES + "]");
            }
        }

        /** zstd, the filesystem's replication and block size, 1 MiB chunks. */
        public static Options defaults() {
            return new Options(ChunkCodec.ZSTD, (short) 0, 0, RowFileFormat.DEFAULT_CHUNK_BYTES);
        }

        public Options withCodec(ChunkCodec value) {
            return new Options(value, replication, blockSize, chunkBytes);
        }

        public Options withReplication(short value) {
            return new Options(codec, value, blockSize, chunkBytes);
        }

        public Options withBlockSize(long value) {
            return new Options(codec, replication, value, chunkBytes);
        }

        public Options withChunkBytes(int value) {
            return new Options(codec, replication, blockSize, value);
        }
    }
}
