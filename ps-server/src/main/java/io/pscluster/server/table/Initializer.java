package io.pscluster.server.table;

import io.pscluster.proto.v1.InitializerSpec;
import org.agrona.MutableDirectBuffer;

/**
 * The initial values of a row, a pure function of (seed, key, element): every shard, every restart and every run
 * produce the same row for the same key, which is what lets a sparse key move between shards or be read before it
 * was ever written.
 */
final class Initializer {
    private final InitializerSpec spec;

    Initializer(final InitializerSpec spec) {
        this.spec = spec;
    }

    /** Writes the initial {@code dim} float values of {@code key} at byte offset {@code offset} of {@code target}. */
    void fill(final long key, final MutableDirectBuffer target, final int offset, final int dim) {
        switch (spec.getKind()) {
            case UNIFORM -> {
                final float scale = spec.getScale();
                for (int i = 0; i < dim; i++) {
                    // Rounding to float can reach +scale when the draw is within 2^-26 of 1: keep the bound open.
                    final float value = Math.min((float) ((2 * unit(key, i) - 1) * scale), Math.nextDown(scale));
                    target.putFloat(offset + 4 * i, value);
                }
            }
            case NORMAL -> {
                for (int i = 0; i < dim; i++) {
                    // Box-Muller from two independent uniforms of the same (key, element).
                    final double u1 = Math.max(unit(key, 2L * i), Double.MIN_NORMAL);
                    final double u2 = unit(key, 2L * i + 1);
                    target.putFloat(offset + 4 * i, (float)
                            (Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2) * spec.getScale()));
                }
            }
            default -> target.setMemory(offset, 4 * dim, (byte) 0);
        }
    }

    /** A uniform double in [0, 1) from (seed, key, element) through two SplitMix64 rounds. */
    private double unit(final long key, final long element) {
        final long z = mix(mix(spec.getSeed() ^ mix(key)) + element);
        return (z >>> 11) * 0x1.0p-53;
    }

    private static long mix(long z) {
        z += 0x9e3779b97f4a7c15L;
        z = (z ^ (z >>> 30)) * 0xbf58476d1ce4e5b9L;
        z = (z ^ (z >>> 27)) * 0x94d049bb133111ebL;
        return z ^ (z >>> 31);
    }
}
