package io.pscluster.checkpoint;

import java.io.EOFException;
import java.io.FileNotFoundException;
import java.io.IOException;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.Objects;
import java.util.function.IntPredicate;
import java.util.zip.CRC32C;
import org.apache.hadoop.fs.ChecksumException;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.hdfs.BlockMissingException;

/**
 * Reads the rows of selected slots from a row file written by {@link RowFileWriter} (format version 2, compressed in
 * chunks) or by PSCluster 0.1 (version 1, plain rows).
 *
 * <p>The reader checks the file's structure against itself and against the manifest's {@link RowFileInfo}: length,
 * magic, version, row width, codec, that every slot's rows lie between the header and the footer in order, and that
 * the index lists exactly the manifest's slots and row count. In version 2 it also checks each chunk it decodes
 * against the CRC32C of its rows, so the rows it hands out are the rows that were written, whatever it skipped. It
 * seeks past slots it does not want, so it cannot check the whole-file CRC32C: call {@link CheckpointStore#verify}
 * before loading a checkpoint.
 */
public final class RowFileReader {
    private static final int V1_BUFFER_BYTES = 64 * 1024;
    private static final VarHandle LONG_LE =
            MethodHandles.byteArrayViewVarHandle(long[].class, ByteOrder.LITTLE_ENDIAN);
    private static final VarHandle INT_LE = MethodHandles.byteArrayViewVarHandle(int[].class, ByteOrder.LITTLE_ENDIAN);

    private RowFileReader() {}

    /**
     * Reads every row of every slot for which {@code wantSlot} is true.
     *
     * @return the number of rows passed to {@code consumer}.
     * @throws CheckpointCorruptException if the file is missing, has the wrong length, a damaged structure or a chunk
     *     that does not decode to its rows; the message names the file and what is wrong.
     */
    public static long read(
            FileSystem fs, Path checkpointDir, RowFileInfo info, IntPredicate wantSlot, RowConsumer consumer)
            throws IOException {
        Objects.requireNonNull(consumer, "consumer");
        float[][] row = {null};
        return readRuns(fs, checkpointDir, info, wantSlot, (slot, rows, offset, count, rowWidth) -> {
            if (row[0] == null) {
                row[0] = new float[rowWidth];
            }
            float[] floats = row[0];
            int rowBytes = (int) RowFileFormat.rowBytes(rowWidth);
            for (int r = 0, at = offset; r < count; r++, at += rowBytes) {
                long key = (long) LONG_LE.get(rows, at);
                for (int f = 0; f < rowWidth; f++) {
                    floats[f] = Float.intBitsToFloat((int) INT_LE.get(rows, at + 8 + 4 * f));
                }
                consumer.accept(slot, key, floats);
            }
        });
    }

    /**
     * Reads every row of every slot for which {@code wantSlot} is true, as stored: in runs of whole rows of one slot
     * (a run ends where a slot or a decoded chunk does), without turning them into floats. The rows a consumer is
     * given have passed the same checks as those {@link #read} hands out.
     *
     * @return the number of rows passed to {@code consumer}.
     * @throws CheckpointCorruptException as {@link #read} does.
     */
    public static long readRuns(
            FileSystem fs, Path checkpointDir, RowFileInfo info, IntPredicate wantSlot, RowRunConsumer consumer)
            throws IOException {
        Objects.requireNonNull(wantSlot, "wantSlot");
        Objects.requireNonNull(consumer, "consumer");
        long[] read = new long[1];
        open(fs, checkpointDir, info, (in, file, length, version, rowWidth) -> {
            if (version == RowFileFormat.V1) {
                read[0] = V1.read(in, file, length, rowWidth, info, wantSlot, consumer);
            } else {
                try (V2 v2 = new V2(in, file, length, rowWidth, info)) {
                    read[0] = v2.read(wantSlot, consumer);
                }
            }
        });
        return read[0];
    }

