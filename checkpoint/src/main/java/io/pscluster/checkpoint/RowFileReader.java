package io.pscluster.checkpoint;

import java.io.EOFException;
import java.io.FileNotFoundException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.Objects;
import java.util.function.IntPredicate;
import org.apache.hadoop.fs.ChecksumException;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;

/**
 * Reads the rows of selected slots from a row file written by {@link RowFileWriter}.
 *
 * <p>The reader checks the file's structure against itself and against the manifest's {@link RowFileInfo}: length,
 * magic, version, row width, that every slot's rows lie between the header and the footer without overlapping, and
 * that the index lists exactly the manifest's slots and row count. It seeks past slots it does not want, so it cannot
 * check the whole-file CRC32C: call {@link CheckpointStore#verify} before loading a checkpoint.
 */
public final class RowFileReader {
    private static final int BUFFER_BYTES = 64 * 1024;

    private RowFileReader() {}

    /**
     * Reads every row of every slot for which {@code wantSlot} is true.
     *
     * @return the number of rows passed to {@code consumer}.
     * @throws CheckpointCorruptException if the file is missing, has the wrong length or a damaged structure; the
     *     message names the file and what is wrong.
     */
    public static long read(
            FileSystem fs, Path checkpointDir, RowFileInfo info, IntPredicate wantSlot, RowConsumer consumer)
            throws IOException {
        Objects.requireNonNull(wantSlot, "wantSlot");
        Objects.requireNonNull(consumer, "consumer");
        Path file = new Path(checkpointDir, info.path());
        long length;
        try {
            length = fs.getFileStatus(file).getLen();
        } catch (FileNotFoundException e) {
            throw new CheckpointCorruptException("row file " + file + " is missing", e);
        }
        if (length != info.length()) {
            throw corrupt(file, "length is " + length + " bytes, manifest says " + info.length());
        }
        if (length < RowFileFormat.HEADER_BYTES + RowFileFormat.TRAILER_BYTES) {
            throw corrupt(file, "length " + length + " is shorter than header plus trailer");
        }
        try (FSDataInputStream in = fs.open(file)) {
            Index index = readIndex(in, file, length, info);
            return readRows(in, file, index, wantSlot, consumer);
        } catch (EOFException e) {
            throw new CheckpointCorruptException("row file " + file + " ended early: " + e.getMessage(), e);
        } catch (ChecksumException e) {
            // The filesystem's own block checksums failed (HDFS, or the .crc files of file://).
            throw new CheckpointCorruptException(
                    "row file " + file + ": filesystem checksum error: " + e.getMessage(), e);
        }
    }

