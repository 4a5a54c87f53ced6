package io.pscluster.cli;

import io.grpc.ManagedChannel;
import io.pscluster.example.Dataset;
import io.pscluster.example.LogisticRegression;
import io.pscluster.local.LocalCluster;
import io.pscluster.proto.v1.AdminServiceGrpc;
import io.pscluster.proto.v1.CheckpointNowRequest;
import io.pscluster.proto.v1.CheckpointNowResponse;
import io.pscluster.worker.PsClient;
import java.io.PrintStream;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * The main job on the embedded default: a local cluster of 2 shards with checkpoints on the local filesystem,
 * training, a checkpoint, a restart of every shard from it, and a bit-for-bit check that the parameters and the
 * optimizer state came back.
 */
@Command(
        name = "demo",
        mixinStandardHelpOptions = true,
        description = "Start a local cluster, train, checkpoint, restart the shards from the checkpoint, verify.")
final class DemoCommand implements Callable<Integer> {
    @Option(
            names = "--checkpoint-dir",
            defaultValue = "./ps-data",
            description = "Where checkpoints go (default ${DEFAULT-VALUE}).")
    String checkpointDir;

    @Option(names = "--epochs", defaultValue = "5", description = "Training epochs (default ${DEFAULT-VALUE}).")
    int epochs;

    @Override
    public Integer call() throws Exception {
        Cli.logLevel(ch.qos.logback.classic.Level.ERROR);
        return run(Cli.checkpointUri(checkpointDir), epochs, System.out);
    }

    static int run(final String checkpointRoot, final int epochs, final PrintStream out) throws Exception {
        final int workers = 2;
        out.println("[1/6] starting a local cluster: 1 proxy, 2 shards, checkpoints under " + checkpointRoot);
        try (LocalCluster cluster =
                LocalCluster.builder().shards(2).checkpointRoot(checkpointRoot).start()) {
            out.println("      proxy at " + cluster.proxyAddress() + ", shards at "
                    + cluster.shard(0).address() + " and " + cluster.shard(1).address());

            final Dataset data = Dataset.synthetic(7, 20_000, 2_000, 10);
            out.println("[2/6] training sparse logistic regression: " + data.size() + " samples, " + workers
                    + " workers, " + epochs + " epochs");
            final LogisticRegression.Settings settings = LogisticRegression.Settings.defaults(workers, epochs);
            final List<LogisticRegression.EpochResult> results = LogisticRegression.train(
                    cluster.proxyAddress(), data, settings, result -> out.println("      " + result));

            out.println("[3/6] taking a checkpoint");
            final CheckpointNowResponse checkpoint;
            final ManagedChannel channel = Cli.channel(cluster.proxyAddress());
            try {
                checkpoint = AdminServiceGrpc.newBlockingStub(channel)
                        .withDeadlineAfter(5, TimeUnit.MINUTES)
                        .checkpointNow(CheckpointNowRequest.getDefaultInstance());
            } finally {
                Cli.close(channel);
            }
            out.println("      " + CheckpointCommand.describe(checkpoint.getCheckpoint()));
            out.println("      pushes waited " + checkpoint.getMaxSnapshotMicros() + " us for the shards' cut");
            final Map<Long, float[]> before = cluster.dumpTable(settings.table());
            final float[] pulledBefore;
            try (PsClient client = PsClient.connect(cluster.proxyAddress())) {
                pulledBefore = client.table(settings.table()).pull(keysOf(before));
            }

            out.println("[4/6] crashing both shards (no hand-over, as a power cut would) and starting two new ones;"
                    + " once the lost shards' leases lapse, each new shard adopts a slot group and restores it from"
                    + " checkpoint " + checkpoint.getCheckpoint().getId());
            final int shards = cluster.shardCount();
            for (int i = 0; i < shards; i++) {
                cluster.crashShard(i);
            }
            final int first = cluster.addShard();
            final int second = cluster.addShard();
            cluster.awaitHealthy(120_000);
            out.println("      new shards serving at " + cluster.shard(first).address() + " and "
                    + cluster.shard(second).address());

            out.println("[5/6] comparing every parameter and optimizer slot with the state before the restart");
            final Map<Long, float[]> after = cluster.dumpTable(settings.table());
            final String difference = firstDifference(before, after);
            final float[] pulledAfter;
            try (PsClient client = PsClient.connect(cluster.proxyAddress())) {
                pulledAfter = client.table(settings.table()).pull(keysOf(before));
                final LogisticRegression.EpochResult restored =
                        LogisticRegression.evaluate(client.table(settings.table()), data, epochs, 0);
                out.printf(
                        "      accuracy after restore %.2f%% (before %.2f%%)%n",
                        restored.accuracy() * 100,
                        results.get(results.size() - 1).accuracy() * 100);
            }
            if (difference != null) {
                out.println("FAILED: " + difference);
                return 1;
            }
            if (!bitEqual(pulledBefore, pulledAfter)) {
                out.println("FAILED: values pulled through the SDK differ after the restore");
                return 1;
            }
            out.println("      " + before.size() + " rows: weights and Adagrad accumulators are bit-identical");
            out.println("[6/6] done: the cluster came back from checkpoint "
                    + checkpoint.getCheckpoint().getId() + " exactly as it was");
            return 0;
        }
    }

    private static long[] keysOf(final Map<Long, float[]> records) {
        return records.keySet().stream().mapToLong(Long::longValue).toArray();
    }

    /** A description of the first record that differs, or null when both hold the same records bit for bit. */
    static String firstDifference(final Map<Long, float[]> expected, final Map<Long, float[]> actual) {
        if (!expected.keySet().equals(actual.keySet())) {
            return "row sets differ: " + expected.size() + " rows before, " + actual.size() + " after";
        }
        for (final Map.Entry<Long, float[]> entry : expected.entrySet()) {
            if (!bitEqual(entry.getValue(), actual.get(entry.getKey()))) {
                return "row " + entry.getKey() + " differs: " + java.util.Arrays.toString(entry.getValue()) + " vs "
                        + java.util.Arrays.toString(actual.get(entry.getKey()));
            }
        }
        return null;
    }

    static boolean bitEqual(final float[] a, final float[] b) {
        if (a.length != b.length) {
            return false;
        }
        for (int i = 0; i < a.length; i++) {
            if (Float.floatToRawIntBits(a[i]) != Float.floatToRawIntBits(b[i])) {
                return false;
            }
        }
        return true;
    }
}
