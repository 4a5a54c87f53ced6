package io.pscluster.cli;

import io.pscluster.proxy.ProxyServer;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "proxy", mixinStandardHelpOptions = true, description = "Run the proxy until stopped.")
final class ProxyCommand implements Callable<Integer> {
    @Option(names = "--port", defaultValue = "7070", description = "Port to serve on (default ${DEFAULT-VALUE}).")
    int port;

    @Option(
            names = "--checkpoint-dir",
            required = true,
            description = "Where checkpoints live: hdfs://namenode:port/path, file:///path or a local path.")
    String checkpointDir;

    @Option(
            names = "--checkpoint-interval-s",
            defaultValue = "0",
            description = "Take a checkpoint every this many seconds (one skipped or failed is tried again sooner,"
                    + " from a heartbeat interval on, doubling); 0 (default) only on demand.")
    long checkpointIntervalSeconds;

    @Option(
            names = "--lease-ms",
            defaultValue = "5000",
            description = "A shard silent this long is dead (default ${DEFAULT-VALUE}).")
    long leaseMs;

    @Option(
            names = "--lease-margin-ms",
            defaultValue = "1000",
            description =
                    "Slots of a silent shard move only after its lease plus this margin (default ${DEFAULT-VALUE}).")
    long leaseMarginMs;

    @Option(
            names = "--heartbeat-ms",
            defaultValue = "1000",
            description = "Shards heartbeat this often; must be below the lease (default ${DEFAULT-VALUE}).")
    long heartbeatMs;

    @Option(
            names = "--worker-lease-ms",
            defaultValue = "3000",
            description = "A job's worker that has not renewed its lease for this long is dropped from the job, so"
                    + " that the others go on without it (default ${DEFAULT-VALUE}).")
    long workerLeaseMs;

    @Option(
            names = "--read-cache",
            defaultValue = "64m",
            description = "Bytes of rows the proxy keeps for pulls through it (thin clients, psctl pull), e.g. 1g;"
                    + " 0: no read cache (default ${DEFAULT-VALUE}).")
    String readCache;

    @Option(
            names = "--state-dir",
            defaultValue = "",
            description = "Local directory of the proxy's durable state (routing, catalog, restore orders). Default:"
                    + " _proxy-state under a local --checkpoint-dir, else ./ps-proxy-state.")
    String stateDir;

    @Option(
            names = "--checkpoint-dir-moved",
            description = "The checkpoints of the cluster whose state the proxy resumes were moved (the whole"
                    + " directory) to --checkpoint-dir: take its state all the same. Without it a proxy whose state"
                    + " names another checkpoint directory refuses to start, naming both.")
    boolean checkpointDirMoved;

    @Option(
            names = "--checkpoint-codec",
            defaultValue = "zstd",
            description = "How shards compress checkpoint files, per ~1 MiB chunk, losslessly: zstd, lz4 or none"
                    + " (default ${DEFAULT-VALUE}).")
    String checkpointCodec;

    @Option(
            names = "--checkpoint-replication",
            defaultValue = "0",
            description = "Replication of checkpoint data files; 0 (default): the filesystem's (dfs.replication).")
    int checkpointReplication;

    @Option(
            names = "--checkpoint-block-size",
            defaultValue = "0",
            description = "Block size of checkpoint data files, e.g. 256m; 0 (default): the filesystem's"
                    + " (dfs.blocksize).")
    String checkpointBlockSize;

    @Option(
            names = "--keep-checkpoints",
            defaultValue = "5",
            description = "After each checkpoint, keep this many of the newest (default ${DEFAULT-VALUE}); 0: all."
                    + " A base that a kept delta needs is always kept.")
    int keepCheckpoints;

    @Option(
            names = "--max-checkpoint-age",
            defaultValue = "0",
            description = "After each checkpoint, delete those older than this, with its unit: 7d, 12h, 90m or 30s;"
                    + " 0 (default): no limit. A checkpoint outside this or --keep-checkpoints is deleted; the newest,"
                    + " and what a kept delta needs, are always kept.")
    String maxCheckpointAge;

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

    @Mixin
    SecurityOptions security;

    @Mixin
    WorkerTokenOption workerToken;

    @Mixin
    MetricsOptions metrics;

    @Override
    public Integer call() throws Exception {
        if (checkpointIntervalSeconds == 0) {
            System.err.println("warning: no --checkpoint-interval-s: this proxy takes no checkpoint of its own, so a"
                    + " shard lost without a drain comes back from the last one an operator took, or empty if there is"
                    + " none");
        }
        final ProxyServer proxy =
                metrics.serve(registry -> ProxyServer.start(context().meterRegistry(registry)));
        System.out.println("proxy listening on port " + proxy.port() + ", checkpoints under " + proxy.checkpointRoot());
        Cli.runUntilStopped(proxy);
        return 0;
    }

    /** The proxy's settings from the options, each checked and named when it is wrong; nothing is started. */
    ProxyServer.Context context() throws java.io.IOException {
        return new ProxyServer.Context()
                .port(port)
                .checkpointRoot(Cli.checkpointUri(checkpointDir))
                .checkpointRootMoved(checkpointDirMoved)
                .checkpointIntervalMs(checkpointIntervalSeconds * 1000)
                .checkpointCodec(checkpointCodec)
                .checkpointReplication(checkpointReplication)
                .checkpointBlockSize(Cli.bytes("--checkpoint-block-size", checkpointBlockSize))
                .keepCheckpoints(keepCheckpoints)
                .deltasPerBase(deltasPerBase)
                .checkpointPauseMs(Cli.duration("--checkpoint-pause-timeout", checkpointPauseTimeout)
                        .toMillis())
                .maxCheckpointAgeMs(Cli.durationWithUnit("--max-checkpoint-age", maxCheckpointAge)
                        .toMillis())
                .checkpointStallTimeoutMs(Cli.duration("--checkpoint-stall-timeout", checkpointStallTimeout)
                        .toMillis())
                .checkpointTimeoutMs(
                        Cli.duration("--checkpoint-timeout", checkpointTimeout).toMillis())
                .hadoopConf(hadoop.serverConfiguration())
                .stateDir(stateDir)
                .leaseMs(leaseMs)
                .leaseMarginMs(leaseMarginMs)
                .workerLeaseMs(workerLeaseMs)
                .readCacheBytes(Cli.bytes("--read-cache", readCache))
                .heartbeatIntervalMs(heartbeatMs)
                .security(security.security(workerToken.file));
    }
}