    private static Index readIndex(FSDataInputStream in, Path file, long length, RowFileInfo info) throws IOException {
        ByteBuffer header = readAt(in, 0, RowFileFormat.HEADER_BYTES);
        checkMagic(header, 0, file, "header");
        int version = header.getInt(4);
        if (version != RowFileFormat.VERSION) {
            throw corrupt(file, "unsupported version " + version + ", expected " + RowFileFormat.VERSION);
        }
        int rowWidth = header.getInt(8);
        if (rowWidth < 1 || rowWidth > RowFileFormat.MAX_ROW_WIDTH) {
            throw corrupt(file, "rowWidth " + rowWidth + " out of range [1, " + RowFileFormat.MAX_ROW_WIDTH + "]");
        }

        long trailerStart = length - RowFileFormat.TRAILER_BYTES;
        ByteBuffer trailer = readAt(in, trailerStart, RowFileFormat.TRAILER_BYTES);
        checkMagic(trailer, 12, file, "trailer");
        int entries = trailer.getInt(0);
        long footerStart = trailer.getLong(4);
        if (footerStart < RowFileFormat.HEADER_BYTES || footerStart > trailerStart) {
            throw corrupt(
                    file,
                    "footer offset " + footerStart + " outside [" + RowFileFormat.HEADER_BYTES + ", " + trailerStart
                            + "]");
        }
        if (entries < 0 || (long) entries * RowFileFormat.SLOT_ENTRY_BYTES != trailerStart - footerStart) {
            throw corrupt(
                    file,
                    entries + " slot entries do not fill the " + (trailerStart - footerStart)
                            + "-byte footer at offset " + footerStart);
        }
        if (entries != info.slotCount()) {
            throw corrupt(file, "index has " + entries + " slots, manifest says " + info.slotCount());
        }

        ByteBuffer footer = readAt(in, footerStart, entries * RowFileFormat.SLOT_ENTRY_BYTES);
        int[] expectedSlots = info.slots();
        int[] slots = new int[entries];
        long[] offsets = new long[entries];
        long[] rows = new long[entries];
        long rowBytes = RowFileFormat.rowBytes(rowWidth);
        long previousEnd = RowFileFormat.HEADER_BYTES;
        long totalRows = 0;
        for (int i = 0; i < entries; i++) {
            int at = i * RowFileFormat.SLOT_ENTRY_BYTES;
            slots[i] = footer.getInt(at);
            offsets[i] = footer.getLong(at + 4);
            rows[i] = footer.getLong(at + 12);
            if (slots[i] != expectedSlots[i]) {
                throw corrupt(
                        file, "index entry " + i + " is slot " + slots[i] + ", manifest says slot " + expectedSlots[i]);
            }
            // Compare counts before multiplying so a damaged count cannot overflow the bounds check.
            long maxRows = (footerStart - previousEnd) / rowBytes;
            if (rows[i] < 1
                    || rows[i] > maxRows
                    || offsets[i] < previousEnd
                    || offsets[i] > footerStart - rows[i] * rowBytes) {
                throw corrupt(
                        file,
                        "slot " + slots[i] + " (" + rows[i] + " rows at offset " + offsets[i] + ") is not within ["
                                + previousEnd + ", " + footerStart + ")");
            }
            previousEnd = offsets[i] + rows[i] * rowBytes;
            totalRows += rows[i];
        }
        if (totalRows != info.rows()) {
            throw corrupt(file, "index has " + totalRows + " rows, manifest says " + info.rows());
        }
        return new Index(rowWidth, slots, offsets, rows);
    }

    private static long readRows(
            FSDataInputStream in, Path file, Index index, IntPredicate wantSlot, RowConsumer consumer)
            throws IOException {
        int rowBytes = (int) RowFileFormat.rowBytes(index.rowWidth);
        int rowsPerChunk = Math.max(1, BUFFER_BYTES / rowBytes);
        ByteBuffer chunk = null;
        float[] row = new float[index.rowWidth];
        long read = 0;
        for (int i = 0; i < index.slots.length; i++) {
            int slot = index.slots[i];
            if (!wantSlot.test(slot)) {
                continue;
            }
            if (chunk == null) {
                chunk = ByteBuffer.allocate(rowsPerChunk * rowBytes).order(ByteOrder.LITTLE_ENDIAN);
            }
            in.seek(index.offsets[i]);
            long remaining = index.rows[i];
            while (remaining > 0) {
                int n = (int) Math.min(remaining, rowsPerChunk);
                in.readFully(chunk.array(), 0, n * rowBytes);
                for (int r = 0, at = 0; r < n; r++) {
                    long key = chunk.getLong(at);
                    at += 8;
                    for (int f = 0; f < row.length; f++, at += 4) {
                        row[f] = chunk.getFloat(at);
                    }
                    consumer.accept(slot, key, row);
                }
                remaining -= n;
                read += n;
            }
        }
        return read;
    }

    private static ByteBuffer readAt(FSDataInputStream in, long position, int length) throws IOException {
        byte[] bytes = new byte[length];
        in.readFully(position, bytes);
        return ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
    }

    private static void checkMagic(ByteBuffer buffer, int at, Path file, String where)
            throws CheckpointCorruptException {
        byte[] magic = Arrays.copyOfRange(buffer.array(), at, at + RowFileFormat.MAGIC.length);
        if (!Arrays.equals(magic, RowFileFormat.MAGIC)) {
            throw corrupt(file, "bad " + where + " magic " + hex(magic) + ", expected " + hex(RowFileFormat.MAGIC));
        }
    }

    private static String hex(byte[] bytes) {
        StringBuilder s = new StringBuilder("0x");
        for (byte b : bytes) {
            s.append(String.format("%02x", b & 0xff));
        }
        return s.toString();
    }

    private static CheckpointCorruptException corrupt(Path file, String what) {
        return new CheckpointCorruptException("row file " + file + ": " + what);
    }

    private record Index(int rowWidth, int[] slots, long[] offsets, long[] rows) {}
}
