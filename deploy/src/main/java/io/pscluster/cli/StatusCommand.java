package io.pscluster.cli;

import io.grpc.ManagedChannel;
import io.pscluster.proto.v1.AdminServiceGrpc;
import io.pscluster.proto.v1.ListShardsRequest;
import io.pscluster.proto.v1.ListShardsResponse;
import io.pscluster.proto.v1.ShardStatus;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

@Command(name = "status", mixinStandardHelpOptions = true, description = "Shards, their slots and last load.")
final class StatusCommand implements Callable<Integer> {
    @Option(names = "--proxy", required = true, description = "The proxy's HOST:PORT.")
    String proxy;

    @Override
    public Integer call() {
        final ManagedChannel channel = Cli.channel(Cli.hostPort("--proxy", proxy));
        try {
            final ListShardsResponse response = AdminServiceGrpc.newBlockingStub(channel)
                    .withDeadlineAfter(10, TimeUnit.SECONDS)
                    .listShards(ListShardsRequest.getDefaultInstance());
            System.out.printf(
                    "routing epoch %d, %d shards, %d slots without a live owner%n",
                    response.getRoutingEpoch(), response.getShardsCount(), response.getUnownedSlots());
            System.out.printf(
                    "%-12s %-22s %-5s %6s %10s %12s %8s %6s %10s %8s%n",
                    "SHARD", "ADDRESS", "LIVE", "SLOTS", "ROWS", "BYTES", "REQ/S", "QUEUE", "HEAP_MB", "LAST_HB");
            for (final ShardStatus shard : response.getShardsList()) {
                System.out.printf(
                        "%-12s %-22s %-5s %6d %10d %12d %8.1f %6d %10d %6dms%n",
                        shard.getShard().getShardId(),
                        shard.getShard().getAddress(),
                        shard.getLive() ? "yes" : "NO",
                        shard.getSlotsOwned(),
                        shard.getLoad().getRows(),
                        shard.getLoad().getBytes(),
                        shard.getLoad().getRequestsPerSecond(),
                        shard.getLoad().getApplyQueueDepth(),
                        shard.getLoad().getHeapUsedBytes() >> 20,
                        shard.getMillisSinceHeartbeat());
            }
            return 0;
        } finally {
            Cli.close(channel);
        }
    }
}
