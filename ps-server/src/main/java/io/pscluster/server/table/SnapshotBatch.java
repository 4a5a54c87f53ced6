package io.pscluster.server.table;

/**
 * Rows of one table handed from a partition's writer to the thread writing a checkpoint: keys and, for row
 * {@code i}, its record (values, optimizer slots, counter bits) at {@code records[i * rowWidth()]}. Batches are
 * reused: the writer fills one, the checkpoint thread writes it out and gives it back.
 */
public final class SnapshotBatch {
    final long[] keys;
    final float[] records;
    private int table;
    private boolean removedKeys;
    private int rowWidth;
    private int rows;
    private int capacity;

    SnapshotBatch(final int floats, final int maxRows) {
        this.records = new float[floats];
        this.keys = new long[maxRows];
    }

    /**
     * Empties the batch for rows of the table at {@code tableIndex}, each {@code width} floats, or (with
     * {@code removed}, width 0) for keys the table removed.
     */
    void reset(final int tableIndex, final int width, final boolean removed) {
        table = tableIndex;
        rowWidth = width;
        removedKeys = removed;
        rows = 0;
        capacity = width == 0 ? keys.length : Math.min(keys.length, records.length / width);
    }

    /** True for a batch of removed keys (no records): a delta's removals since its parent. */
    public boolean removedKeys() {
        return removedKeys;
    }

    boolean hasRoom() {
        return rows < capacity;
    }

    /** Appends {@code key}; returns where its record's floats go in {@link #records}. */
    int add(final long key) {
        keys[rows] = key;
        return rows++ * rowWidth;
    }

    /** Index of the table in the snapshot's list. */
    public int table() {
        return table;
    }

    public int rows() {
        return rows;
    }

    public int rowWidth() {
        return rowWidth;
    }

    public long key(final int row) {
        return keys[row];
    }

    /** The records; row {@code i} starts at {@code i * rowWidth()}. */
    public float[] records() {
        return records;
    }
}