    /**
     * The number of rows of each of the file's slots, in the order of {@link RowFileInfo#slots()}, from the file's
     * index alone (its header, footer and trailer, checked as {@link #read} checks them; no row is decoded).
     *
     * @throws CheckpointCorruptException as {@link #read} does for the file's structure.
     */
    public static long[] slotRows(FileSystem fs, Path checkpointDir, RowFileInfo info) throws IOException {
        long[][] rows = new long[1][];
        open(fs, checkpointDir, info, (in, file, length, version, rowWidth) -> {
            if (version == RowFileFormat.V1) {
                rows[0] = V1.index(in, file, length, rowWidth, info).rows();
            } else {
                try (V2 v2 = new V2(in, file, length, rowWidth, info)) {
                    rows[0] = v2.rows.clone();
                }
            }
        });
        return rows[0];
    }

    /** What to do with a row file whose header has been checked. */
    private interface OpenedFile {
        void accept(ReplicaRetryingInput in, Path file, long length, int version, int rowWidth) throws IOException;
    }

    /** Opens the file, checks its length and header, and hands it to {@code then}, mapping read errors to damage. */
    private static void open(FileSystem fs, Path checkpointDir, RowFileInfo info, OpenedFile then) throws IOException {
        Path file = new Path(checkpointDir, info.path());
        FileStatus status;
        try {
            status = fs.getFileStatus(file);
        } catch (FileNotFoundException e) {
            throw new CheckpointCorruptException("row file " + file + " is missing", e);
        }
        long length = status.getLen();
        if (length != info.length()) {
            throw corrupt(file, "length is " + length + " bytes, manifest says " + info.length());
        }
        if (length < RowFileFormat.V1_HEADER_BYTES + RowFileFormat.V1_TRAILER_BYTES) {
            throw corrupt(file, "length " + length + " is shorter than header plus trailer");
        }
        try (ReplicaRetryingInput in = new ReplicaRetryingInput(fs, file, status)) {
            ByteBuffer header = readAt(in, 0, RowFileFormat.V1_HEADER_BYTES);
            checkMagic(header, 0, file, "header");
            int version = header.getInt(4);
            int rowWidth = header.getInt(8);
            if (version != RowFileFormat.VERSION && version != RowFileFormat.V1) {
                throw corrupt(file, "unsupported version " + version + ", expected " + RowFileFormat.VERSION + " or 1");
            }
            int maxWidth = version == RowFileFormat.V1 ? (Integer.MAX_VALUE - 8) / 4 : RowFileFormat.MAX_ROW_WIDTH;
            int minWidth = version == RowFileFormat.V1 ? 1 : 0;
            if (rowWidth < minWidth || rowWidth > maxWidth) {
                throw corrupt(file, "rowWidth " + rowWidth + " out of range [" + minWidth + ", " + maxWidth + "]");
            }
            if (version == RowFileFormat.V1 && info.codec() != ChunkCodec.NONE) {
                throw corrupt(file, "format 1 stores rows plainly, manifest says codec " + info.codec());
            }
            then.accept(in, file, length, version, rowWidth);
        } catch (EOFException e) {
            throw new CheckpointCorruptException("row file " + file + " ended early: " + e.getMessage(), e);
        } catch (ChecksumException e) {
            // The filesystem's own block checksums failed (HDFS, or the .crc files of file://).
            throw new CheckpointCorruptException(
                    "row file " + file + ": filesystem checksum error: " + e.getMessage(), e);
        } catch (BlockMissingException e) {
            CheckpointVerifier.Problem unserved = CheckpointVerifier.Problem.unserved(fs, file, e, "");
            throw new CheckpointCorruptException(
                    "row file " + file + ": " + unserved.text(), e, 0, unserved.blockUnreachable());
        }
    }

