package io.pscluster.bench;

import java.util.concurrent.TimeUnit;
import org.HdrHistogram.Histogram;

/**
 * What one side of a workload measured over its measuring slices: the latency of each operation, the operations and
 * bytes done, and the wall time they took (from a slice's start until its last operation completed and, for our
 * side, what it pushed was applied). Filled by one thread, the one that runs the slices.
 */
final class Meter {
    private final Histogram latencyNanos = newHistogram();
    private long operations;
    private long bytes;
    private long elapsedNanos;

    static Histogram newHistogram() {
        return new Histogram(TimeUnit.MINUTES.toNanos(5), 3);
    }

    void add(final Histogram latencies, final long sliceOperations, final long sliceBytes, final long sliceNanos) {
        latencyNanos.add(latencies);
        operations += sliceOperations;
        bytes += sliceBytes;
        elapsedNanos += sliceNanos;
    }

    double operationsPerSecond() {
        return perSecond(operations);
    }

    double bytesPerSecond() {
        return perSecond(bytes);
    }

    double percentileMicros(final double percentile) {
        return latencyNanos.getValueAtPercentile(percentile) / 1_000.0;
    }

    long operations() {
        return operations;
    }

    private double perSecond(final long count) {
        return elapsedNanos == 0 ? 0 : count * 1e9 / elapsedNanos;
    }
}
