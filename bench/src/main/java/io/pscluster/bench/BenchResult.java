package io.pscluster.bench;

/**
 * One number a workload measured on our side and on the baseline, in the same run.
 *
 * @param baseline NaN when the metric has no baseline (a figure reported as it is, such as a stall).
 * @param better whether a higher or a lower value is better; it decides which way {@link #ratio()} divides.
 * @param target the ratio an issue asks for, or null when none does.
 */
record BenchResult(
        String workload, String metric, double value, double baseline, String unit, Better better, Target target) {
    enum Better {
        /** Throughput-like: operations, keys, values or bytes per second. */
        HIGHER,
        /** Time-like: a duration or a latency. */
        LOWER;

        String label() {
            return this == HIGHER ? "higher" : "lower";
        }
    }

    /**
     * The least {@link #ratio()} a target accepts (ratios are "above 1 is better" for every metric, so every target is
     * a lower bound: "p99 at most 2x the baseline's" is a ratio of at least 0.5).
     */
    record Target(double minRatio) {
        Target {
            if (!(minRatio > 0) || !Double.isFinite(minRatio)) {
                throw new IllegalArgumentException("minRatio=" + minRatio + " must be a positive number");
            }
        }

        /** Whether {@code ratio} meets the target; a ratio that could not be computed (NaN) does not. */
        boolean metBy(final double ratio) {
            return ratio >= minRatio;
        }
    }

    static BenchResult rate(
            final String workload, final String metric, final double value, final double baseline, final String unit) {
        return new BenchResult(workload, metric, value, baseline, unit, Better.HIGHER, null);
    }

    static BenchResult time(
            final String workload, final String metric, final double value, final double baseline, final String unit) {
        return new BenchResult(workload, metric, value, baseline, unit, Better.LOWER, null);
    }

    /** This result with a target on its ratio. */
    BenchResult withTarget(final double minRatio) {
        return new BenchResult(workload, metric, value, baseline, unit, better, new Target(minRatio));
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

    /** Whether the target is met; false without a target. */
    boolean targetMet() {
        return target != null && target.metBy(ratio());
    }
}
