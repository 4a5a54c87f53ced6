package io.pscluster.server.table;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteOrder;

/**
 * Rows of one table handed from a partition's writer to the thread writing a checkpoint, as a row file stores them:
 * row {@code i} at {@code bytes()[i * rowBytes()]}, its key, then its record's floats (values, optimizer slots,
 * counter bits) as raw bits, all little-endian; for removed keys ({@link #removedKeys()}, row width 0) the keys alone.
 * The writer copies records into it byte for byte, and the checkpoint thread writes rows out without converting
 * them. Batches are reused: the writer fills one, the checkpoint thread writes it out and gives it back.
 */
public final class SnapshotBatch {
    private static final VarHandle LONG_LE =
            MethodHandles.byteArrayViewVarHandle(long[].class, ByteOrder.LITTLE_ENDIAN);
    private static final VarHandle INT_LE = MethodHandles.byteArrayViewVarHandle(int[].class, ByteOrder.LITTLE_ENDIAN);

    final byte[] bytes;
    private int table;
    private boolean removedKeys;
    private int rowWidth;
    private int rowBytes;
    private int rows;
    private int capacity;

    /** A batch of {@code bytes} bytes: enough for at least one row of every table it will hold. */
    SnapshotBatch(final int bytes) {
        this.bytes = new byte[bytes];
    }

    /** Bytes of one row of {@code width} floats: its key, then the floats. */
    static int rowBytes(final int width) {
        return 8 + 4 * width;
    }

    /**
     * Empties the batch for rows of the table at {@code tableIndex}, each {@code width} floats, or (with
     * {@code removed}, width 0) for keys the table removed.
     */
    void reset(final int tableIndex, final int width, final boolean removed) {
        table = tableIndex;
        rowWidth = width;
        rowBytes = rowBytes(width);
        removedKeys = removed;
        rows = 0;
        capacity = bytes.length / rowBytes;
    }

    /** True for a batch of removed keys (no records): a delta's removals since its parent. */
    public boolean removedKeys() {
        return removedKeys;
    }

    boolean hasRoom() {
        return rows < capacity;
    }

    /** Appends a row of {@code key}; returns where its record's bytes go in {@link #bytes}. */
    int add(final long key) {
        final int at = rows++ * rowBytes;
        LONG_LE.set(bytes, at, key);
        return at + 8;
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

    /** Bytes per row: {@code 8 + 4 * rowWidth()}. */
    public int rowBytes() {
        return rowBytes;
    }

    public long key(final int row) {
        return (long) LONG_LE.get(bytes, row * rowBytes);
    }

    /** The raw bits of float {@code index} of row {@code row}'s record. */
    public int recordBits(final int row, final int index) {
        return (int) INT_LE.get(bytes, row * rowBytes + 8 + 4 * index);
    }

    /** The rows, as a row file stores them; row {@code i} starts at {@code i * rowBytes()}. */
    public byte[] bytes() {
        return bytes;
    }
}
