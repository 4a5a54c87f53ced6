package io.pscluster.wire;

import java.util.concurrent.ThreadLocalRandom;

/**
 * The wait before a retry, shared by every retry loop (SDK requests, a shard's restore orders): exponential from a
 * first wait, capped, and jittered uniformly in {@code [b/2, b]} so that clients or shards that failed together do not
 * all retry together.
 */
public final class Backoff {
    private Backoff() {}

    /**
     * The wait after {@code failures} failed attempts (0 for the first retry): uniform in [b/2, b] with
     * {@code b = min(maxMs, firstMs * 2^failures)}.
     */
    public static long jitteredMs(final long firstMs, final long maxMs, final int failures) {
        final long ceiling = Math.min(maxMs, firstMs << Math.min(Math.max(failures, 0), 30));
        final long floor = ceiling / 2;
        return floor + ThreadLocalRandom.current().nextLong(ceiling - floor + 1);
    }
}
