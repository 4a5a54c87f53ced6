package io.pscluster.bench;

import java.util.Arrays;

/**
 * Keys that look like hashed features (spread over all 64 bits, so over every slot) and are still distinct and
 * repeatable: key {@code i} of block {@code b} is a bijective mix of {@code b * 2^32 + i}.
 */
final class KeySets {
    private KeySets() {}

    static long[] block(final int block, final int count) {
        final long[] keys = new long[count];
        final long base = (long) block << 32;
        for (int i = 0; i < count; i++) {
            keys[i] = mix(base + i);
        }
        return keys;
    }

    static long[][] blocks(final int firstBlock, final int blocks, final int count) {
        final long[][] keys = new long[blocks][];
        for (int b = 0; b < blocks; b++) {
            keys[b] = block(firstBlock + b, count);
        }
        return keys;
    }

    /** Small finite gradients: SGD moves every weight a little per push, never to infinity over a run. */
    static float[] gradients(final int count) {
        final float[] gradients = new float[count];
        Arrays.fill(gradients, 0.001f);
        return gradients;
    }

    /** Stafford's variant 13 of the MurmurHash3 finalizer: a bijection on 64-bit values. */
    private static long mix(final long value) {
        long z = value;
        z = (z ^ (z >>> 30)) * 0xbf58476d1ce4e5b9L;
        z = (z ^ (z >>> 27)) * 0x94d049bb133111ebL;
        return z ^ (z >>> 31);
    }
}
