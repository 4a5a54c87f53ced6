package io.pscluster.server;

import java.util.Arrays;
import org.agrona.collections.Long2LongHashMap;

/**
 * The gradients of one SYNC clock for one table, summed per key in the order they are added: a key's first row is
 * copied, later ones are added element by element, so that the same rows added in the same order give the same
 * bits. A worker's sum is kept in float32; the sum of the workers' sums ({@link #wide}) in float64, rounded once when
 * read, so that a MEAN of gradients each within float32's range never overflows on the way.
 */
final class ClockSum {
    private static final long ABSENT = -1;

    private final int dim;
    private final Long2LongHashMap rowOf = new Long2LongHashMap(ABSENT);
    private long[] keys = new long[64];
    private float[] sums;
    /** The sums in float64 instead of {@link #sums} (null: float32). */
    private double[] wideSums;

    private int count;

    ClockSum(final int dim) {
        this.dim = dim;
        this.sums = new float[64 * dim];
    }

    /** A sum kept in float64 (the workers' sums of a clock, added when it is applied). */
    static ClockSum wide(final int dim) {
        final ClockSum sum = new ClockSum(dim);
        sum.sums = null;
        sum.wideSums = new double[64 * dim];
        return sum;
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
            final int to;
            if (row == ABSENT) {
                if (count == keys.length) {
                    keys = Arrays.copyOf(keys, count * 2);
                    if (wideSums == null) {
                        sums = Arrays.copyOf(sums, count * 2 * dim);
                    } else {
                        wideSums = Arrays.copyOf(wideSums, count * 2 * dim);
                    }
                }
                keys[count] = key;
                rowOf.put(key, count);
                to = count * dim;
                count++;
                if (wideSums == null) {
                    System.arraycopy(gradients, from, sums, to, dim);
                    continue;
                }
            } else {
                to = (int) row * dim;
            }
            if (wideSums == null) {
                for (int d = 0; d < dim; d++) {
                    sums[to + d] += gradients[from + d];
                }
            } else {
                for (int d = 0; d < dim; d++) {
                    wideSums[to + d] += gradients[from + d];
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
        final long values = wideSums == null ? (long) sums.length * Float.BYTES : (long) wideSums.length * Double.BYTES;
        return (long) keys.length * Long.BYTES + values + (long) count * 24;
    }

    /** An upper bound of what adding {@code rows} new rows of {@code dim} can add to {@link #bytes()}. */
    static long bytesFor(final int rows, final int dim) {
        return 2L * rows * (Long.BYTES + (long) Float.BYTES * dim) + 24L * rows;
    }

    /** Divides every sum by {@code participants} (MEAN aggregation). */
    void divide(final int participants) {
        for (int i = 0; i < count * dim; i++) {
            if (wideSums == null) {
                sums[i] /= participants;
            } else {
                wideSums[i] /= participants;
            }
        }
    }

    long[] keys() {
        return Arrays.copyOf(keys, count);
    }

    float[] gradients() {
        if (wideSums == null) {
            return Arrays.copyOf(sums, count * dim);
        }
        final float[] rounded = new float[count * dim];
        for (int i = 0; i < rounded.length; i++) {
            rounded[i] = (float) wideSums[i];
        }
        return rounded;
    }
}
