package io.pscluster.proxy;

import io.pscluster.checkpoint.Progress;
import io.pscluster.proto.v1.OperationProgressResponse;
import io.pscluster.proto.v1.ShardOperationProgress;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReferenceArray;

/**
 * The checkpoint or restore the proxy runs now (or ran last), shard by shard, as {@code AdminService.OperationProgress}
 * answers it. The coordinator begins an operation and sets its phases; the fan-out records each shard's latest
 * progress as its polls come back. One operation at a time (the coordinator runs one at a time); readers see a
 * consistent-enough picture: each shard's progress is one immutable record, published with release semantics.
 */
final class OperationBoard {
    /**
     * One shard's progress as its latest poll read it; two readings that are equal mean it did not move.
     *
     * @param work any other count that moves while the shard works (rows copied out of its tables before they reach
     *     a file), so that filling a large part buffer is not taken for a stall.
     */
    record ShardProgress(
            String phase,
            long rowsDone,
            long rowsTotal,
            long bytesDone,
            long bytesTotal,
            boolean cutMarked,
            long work,
            boolean done) {
        static final ShardProgress NONE = new ShardProgress("starting", 0, 0, 0, 0, false, 0, false);
    }

    /** The shards of a fan-out, in its order, with their latest progress and when it last moved. */
    private record Shards(List<String> ids, AtomicReferenceArray<ShardProgress> progress, long[] movedNanos) {
        static Shards of(final List<String> ids, final long nowNanos) {
            final Shards shards =
                    new Shards(List.copyOf(ids), new AtomicReferenceArray<>(ids.size()), new long[ids.size()]);
            for (int i = 0; i < ids.size(); i++) {
                shards.progress.set(i, ShardProgress.NONE);
                shards.movedNanos[i] = nowNanos;
            }
            return shards;
        }
    }

    /** One operation: what, which checkpoint, the shards, and the proxy's own phase and counters. */
    static final class Operation {
        final String kind;
        private volatile long checkpointId;
        final long startNanos = System.nanoTime();
        private volatile Shards shards = Shards.of(List.of(), startNanos);
        /** The proxy's own work (verifying a checkpoint before a restore); null while the shards work. */
        private volatile Progress local;

        private volatile String phase = "starting";
        private volatile boolean ended;
        private volatile String error = "";

        Operation(final String kind, final long checkpointId) {
            this.kind = kind;
            this.checkpointId = checkpointId;
        }

        void phase(final String value) {
            phase = value;
        }

        /** The checkpoint, once chosen (a restore of "the latest" begins with 0). */
        void checkpointId(final long value) {
            checkpointId = value;
        }

        /** Counts the proxy's own work for phase {@code value} (shown instead of the shards' until the fan-out). */
        Progress local(final String value) {
            final Progress counters = new Progress(value);
            local = counters;
            phase = value;
            return counters;
        }

        /** The fan-out to {@code shardIds} begins in phase {@code value}: their counters are shown from now on. */
        void fanOut(final String value, final List<String> shardIds) {
            shards = Shards.of(shardIds, System.nanoTime());
            local = null;
            phase = value;
        }

        /** Shard {@code index}'s progress as a poll read it; {@code lastMovedNanos} is when it last moved. */
        void shard(final int index, final ShardProgress value, final long lastMovedNanos) {
            final Shards now = shards;
            synchronized (now) {
                now.movedNanos[index] = lastMovedNanos;
            }
            now.progress.set(index, value);
        }

        void succeeded() {
            phase = "done";
            ended = true;
        }

        void failed(final String why) {
            error = why == null ? "failed" : why;
            phase = "failed";
            ended = true;
        }

        OperationProgressResponse answer() {
            final long now = System.nanoTime();
            final OperationProgressResponse.Builder answer = OperationProgressResponse.newBuilder()
                    .setKnown(true)
                    .setKind(kind)
                    .setCheckpointId(checkpointId)
                    .setPhase(phase)
                    .setShards(shards.ids().size())
                    .setElapsedMillis(TimeUnit.NANOSECONDS.toMillis(now - startNanos))
                    .setDone(ended && error.isEmpty())
                    .setFailed(!error.isEmpty())
                    .setError(error);
            long rowsDone = 0;
            long rowsTotal = 0;
            long bytesDone = 0;
            long bytesTotal = 0;
            int cut = 0;
            int done = 0;
            final Shards of = shards;
            for (int i = 0; i < of.ids().size(); i++) {
                final ShardProgress shard = of.progress().get(i);
                final long moved;
                synchronized (of) {
                    moved = of.movedNanos()[i];
                }
                rowsDone += shard.rowsDone();
                rowsTotal += shard.rowsTotal();
                bytesDone += shard.bytesDone();
                bytesTotal += shard.bytesTotal();
                // A shard done writing has cut, also when no poll caught it between the two (its last poll failed, or
                // it was quicker than the first).
                final boolean shardCut = shard.cutMarked() || shard.done();
                cut += shardCut ? 1 : 0;
                done += shard.done() ? 1 : 0;
                answer.addShardProgress(ShardOperationProgress.newBuilder()
                        .setShardId(of.ids().get(i))
                        .setPhase(shard.phase())
                        .setRowsDone(shard.rowsDone())
                        .setRowsTotal(shard.rowsTotal())
                        .setBytesDone(shard.bytesDone())
                        .setBytesTotal(shard.bytesTotal())
                        .setCutMarked(shardCut)
                        .setDone(shard.done())
                        .setStillMillis(TimeUnit.NANOSECONDS.toMillis(now - moved)));
            }
            final Progress counters = local;
            if (counters != null) {
                final Progress.View view = counters.view();
                rowsDone = view.rowsDone();
                rowsTotal = view.rowsTotal();
                bytesDone = view.bytesDone();
                bytesTotal = view.bytesTotal();
            }
            if (kind.equals("checkpoint")
                    && answer.getPhase().equals("cut")
                    && cut == of.ids().size()
                    && cut > 0) {
                // Every shard has cut: what is left is writing the rows.
                answer.setPhase("writing");
            }
            return answer.setRowsDone(rowsDone)
                    .setRowsTotal(rowsTotal)
                    .setBytesDone(bytesDone)
                    .setBytesTotal(bytesTotal)
                    .setShardsCut(cut)
                    .setShardsDone(done)
                    .build();
        }
    }

    private volatile Operation current;

    /** Begins an operation ("checkpoint", "restore"); it replaces the last one. */
    Operation begin(final String kind, final long checkpointId) {
        final Operation operation = new Operation(kind, checkpointId);
        current = operation;
        return operation;
    }

    OperationProgressResponse answer() {
        final Operation operation = current;
        return operation == null
                ? OperationProgressResponse.newBuilder().setKnown(false).build()
                : operation.answer();
    }
}
