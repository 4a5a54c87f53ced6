package io.pscluster.bench;

import java.io.PrintWriter;
import java.math.BigDecimal;
import java.math.MathContext;
import java.util.List;
import java.util.Locale;

/** Writes results as a table for people or as one flat JSON object per line for scripts. */
final class ResultReport {
    static final String RATIO_EXPLAINED = "ratio = ours/baseline for rates, baseline/ours for times and latencies:"
            + " above 1 PSCluster is faster than raw gRPC carrying the same bytes (modes: than the same job in async)";

    private static final MathContext SIGNIFICANT = new MathContext(6);

    private ResultReport() {}

    /**
     * One result as a flat JSON object with the fields workload, metric, value, baseline, ratio, unit and better
     * ("higher" or "lower"), and for a result with a target also target (the least ratio it accepts, as ">= 0.8")
     * and met (true or false; a missed target is reported, never an error); a number that is not finite is written
     * as null.
     */
    static String jsonLine(final BenchResult result) {
        final StringBuilder json = new StringBuilder()
                .append("{\"workload\":")
                .append(string(result.workload()))
                .append(",\"metric\":")
                .append(string(result.metric()))
                .append(",\"value\":")
                .append(number(result.value()))
                .append(",\"baseline\":")
                .append(number(result.baseline()))
                .append(",\"ratio\":")
                .append(number(result.ratio()))
                .append(",\"unit\":")
                .append(string(result.unit()))
                .append(",\"better\":")
                .append(string(result.better().label()));
        if (result.target() != null) {
            json.append(",\"target\":")
                    .append(string(targetLabel(result.target())))
                    .append(",\"met\":")
                    .append(result.targetMet());
        }
        return json.append('}').toString();
    }

    /** The target as the least ratio it accepts: {@code >= 0.8}. */
    static String targetLabel(final BenchResult.Target target) {
        return ">= " + number(target.minRatio());
    }

    static void printTable(final List<BenchResult> results, final PrintWriter out) {
        final String format = "%-9s %-22s %14s %14s %7s  %s%n";
        out.printf(Locale.ROOT, format, "WORKLOAD", "METRIC", "OURS", "BASELINE", "RATIO", "UNIT");
        for (final BenchResult result : results) {
            out.printf(
                    Locale.ROOT,
                    format,
                    result.workload(),
                    result.metric(),
                    readable(result.value()),
                    readable(result.baseline()),
                    Double.isFinite(result.ratio()) ? String.format(Locale.ROOT, "%.2f", result.ratio()) : "-",
                    result.unit() + ", " + result.better().label() + " is better" + targetNote(result));
        }
        out.println(RATIO_EXPLAINED);
        out.flush();
    }

    private static String targetNote(final BenchResult result) {
        if (result.target() == null) {
            return "";
        }
        return "; target ratio " + targetLabel(result.target()) + ": " + (result.targetMet() ? "met" : "MISSED");
    }

    private static String readable(final double value) {
        if (!Double.isFinite(value)) {
            return "-";
        }
        final double magnitude = Math.abs(value);
        if (magnitude >= 10_000) {
            return String.format(Locale.ROOT, "%,.0f", value);
        }
        if (magnitude >= 100) {
            return String.format(Locale.ROOT, "%.1f", value);
        }
        return String.format(Locale.ROOT, "%.3f", value);
    }

    private static String number(final double value) {
        if (!Double.isFinite(value)) {
            return "null";
        }
        return new BigDecimal(value).round(SIGNIFICANT).stripTrailingZeros().toPlainString();
    }

    private static String string(final String value) {
        final StringBuilder json = new StringBuilder(value.length() + 2).append('"');
        for (int i = 0; i < value.length(); i++) {
            final char c = value.charAt(i);
            if (c == '"' || c == '\\') {
                json.append('\\').append(c);
            } else if (c < 0x20) {
                json.append(String.format(Locale.ROOT, "\\u%04x", (int) c));
            } else {
                json.append(c);
            }
        }
        return json.append('"').toString();
    }
}
