package io.pscluster.proxy;

/**
 * How late a periodic check runs: a check later than its interval by more than a threshold means this process did not
 * run meanwhile (a long collection, a stopped or frozen JVM, a wait for a lock), so it heard nobody, and the lateness
 * is not to be counted against anyone's lease. A check can also come late only because its thread was starved while
 * the process ran and took calls: then it did hear the live ones, and crediting the whole lateness would only delay
 * the failover of a dead one. So the credit is at most the longest time since the last check in which no inbound call
 * was taken ({@link #heard}): a pause of the process is such a silence, a starved timer is not. Off (never late) until
 * {@link #start}; used under its owner's monitor.
 */
final class OwnPauses {
    private long intervalNanos;
    private long thresholdNanos = Long.MAX_VALUE;
    private long lastCheckNanos;
    /** When the last inbound call (or check) was taken, and the longest silence between them since the last check. */
    private long lastEventNanos;

    private long longestSilenceNanos;

    /** Checks come every {@code intervalNanos} from {@code now} on; lateness beyond {@code thresholdNanos} counts. */
    void start(final long intervalNanos, final long thresholdNanos, final long now) {
        this.intervalNanos = intervalNanos;
        this.thresholdNanos = thresholdNanos;
        this.lastCheckNanos = now;
        this.lastEventNanos = now;
        this.longestSilenceNanos = 0;
    }

    /** An inbound call (a heartbeat, a renewal, a registration) was taken at {@code now}: the process ran then. */
    void heard(final long now) {
        longestSilenceNanos = Math.max(longestSilenceNanos, now - lastEventNanos);
        lastEventNanos = Math.max(lastEventNanos, now);
    }

    /**
     * Records a check at {@code now}; returns by how much it came late if that passes the threshold (but at most the
     * longest silence since the last check), else 0.
     */
    long lateBy(final long now) {
        if (thresholdNanos == Long.MAX_VALUE) {
            return 0;
        }
        final long excess = now - lastCheckNanos - intervalNanos;
        final long silence = Math.max(longestSilenceNanos, now - lastEventNanos);
        lastCheckNanos = now;
        lastEventNanos = now;
        longestSilenceNanos = 0;
        return excess > thresholdNanos ? Math.min(excess, silence) : 0;
    }
}