    /** Version 2: chunks, each checked against the CRC32C of its rows. */
    private static final class V2 implements AutoCloseable {
        private final ReplicaRetryingInput in;
        private final Path file;
        private final int rowWidth;
        private final int rowBytes;
        private final ChunkCodec codec;
        private final long footerStart;
        private final int[] slots;
        private final long[] chunkOffsets;
        private final int[] rowInChunk;
        private final long[] rows;
        private final CRC32C crc = new CRC32C();

        private byte[] stored = new byte[0];
        private byte[] shuffled = new byte[0];
        private byte[] raw = new byte[0];
        private ChunkCodec.Decompressor decompressor;
        /** The decoded chunk: its file offset (-1: none), its rows, where the next chunk starts. */
        private long chunkOffset = -1;

        private int chunkRows;
        private long nextChunkOffset;

        V2(ReplicaRetryingInput in, Path file, long length, int rowWidth, RowFileInfo info) throws IOException {
            this.in = in;
            this.file = file;
            this.rowWidth = rowWidth;
            this.rowBytes = (int) RowFileFormat.rowBytes(rowWidth);
            if (length < RowFileFormat.HEADER_BYTES + RowFileFormat.TRAILER_BYTES) {
                throw corrupt(file, "length " + length + " is shorter than header plus trailer");
            }
            ByteBuffer header = readAt(in, 0, RowFileFormat.HEADER_BYTES);
            int codecId = header.getInt(12);
            codec = ChunkCodec.ofId(codecId);
            if (codec == null) {
                throw corrupt(file, "unknown codec id " + codecId);
            }
            if (codec != info.codec()) {
                throw corrupt(file, "header says codec " + codec + ", manifest says " + info.codec());
            }

            long trailerStart = length - RowFileFormat.TRAILER_BYTES;
            ByteBuffer trailer = readAt(in, trailerStart, RowFileFormat.TRAILER_BYTES);
            checkMagic(trailer, 16, file, "trailer");
            int entries = trailer.getInt(0);
            footerStart = trailer.getLong(4);
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
            slots = new int[entries];
            chunkOffsets = new long[entries];
            rowInChunk = new int[entries];
            rows = new long[entries];
            long totalRows = 0;
            long previousChunk = -1;
            int previousRow = -1;
            for (int i = 0; i < entries; i++) {
                int at = i * RowFileFormat.SLOT_ENTRY_BYTES;
                slots[i] = footer.getInt(at);
                chunkOffsets[i] = footer.getLong(at + 4);
                rowInChunk[i] = footer.getInt(at + 12);
                rows[i] = footer.getLong(at + 16);
                if (slots[i] != expectedSlots[i]) {
                    throw corrupt(
                            file,
                            "index entry " + i + " is slot " + slots[i] + ", manifest says slot " + expectedSlots[i]);
                }
                boolean after = chunkOffsets[i] > previousChunk
                        || (chunkOffsets[i] == previousChunk && rowInChunk[i] > previousRow);
                if (rows[i] < 1
                        || rows[i] > info.rows()
                        || rowInChunk[i] < 0
                        || chunkOffsets[i] < RowFileFormat.HEADER_BYTES
                        || chunkOffsets[i] > footerStart - RowFileFormat.CHUNK_HEADER_BYTES
                        || !after) {
                    throw corrupt(
                            file,
                            "slot " + slots[i] + " (" + rows[i] + " rows from row " + rowInChunk[i]
                                    + " of the chunk at offset " + chunkOffsets[i] + ") is not within ["
                                    + RowFileFormat.HEADER_BYTES + ", " + footerStart + ") after the previous slot");
                }
                previousChunk = chunkOffsets[i];
                previousRow = rowInChunk[i];
                totalRows += rows[i];
            }
            if (totalRows != info.rows()) {
                throw corrupt(file, "index has " + totalRows + " rows, manifest says " + info.rows());
            }
        }

