package io.pscluster.server.table;

import java.util.Arrays;
import org.agrona.collections.Long2LongHashMap;

/**
 * The rows of one table in one slot: a primitive key -> record index and the records packed in one float array.
 *
 * <p>Thread-safe by a monitor per slot: with 4096 slots per table, two requests rarely meet on the same one. This is
 * the walking-skeleton store; the lock-free single-writer store replaces it without changing the table's API.
 */
final class SlotStore {
    private static final long MISSING = -1;

    private final int rowWidth;
    private final Long2LongHashMap index = new Long2LongHashMap(MISSING);
    private long[] keys = new long[0];
    private float[] records = new float[0];
    private int size;

    SlotStore(final int rowWidth) {
        this.rowWidth = rowWidth;
    }

    /** Copies the values of {@code key} into {@code out[outOffset]}, or its initial values if it has no row. */
    synchronized void read(
            final long key, final float[] out, final int outOffset, final int dim, final Initializer init) {
        final long row = index.get(key);
        if (row == MISSING) {
            init.fill(key, out, outOffset, dim);
        } else {
            System.arraycopy(records, (int) row * rowWidth, out, outOffset, dim);
        }
    }

    /** Applies one gradient row to {@code key}, creating the row first if needed. */
    synchronized void apply(
            final long key,
            final float[] gradient,
            final int gradientOffset,
            final int dim,
            final Optimizer optimizer,
            final Initializer init) {
        final int offset = rowOffset(key, dim, optimizer, init);
        optimizer.apply(records, offset, dim, gradient, gradientOffset);
    }

    /** Creates the row of {@code key} with its initial values if it has none. */
    synchronized void ensure(final long key, final int dim, final Optimizer optimizer, final Initializer init) {
        rowOffset(key, dim, optimizer, init);
    }

    /** Replaces (or creates) the whole record of {@code key}: values and optimizer slots. */
    synchronized void put(final long key, final float[] record) {
        final long row = index.get(key);
        final int offset;
        if (row == MISSING) {
            offset = append(key);
        } else {
            offset = (int) row * rowWidth;
        }
        System.arraycopy(record, 0, records, offset, rowWidth);
    }

    synchronized int size() {
        return size;
    }

    /** A copy of every record, in insertion order. */
    synchronized SlotSnapshot snapshot(final int slot) {
        return new SlotSnapshot(
                slot, Arrays.copyOf(keys, size), Arrays.copyOf(records, size * rowWidth), size, rowWidth);
    }

    synchronized void clear() {
        index.clear();
        keys = new long[0];
        records = new float[0];
        size = 0;
    }

    private int rowOffset(final long key, final int dim, final Optimizer optimizer, final Initializer init) {
        final long row = index.get(key);
        if (row != MISSING) {
            return (int) row * rowWidth;
        }
        final int offset = append(key);
        init.fill(key, records, offset, dim);
        optimizer.initSlots(records, offset, dim);
        return offset;
    }

    private int append(final long key) {
        if (size == keys.length) {
            final int capacity = Math.max(4, size * 2);
            keys = Arrays.copyOf(keys, capacity);
            records = Arrays.copyOf(records, capacity * rowWidth);
        }
        keys[size] = key;
        index.put(key, size);
        return size++ * rowWidth;
    }

    /** Bytes held for records and keys (capacity, not just size), for load reports. */
    synchronized long bytes() {
        return (long) records.length * Float.BYTES + (long) keys.length * Long.BYTES;
    }
}
