package io.pscluster.bench;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.within;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/**
 * Runs every workload in quick mode with tiny sizes against a local cluster and checks the report's shape and
 * sanity, never its speeds (two shared cores make speeds meaningless in a test).
 */
class BenchCommandTest {
    private static final Set<String> FIELDS =
            Set.of("workload", "metric", "value", "baseline", "ratio", "unit", "better");
    /** Fields of a result with a target, besides {@link #FIELDS}. */
    private static final Set<String> TARGET_FIELDS = Set.of("target", "met");

    private static final Set<String> KV_METRICS =
            Set.of("push_ms", "push_keys_per_s", "push_applied_ms", "pull_ms", "pull_keys_per_s");
    private static final Set<String> CHECKPOINT_TARGETED = Set.of(
            "write_mb_per_s none",
            "write_mb_per_s lz4",
            "write_mb_per_s zstd",
            "restore_rows_per_s none",
            "restore_rows_per_s lz4",
            "restore_rows_per_s zstd",
            "push_p99_us",
            "delta_size_mb zstd");
    /** Figures reported without a baseline: their baseline and ratio are null. */
    private static final Set<String> WITHOUT_BASELINE = Set.of("snapshot_micros", "held_push_micros");

    private static final Set<String> CHECKPOINT_METRICS = Stream.of(
                    CHECKPOINT_TARGETED,
                    WITHOUT_BASELINE,
                    Set.of("push_p50_us", "size_mb lz4", "size_mb zstd", "trained_size_mb lz4", "trained_size_mb zstd"))
            .flatMap(Set::stream)
            .collect(Collectors.toSet());

    @Test
    void shouldReportEveryWorkloadAsFlatJsonLinesWhenRunInQuickMode() {
        final Map<String, Set<String>> metrics = metricsByWorkload(runQuick());

        assertThat(metrics)
                .containsOnlyKeys(BenchSettings.WORKLOADS)
                .containsEntry("kv10m", KV_METRICS)
                .containsEntry("rtt4k", Set.of("roundtrips_per_s", "p50_us", "p99_us", "cpu_us_per_step"))
                .containsEntry(
                        "stream1m",
                        Set.of(
                                "push_mb_per_s",
                                "push_applied_mb_per_s",
                                "pull_mb_per_s",
                                "cpu_us_per_push",
                                "cpu_us_per_pull"))
                .containsEntry("batch", Set.of("values_per_s", "p50_us", "p99_us", "cpu_us_per_step"))
                .containsEntry(
                        "modes",
                        Set.of(
                                "sync_steps_per_s",
                                "sync_barrier_p50_us",
                                "sync_barrier_p99_us",
                                "ssp2_steps_per_s",
                                "ssp2_barrier_p50_us",
                                "ssp2_barrier_p99_us"));
        assertThat(metrics.get("checkpoint")).isEqualTo(CHECKPOINT_METRICS);
        assertThat(metrics.get("checkpoint-hdfs")).isEqualTo(CHECKPOINT_METRICS);
        assertThat(metrics.get("apply")).hasSize(3);
        assertThat(metrics.get("gather")).hasSize(1);
        assertThat(metrics.get("memory")).hasSize(2);
    }

    @Test
    void shouldReportKvRandomLikeKvAndScalePerCappedSizeWhenRunAlone() {
        final List<JsonObject> results = runQuick("--workload", "kv10m-random,scale");

        assertThat(metricsByWorkload(results))
                .containsOnlyKeys("kv10m-random", "scale")
                .containsEntry("kv10m-random", KV_METRICS)
                .containsEntry(
                        "scale",
                        Set.of(
                                "insert_ns_per_key 20K",
                                "insert_max_batch_ms 20K (4096-key batches)",
                                "index_growth_max_ms 20K (one segment; baseline: the plain index's longest batch)",
                                "update_ns_per_key 20K",
                                "pull_ns_per_key 20K",
                                "update_ns_per_key 20K in slot order",
                                "pull_ns_per_key 20K in slot order"));
        assertThat(results)
                .filteredOn(result -> result.get("workload").getAsString().equals("scale"))
                .allSatisfy(
                        result -> assertThat(result.get("better").getAsString()).isEqualTo("lower"));
    }

