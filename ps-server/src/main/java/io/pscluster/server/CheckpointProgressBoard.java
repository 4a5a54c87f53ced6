package io.pscluster.server;

import io.pscluster.checkpoint.Progress;
import io.pscluster.proto.v1.CheckpointProgressResponse;
import io.pscluster.proto.v1.RestoreProgress;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The shard's checkpoint writes and restores in progress, and the last few that ended, as {@code CheckpointProgress}
 * answers them. The operations update their own counters ({@link Progress}: an atomic add per batch or part); this
 * board only keeps them findable, under its monitor, which no counter update takes.
 */
final class CheckpointProgressBoard {
    /** Writes and restores remembered after they end, so that a poll just after the end still finds them. */
    private static final int KEEP = 4;

    /** One checkpoint write on this shard. */
    static final class Write {
        final long checkpointId;
        final Progress progress = new Progress("cut");
        final AtomicLong rowsCopied = new AtomicLong();
        private volatile boolean cutMarked;

        Write(final long checkpointId) {
            this.checkpointId = checkpointId;
        }

        /**
         * The cut is taken: every partition writer has run the cut's control task. Call after the totals are set; the
         * store has release semantics, so a poll that sees the cut sees the totals.
         */
        void cutMarked() {
            progress.phase("writing");
            cutMarked = true;
        }

        boolean isCutMarked() {
            return cutMarked;
        }
    }

    /**
     * One restore on this shard; the checkpoint it loads may change (a restore order falling back), and each phase
     * (verifying a checkpoint, loading it) counts afresh.
     */
    static final class Restore {
        private volatile long checkpointId;
        final int slots;
        private volatile Progress progress = new Progress("verifying");
        final long startNanos = System.nanoTime();

        Restore(final long checkpointId, final int slots) {
            this.checkpointId = checkpointId;
            this.slots = slots;
        }

        long checkpointId() {
            return checkpointId;
        }

        void checkpointId(final long value) {
            checkpointId = value;
        }

        Progress progress() {
            return progress;
        }

        /** Starts counting {@code phase} afresh; returns its counters. */
        Progress next(final String phase) {
            final Progress next = new Progress(phase);
            progress = next;
            return next;
        }
    }

    private final Deque<Write> writes = new ArrayDeque<>();
    private final Deque<Restore> restores = new ArrayDeque<>();

    synchronized Write beginWrite(final long checkpointId) {
        writes.removeIf(write -> write.checkpointId == checkpointId);
        final Write write = new Write(checkpointId);
        writes.addLast(write);
        forgetEnded(writes, w -> w.progress);
        return write;
    }

    synchronized Restore beginRestore(final long checkpointId, final int slots) {
        final Restore restore = new Restore(checkpointId, slots);
        restores.addLast(restore);
        forgetEnded(restores, Restore::progress);
        return restore;
    }

    /** Drops the oldest ended entries beyond {@link #KEEP}; entries still running always stay. */
    private static <T> void forgetEnded(final Deque<T> entries, final java.util.function.Function<T, Progress> of) {
        int ended = 0;
        for (final T entry : entries) {
            if (of.apply(entry).view().ended()) {
                ended++;
            }
        }
        for (final java.util.Iterator<T> it = entries.iterator(); it.hasNext() && ended > KEEP; ) {
            if (of.apply(it.next()).view().ended()) {
                it.remove();
                ended--;
            }
        }
    }

    synchronized CheckpointProgressResponse answer(final long checkpointId) {
        final CheckpointProgressResponse.Builder answer =
                CheckpointProgressResponse.newBuilder().setCheckpointId(checkpointId);
        for (final Write write : writes) {
            if (write.checkpointId == checkpointId) {
                // The cut flag first: it is set after the totals, so totals read after it are the cut's.
                final boolean cut = write.isCutMarked();
                final Progress.View view = write.progress.view();
                answer.setKnown(true)
                        .setCutMarked(cut)
                        .setPhase(view.phase())
                        .setRowsWritten(view.rowsDone())
                        .setBytesWritten(view.bytesDone())
                        .setRowsTotal(view.rowsTotal())
                        .setBytesTotal(view.bytesTotal())
                        .setRowsCopied(write.rowsCopied.get())
                        .setDone(view.ended() && !view.failed())
                        .setFailed(view.failed())
                        .setError(view.failure());
            }
        }
        final long now = System.nanoTime();
        for (final Restore restore : restores) {
            final Progress.View view = restore.progress().view();
            answer.addRestores(RestoreProgress.newBuilder()
                    .setCheckpointId(restore.checkpointId())
                    .setSlots(restore.slots)
                    .setPhase(view.phase())
                    .setRowsDone(view.rowsDone())
                    .setRowsTotal(view.rowsTotal())
                    .setBytesDone(view.bytesDone())
                    .setBytesTotal(view.bytesTotal())
                    .setDone(view.ended() && !view.failed())
                    .setFailed(view.failed())
                    .setError(view.failure())
                    .setElapsedMillis(TimeUnit.NANOSECONDS.toMillis(now - restore.startNanos)));
        }
        return answer.build();
    }

    /** Restores running now (tests, status). */
    synchronized List<Restore> running() {
        final List<Restore> running = new ArrayList<>();
        restores.forEach(restore -> {
            if (!restore.progress().view().ended()) {
                running.add(restore);
            }
        });
        return running;
    }
}
