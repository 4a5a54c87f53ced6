package io.pscluster.cli;

import io.pscluster.example.Dataset;
import io.pscluster.example.LogisticRegression;
import io.pscluster.wire.UpdateModes;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(
        name = "train-example",
        mixinStandardHelpOptions = true,
        description = "Train sparse logistic regression against a running cluster; prints loss and accuracy per epoch.")
final class TrainExampleCommand implements Callable<Integer> {
    @Option(names = "--proxy", required = true, description = "The proxy's HOST:PORT.")
    String proxy;

    @Option(names = "--workers", defaultValue = "2", description = "Workers (default ${DEFAULT-VALUE}).")
    int workers;

    @Option(names = "--epochs", defaultValue = "5", description = "Epochs (default ${DEFAULT-VALUE}).")
    int epochs;

    @Option(names = "--data", description = "A libsvm-format file; without it a seeded synthetic data set is used.")
    Path data;

    @Option(names = "--samples", defaultValue = "20000", description = "Synthetic samples (default ${DEFAULT-VALUE}).")
    int samples;

    @Option(names = "--features", defaultValue = "2000", description = "Synthetic features (default ${DEFAULT-VALUE}).")
    int features;

    @Option(names = "--seed", defaultValue = "7", description = "Synthetic data seed (default ${DEFAULT-VALUE}).")
    long seed;

    @Option(names = "--table", defaultValue = "lr_weights", description = "Table name (default ${DEFAULT-VALUE}).")
    String table;

    @Option(
            names = "--mode",
            defaultValue = "async",
            paramLabel = "async|sync|ssp:S",
            description = "Update mode of the job: async (pushes applied as they come), sync (every worker sees the"
                    + " same weights at every step), ssp:S (a worker runs at most S clocks ahead of the slowest)"
                    + " (default ${DEFAULT-VALUE}).")
    String mode;

    @Option(names = "--job", paramLabel = "NAME", description = "Job id the workers join (default: train-<table>).")
    String job;

    @Mixin
    SecurityOptions security;

    @Override
    public Integer call() throws Exception {
        Cli.logLevel(ch.qos.logback.classic.Level.WARN);
        final LogisticRegression.Settings defaults = LogisticRegression.Settings.defaults(workers, epochs);
        final LogisticRegression.Settings settings = new LogisticRegression.Settings(
                        table, workers, epochs, defaults.batchSize(), defaults.learningRate(), defaults.seed())
                .withMode(mode)
                .withJobId(job == null ? LogisticRegression.Settings.defaultJobId(table) : job);
        final Dataset dataset =
                data == null ? Dataset.synthetic(seed, samples, features, 10) : Dataset.readLibsvm(data);
        System.out.println("training on " + dataset.size() + " samples with " + workers + " workers, " + epochs
                + " epochs, job " + settings.job().getJobId() + " in " + UpdateModes.describe(settings.job())
                + " mode");
        final AtomicLong longestStep = new AtomicLong();
        final List<LogisticRegression.EpochResult> results = LogisticRegression.train(
                Cli.hostPort("--proxy", proxy),
                security.security(),
                dataset,
                settings,
                result -> System.out.println("  " + result),
                event -> System.out.println("  " + io.pscluster.worker.PsClient.describe(event)),
                longestStep);
        System.out.printf(
                "final accuracy %.2f%%%n", results.get(results.size() - 1).accuracy() * 100);
        System.out.printf("longest step %d ms%n", TimeUnit.NANOSECONDS.toMillis(longestStep.get()));
        return 0;
    }
}
