package io.pscluster.bench;

import java.io.PrintWriter;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutionException;
import org.slf4j.LoggerFactory;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code psctl bench}: end-to-end workloads through the worker SDK against a real proxy and shard, each compared with
 * raw gRPC carrying the same bytes in the same run. The report goes to stdout (a table, or JSON lines with
 * {@code --json}); progress goes to stderr.
 */
@Command(
        name = "psctl bench",
        mixinStandardHelpOptions = true,
        sortOptions = false,
        description = {
            "Run end-to-end workloads through the SDK and, in the same run, the same bytes over raw gRPC;"
                    + " report each metric with the ratio (above 1: PSCluster is faster).",
            "Without --proxy it starts a proxy and 1 shard in this JVM. Workloads: kv10m, kv10m-random, rtt4k, stream1m, batch (end to end); apply, gather, memory, scale (the table alone);"
                    + " modes (a 4-worker job in sync and ssp:2 against async);"
                    + " checkpoint (write, restore and push latency against raw Hadoop FileSystem I/O and a quiet"
                    + " shard; always on its own cluster in this JVM)."
        })
public final class BenchCommand implements Callable<Integer> {
    @Spec
    private CommandSpec spec;

    @Option(
            names = "--workload",
            split = ",",
            paramLabel = "NAME",
            description = "kv10m, kv10m-random, rtt4k, stream1m, batch, apply, gather, memory, scale, modes,"
                    + " checkpoint or all"
                    + " (default);"
                    + " repeat or separate with commas.")
    List<String> workloads = List.of("all");

    @Option(
            names = "--proxy",
            paramLabel = "HOST:PORT",
            description = "A running cluster's proxy; default: start a local cluster of 1 shard in this JVM.")
    String proxy = "";

    @Option(names = "--json", description = "One JSON object per result and line instead of the table.")
    boolean json;

    @Option(
            names = "--seconds",
            defaultValue = "10",
            description = "Measuring time per side of each timed workload (default ${DEFAULT-VALUE}).")
    double seconds;

    @Option(
            names = "--warmup-seconds",
            description = "Warm-up per side of each timed workload (default: as long as --seconds).")
    Double warmupSeconds;

    @Option(
            names = "--kv-keys",
            defaultValue = "10000000",
            description = "Keys of kv10m's (and kv10m-random's) push and pull (default ${DEFAULT-VALUE}).")
    int kvKeys;

    @Option(
            names = "--kv-warmup-keys",
            defaultValue = "1000000",
            description = "Keys of each kv10m warm-up push and pull (default ${DEFAULT-VALUE}).")
    int kvWarmupKeys;

    @Option(
            names = "--kv-rounds",
            defaultValue = "3",
            description = "kv10m measurements per side; the median is reported (default ${DEFAULT-VALUE}).")
    int kvRounds;

    @Option(
            names = "--stream-keys",
            defaultValue = "4096",
            description = "Keys (dim 64) of each stream1m call; 4096 is 1 MiB of values (default ${DEFAULT-VALUE}).")
    int streamKeys;

    @Option(
            names = "--scale-max-rows",
            defaultValue = "50000000",
            description = "Caps scale's table sizes (1M, 10M, 50M rows) for a quicker run (default ${DEFAULT-VALUE}).")
    int scaleMaxRows;

    @Option(
            names = "--modes-steps",
            defaultValue = "300",
            description = "Measured steps of each of modes' jobs (async, sync, ssp:2) (default ${DEFAULT-VALUE}).")
    int modesSteps;

    @Option(
            names = "--checkpoint-rows",
            defaultValue = "" + CheckpointWorkload.DEFAULT_ROWS,
            description = "Rows (random keys, dim 16) of checkpoint's table (default ${DEFAULT-VALUE}).")
    int checkpointRows;

    /** The command line with psctl's error handling: a failure prints one line naming it and exits 1. */
    public static CommandLine newCommandLine() {
        return new CommandLine(new BenchCommand()).setExecutionExceptionHandler((failure, commandLine, parsed) -> {
            commandLine.getErr().println("psctl bench: " + describe(failure));
            commandLine.getErr().flush();
            return 1;
        });
    }

