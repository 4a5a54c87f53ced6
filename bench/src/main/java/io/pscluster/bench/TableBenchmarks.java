package io.pscluster.bench;

import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import org.openjdk.jmh.results.RunResult;
import org.openjdk.jmh.runner.Runner;
import org.openjdk.jmh.runner.RunnerException;
import org.openjdk.jmh.runner.options.ChainedOptionsBuilder;
import org.openjdk.jmh.runner.options.OptionsBuilder;
import org.openjdk.jmh.runner.options.TimeValue;

/**
 * Runs the table micro-benchmarks with JMH (in this JVM, so that a short run fits in {@code psctl bench}) and turns
 * each pair of table and plain-array scores into a ratio: {@code apply} with 1 and 2 threads (and the table's own
 * 2-thread speed-up), {@code gather}.
 */
final class TableBenchmarks {
    private TableBenchmarks() {}

    static List<BenchResult> apply(final long iterationMillis, final int rowsPerPartition) throws RunnerException {
        final List<BenchResult> results = new ArrayList<>();
        double tableOneThread = 0;
        for (final int threads : new int[] {1, 2}) {
            final Collection<RunResult> runs = new Runner(options(ApplyBenchmark.class, iterationMillis)
                            .threads(threads)
                            .param("partitions", Integer.toString(threads))
                            .param("rowsPerPartition", Integer.toString(rowsPerPartition))
                            .build())
                    .run();
            final double table = score(runs, "table") * ApplyBenchmark.BATCH;
            final double plain = score(runs, "plainArray") * ApplyBenchmark.BATCH;
            results.add(BenchResult.rate(
                    "apply",
                    "sgd rows/s dim 16, " + threads + " thread(s) (baseline float[] axpy)",
                    table,
                    plain,
                    "rows/s"));
            if (threads == 1) {
                tableOneThread = table;
            } else {
                results.add(BenchResult.rate(
                        "apply",
                        "sgd rows/s 2 threads (baseline: the table on 1 thread)",
                        table,
                        tableOneThread,
                        "rows/s"));
            }
        }
        return results;
    }

    static List<BenchResult> gather(final long iterationMillis, final int rows) throws RunnerException {
        final Collection<RunResult> runs = new Runner(options(GatherBenchmark.class, iterationMillis)
                        .threads(1)
                        .param("rows", Integer.toString(rows))
                        .build())
                .run();
        return List.of(BenchResult.rate(
                "gather",
                "rows/s dim 16 (baseline float[] row copy)",
                score(runs, "table") * GatherBenchmark.BATCH,
                score(runs, "plainArray") * GatherBenchmark.BATCH,
                "rows/s"));
    }

    private static ChainedOptionsBuilder options(final Class<?> benchmark, final long iterationMillis) {
        // forks(0): the table and its baseline run in this process, one after the other, as the ratio requires.
        return new OptionsBuilder()
                .include(benchmark.getName() + "\\.")
                .forks(0)
                .verbosity(org.openjdk.jmh.runner.options.VerboseMode.SILENT)
                .warmupIterations(2)
                .warmupTime(TimeValue.milliseconds(iterationMillis))
                .measurementIterations(3)
                .measurementTime(TimeValue.milliseconds(iterationMillis))
                .shouldFailOnError(true);
    }

    private static double score(final Collection<RunResult> runs, final String method) {
        for (final RunResult run : runs) {
            if (run.getParams().getBenchmark().endsWith("." + method)) {
                return run.getPrimaryResult().getScore();
            }
        }
        throw new IllegalStateException("JMH produced no result for " + method);
    }
}