        long read(IntPredicate wantSlot, RowRunConsumer consumer) throws IOException {
            long read = 0;
            for (int i = 0; i < slots.length; i++) {
                int slot = slots[i];
                if (!wantSlot.test(slot)) {
                    continue;
                }
                if (chunkOffset != chunkOffsets[i]) {
                    loadChunk(chunkOffsets[i]);
                }
                int position = rowInChunk[i];
                if (position >= chunkRows) {
                    throw corrupt(
                            file,
                            "slot " + slot + " starts at row " + position + " of the chunk at offset " + chunkOffsets[i]
                                    + ", which has " + chunkRows + " rows");
                }
                for (long remaining = rows[i]; remaining > 0; ) {
                    if (position == chunkRows) {
                        if (nextChunkOffset >= footerStart) {
                            throw corrupt(file, "the rows of slot " + slot + " run past the last chunk");
                        }
                        loadChunk(nextChunkOffset);
                        position = 0;
                    }
                    int run = (int) Math.min(remaining, chunkRows - position);
                    consumer.accept(slot, raw, position * rowBytes, run, rowWidth);
                    position += run;
                    remaining -= run;
                    read += run;
                }
            }
            return read;
        }

        private void loadChunk(long offset) throws IOException {
            if (offset > footerStart - RowFileFormat.CHUNK_HEADER_BYTES) {
                throw corrupt(
                        file, "chunk offset " + offset + " is past the last chunk (footer at " + footerStart + ")");
            }
            ByteBuffer header = readAt(in, offset, RowFileFormat.CHUNK_HEADER_BYTES);
            int storedBytes = header.getInt(0);
            int rawBytes = header.getInt(4);
            int rawCrc = header.getInt(8);
            long maxRaw = Math.max(RowFileFormat.MAX_CHUNK_BYTES, rowBytes);
            long end = offset + RowFileFormat.CHUNK_HEADER_BYTES + (long) storedBytes;
            if (rawBytes < rowBytes
                    || rawBytes > maxRaw
                    || rawBytes % rowBytes != 0
                    || storedBytes < 1
                    || storedBytes > rawBytes
                    || end > footerStart) {
                throw corrupt(
                        file,
                        "chunk at offset " + offset + " (" + storedBytes + " bytes stored, " + rawBytes
                                + " raw) is malformed: raw must be a positive multiple of the " + rowBytes
                                + "-byte row up to " + maxRaw + ", stored at most raw, ending by the footer at "
                                + footerStart);
            }
            if (raw.length < rawBytes) {
                raw = new byte[rawBytes];
            }
            long data = offset + RowFileFormat.CHUNK_HEADER_BYTES;
            if (storedBytes == rawBytes) {
                in.readFully(data, raw, 0, rawBytes);
            } else {
                if (stored.length < storedBytes) {
                    stored = new byte[storedBytes];
                }
                if (shuffled.length < rawBytes) {
                    shuffled = new byte[rawBytes];
                }
                in.readFully(data, stored, 0, storedBytes);
                ChunkCodec.Decompressor decompressor = decompressor();
                try {
                    decompressor.decompress(stored, storedBytes, shuffled, rawBytes);
                } catch (IllegalStateException e) {
                    throw corrupt(file, "chunk at offset " + offset + " does not decompress: " + e.getMessage());
                }
                RowFileFormat.unshuffle(shuffled, raw, rawBytes);
            }
            crc.reset();
            crc.update(raw, 0, rawBytes);
            if ((int) crc.getValue() != rawCrc) {
                throw corrupt(
                        file,
                        String.format(
                                "chunk at offset %d: crc32c of its rows expected %08x, actual %08x",
                                offset, rawCrc, (int) crc.getValue()));
            }
            chunkOffset = offset;
            chunkRows = rawBytes / rowBytes;
            nextChunkOffset = end;
        }

        private ChunkCodec.Decompressor decompressor() {
            if (decompressor == null) {
                decompressor = codec.newDecompressor();
            }
            return decompressor;
        }

        @Override
        public void close() {
            if (decompressor != null) {
                decompressor.close();
            }
        }
    }

