package io.pscluster.bench;

import java.util.List;

/**
 * The shard's table measured on its own, in this JVM, against plain Java arrays: {@code apply} (SGD updates, 1 and 2
 * writer threads), {@code gather} (pulls of random rows) and {@code memory} (bytes per row against the raw bytes).
 */
final class TableWorkload implements Workload {
    private final String name;

    TableWorkload(final String name) {
        this.name = name;
    }

    @Override
    public String name() {
        return name;
    }

    @Override
    public String describe(final BenchSettings settings) {
        return switch (name) {
            case "apply" ->
                "JMH, in-process: batches of 1024 random existing rows x dim 16, SGD, " + rows(settings)
                        + " rows per writer partition, vs the same updates to a float[]";
            case "gather" ->
                "JMH, in-process: pulls of 1024 random rows x dim 16 out of " + rows(settings)
                        + " rows, vs copying the same rows out of a float[]";
            default -> "a sparse table of " + settings.kvKeys() + " rows x dim 16 (SGD, then Adam) vs raw bytes";
        };
    }

    @Override
    public List<BenchResult> run(final BenchHarness harness) throws Exception {
        final BenchSettings settings = harness.settings();
        // Five JMH iterations (2 warm-up, 3 measured) per method share the measuring time of one side.
        final long iterationMillis = Math.max(100, settings.measureNanos() / 4 / 1_000_000);
        return switch (name) {
            case "apply" -> TableBenchmarks.apply(iterationMillis, rows(settings));
            case "gather" -> TableBenchmarks.gather(iterationMillis, rows(settings));
            default -> MemoryFootprint.measure(settings.kvKeys(), 16);
        };
    }

    private static int rows(final BenchSettings settings) {
        return Math.min(1_000_000, settings.kvKeys());
    }
}