    @Test
    void shouldReportCheckpointAgainstRawFileSystemWithTargetsWhenRunAlone() {
        final List<JsonObject> results = runQuick("--workload", "checkpoint");

        assertThat(metricsByWorkload(results))
                .containsOnlyKeys("checkpoint")
                .containsEntry("checkpoint", CHECKPOINT_METRICS);
        final Map<String, JsonObject> byMetric = results.stream()
                .collect(Collectors.toMap(result -> result.get("metric").getAsString(), result -> result));
        for (final String metric : CHECKPOINT_TARGETED) {
            final JsonObject result = byMetric.get(metric);
            assertThat(result.get("target").getAsString()).as("%s", result).matches(">= (0\\.[58]|33\\.3+)");
            assertThat(Double.isFinite(result.get("ratio").getAsDouble()))
                    .as("%s", result)
                    .isTrue();
        }
        assertThat(byMetric.get("write_mb_per_s zstd").get("better").getAsString())
                .isEqualTo("higher");
        assertThat(byMetric.get("restore_rows_per_s none").get("better").getAsString())
                .isEqualTo("higher");
        assertThat(byMetric.get("push_p99_us").get("better").getAsString()).isEqualTo("lower");
        assertThat(byMetric.get("push_p99_us").get("value").getAsDouble())
                .isGreaterThanOrEqualTo(byMetric.get("push_p50_us").get("value").getAsDouble());
        // Trained floats compress a little once their bytes are shuffled, never to nothing.
        assertThat(byMetric.get("size_mb zstd").get("ratio").getAsDouble()).isBetween(1.0, 4.0);
        assertThat(byMetric.get("size_mb lz4").get("ratio").getAsDouble()).isBetween(0.95, 4.0);
        assertThat(byMetric.get("size_mb zstd").get("baseline").getAsDouble())
                .as("20,000 rows of a key and 16 floats, as stored without compression, in MB")
                .isBetween(1.44, 1.6);
        // A delta of 1% of the rows: the rows themselves are a 100th of the base; the slot indexes add to that.
        assertThat(byMetric.get("delta_size_mb zstd").get("better").getAsString())
                .isEqualTo("lower");
        assertThat(byMetric.get("delta_size_mb zstd").get("ratio").getAsDouble())
                .isGreaterThan(1.0);
        // Adagrad's accumulators and the normal initialisation's values repeat their exponents: they compress.
        assertThat(byMetric.get("trained_size_mb zstd").get("ratio").getAsDouble())
                .isBetween(1.0, 4.0);
    }

    @Test
    void shouldMarkATargetMetOrMissedWithoutFailing() {
        final BenchResult missed = BenchResult.rate("checkpoint", "write_mb_per_s zstd", 70, 100, "MB/s")
                .withTarget(0.8);
        final BenchResult met = BenchResult.time("checkpoint", "push_p99_us", 1_900, 1_000, "us")
                .withTarget(0.5);

        assertThat(ResultReport.jsonLine(missed))
                .isEqualTo("{\"workload\":\"checkpoint\",\"metric\":\"write_mb_per_s zstd\",\"value\":70,"
                        + "\"baseline\":100,\"ratio\":0.7,\"unit\":\"MB/s\",\"better\":\"higher\","
                        + "\"target\":\">= 0.8\",\"met\":false}");
        assertThat(ResultReport.jsonLine(met)).endsWith(",\"target\":\">= 0.5\",\"met\":true}");
        assertThat(BenchResult.rate("checkpoint", "x", 0, 100, "MB/s")
                        .withTarget(0.8)
                        .targetMet())
                .as("a ratio that could not be computed misses its target")
                .isFalse();
        final StringWriter table = new StringWriter();
        ResultReport.printTable(List.of(missed, met), new PrintWriter(table));
        assertThat(table.toString()).contains("target ratio >= 0.8: MISSED", "target ratio >= 0.5: met");
    }

    @Test
    void shouldCapScaleSizesAtTheMaxRowsWithoutRepeatingThem() {
        assertThat(ScaleWorkload.sizes(50_000_000)).containsExactly(1_000_000, 10_000_000, 50_000_000);
        assertThat(ScaleWorkload.sizes(5_000_000)).containsExactly(1_000_000, 5_000_000);
        assertThat(ScaleWorkload.sizes(10_000_000)).containsExactly(1_000_000, 10_000_000);
        assertThat(ScaleWorkload.sizes(20_000)).containsExactly(20_000);
        assertThat(List.of(50_000_000, 20_000, 1_500)).map(ScaleWorkload::label).containsExactly("50M", "20K", "1500");
    }

    @Test
    void shouldRefuseAScaleCapAboveTheLargestSize() {
        final StringWriter err = new StringWriter();
        final int exit = BenchCommand.newCommandLine()
                .setOut(new PrintWriter(new StringWriter(), true))
                .setErr(new PrintWriter(err, true))
                .execute("--workload", "scale", "--scale-max-rows", "60000000");

        assertThat(exit).isEqualTo(2);
        assertThat(err.toString()).contains("scaleMaxRows=60000000 must be in 1..50000000");
    }

