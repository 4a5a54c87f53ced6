package io.pscluster.cli;

import io.grpc.ManagedChannel;
import io.pscluster.proto.v1.AdminServiceGrpc;
import io.pscluster.proto.v1.ForgetShardRequest;
import io.pscluster.proto.v1.RebalanceRequest;
import io.pscluster.proto.v1.RebalanceResponse;
import io.pscluster.proto.v1.SlotMove;
import io.pscluster.server.ShardServer;
import java.io.PrintWriter;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

@Command(
        name = "shard",
        mixinStandardHelpOptions = true,
        description = "Run a PS shard until stopped (SIGTERM drains it: its slots are handed over, nothing is lost).",
        subcommands = {ShardCommand.Forget.class, ShardCommand.Rebalance.class})
final class ShardCommand implements Callable<Integer> {
    @Option(names = "--proxy", description = "The proxy's HOST:PORT (required).")
    String proxy;

    @Option(names = "--port", defaultValue = "0", description = "Port to serve on; 0 (default) picks a free one.")
    int port;

    @Option(
            names = "--host",
            defaultValue = "127.0.0.1",
            description = "Host name clients use to reach this shard (default ${DEFAULT-VALUE}).")
    String host;

    @Option(
            names = "--id",
            defaultValue = "",
            description = "Stable shard id; a shard restarted with its id takes its slots back. Default: assigned.")
    String id;

    @Option(
            names = "--max-queued-push-mb",
            defaultValue = "0",
            description = "Heap (MiB) that pushes queued for the writers may hold before more are refused for a while"
                    + " (the SDK retries them); default 0: a quarter of the heap.")
    long maxQueuedPushMb;

    @Mixin
    HadoopOptions hadoop;

    @Mixin
    MetricsOptions metrics;

    @Mixin
    SecurityOptions security;

    @Mixin
    WorkerTokenOption workerToken;

    @Override
    public Integer call() throws Exception {
        if (proxy == null) {
            throw new IllegalArgumentException("--proxy is required: the proxy's HOST:PORT");
        }
        if (maxQueuedPushMb < 0) {
            throw new IllegalArgumentException(
                    "--max-queued-push-mb " + maxQueuedPushMb + ": must be > 0 (or 0 for a quarter of the heap)");
        }
        final ShardServer.Context context = new ShardServer.Context()
                .proxyAddress(Cli.hostPort("--proxy", proxy))
                .hadoopConf(hadoop.serverConfiguration())
                .port(port)
                .host(host)
                .shardId(id)
                .security(security.security(workerToken.file));
        if (maxQueuedPushMb > 0) {
            // Otherwise the context's default.
            context.maxQueuedPushBytes(maxQueuedPushMb << 20);
        }
        final ShardServer shard = metrics.serve(registry -> ShardServer.start(context.meterRegistry(registry)));
        System.out.println("shard " + shard.shardId() + " serving at " + shard.address());
        Cli.runUntilStopped(shard);
        return 0;
    }

    @Command(
            name = "forget",
            mixinStandardHelpOptions = true,
            description = "Remove a shard that is gone from the proxy's registry (its slots go to live shards).")
    static final class Forget implements Callable<Integer> {
        @Option(names = "--proxy", required = true, description = "The proxy's HOST:PORT.")
        String proxy;

        @Mixin
        SecurityOptions security;

        @Option(names = "--id", required = true, description = "The shard id to forget.")
        String id;

        @Override
        public Integer call() {
            final ManagedChannel channel = security.channel(Cli.hostPort("--proxy", proxy));
            try {
                final boolean forgotten = AdminServiceGrpc.newBlockingStub(channel)
                        .withDeadlineAfter(30, TimeUnit.SECONDS)
                        .forgetShard(
                                ForgetShardRequest.newBuilder().setShardId(id).build())
                        .getForgotten();
                System.out.println(forgotten ? "shard " + id + " forgotten" : "no shard " + id + " to forget");
                return forgotten ? 0 : 1;
            } finally {
                Cli.close(channel);
            }
        }
    }

    @Command(
            name = "rebalance",
            mixinStandardHelpOptions = true,
            description = {
                "Move slots from the shards that own more than their share to those that own less, a shard just"
                        + " added first, so that every live shard owns as many as the others (give or take one).",
                "Nothing is lost: requests for the moving slots are refused (clients retry) while one checkpoint is"
                        + " taken, then their new owners load them from it. Exit 0 when moved or nothing to move."
            })
    static final class Rebalance implements Callable<Integer> {
        @Option(names = "--proxy", required = true, description = "The proxy's HOST:PORT.")
        String proxy;

        @Mixin
        SecurityOptions security;

        @Option(names = "--dry-run", description = "Only print the moves.")
        boolean dryRun;

        @Option(
                names = "--timeout-s",
                defaultValue = "600",
                description = "How long this command waits (default ${DEFAULT-VALUE} s).")
        long timeoutSeconds;

        @Option(names = "--quiet", description = "No progress lines on standard error.")
        boolean quiet;

        @Spec
        CommandLine.Model.CommandSpec spec;

        @Override
        public Integer call() {
            return CheckpointCommand.withAdminProgress(
                    security, proxy, timeoutSeconds, "checkpoint", quiet, spec, admin -> {
                        final RebalanceResponse response = admin.rebalance(
                                RebalanceRequest.newBuilder().setDryRun(dryRun).build());
                        final PrintWriter out = spec.commandLine().getOut();
                        if (response.getMovesCount() == 0) {
                            out.println("nothing to move: every live shard owns its share of the slots");
                            return 0;
                        }
                        for (final SlotMove move : response.getMovesList()) {
                            out.println((dryRun ? "would move " : "moved ") + move.getSlotsCount()
                                    + " slots from shard " + move.getFromShard() + " to shard " + move.getToShard());
                        }
                        if (!dryRun) {
                            out.println("routing epoch " + response.getRoutingEpoch()
                                    + "; the new owners load the slots from" + " checkpoint "
                                    + response.getCheckpointId() + " (psctl status shows them restoring)");
                        }
                        return 0;
                    });
        }
    }
}
