package io.pscluster.export;

import java.io.IOException;
import java.util.Arrays;
import org.agrona.collections.Long2LongHashMap;

/**
 * The sparse rows of a range of slots as a checkpoint chain leaves them: rows are {@link #put} and keys
 * {@link #remove}d in the chain's order, so a later write of a key replaces an earlier one and a removed key is gone
 * unless written again; {@link #forEachSorted} then hands out what is left, slot by slot, by key within a slot.
 *
 * <p>Each put takes a new record in an arena unless the key is present (then its record is overwritten), so the
 * arena never holds more records than the puts since {@link #clear()}; the caller sizes it by the rows its files
 * hold for those slots. Heap: per record the {@code dim} values (when kept), key, slot and link, plus the index
 * (Agrona's open-addressing {@link Long2LongHashMap}) and one sort array. Not thread-safe.
 */
final class MergedRows {
    private static final long MISSING = -1;
    private static final float LOAD_FACTOR = 0.65f;

    /** What an entry costs on the heap, at most, with {@code dim} values kept: for sizing groups of slots. */
    static long bytesPerRow(final int dim) {
        // values, key, slot, link, sort key, and the index's two longs per entry at its load factor (doubling slack).
        return 4L * dim + 8 + 4 + 4 + 8 + (long) Math.ceil(2 * 16 / LOAD_FACTOR);
    }

    private final int dim;
    private final boolean keepValues;
    private final Long2LongHashMap index;
    private final long[] keys;
    private final int[] slots;
    private final int[] links;
    private final float[] values;
    private long[] sorted = new long[0];
    private int used;

    /**
     * @param capacity the most puts between two {@link #clear()}s.
     * @param keepValues false when only the keys matter (counting), so no values are copied or held.
     */
    MergedRows(final int capacity, final int dim, final boolean keepValues) {
        this.dim = dim;
        this.keepValues = keepValues;
        this.index = new Long2LongHashMap(Math.max(8, capacity), LOAD_FACTOR, MISSING);
        this.keys = new long[capacity];
        this.slots = new int[capacity];
        this.links = new int[capacity];
        this.values = new float[keepValues ? Math.multiplyExact(capacity, dim) : 0];
    }

    void clear() {
        index.clear();
        used = 0;
    }

    /** The keys present. */
    int size() {
        return index.size();
    }

    void remove(final long key) {
        index.remove(key);
    }

    /**
     * Sets {@code key}'s row (the first {@code dim} floats of {@code record}) as written by link {@code link} of the
     * chain (links are put in order, each after its removals).
     *
     * @return false, changing nothing, if the same link already wrote the key (a checkpoint holds a key once: damage).
     * @throws IllegalStateException if more rows are put than the capacity (the caller's sizing is wrong).
     */
    boolean put(final int slot, final long key, final float[] record, final int link) {
        final long found = index.get(key);
        final int row;
        if (found == MISSING) {
            if (used == keys.length) {
                throw new IllegalStateException("more rows than the " + keys.length + " the files' indexes list");
            }
            row = used++;
            index.put(key, row);
            keys[row] = key;
            slots[row] = slot;
        } else {
            row = (int) found;
            if (links[row] == link) {
                return false;
            }
        }
        links[row] = link;
        if (keepValues) {
            System.arraycopy(record, 0, values, row * dim, dim);
        }
        return true;
    }

    /** Receives the rows left, in order. */
    interface RowVisitor {
        /**
         * @param values the row's values at {@code offset} ({@code dim} floats); the array is the arena's, read only.
         */
        void accept(long key, float[] values, int offset) throws IOException;
    }

    /**
     * Visits every row present, slots ascending (each is in {@code [fromSlot, toSlot)}), keys ascending (signed)
     * within a slot: the same rows give the same order however a chain reached them.
     */
    void forEachSorted(final int fromSlot, final int toSlot, final RowVisitor visitor) throws IOException {
        final int[] ends = new int[toSlot - fromSlot + 1];
        for (int row = 0; row < used; row++) {
            if (index.get(keys[row]) == row) {
                ends[slots[row] - fromSlot + 1]++;
            }
        }
        for (int s = 1; s < ends.length; s++) {
            ends[s] += ends[s - 1];
        }
        if (sorted.length < ends[ends.length - 1]) {
            sorted = new long[Math.max(ends[ends.length - 1], Math.min(keys.length, 2 * sorted.length))];
        }
        final int[] next = Arrays.copyOf(ends, ends.length - 1);
        for (int row = 0; row < used; row++) {
            if (index.get(keys[row]) == row) {
                sorted[next[slots[row] - fromSlot]++] = keys[row];
            }
        }
        for (int s = 0; s < next.length; s++) {
            Arrays.sort(sorted, ends[s], next[s]);
        }
        final int present = ends[ends.length - 1];
        for (int i = 0; i < present; i++) {
            final long key = sorted[i];
            visitor.accept(key, values, keepValues ? (int) index.get(key) * dim : 0);
        }
    }
}
