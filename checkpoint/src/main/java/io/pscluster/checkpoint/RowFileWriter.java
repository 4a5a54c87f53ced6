package io.pscluster.checkpoint;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.Objects;
import java.util.zip.CRC32C;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FileAlreadyExistsException;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;

/**
 * Writes the rows of one table of one shard into a new row file (layout in {@link RowFileFormat}).
 *
 * <p>Usage: {@code beginSlot(s)} then {@code writeRow} for each row of slot {@code s}, for each slot in ascending
 * order, then {@link #finish()}, which writes the slot index, {@code hsync}s, closes and returns the
 * {@link RowFileInfo} to list in the manifest. Bytes go through one reused 64 KiB little-endian buffer, which is also
 * where the CRC32C is computed, so the cost per float is a buffer store, not a stream call.
 *
 * <p>The file is created with {@code overwrite=false}: checkpoint paths are never reused, so an existing file means
 * a bug or a second writer and is reported, never replaced. A file closed without {@code finish()} is incomplete; it
 * is harmless because only a manifest makes a file part of a checkpoint.
 *
 * <p>Not thread-safe: one writer per thread.
 */
public final class RowFileWriter implements AutoCloseable {
    private static final int BUFFER_BYTES = 64 * 1024;

    private final FSDataOutputStream out;
    private final Path file;
    private final String relativePath;
    private final int rowWidth;
    private final ByteBuffer buffer = ByteBuffer.allocate(BUFFER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
    private final CRC32C crc = new CRC32C();

    private long flushedBytes;
    private long totalRows;
    private int currentSlot = -1;
    private long currentSlotFirstRow;
    private long currentSlotRows;

    private int slotEntries;
    private int[] entrySlots = new int[16];
    private long[] entryOffsets = new long[16];
    private long[] entryRows = new long[16];

    private boolean finished;
    private boolean closed;

    private RowFileWriter(FSDataOutputStream out, Path file, String relativePath, int rowWidth) {
        this.out = out;
        this.file = file;
        this.relativePath = relativePath;
        this.rowWidth = rowWidth;
    }

    /**
     * Creates {@code checkpointDir/relativePath} (and its parents) and writes the header.
     *
     * @param rowWidth floats per row, values plus optimizer slots; at least 1.
     * @throws FileAlreadyExistsException if the file exists; the message names it.
     */
    public static RowFileWriter create(FileSystem fs, Path checkpointDir, String relativePath, int rowWidth)
            throws IOException {
        Objects.requireNonNull(fs, "fs");
        Objects.requireNonNull(checkpointDir, "checkpointDir");
        RowFileInfo.checkRelativePath(relativePath);
        if (rowWidth < 1 || rowWidth > RowFileFormat.MAX_ROW_WIDTH) {
            throw new IllegalArgumentException(
                    "rowWidth=" + rowWidth + " must be in [1, " + RowFileFormat.MAX_ROW_WIDTH + "]");
        }
        Path file = new Path(checkpointDir, relativePath);
        FSDataOutputStream out;
        try {
            out = fs.create(file, false);
        } catch (FileAlreadyExistsException e) {
            throw new FileAlreadyExistsException("row file " + file + " already exists; checkpoint paths are never"
                    + " reused (" + e.getMessage() + ")");
        }
        RowFileWriter writer = new RowFileWriter(out, file, relativePath, rowWidth);
        writer.buffer.put(RowFileFormat.MAGIC).putInt(RowFileFormat.VERSION).putInt(rowWidth);
        return writer;
    }

    /** The absolute path of the file being written. */
    public Path file() {
        return file;
    }

    public int rowWidth() {
        return rowWidth;
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
        checkOpen();
        if (currentSlot < 0) {
            throw new IllegalStateException("writeRow before beginSlot (" + file + ")");
        }
        Objects.checkFromIndexSize(offset, rowWidth, source.length);
        if (currentSlotRows == 0) {
            currentSlotFirstRow = position();
        }
        if (buffer.remaining() < 8) {
            flushBuffer();
        }
        buffer.putLong(key);
        // Every write is a multiple of 4 bytes and the buffer's capacity is too, so "has remaining" means ">= 4".
        // Rows wider than the buffer are written in pieces.
        for (int i = offset, end = offset + rowWidth; i < end; i++) {
            if (!buffer.hasRemaining()) {
                flushBuffer();
            }
            buffer.putFloat(source[i]);
        }
        currentSlotRows++;
        totalRows++;
    }

    /**
     * Writes the slot index and trailer, {@code hsync}s and closes the file.
     *
     * @return what the manifest must record about the file.
     */
    public RowFileInfo finish() throws IOException {
        checkOpen();
        endSlot();
        long footerStart = position();
        for (int i = 0; i < slotEntries; i++) {
            if (buffer.remaining() < RowFileFormat.SLOT_ENTRY_BYTES) {
                flushBuffer();
            }
            buffer.putInt(entrySlots[i]).putLong(entryOffsets[i]).putLong(entryRows[i]);
        }
        if (buffer.remaining() < RowFileFormat.TRAILER_BYTES) {
            flushBuffer();
        }
        buffer.putInt(slotEntries).putLong(footerStart).put(RowFileFormat.MAGIC);
        flushBuffer();
        out.hsync();
        finished = true;
        closed = true;
        out.close();
        return new RowFileInfo(
                relativePath, flushedBytes, (int) crc.getValue(), totalRows, Arrays.copyOf(entrySlots, slotEntries));
    }

    /** No-op after {@link #finish()}; otherwise closes the stream, leaving an incomplete file. */
    @Override
    public void close() throws IOException {
        if (!closed) {
            closed = true;
            out.close();
        }
    }

    private long position() {
        return flushedBytes + buffer.position();
    }

    private void endSlot() {
        if (currentSlotRows == 0) {
            return;
        }
        if (slotEntries == entrySlots.length) {
            int capacity = slotEntries * 2;
            entrySlots = Arrays.copyOf(entrySlots, capacity);
            entryOffsets = Arrays.copyOf(entryOffsets, capacity);
            entryRows = Arrays.copyOf(entryRows, capacity);
        }
        entrySlots[slotEntries] = currentSlot;
        entryOffsets[slotEntries] = currentSlotFirstRow;
        entryRows[slotEntries] = currentSlotRows;
        slotEntries++;
        currentSlotRows = 0;
    }

    private void flushBuffer() throws IOException {
        int length = buffer.position();
        out.write(buffer.array(), 0, length);
        crc.update(buffer.array(), 0, length);
        flushedBytes += length;
        buffer.clear();
    }

    private void checkOpen() {
        if (closed) {
            throw new IllegalStateException((finished ? "already finished: " : "closed without finish: ") + file);
        }
    }
}