    /**
     * Runs the bench with tiny sizes (and {@code extraArgs}), checks that it succeeded and that every line is a flat
     * result with positive numbers and a ratio that agrees with them, and returns the lines.
     */
    private static List<JsonObject> runQuick(final String... extraArgs) {
        final StringWriter out = new StringWriter();
        final StringWriter err = new StringWriter();
        final List<String> args = new ArrayList<>(List.of(
                "--json",
                "--seconds",
                "0.4",
                "--warmup-seconds",
                "0.2",
                "--kv-keys",
                "100000",
                "--kv-warmup-keys",
                "10000",
                "--kv-rounds",
                "1",
                "--stream-keys",
                "512",
                "--scale-max-rows",
                "20000",
                "--modes-steps",
                "10",
                "--checkpoint-rows",
                "20000"));
        args.addAll(List.of(extraArgs));
        final int exit = BenchCommand.newCommandLine()
                .setOut(new PrintWriter(out, true))
                .setErr(new PrintWriter(err, true))
                .execute(args.toArray(String[]::new));

        assertThat(exit).as("exit code; stderr:%n%s", err).isZero();
        final List<JsonObject> results = out.toString()
                .lines()
                .map(line -> JsonParser.parseString(line).getAsJsonObject())
                .toList();
        assertThat(results).isNotEmpty();
        for (final JsonObject result : results) {
            final Set<String> fields = new HashSet<>(FIELDS);
            if (result.has("target")) {
                fields.addAll(TARGET_FIELDS);
            }
            assertThat(result.keySet()).as("%s", result).containsExactlyInAnyOrderElementsOf(fields);
            if (result.get("baseline").isJsonNull()) {
                assertThat(result.get("metric").getAsString()).as("%s", result).isIn(WITHOUT_BASELINE);
                assertThat(result.get("value").getAsDouble()).as("%s", result).isNotNegative();
                assertThat(result.get("ratio").isJsonNull()).as("%s", result).isTrue();
                continue;
            }
            assertThat(result.entrySet())
                    .as("a flat object: %s", result)
                    .allSatisfy(field ->
                            assertThat(field.getValue().isJsonPrimitive()).isTrue());
            final double value = result.get("value").getAsDouble();
            final double baseline = result.get("baseline").getAsDouble();
            assertThat(value).as("%s", result).isPositive();
            assertThat(baseline).as("%s", result).isPositive();
            final double expected =
                    result.get("better").getAsString().equals("higher") ? value / baseline : baseline / value;
            assertThat(result.get("ratio").getAsDouble()).as("%s", result).isCloseTo(expected, within(expected * 1e-4));
            if (result.has("target")) {
                final double least =
                        Double.parseDouble(result.get("target").getAsString().substring(">= ".length()));
                // The printed figures are rounded: a ratio within that rounding of the target (a p99 exactly twice
                // the baseline's, which the histogram's buckets make likely) cannot be decided from them.
                if (Math.abs(expected - least) > least * 1e-4) {
                    assertThat(result.get("met").getAsBoolean())
                            .as("%s", result)
                            .isEqualTo(expected >= least);
                }
            }
        }
        return results;
    }

    private static Map<String, Set<String>> metricsByWorkload(final List<JsonObject> results) {
        return results.stream()
                .collect(Collectors.groupingBy(
                        result -> result.get("workload").getAsString(),
                        Collectors.mapping(result -> result.get("metric").getAsString(), Collectors.toSet())));
    }

    @Test
    void shouldRefuseAnUnknownWorkloadWithoutStartingAnything() {
        final StringWriter err = new StringWriter();
        final int exit = BenchCommand.newCommandLine()
                .setOut(new PrintWriter(new StringWriter(), true))
                .setErr(new PrintWriter(err, true))
                .execute("--workload", "kv10m,nope");

        assertThat(exit).isEqualTo(2);
        assertThat(err.toString()).contains("workload=nope is unknown");
    }

    @Test
    void shouldRefuseAProxyThatIsNotHostAndPort() {
        final StringWriter err = new StringWriter();
        final int exit = BenchCommand.newCommandLine()
                .setOut(new PrintWriter(new StringWriter(), true))
                .setErr(new PrintWriter(err, true))
                .execute("--proxy", "localhost");

        assertThat(exit).isEqualTo(2);
        assertThat(err.toString()).contains("proxy=localhost must be HOST:PORT");
    }

    @Test
    void shouldPrintRatioSoThatAboveOneMeansFasterWhenReportingTimesAndRates() {
        final BenchResult time = BenchResult.time("kv10m", "push_ms", 200, 100, "ms");
        final BenchResult rate = BenchResult.rate("stream1m", "push_mb_per_s", 500, 1000, "MB/s");
        final StringWriter table = new StringWriter();
        ResultReport.printTable(List.of(time, rate), new PrintWriter(table));

        assertThat(time.ratio()).isEqualTo(0.5);
        assertThat(rate.ratio()).isEqualTo(0.5);
        assertThat(ResultReport.jsonLine(time))
                .isEqualTo("{\"workload\":\"kv10m\",\"metric\":\"push_ms\",\"value\":200,\"baseline\":100,"
                        + "\"ratio\":0.5,\"unit\":\"ms\",\"better\":\"lower\"}");
        assertThat(table.toString())
                .contains("WORKLOAD", "RATIO", "push_ms", "0.50", "ms, lower is better", "MB/s, higher is better")
                .contains(ResultReport.RATIO_EXPLAINED);
    }

    @Test
    void shouldWriteNullRatioWhenASideMeasuredNothing() {
        final JsonElement ratio = JsonParser.parseString(
                        ResultReport.jsonLine(BenchResult.rate("batch", "values_per_s", 0, 10, "values/s")))
                .getAsJsonObject()
                .get("ratio");

        assertThat(ratio.isJsonNull()).isTrue();
    }
}
