package io.pscluster.checkpoint;

import java.nio.charset.StandardCharsets;

/**
 * Layout of a row file (all integers little-endian):
 *
 * <pre>
 * header  : "PSRF" | int version=1 | int rowWidth                                      (12 bytes)
 * rows    : { long key | rowWidth x float32 raw bits }*                                 (8 + 4 * rowWidth each)
 * footer  : { int slot | long offsetOfFirstRow | long rowCount }* one per non-empty slot (20 bytes each)
 * trailer : int slotEntries | long footerStartOffset | "PSRF"                           (16 bytes)
 * </pre>
 *
 * <p>The trailer has a fixed size at the end of the file, so a reader finds the footer from the file length alone
 * and seeks straight to the slots it wants. A slot's rows are contiguous and slots appear in ascending order.
 */
final class RowFileFormat {
    static final byte[] MAGIC = "PSRF".getBytes(StandardCharsets.US_ASCII);
    static final int VERSION = 1;
    static final int HEADER_BYTES = 12;
    static final int SLOT_ENTRY_BYTES = 20;
    static final int TRAILER_BYTES = 16;
    /** Keeps {@code 8 + 4 * rowWidth} within an int, so one row always fits in one array. */
    static final int MAX_ROW_WIDTH = (Integer.MAX_VALUE - 8) / 4;

    private RowFileFormat() {}

    static long rowBytes(int rowWidth) {
        return 8L + 4L * rowWidth;
    }
}
