package io.pscluster.bench;

/**
 * The scale workload's baseline for creating rows: the simplest index that does the job, on the heap and for one
 * thread. Open addressing with linear probing over one {@code int[]} of row + 1 (0: empty); each row's key in a
 * {@code long[]} and its value in a {@code float[]}, by row; the index is doubled and rebuilt whole once it is 70%
 * full (what PartitionStore did before it split its index into segments). What the table does on top (off-heap
 * records, seqlocks, fingerprints, deletes, the row budget, bounded growth, staged lookups) is what a ratio against
 * this shows; its longest batch shows the stall a whole-index rebuild costs.
 *
 * <p>A general-purpose map would do: Agrona's {@code Long2LongHashMap} takes 16 bytes per entry and, while it
 * doubles to 50M entries, 3 GiB of heap at once, more than {@code psctl bench}'s 4 GiB leave beside the keys.
 */
final class PlainRowIndex {
    private static final int GROW_PERCENT = 70;

    private final long[] keys;
    private final float[] values;
    private int[] index = new int[16];
    private int rows;

    /** Room for {@code maxRows} rows; the index grows from 16 entries as rows are added. */
    PlainRowIndex(final int maxRows) {
        keys = new long[maxRows];
        values = new float[maxRows];
    }

    /** Creates the row of {@code key} (value 0, then one SGD step of {@code gradient}) unless it has one. */
    void insert(final long key, final float gradient) {
        final int[] entries = index;
        final int mask = entries.length - 1;
        int i = hash(key) & mask;
        while (entries[i] != 0) {
            if (keys[entries[i] - 1] == key) {
                return;
            }
            i = (i + 1) & mask;
        }
        final int row = rows++;
        keys[row] = key;
        values[row] = -TableFixture.LEARNING_RATE * gradient;
        entries[i] = row + 1;
        if (rows * 100L > entries.length * (long) GROW_PERCENT) {
            grow();
        }
    }

    int rows() {
        return rows;
    }

    private void grow() {
        final int[] entries = new int[index.length * 2];
        final int mask = entries.length - 1;
        for (final int entry : index) {
            if (entry != 0) {
                int i = hash(keys[entry - 1]) & mask;
                while (entries[i] != 0) {
                    i = (i + 1) & mask;
                }
                entries[i] = entry;
            }
        }
        index = entries;
    }

    /** A Fibonacci multiply, folded (random keys need no more). */
    private static int hash(final long key) {
        final long z = key * 0x9e3779b97f4a7c15L;
        return (int) (z ^ (z >>> 32));
    }
}