    @Override
    public Integer call() throws Exception {
        final PrintWriter out = spec.commandLine().getOut();
        final PrintWriter err = spec.commandLine().getErr();
        final BenchSettings settings = settings();
        quietLogs();
        final List<Workload> chosen = new ArrayList<>();
        for (final String name : settings.workloads()) {
            chosen.add(Workload.named(name));
        }
        final List<BenchResult> results = new ArrayList<>();
        int failed = 0;
        try (BenchHarness harness = BenchHarness.start(settings, err)) {
            final PrintWriter header = json ? err : out;
            header.println(harness.describe());
            for (final Workload workload : chosen) {
                header.printf(Locale.ROOT, "%-9s %s%n", workload.name(), workload.describe(settings));
            }
            header.printf(
                    Locale.ROOT,
                    "timed workloads: %.1f s warm-up, then %.1f s measured per side in %d alternating slices%n",
                    settings.warmupNanos() / 1e9,
                    settings.measureNanos() / 1e9,
                    settings.slices());
            header.flush();
            for (final Workload workload : chosen) {
                try {
                    final List<BenchResult> measured = workload.run(harness);
                    results.addAll(measured);
                    if (json) {
                        measured.forEach(result -> out.println(ResultReport.jsonLine(result)));
                        out.flush();
                    }
                } catch (Exception e) {
                    failed++;
                    err.println("psctl bench: workload " + workload.name() + " failed: " + describe(e));
                    err.flush();
                }
            }
        }
        if (!json) {
            out.println();
            ResultReport.printTable(results, out);
        }
        return failed == 0 ? 0 : 1;
    }

    private BenchSettings settings() {
        final Set<String> names = new LinkedHashSet<>();
        for (final String name : workloads) {
            if (name.equals("all")) {
                names.addAll(BenchSettings.WORKLOADS);
            } else {
                names.add(name);
            }
        }
        if (!(seconds > 0)) {
            throw new CommandLine.ParameterException(spec.commandLine(), "--seconds=" + seconds + " must be > 0");
        }
        if (warmupSeconds != null && !(warmupSeconds >= 0)) {
            throw new CommandLine.ParameterException(
                    spec.commandLine(), "--warmup-seconds=" + warmupSeconds + " must be >= 0");
        }
        try {
            return new BenchSettings()
                    .workloads(List.copyOf(names))
                    .proxyAddress(proxy)
                    .measureMillis(Math.round(seconds * 1_000))
                    .warmupMillis(warmupSeconds == null ? -1 : Math.round(warmupSeconds * 1_000))
                    .kvKeys(kvKeys)
                    .kvWarmupKeys(kvWarmupKeys)
                    .kvRounds(kvRounds)
                    .streamKeys(streamKeys)
                    .scaleMaxRows(scaleMaxRows)
                    .modesSteps(modesSteps)
                    .checkpointRows(checkpointRows)
                    .validate();
        } catch (IllegalArgumentException e) {
            throw new CommandLine.ParameterException(spec.commandLine(), e.getMessage(), e);
        }
    }

    /** A report on stdout should not be interleaved with the cluster's INFO lines. */
    private static void quietLogs() {
        if (LoggerFactory.getLogger("io.pscluster") instanceof ch.qos.logback.classic.Logger logger) {
            logger.setLevel(ch.qos.logback.classic.Level.WARN);
        }
    }

    private static String describe(final Throwable failure) {
        Throwable cause = failure;
        while ((cause instanceof ExecutionException || cause instanceof java.util.concurrent.CompletionException)
                && cause.getCause() != null) {
            cause = cause.getCause();
        }
        if (cause instanceof io.grpc.StatusRuntimeException status) {
            return status.getStatus().getCode() + ": " + status.getStatus().getDescription();
        }
        return cause.getMessage() == null ? cause.toString() : cause.getMessage();
    }
}
