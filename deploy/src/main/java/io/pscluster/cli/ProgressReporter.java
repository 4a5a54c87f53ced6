package io.pscluster.cli;

import io.pscluster.checkpoint.Progress;
import java.io.PrintWriter;
import java.util.Locale;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;

/**
 * Prints a long operation's progress on standard error about once a second while it runs, and one last line when it
 * is closed after the operation ended:
 *
 * <pre>
 * checkpoint 12: writing 45.2 MiB of 120.0 MiB (37%), 1234567 of 3000000 rows, 15.1 MiB/s, ETA 5s; shards cut 3/3
 * </pre>
 *
 * <p>The rate is over the current phase (from when this reporter first saw it), the ETA what is left of the phase's
 * bytes at that rate; both are left out until they can be told. A reading the source cannot give (null) prints
 * nothing. Lines are plain (no carriage returns), so they read the same in a terminal, a log or a test.
 */
final class ProgressReporter implements AutoCloseable {
    /**
     * One reading of an operation.
     *
     * @param what e.g. "checkpoint 12", "verify checkpoint 3".
     * @param extra appended after a semicolon (e.g. "shards cut 2/3"); empty for none.
     */
    record Reading(
            String what,
            String phase,
            long rowsDone,
            long rowsTotal,
            long bytesDone,
            long bytesTotal,
            boolean ended,
            String extra) {
        static Reading of(final String what, final Progress.View view) {
            return new Reading(
                    what,
                    view.phase(),
                    view.rowsDone(),
                    view.rowsTotal(),
                    view.bytesDone(),
                    view.bytesTotal(),
                    view.ended(),
                    "");
        }
    }

    static final long PERIOD_MS = 1_000;

    private final PrintWriter err;
    private final Supplier<Reading> source;
    private final ScheduledExecutorService timer;
    // Guarded by this: the phase the rate is measured over, and where it began.
    private String phase;
    private long phaseStartNanos;
    private long phaseStartBytes;
    private final long startNanos = System.nanoTime();

    private ProgressReporter(final PrintWriter err, final Supplier<Reading> source, final boolean quiet) {
        this.err = err;
        this.source = source;
        this.timer = quiet
                ? null
                : Executors.newSingleThreadScheduledExecutor(runnable -> {
                    final Thread thread = new Thread(runnable, "psctl-progress");
                    thread.setDaemon(true);
                    return thread;
                });
        if (timer != null) {
            timer.scheduleAtFixedRate(this::tick, 0, PERIOD_MS, TimeUnit.MILLISECONDS);
        }
    }

    /** Starts printing readings of {@code source} to {@code err}; nothing at all when {@code quiet}. */
    static ProgressReporter start(final PrintWriter err, final Supplier<Reading> source, final boolean quiet) {
        return new ProgressReporter(err, source, quiet);
    }

    private void tick() {
        final Reading reading;
        try {
            reading = source.get();
        } catch (RuntimeException e) {
            return; // a failed poll prints nothing; the operation's own outcome says what went wrong
        }
        if (reading != null && !reading.ended()) {
            print(reading);
        }
    }

    private synchronized void print(final Reading reading) {
        final long now = System.nanoTime();
        if (!reading.phase().equals(phase)) {
            phase = reading.phase();
            phaseStartNanos = now;
            phaseStartBytes = reading.bytesDone();
        }
        err.println(line(reading, (now - phaseStartNanos) / 1e9, reading.bytesDone() - phaseStartBytes));
        err.flush();
    }

    /**
     * The line for {@code reading}, {@code bytesInPhase} of whose bytes were done in the last {@code secondsInPhase}.
     */
    static String line(final Reading reading, final double secondsInPhase, final long bytesInPhase) {
        final StringBuilder line =
                new StringBuilder(reading.what()).append(": ").append(reading.phase());
        if (reading.bytesDone() > 0 || reading.bytesTotal() > 0) {
            line.append(' ').append(CheckpointCommand.size(reading.bytesDone()));
            if (reading.bytesTotal() > 0) {
                line.append(" of ")
                        .append(CheckpointCommand.size(reading.bytesTotal()))
                        .append(String.format(
                                Locale.ROOT,
                                " (%d%%)",
                                Math.min(100, 100 * reading.bytesDone() / reading.bytesTotal())));
            }
            line.append(", ").append(reading.rowsDone());
            if (reading.rowsTotal() > 0) {
                line.append(" of ").append(reading.rowsTotal());
            }
            line.append(" rows");
            if (secondsInPhase >= 0.5 && bytesInPhase > 0) {
                final double rate = bytesInPhase / secondsInPhase;
                line.append(String.format(Locale.ROOT, ", %.1f MiB/s", rate / (1 << 20)));
                if (!reading.ended() && reading.bytesTotal() > reading.bytesDone()) {
                    line.append(", ETA ").append(CheckpointCommand.age(java.time.Duration.ofSeconds((long)
                            Math.ceil((reading.bytesTotal() - reading.bytesDone()) / rate))));
                }
            }
        }
        if (!reading.extra().isEmpty()) {
            line.append("; ").append(reading.extra());
        }
        return line.toString();
    }

    /** Stops the periodic lines; prints the last reading once if the operation ended. */
    @Override
    public void close() {
        if (timer == null) {
            return;
        }
        timer.shutdownNow();
        try {
            timer.awaitTermination(5, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        final Reading last;
        try {
            last = source.get();
        } catch (RuntimeException e) {
            return;
        }
        if (last != null && last.ended()) {
            synchronized (this) {
                // The whole run, not the last phase: what the operator wants to know at the end.
                phase = last.phase();
                phaseStartNanos = startNanos;
                phaseStartBytes = 0;
            }
            print(last);
        }
    }
}
