package io.pscluster.checkpoint;

import java.util.concurrent.atomic.AtomicLong;

/**
 * How far one long operation (a checkpoint write, a restore, a verification, an export) has come: its phase, rows and
 * bytes done against their totals (0: not known), and whether it ended, and how. What "bytes" counts is the
 * operation's to say (bytes of files read or checked, or of rows copied out); done and total always count the same.
 *
 * <p>Counters are meant to be cheap enough to update once per chunk or batch: one atomic add each. Every update has
 * release semantics and {@link #view()} reads with acquire semantics, so a view never shows a phase older than the
 * counts that came after it; the fields of a view are read one by one, so it may show a count of a step whose phase
 * it does not show yet. Any thread may update, any thread may read.
 */
public final class Progress {
    private volatile String phase;
    private final AtomicLong rowsDone = new AtomicLong();
    private final AtomicLong bytesDone = new AtomicLong();
    private final AtomicLong rowsTotal = new AtomicLong();
    private final AtomicLong bytesTotal = new AtomicLong();
    private volatile boolean ended;
    private volatile String failure;

    public Progress(final String phase) {
        this.phase = phase;
    }

    /** The phase from now on (e.g. "cut", "writing", "verifying", "loading"). */
    public void phase(final String value) {
        phase = value;
    }

    public void addRows(final long rows) {
        rowsDone.addAndGet(rows);
    }

    public void addBytes(final long bytes) {
        bytesDone.addAndGet(bytes);
    }

    /** Adds to the totals (a file or table found to be part of the work). */
    public void addTotals(final long rows, final long bytes) {
        rowsTotal.addAndGet(rows);
        bytesTotal.addAndGet(bytes);
    }

    /** The operation ended well: phase "done". */
    public void succeeded() {
        phase = "done";
        ended = true;
    }

    /** The operation ended with {@code why}: phase "failed". */
    public void failed(final String why) {
        failure = why == null ? "failed" : why;
        phase = "failed";
        ended = true;
    }

    public View view() {
        final boolean hasEnded = ended;
        return new View(
                phase,
                rowsDone.get(),
                rowsTotal.get(),
                bytesDone.get(),
                bytesTotal.get(),
                hasEnded,
                failure == null ? "" : failure);
    }

    /**
     * One reading.
     *
     * @param ended true once the operation succeeded or failed ({@code failure} non-empty).
     */
    public record View(
            String phase,
            long rowsDone,
            long rowsTotal,
            long bytesDone,
            long bytesTotal,
            boolean ended,
            String failure) {
        public boolean failed() {
            return !failure.isEmpty();
        }
    }
}
