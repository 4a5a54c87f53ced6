package io.pscluster.bench;

import io.pscluster.worker.PsTable;
import java.util.concurrent.CompletableFuture;

/** Our side: the worker SDK's public API on one table. */
final class SdkTarget implements PushPullTarget {
    /** Waits until the cluster applied what it acknowledged; a no-op when the bench cannot see the shards. */
    @FunctionalInterface
    interface AppliedBarrier {
        void await() throws Exception;
    }

    private final PsTable table;
    private final AppliedBarrier applied;

    SdkTarget(final PsTable table, final AppliedBarrier applied) {
        this.table = table;
        this.applied = applied;
    }

    @Override
    public String side() {
        return "ours";
    }

    @Override
    public int dim() {
        return table.dim();
    }

    @Override
    public CompletableFuture<Void> push(final long[] keys, final float[] gradients) {
        return table.pushAsync(keys, gradients);
    }

    @Override
    public CompletableFuture<float[]> pull(final long[] keys) {
        return table.pullAsync(keys);
    }

    @Override
    public void awaitApplied() throws Exception {
        applied.await();
    }
}