    /** Version 1 (PSCluster 0.1): plain rows, each slot's rows at an offset of their own. */
    private static final class V1 {
        private V1() {}

        /** A version 1 file's index: per slot, the offset of its first row and its row count. */
        record Index(int[] slots, long[] offsets, long[] rows) {}

        static Index index(ReplicaRetryingInput in, Path file, long length, int rowWidth, RowFileInfo info)
                throws IOException {
            long trailerStart = length - RowFileFormat.V1_TRAILER_BYTES;
            ByteBuffer trailer = readAt(in, trailerStart, RowFileFormat.V1_TRAILER_BYTES);
            checkMagic(trailer, 12, file, "trailer");
            int entries = trailer.getInt(0);
            long footerStart = trailer.getLong(4);
            if (footerStart < RowFileFormat.V1_HEADER_BYTES || footerStart > trailerStart) {
                throw corrupt(
                        file,
                        "footer offset " + footerStart + " outside [" + RowFileFormat.V1_HEADER_BYTES + ", "
                                + trailerStart + "]");
            }
            if (entries < 0 || (long) entries * RowFileFormat.V1_SLOT_ENTRY_BYTES != trailerStart - footerStart) {
                throw corrupt(
                        file,
                        entries + " slot entries do not fill the " + (trailerStart - footerStart)
                                + "-byte footer at offset " + footerStart);
            }
            if (entries != info.slotCount()) {
                throw corrupt(file, "index has " + entries + " slots, manifest says " + info.slotCount());
            }
            ByteBuffer footer = readAt(in, footerStart, entries * RowFileFormat.V1_SLOT_ENTRY_BYTES);
            int[] expectedSlots = info.slots();
            int[] slots = new int[entries];
            long[] offsets = new long[entries];
            long[] rows = new long[entries];
            long rowBytes = RowFileFormat.rowBytes(rowWidth);
            long previousEnd = RowFileFormat.V1_HEADER_BYTES;
            long totalRows = 0;
            for (int i = 0; i < entries; i++) {
                int at = i * RowFileFormat.V1_SLOT_ENTRY_BYTES;
                slots[i] = footer.getInt(at);
                offsets[i] = footer.getLong(at + 4);
                rows[i] = footer.getLong(at + 12);
                if (slots[i] != expectedSlots[i]) {
                    throw corrupt(
                            file,
                            "index entry " + i + " is slot " + slots[i] + ", manifest says slot " + expectedSlots[i]);
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
            return new Index(slots, offsets, rows);
        }

        static long read(
                ReplicaRetryingInput in,
                Path file,
                long length,
                int rowWidth,
                RowFileInfo info,
                IntPredicate wantSlot,
                RowRunConsumer consumer)
                throws IOException {
            Index index = index(in, file, length, rowWidth, info);
            int[] slots = index.slots();
            long[] offsets = index.offsets();
            long[] rows = index.rows();
            int entries = slots.length;
            long rowBytes = RowFileFormat.rowBytes(rowWidth);
            int rowsPerChunk = (int) Math.max(1, V1_BUFFER_BYTES / rowBytes);
            byte[] chunk = null;
            long read = 0;
            for (int i = 0; i < entries; i++) {
                if (!wantSlot.test(slots[i])) {
                    continue;
                }
                if (chunk == null) {
                    chunk = new byte[(int) (rowsPerChunk * rowBytes)];
                }
                long position = offsets[i];
                for (long remaining = rows[i]; remaining > 0; ) {
                    int n = (int) Math.min(remaining, rowsPerChunk);
                    in.readFully(position, chunk, 0, (int) (n * rowBytes));
                    position += n * rowBytes;
                    consumer.accept(slots[i], chunk, 0, n, rowWidth);
                    remaining -= n;
                    read += n;
                }
            }
            return read;
        }
    }

    private static ByteBuffer readAt(ReplicaRetryingInput in, long position, int length) throws IOException {
        byte[] bytes = new byte[length];
        in.readFully(position, bytes, 0, length);
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
}
