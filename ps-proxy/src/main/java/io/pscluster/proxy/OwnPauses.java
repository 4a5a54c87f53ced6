package io.pscluster.proxy;

/**
 * How late a periodic check runs: a check later than its interval by more than a threshold means this process did not
 * run meanwhile (a long collection, a stopped or frozen JVM, a wait for a lock), so it heard nobody, and the lateness
 * is not to be counted against anyone's lease. Off (never late) until {@link #start}; used under its owner's monitor.
 */
final class OwnPauses {
    private long intervalNanos;
    private long thresholdNanos = Long.MAX_VALUE;
    private long lastCheckNanos;

    /** Checks come every {@code intervalNanos} from {@code now} on; lateness beyond {@code thresholdNanos} counts. */
    void start(final long intervalNanos, final long thresholdNanos, final long now) {
        this.intervalNanos = intervalNanos;
        this.thresholdNanos = thresholdNanos;
        this.lastCheckNanos = now;
    }

    /** Records a check at {@code now}; returns by how much it came late if that passes the threshold, else 0. */
    long lateBy(final long now) {
        if (thresholdNanos == Long.MAX_VALUE) {
            return 0;
        }
        final long excess = now - lastCheckNanos - intervalNanos;
        lastCheckNanos = now;
        return excess > thresholdNanos ? excess : 0;
    }
}
