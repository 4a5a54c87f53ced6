package io.pscluster.bench;

import java.util.concurrent.CompletableFuture;

/**
 * One side of a comparison: the SDK against the cluster ({@link SdkTarget}), or raw gRPC carrying the same bytes
 * ({@link RawGrpcTarget}). Every workload drives both sides through this interface, so the two do the same thing
 * but for the transport.
 */
interface PushPullTarget {
    /** "ours" or "baseline", for progress lines and errors. */
    String side();

    /** Floats per key. */
    int dim();

    /** Sends one gradient row per key; completes when acknowledged. */
    CompletableFuture<Void> push(long[] keys, float[] gradients);

    /** The values of {@code keys}, row after row. */
    CompletableFuture<float[]> pull(long[] keys);

    /**
     * Blocks until every push acknowledged so far has been applied, so that work a side left behind is charged to
     * it and not to whoever runs next. Returns at once where nothing is applied later.
     */
    void awaitApplied() throws Exception;
}
