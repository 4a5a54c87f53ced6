package io.pscluster.worker;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.wire.LittleEndian;
import java.util.HashMap;
import java.util.Map;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

class KeyDedupTest {
    @Test
    void shouldSumRowsOfRepeatedKeysInFirstSeenOrder() {
        final KeyDedup.Encoded encoded = KeyDedup.encodePush(
                new long[] {7, 3, 7, -1, 3, 7},
                new float[] {1, 10, 2, 20, 4, 40, 8, 80, 16, 160, 32, 320},
                2,
                new int[] {0, 1, 2, 3, 4, 5});
        assertThat(encoded.count()).isEqualTo(3);
        assertThat(LittleEndian.decodeLongs(encoded.keys(), "keys")).containsExactly(7, 3, -1);
        assertThat(LittleEndian.decodeFloats(encoded.gradients(), "gradients"))
                .containsExactly(1 + 4 + 32, 10 + 40 + 320, 2 + 16, 20 + 160, 8, 80);
    }

    @Test
    void shouldEncodeOnlyTheGivenPositionsAndKeepEveryRowWhenNoKeyRepeats() {
        final long[] keys = {1, 2, 3, Long.MIN_VALUE, Long.MAX_VALUE};
        final float[] gradients = {1, 2, 3, 4, 5};
        final KeyDedup.Encoded encoded = KeyDedup.encodePush(keys, gradients, 1, new int[] {4, 0, 3});
        assertThat(LittleEndian.decodeLongs(encoded.keys(), "keys")).containsExactly(Long.MAX_VALUE, 1, Long.MIN_VALUE);
        assertThat(LittleEndian.decodeFloats(encoded.gradients(), "gradients")).containsExactly(5, 1, 4);
    }

    @Test
    void shouldCopyEveryRowOfAPushWithoutRepeatsIntoItsPlaceNarrowOrWide() {
        final SplittableRandom random = new SplittableRandom(5);
        for (final int dim : new int[] {1, 2, KeyDedup.BULK_COPY_DIM - 1, KeyDedup.BULK_COPY_DIM, 64}) {
            final int n = 1_000;
            final long[] keys = new long[n];
            final float[] gradients = new float[n * dim];
            for (int i = 0; i < n; i++) {
                keys[i] = i * 0x9E3779B97F4A7C15L;
            }
            for (int i = 0; i < gradients.length; i++) {
                gradients[i] = (float) random.nextDouble(-1, 1);
            }
            // Every other key, backwards.
            final int[] positions = new int[n / 2];
            for (int k = 0; k < positions.length; k++) {
                positions[k] = n - 1 - 2 * k;
            }
            final KeyDedup.Encoded encoded = KeyDedup.encodePush(keys, gradients, dim, positions);
            final float[] rows = LittleEndian.decodeFloats(encoded.gradients(), "gradients");
            assertThat(encoded.count()).isEqualTo(positions.length);
            assertThat(rows).hasSize(positions.length * dim);
            for (int k = 0; k < positions.length; k++) {
                for (int d = 0; d < dim; d++) {
                    if (rows[k * dim + d] != gradients[positions[k] * dim + d]) {
                        throw new AssertionError("dim " + dim + ", row " + k + ", value " + d + ": " + rows[k * dim + d]
                                + " instead of " + gradients[positions[k] * dim + d]);
                    }
                }
            }
        }
    }

    @Test
    void shouldAgreeWithAMapOnRandomKeysWithManyRepeats() {
        final SplittableRandom random = new SplittableRandom(3);
        final int n = 100_000;
        final long[] keys = new long[n];
        final float[] gradients = new float[n];
        final int[] positions = new int[n];
        final Map<Long, Float> expected = new HashMap<>();
        for (int i = 0; i < n; i++) {
            keys[i] = random.nextLong(5_000) * 0x100000001L;
            gradients[i] = random.nextInt(-8, 8);
            positions[i] = i;
            expected.merge(keys[i], gradients[i], Float::sum);
        }
        final KeyDedup.Encoded encoded = KeyDedup.encodePush(keys, gradients, 1, positions);
        final long[] unique = LittleEndian.decodeLongs(encoded.keys(), "keys");
        final float[] sums = LittleEndian.decodeFloats(encoded.gradients(), "gradients");
        assertThat(unique).hasSize(expected.size());
        for (int i = 0; i < unique.length; i++) {
            assertThat(sums[i]).isEqualTo(expected.get(unique[i]));
        }
    }
}
