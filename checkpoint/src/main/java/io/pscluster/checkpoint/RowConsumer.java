package io.pscluster.checkpoint;

/** Receives the rows read by {@link RowFileReader}. */
@FunctionalInterface
public interface RowConsumer {
    /**
     * Called once per row, in file order (slots ascending, rows in the order they were written).
     *
     * @param slot the slot the row belongs to.
     * @param key the row key.
     * @param row the row's floats (values plus optimizer slots). The array is reused for the next row: copy what you
     *     keep, do not hold on to it.
     */
    void accept(int slot, long key, float[] row);
}
