package io.pscluster.worker;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.HashMap;
import java.util.Map;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

class KeyDedupTest {
    @Test
    void shouldSumRowsOfRepeatedKeysInFirstSeenOrder() {
        final KeyDedup.Merged merged = KeyDedup.merge(
                new long[] {7, 3, 7, -1, 3, 7}, new float[] {1, 10, 2, 20, 4, 40, 8, 80, 16, 160, 32, 320}, 2);
        assertThat(merged.keys()).containsExactly(7, 3, -1);
        assertThat(merged.gradients()).containsExactly(1 + 4 + 32, 10 + 40 + 320, 2 + 16, 20 + 160, 8, 80);
    }

    @Test
    void shouldReturnTheCallersArraysWhenNoKeyRepeats() {
        final long[] keys = {1, 2, 3, Long.MIN_VALUE, Long.MAX_VALUE};
        final float[] gradients = {1, 2, 3, 4, 5};
        final KeyDedup.Merged merged = KeyDedup.merge(keys, gradients, 1);
        assertThat(merged.keys()).isSameAs(keys);
        assertThat(merged.gradients()).isSameAs(gradients);
    }

    @Test
    void shouldAgreeWithAMapOnRandomKeysWithManyRepeats() {
        final SplittableRandom random = new SplittableRandom(3);
        final int n = 100_000;
        final long[] keys = new long[n];
        final float[] gradients = new float[n];
        final Map<Long, Float> expected = new HashMap<>();
        for (int i = 0; i < n; i++) {
            keys[i] = random.nextLong(5_000) * 0x100000001L;
            gradients[i] = random.nextInt(-8, 8);
            expected.merge(keys[i], gradients[i], Float::sum);
        }
        final KeyDedup.Merged merged = KeyDedup.merge(keys, gradients, 1);
        assertThat(merged.keys()).hasSize(expected.size());
        for (int i = 0; i < merged.keys().length; i++) {
            assertThat(merged.gradients()[i]).isEqualTo(expected.get(merged.keys()[i]));
        }
    }
}
