package io.pscluster.worker;

/**
 * Sums the gradient rows of duplicate keys in one push, so that the shard applies each key once per push (what an
 * optimizer with state, such as Adagrad or Adam, expects). An open-addressing index of positions (4 bytes per
 * slot, the key read back from the caller's array) keeps the pass cheap and allocation-light.
 */
final class KeyDedup {
    /** Unique keys and their summed gradients; the caller's arrays when there was nothing to merge. */
    record Merged(long[] keys, float[] gradients) {}

    private KeyDedup() {}

    static Merged merge(final long[] keys, final float[] gradients, final int dim) {
        if (keys.length < 2) {
            return new Merged(keys, gradients);
        }
        final int capacity = Integer.highestOneBit(Math.max(4, keys.length * 3 / 2)) << 1;
        final int mask = capacity - 1;
        final int[] index = new int[capacity];
        final int[] firstOf = new int[keys.length];
        int unique = 0;
        for (int i = 0; i < keys.length; i++) {
            final long key = keys[i];
            int at = mix(key) & mask;
            while (true) {
                final int entry = index[at];
                if (entry == 0) {
                    index[at] = i + 1;
                    firstOf[i] = i;
                    unique++;
                    break;
                }
                if (keys[entry - 1] == key) {
                    firstOf[i] = entry - 1;
                    break;
                }
                at = (at + 1) & mask;
            }
        }
        if (unique == keys.length) {
            return new Merged(keys, gradients);
        }
        final long[] mergedKeys = new long[unique];
        final float[] mergedGradients = new float[unique * dim];
        final int[] target = new int[keys.length];
        int next = 0;
        for (int i = 0; i < keys.length; i++) {
            final int first = firstOf[i];
            final int row;
            if (first == i) {
                row = next++;
                mergedKeys[row] = keys[i];
            } else {
                row = target[first];
            }
            target[i] = row;
            for (int d = 0; d < dim; d++) {
                mergedGradients[row * dim + d] += gradients[i * dim + d];
            }
        }
        return new Merged(mergedKeys, mergedGradients);
    }

    private static int mix(final long key) {
        final long z = key * 0x9e3779b97f4a7c15L;
        return (int) (z ^ (z >>> 32));
    }
}
