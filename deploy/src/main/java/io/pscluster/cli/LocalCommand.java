package io.pscluster.cli;

import io.pscluster.local.LocalCluster;
import io.pscluster.proxy.ProxyServer;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(
        name = "local",
        mixinStandardHelpOptions = true,
        description = "Run a proxy and N shards in this process until Ctrl-C.")
final class LocalCommand implements Callable<Integer> {
    @Option(names = "--shards", defaultValue = "2", description = "Number of shards (default ${DEFAULT-VALUE}).")
    int shards;

    @Option(names = "--port", defaultValue = "7070", description = "The proxy's port (default ${DEFAULT-VALUE}).")
    int port;

    @Option(
            names = "--checkpoint-dir",
            defaultValue = "./ps-data",
            description = "Where checkpoints live (default ${DEFAULT-VALUE}).")
    String checkpointDir;

    @Option(
            names = "--checkpoint-interval-s",
            defaultValue = "0",
            description = "Take a checkpoint every this many seconds (one skipped or failed is tried again sooner,"
                    + " from a heartbeat interval on, doubling); 0 (default) only on demand.")
    long checkpointIntervalSeconds;

    @Option(
            names = "--checkpoint-codec",
            defaultValue = "zstd",
            description = "How checkpoint files are compressed: zstd, lz4 or none (default ${DEFAULT-VALUE}).")
    String checkpointCodec;

    @Option(
            names = "--keep-checkpoints",
            defaultValue = "5",
            description = "Keep this many of the newest checkpoints (default ${DEFAULT-VALUE}); 0: all.")
    int keepCheckpoints;

    @Option(
            names = "--deltas-per-base",
            defaultValue = "" + ProxyServer.Context.DEFAULT_DELTAS_PER_BASE,
            description = "Incremental checkpoints: take up to this many deltas (rows changed or removed since the"
                    + " previous checkpoint) between two full bases, a base sooner once the deltas outgrow half of it;"
                    + " default ${DEFAULT-VALUE}; 0: every checkpoint is a base. A delta restores and exports with its"
                    + " chain.")
    int deltasPerBase;

    @Option(
            names = "--checkpoint-pause-timeout",
            defaultValue = "10s",
            description = "How long a checkpoint waits for every worker of the running jobs to pause at its next"
                    + " clock() (then the whole cluster is cut at one step boundary, with each worker's state); past"
                    + " it the checkpoint is cut shard by shard, as its manifest says (default ${DEFAULT-VALUE}; 0:"
                    + " never pause workers).")
    String checkpointPauseTimeout;

    @Option(
            names = "--worker-lease-ms",
            defaultValue = "3000",
            description = "A job's worker that has not renewed its lease for this long is dropped from the job (default"
                    + " ${DEFAULT-VALUE}).")
    long workerLeaseMs;

    @Option(
            names = "--checkpoint-stall-timeout",
            defaultValue = "120s",
            description = "A checkpoint or restore fails once a shard's progress on it (rows and bytes written or"
                    + " loaded, its cut) has not moved for this long, e.g. 120s or 5m (default ${DEFAULT-VALUE}). It"
                    + " has no fixed deadline otherwise.")
    String checkpointStallTimeout;

    @Option(
            names = "--checkpoint-timeout",
            defaultValue = "0",
            description = "A checkpoint or restore fails after this long in all, progress or not, e.g. 2h; 0"
                    + " (default): no limit.")
    String checkpointTimeout;

    @Mixin
    HadoopOptions hadoop;

    @Override
    public Integer call() throws Exception {
        final LocalCluster cluster = LocalCluster.builder()
                .shards(shards)
                .proxyPort(port)
                .checkpointRoot(Cli.checkpointUri(checkpointDir))
                .checkpointIntervalMs(checkpointIntervalSeconds * 1000)
                .checkpointCodec(checkpointCodec)
                .keepCheckpoints(keepCheckpoints)
                .deltasPerBase(deltasPerBase)
                .checkpointPauseMs(Cli.duration("--checkpoint-pause-timeout", checkpointPauseTimeout)
                        .toMillis())
                .workerLeaseMs(workerLeaseMs)
                .checkpointStallTimeoutMs(Cli.duration("--checkpoint-stall-timeout", checkpointStallTimeout)
                        .toMillis())
                .checkpointTimeoutMs(
                        Cli.duration("--checkpoint-timeout", checkpointTimeout).toMillis())
                .hadoopConf(hadoop.serverConfiguration())
                .start();
        System.out.println("local cluster up: proxy at " + cluster.proxyAddress() + ", " + shards
                + " shards, checkpoints under " + cluster.proxy().checkpointRoot() + " (Ctrl-C stops it)");
        Cli.runUntilStopped(cluster);
        return 0;
    }
}
