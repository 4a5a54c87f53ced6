package io.pscluster.checkpoint;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;

/**
 * Layout of a row file, version 2 (all integers little-endian):
 *
 * <pre>
 * header  : "PSRF" | int version=2 | int rowWidth | int codec                             (16 bytes)
 * chunks  : { int storedBytes | int rawBytes | int rawCrc32c | storedBytes bytes }*      (12-byte chunk header)
 * footer  : { int slot | long chunkOffset | int rowInChunk | long rowCount }* one per non-empty slot (24 bytes each)
 * trailer : int slotEntries | long footerStart | int chunkCount | "PSRF"                  (20 bytes)
 * </pre>
 *
 * <p>Rows are {@code long key | rowWidth x float32 raw bits} ({@code 8 + 4 * rowWidth} bytes; a file of row width 0
 * lists keys only, as a delta's removed keys do), slots in ascending
 * order, a slot's rows contiguous. They are cut into chunks of whole rows, about {@link #DEFAULT_CHUNK_BYTES} each,
 * and each chunk is stored on its own: shuffled (byte {@code k} of every 4-byte word, for {@code k = 0..3}, one plane
 * after the other) and compressed with the header's codec, except that a chunk whose compressed form would not be
 * smaller is stored raw, which its header shows by {@code storedBytes == rawBytes}. {@code rawCrc32c} is the CRC32C of
 * the chunk's rows as they were given, so a reader checks what it hands out, end to end, whatever it skipped.
 *
 * <p>A slot's index entry names the chunk (by its file offset) holding the slot's first row and that row's index in
 * the chunk; the slot's rows run on through the following chunks. The trailer has a fixed size at the end of the
 * file, so a reader finds the footer from the file length alone and seeks to the slots it wants.
 *
 * <p>Version 1 (PSCluster 0.1), still read: a 12-byte header without codec, the rows stored plainly, a footer of
 * {@code int slot | long offsetOfFirstRow | long rowCount} (20 bytes each) and a 16-byte trailer {@code int
 * slotEntries | long footerStart | "PSRF"}.
 */
final class RowFileFormat {
    static final byte[] MAGIC = "PSRF".getBytes(StandardCharsets.US_ASCII);
    static final int VERSION = 2;
    static final int HEADER_BYTES = 16;
    static final int CHUNK_HEADER_BYTES = 12;
    static final int SLOT_ENTRY_BYTES = 24;
    static final int TRAILER_BYTES = 20;

    /** Raw bytes per chunk a writer aims at; a chunk always holds at least one row. */
    static final int DEFAULT_CHUNK_BYTES = 1 << 20;
    /** The largest chunk size a writer may choose; a reader refuses a chunk above this (or one row, if larger). */
    static final int MAX_CHUNK_BYTES = 64 << 20;
    /** Keeps one row within one chunk of at most {@link #MAX_CHUNK_BYTES}. */
    static final int MAX_ROW_WIDTH = (MAX_CHUNK_BYTES - 8) / 4;

    private static final VarHandle INT_LE = MethodHandles.byteArrayViewVarHandle(int[].class, ByteOrder.LITTLE_ENDIAN);

    static final int V1 = 1;
    static final int V1_HEADER_BYTES = 12;
    static final int V1_SLOT_ENTRY_BYTES = 20;
    static final int V1_TRAILER_BYTES = 16;

    private RowFileFormat() {}

    static long rowBytes(int rowWidth) {
        return 8L + 4L * rowWidth;
    }

    /** Rows per chunk for a writer aiming at {@code chunkBytes} raw bytes: at least one. */
    static int rowsPerChunk(int rowWidth, int chunkBytes) {
        return (int) Math.max(1, chunkBytes / rowBytes(rowWidth));
    }

    /**
     * Writes {@code src[0..length)} to {@code dst} as four planes: byte 0 of every 4-byte word, then byte 1, and so
     * on. {@code length} is a multiple of 4 (rows are). One pass, a word read at a time (about 1.5x the speed of one
     * pass per plane).
     */
    static void shuffle(byte[] src, byte[] dst, int length) {
        int words = length >>> 2;
        int plane1 = words;
        int plane2 = 2 * words;
        int plane3 = 3 * words;
        for (int i = 0; i < words; i++) {
            int word = (int) INT_LE.get(src, 4 * i);
            dst[i] = (byte) word;
            dst[plane1 + i] = (byte) (word >>> 8);
            dst[plane2 + i] = (byte) (word >>> 16);
            dst[plane3 + i] = (byte) (word >>> 24);
        }
    }

    /** The inverse of {@link #shuffle}, a word written at a time. */
    static void unshuffle(byte[] src, byte[] dst, int length) {
        int words = length >>> 2;
        int plane1 = words;
        int plane2 = 2 * words;
        int plane3 = 3 * words;
        for (int i = 0; i < words; i++) {
            INT_LE.set(
                    dst,
                    4 * i,
                    (src[i] & 0xff)
                            | (src[plane1 + i] & 0xff) << 8
                            | (src[plane2 + i] & 0xff) << 16
                            | src[plane3 + i] << 24);
        }
    }
}
