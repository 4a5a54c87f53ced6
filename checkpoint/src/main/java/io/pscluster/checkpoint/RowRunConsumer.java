package io.pscluster.checkpoint;

/** Receives the rows read by {@link RowFileReader#readRuns} as they are stored, a run of one slot's rows at a time. */
@FunctionalInterface
public interface RowRunConsumer {
    /**
     * Called in file order (slots ascending, rows in the order they were written); a slot's rows may come in several
     * runs.
     *
     * @param slot the slot the rows belong to.
     * @param rows {@code count} rows from {@code offset}, each {@code 8 + 4 * rowWidth} bytes: the key, then the floats'
     *     raw bits, all little-endian. The array is reused once the call returns: copy what you keep.
     * @param rowWidth floats per row (0 for a file of keys only).
     */
    void accept(int slot, byte[] rows, int offset, int count, int rowWidth);
}
