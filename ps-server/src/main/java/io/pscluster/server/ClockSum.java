package io.pscluster.server;

import java.util.Arrays;
import org.agrona.collections.Long2LongHashMap;

/**
 * The gradients of one SYNC clock for one table, summed per key in float64 in the order they are added, and rounded to
 * float32 once when read: so that the same rows added in the same order give the same bits, and a sum (or a MEAN) of
 * gradients each within float32's range never overflows on the way, whether a worker pushed a key many times within
 * the clock or many workers pushed it. A worker's sum is one; the workers' sums of a clock are added into another
 * ({@link #add(ClockSum)}) in float64 as they are.
 */
final class ClockSum {
    private static final long ABSENT = -1;

    private final int dim;
    private final Long2LongHashMap rowOf = new Long2LongHashMap(ABSENT);
    private long[] keys = new long[64];
    private double[] sums;

    private int count;

    ClockSum(final int dim) {
        this.dim = dim;
        this.sums = new double[64 * dim];
    }

    int dim() {
        return dim;
    }

    /** Adds {@code rowKeys.length} rows of {@code dim} gradients each. */
    void add(final long[] rowKeys, final float[] gradients) {
        for (int i = 0; i < rowKeys.length; i++) {
            final int to = rowOf(rowKeys[i]);
            final int from = i * dim;
            for (int d = 0; d < dim; d++) {
                sums[to + d] += gradients[from + d];
            }
        }
    }

    /** Adds every row of {@code other} (a worker's sum for the clock), in float64. */
    void add(final ClockSum other) {
        for (int i = 0; i < other.count; i++) {
            final int to = rowOf(other.keys[i]);
            final int from = i * dim;
            for (int d = 0; d < dim; d++) {
                sums[to + d] += other.sums[from + d];
            }
        }
    }

    /**
     * Where {@code key}'s sums begin, a new row if it has none yet. A new row holds -0.0, the identity of addition, so
     * that its first gradients are taken as they are, a -0.0 included (+0.0 would turn it into +0.0).
     */
    private int rowOf(final long key) {
        final long row = rowOf.get(key);
        if (row != ABSENT) {
            return (int) row * dim;
        }
        if (count == keys.length) {
            keys = Arrays.copyOf(keys, count * 2);
            sums = Arrays.copyOf(sums, count * 2 * dim);
        }
        keys[count] = key;
        rowOf.put(key, count);
        Arrays.fill(sums, count * dim, (count + 1) * dim, -0.0);
        return count++ * dim;
    }

    /** Heap bytes held: keys, sums and the index (an estimate of the index's share). */
    long bytes() {
        return (long) keys.length * Long.BYTES + (long) sums.length * Double.BYTES + (long) count * 24;
    }

    /** An upper bound of what adding {@code rows} new rows of {@code dim} can add to {@link #bytes()}. */
    static long bytesFor(final int rows, final int dim) {
        return 2L * rows * (Long.BYTES + (long) Double.BYTES * dim) + 24L * rows;
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

    /** The sums, each rounded to float32. */
    float[] gradients() {
        final float[] rounded = new float[count * dim];
        for (int i = 0; i < rounded.length; i++) {
            rounded[i] = (float) sums[i];
        }
        return rounded;
    }
}
