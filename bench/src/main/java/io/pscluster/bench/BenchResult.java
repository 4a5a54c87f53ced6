package io.pscluster.bench;

/**
 * One number a workload measured on our side and on the baseline, in the same run.
 *
 * @param better whether a higher or a lower value is better; it decides which way {@link #ratio()} divides.
 */
record BenchResult(String workload, String metric, double value, double baseline, String unit, Better better) {
    enum Better {
        /** Throughput-like: operations, keys, values or bytes per second. */
        HIGHER,
        /** Time-like: a duration or a latency. */
        LOWER;

        String label() {
            return this == HIGHER ? "higher" : "lower";
        }
    }

    static BenchResult rate(
            final String workload, final String metric, final double value, final double baseline, final String unit) {
        return new BenchResult(workload, metric, value, baseline, unit, Better.HIGHER);
    }

    static BenchResult time(
            final String workload, final String metric, final double value, final double baseline, final String unit) {
        return new BenchResult(workload, metric, value, baseline, unit, Better.LOWER);
    }

    /**
     * How we compare with the baseline, the same way round for every metric: above 1 we are faster. A rate divides
     * ours by the baseline's; a time divides the baseline's by ours. NaN when either side is not positive.
     */
    double ratio() {
        if (!(value > 0) || !(baseline > 0)) {
            return Double.NaN;
        }
        return better == Better.HIGHER ? value / baseline : baseline / value;
    }
}
