package io.pscluster.local;

import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.pscluster.proto.v1.AdminServiceGrpc;
import io.pscluster.proto.v1.CheckpointInfo;
import io.pscluster.proto.v1.CheckpointNowRequest;
import io.pscluster.proto.v1.GetRoutingTableRequest;
import io.pscluster.proto.v1.InjectFaultRequest;
import io.pscluster.proto.v1.JobInfo;
import io.pscluster.proto.v1.ListCheckpointsRequest;
import io.pscluster.proto.v1.ListJobsRequest;
import io.pscluster.proto.v1.ListShardsRequest;
import io.pscluster.proto.v1.ListShardsResponse;
import io.pscluster.proto.v1.ListTablesRequest;
import io.pscluster.proto.v1.ProxyServiceGrpc;
import io.pscluster.proto.v1.RestoreRequest;
import io.pscluster.proto.v1.RoutingTable;
import io.pscluster.proto.v1.ShardAdminServiceGrpc;
import io.pscluster.proto.v1.TableSchema;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;

/** The proxy calls tests make as an operator would (one short-lived channel per call), with a deadline each. */
public final class AdminCalls {
    private AdminCalls() {}

    /** Takes a checkpoint now; returns its id. */
    public static long checkpointNow(final String proxy) {
        return call(
                proxy,
                channel -> AdminServiceGrpc.newBlockingStub(channel)
                        .withDeadlineAfter(60, TimeUnit.SECONDS)
                        .checkpointNow(CheckpointNowRequest.getDefaultInstance())
                        .getCheckpoint()
                        .getId());
    }

    /** Restores checkpoint {@code id} (0: the latest complete one) into the running shards; returns the rows. */
    public static long restore(final String proxy, final long id) {
        return call(
                proxy,
                channel -> AdminServiceGrpc.newBlockingStub(channel)
                        .withDeadlineAfter(120, TimeUnit.SECONDS)
                        .restore(RestoreRequest.newBuilder().setCheckpointId(id).build())
                        .getRowsRestored());
    }

    /** Rebalances the slots over the live shards ({@code dryRun}: only plans). */
    public static io.pscluster.proto.v1.RebalanceResponse rebalance(final String proxy, final boolean dryRun) {
        return rebalance(proxy, dryRun, 120_000);
    }

    /** {@link #rebalance(String, boolean)} with a deadline of {@code deadlineMs}. */
    public static io.pscluster.proto.v1.RebalanceResponse rebalance(
            final String proxy, final boolean dryRun, final long deadlineMs) {
        return call(
                proxy,
                channel -> AdminServiceGrpc.newBlockingStub(channel)
                        .withDeadlineAfter(deadlineMs, TimeUnit.MILLISECONDS)
                        .rebalance(io.pscluster.proto.v1.RebalanceRequest.newBuilder()
                                .setDryRun(dryRun)
                                .build()));
    }

    /** The checkpoint or restore running now at the proxy, or its last one, with each shard's progress. */
    public static io.pscluster.proto.v1.OperationProgressResponse operationProgress(final String proxy) {
        return call(
                proxy,
                channel -> AdminServiceGrpc.newBlockingStub(channel)
                        .withDeadlineAfter(10, TimeUnit.SECONDS)
                        .operationProgress(io.pscluster.proto.v1.OperationProgressRequest.getDefaultInstance()));
    }

    public static ListShardsResponse status(final String proxy) {
        return call(
                proxy,
                channel -> AdminServiceGrpc.newBlockingStub(channel)
                        .withDeadlineAfter(10, TimeUnit.SECONDS)
                        .listShards(ListShardsRequest.getDefaultInstance()));
    }

    /** Complete checkpoints, newest first. */
    public static List<CheckpointInfo> checkpoints(final String proxy) {
        return call(
                proxy,
                channel -> AdminServiceGrpc.newBlockingStub(channel)
                        .withDeadlineAfter(10, TimeUnit.SECONDS)
                        .listCheckpoints(ListCheckpointsRequest.getDefaultInstance())
                        .getCheckpointsList());
    }

    /** Every job the proxy holds, with its workers. */
    public static List<JobInfo> jobs(final String proxy) {
        return call(
                proxy,
                channel -> AdminServiceGrpc.newBlockingStub(channel)
                        .withDeadlineAfter(10, TimeUnit.SECONDS)
                        .listJobs(ListJobsRequest.getDefaultInstance())
                        .getJobsList());
    }

    /** The workers of job {@code jobId} the proxy holds now (0 when it does not know the job). */
    public static int workersOf(final String proxy, final String jobId) {
        return jobs(proxy).stream()
                .filter(job -> job.getSpec().getJobId().equals(jobId))
                .mapToInt(JobInfo::getWorkersCount)
                .sum();
    }

    public static RoutingTable routing(final String proxy) {
        return call(
                proxy,
                channel -> ProxyServiceGrpc.newBlockingStub(channel)
                        .withDeadlineAfter(10, TimeUnit.SECONDS)
                        .getRoutingTable(GetRoutingTableRequest.getDefaultInstance())
                        .getRouting());
    }

    public static List<String> tableNames(final String proxy) {
        return call(
                proxy,
                channel -> ProxyServiceGrpc.newBlockingStub(channel)
                        .withDeadlineAfter(10, TimeUnit.SECONDS)
                        .listTables(ListTablesRequest.getDefaultInstance())
                        .getTablesList()
                        .stream()
                        .map(TableSchema::getName)
                        .toList());
    }

    /**
     * Switches fault point {@code point} on or off on every shard of {@code cluster}; {@code times} > 0 fires it that
     * many times, 0 until it is switched off.
     */
    public static void injectFault(
            final LocalCluster cluster, final String point, final boolean enabled, final int times) {
        for (int i = 0; i < cluster.shardCount(); i++) {
            injectFault(cluster, i, point, enabled, times);
        }
    }

    /** As {@link #injectFault(LocalCluster, String, boolean, int)}, on shard {@code index} alone. */
    public static void injectFault(
            final LocalCluster cluster, final int index, final String point, final boolean enabled, final int times) {
        onShard(
                cluster,
                index,
                admin -> admin.injectFault(InjectFaultRequest.newBuilder()
                        .setPoint(point)
                        .setEnabled(enabled)
                        .setTimes(times)
                        .build()));
    }

    /** One call to the admin service of shard {@code index} of {@code cluster}, with a 10 s deadline. */
    public static <T> T onShard(
            final LocalCluster cluster,
            final int index,
            final Function<ShardAdminServiceGrpc.ShardAdminServiceBlockingStub, T> body) {
        return call(
                cluster.shard(index).address(),
                channel -> body.apply(
                        ShardAdminServiceGrpc.newBlockingStub(channel).withDeadlineAfter(10, TimeUnit.SECONDS)));
    }

    private static <T> T call(final String proxy, final Function<ManagedChannel, T> body) {
        final ManagedChannel channel =
                ManagedChannelBuilder.forTarget(proxy).usePlaintext().build();
        try {
            return body.apply(channel);
        } finally {
            channel.shutdownNow();
        }
    }
}
