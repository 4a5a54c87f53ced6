package io.pscluster.server;

import java.util.Arrays;
import org.agrona.collections.Long2LongHashMap;

/**
 * The gradients of one SYNC clock for one table, summed per key in the order they are added: a key's first row is
 * copied, later ones are added element by element, so that the same rows added in the same order give the same
 * bits.
 */
final class ClockSum {
    private static final long ABSENT = -1;

    private final int dim;
    private final Long2LongHashMap rowOf = new Long2LongHashMap(ABSENT);
    private long[] keys = new long[64];
    private float[] sums;
    private int count;

    ClockSum(final int dim) {
        this.dim = dim;
        this.sums = new float[64 * dim];
    }

    int dim() {
        return dim;
    }

    /** Adds {@code keys.length} rows of {@code dim} gradients each. */
    void add(final long[] rowKeys, final float[] gradients) {
        for (int i = 0; i < rowKeys.length; i++) {
            final long key = rowKeys[i];
            final long row = rowOf.get(key);
            final int from = i * dim;
            if (row == ABSENT) {
                if (count == keys.length) {
                    keys = Arrays.copyOf(keys, count * 2);
                    sums = Arrays.copyOf(sums, count * 2 * dim);
                }
                keys[count] = key;
                System.arraycopy(gradients, from, sums, count * dim, dim);
                rowOf.put(key, count);
                count++;
            } else {
                final int to = (int) row * dim;
                for (int d = 0; d < dim; d++) {
                    sums[to + d] += gradients[from + d];
                }
            }
        }
    }

    /** Adds every row of {@code other} (a worker's sum for the clock). */
    void add(final ClockSum other) {
        add(other.keys(), other.gradients());
    }

    /** Heap bytes held: keys, sums and the index (an estimate of the index's share). */
    long bytes() {
        return (long) keys.length * Long.BYTES + (long) sums.length * Float.BYTES + (long) count * 24;
    }

    /** An upper bound of what adding {@code rows} new rows of {@code dim} can add to {@link #bytes()}. */
    static long bytesFor(final int rows, final int dim) {
        return 2L * rows * (Long.BYTES + (long) Float.BYTES * dim) + 24L * rows;
    }

    /** Divides every sum by {@code participants} (MEAN aggregation). */
    void divide(final int participants) {
        for (int i = 0; i < count * dim; i++) {
            sums[i] /= participants;
        }
    }

    long[] keys() {
        return Arrays.copyOf(keys, count);
    }

    float[] gradients() {
        return Arrays.copyOf(sums, count * dim);
    }
}
