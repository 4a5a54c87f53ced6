package io.pscluster.checkpoint;

import java.io.IOException;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.EnumSet;
import java.util.Objects;
import java.util.zip.CRC32C;
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
 * <p>Not thread-safe: one writer per thread.
 */
public final class RowFileWriter implements AutoCloseable {
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

    private final byte[] raw;
    /** Bytes of rows in {@link #raw}: the chunk being filled. */
    private int rawLength;

    private final byte[] shuffled;
    private final byte[] stored;
    private final ByteBuffer storedView;
    private final CRC32C fileCrc = new CRC32C();
    private final CRC32C chunkCrc = new CRC32C();

    private long bytesWritten;
    private long uncompressedBytes;
    private int chunkCount;
    private int rowsInChunk;
    private long totalRows;
    private int currentSlot = -1;
    private long currentSlotRows;
    private long slotChunkOffset;
    private int slotRowInChunk;

    private int slotEntries;
    private int[] entrySlots = new int[16];
    private long[] entryChunkOffsets = new long[16];
    private int[] entryRowInChunk = new int[16];
    private long[] entryRows = new long[16];

    private boolean finished;
    private boolean closed;

    private RowFileWriter(FSDataOutputStream out, Path file, String relativePath, int rowWidth, Options options) {
        this.out = out;
        this.file = file;
        this.relativePath = relativePath;
        this.rowWidth = rowWidth;
        this.rowBytes = (int) RowFileFormat.rowBytes(rowWidth);
        this.codec = options.codec();
        int chunkBytes = RowFileFormat.rowsPerChunk(rowWidth, options.chunkBytes()) * rowBytes;
        this.raw = new byte[chunkBytes];
        this.shuffled = codec == ChunkCodec.NONE ? null : new byte[chunkBytes];
        // Plain chunks are written from the row buffer itself: their stored buffer holds only the chunk header.
        this.stored = new byte
                [RowFileFormat.CHUNK_HEADER_BYTES
                        + (codec == ChunkCodec.NONE ? 0 : Math.max(chunkBytes, codec.maxStoredBytes(chunkBytes)))];
        this.storedView = ByteBuffer.wrap(stored).order(ByteOrder.LITTLE_ENDIAN);
        this.compressor = codec.newCompressor();
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
            writer = new RowFileWriter(out, file, relativePath, rowWidth, options);
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
     * refusal to overwrite.
     */
    static FSDataOutputStream createDurable(FileSystem fs, Path file, Options options) throws IOException {
        short replication = options.replication() > 0 ? options.replication() : fs.getDefaultReplication(file);
        long blockSize = options.blockSize() > 0 ? options.blockSize() : fs.getDefaultBlockSize(file);
        FsPermission permission = FsPermission.getFileDefault().applyUMask(FsPermission.getUMask(fs.getConf()));
        int bufferSize = fs.getConf().getInt("io.file.buffer.size", 4096);
        return fs.create(
                file,
                permission,
                EnumSet.of(CreateFlag.CREATE, CreateFlag.SYNC_BLOCK),
                bufferSize,
                replication,
                blockSize,
                null,
                new ChecksumOpt(DataChecksum.Type.CRC32C, -1));
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
        System.arraycopy(source, offset, raw, startRow(), rowBytes);
    }

    /** Makes room for one more row of the current slot in the chunk, counts it, and returns where it goes. */
    private int startRow() throws IOException {
        checkOpen();
        if (currentSlot < 0) {
            throw new IllegalStateException("writeRow before beginSlot (" + file + ")");
        }
        if (raw.length - rawLength < rowBytes) {
            flushChunk();
        }
        if (currentSlotRows == 0) {
            slotChunkOffset = bytesWritten;
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
        long footerStart = bytesWritten;
        ByteBuffer footer = ByteBuffer.allocate(
                        slotEntries * RowFileFormat.SLOT_ENTRY_BYTES + RowFileFormat.TRAILER_BYTES)
                .order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < slotEntries; i++) {
            footer.putInt(entrySlots[i])
                    .putLong(entryChunkOffsets[i])
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
                out.close();
            } finally {
                closeCompressor();
            }
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
            entryChunkOffsets = Arrays.copyOf(entryChunkOffsets, capacity);
            entryRowInChunk = Arrays.copyOf(entryRowInChunk, capacity);
            entryRows = Arrays.copyOf(entryRows, capacity);
        }
        entrySlots[slotEntries] = currentSlot;
        entryChunkOffsets[slotEntries] = slotChunkOffset;
        entryRowInChunk[slotEntries] = slotRowInChunk;
        entryRows[slotEntries] = currentSlotRows;
        slotEntries++;
        currentSlotRows = 0;
    }

    /** Stores the rows buffered so far as one chunk: shuffled and compressed, or raw if that is not smaller. */
    private void flushChunk() throws IOException {
        if (rowsInChunk == 0) {
            return;
        }
        chunkCrc.reset();
        chunkCrc.update(raw, 0, rawLength);
        int storedLength = rawLength;
        if (compressor != null) {
            RowFileFormat.shuffle(raw, shuffled, rawLength);
            int capacity = stored.length - RowFileFormat.CHUNK_HEADER_BYTES;
            int compressed =
                    compressor.compress(shuffled, rawLength, stored, RowFileFormat.CHUNK_HEADER_BYTES, capacity);
            if (compressed < rawLength) {
                storedLength = compressed;
            }
        }
        storedView.putInt(0, storedLength).putInt(4, rawLength).putInt(8, (int) chunkCrc.getValue());
        if (storedLength == rawLength) {
            write(stored, 0, RowFileFormat.CHUNK_HEADER_BYTES);
            write(raw, 0, rawLength);
        } else {
            write(stored, 0, RowFileFormat.CHUNK_HEADER_BYTES + storedLength);
        }
        uncompressedBytes += rawLength;
        chunkCount++;
        rowsInChunk = 0;
        rawLength = 0;
        if (chunkCount == 1 && PausePoints.armed(PausePoints.MID_ROW_FILE)) {
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
