package io.pscluster.cli;

import io.grpc.ManagedChannel;
import io.pscluster.proto.v1.AdminServiceGrpc;
import io.pscluster.proto.v1.JobInfo;
import io.pscluster.proto.v1.JobWorker;
import io.pscluster.proto.v1.ListJobsRequest;
import io.pscluster.proto.v1.ListJobsResponse;
import io.pscluster.proto.v1.ListShardsRequest;
import io.pscluster.proto.v1.ListShardsResponse;
import io.pscluster.proto.v1.RestoreDirective;
import io.pscluster.proto.v1.RestoreReport;
import io.pscluster.proto.v1.RollbackEvent;
import io.pscluster.proto.v1.ShardStatus;
import io.pscluster.wire.UpdateModes;
import io.pscluster.worker.PsClient;
import java.io.PrintWriter;
import java.time.Instant;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

@Command(
        name = "status",
        mixinStandardHelpOptions = true,
        description = "Shards, their slots and last load; jobs and their workers; restores in progress; rollbacks.")
final class StatusCommand implements Callable<Integer> {
    @Option(names = "--proxy", required = true, description = "The proxy's HOST:PORT.")
    String proxy;

    @Mixin
    SecurityOptions security;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() {
        final ManagedChannel channel = security.channel(Cli.hostPort("--proxy", proxy));
        final PrintWriter out = spec.commandLine().getOut();
        try {
            final ListShardsResponse response = AdminServiceGrpc.newBlockingStub(channel)
                    .withDeadlineAfter(10, TimeUnit.SECONDS)
                    .listShards(ListShardsRequest.getDefaultInstance());
            out.printf(
                    "routing epoch %d, %d shards, %d slots without a live owner, %d rollbacks since the start%n",
                    response.getRoutingEpoch(),
                    response.getShardsCount(),
                    response.getUnownedSlots(),
                    response.getRollbacksTotal());
            if (response.getUnfinishedRestoreId() > 0) {
                out.printf(
                        "WARNING: the restore of checkpoint %d into every shard did not finish: the shards may hold a"
                                + " mix of it and what they held before, and checkpoints are refused; run `psctl"
                                + " checkpoint restore --id %d` again%n",
                        response.getUnfinishedRestoreId(), response.getUnfinishedRestoreId());
            }
            if (response.getGraceRemainingMillis() > 0) {
                out.printf(
                        "proxy just restarted: no slot moves for another %d ms (shards re-register)%n",
                        response.getGraceRemainingMillis());
            }
            out.printf(
                    "%-12s %-22s %-11s %6s %9s %10s %12s %8s %6s %10s %15s %8s%n",
                    "SHARD",
                    "ADDRESS",
                    "STATE",
                    "SLOTS",
                    "RESTORING",
                    "ROWS",
                    "BYTES",
                    "REQ/S",
                    "QUEUE",
                    "HEAP_MB",
                    "OFFHEAP_MB",
                    "LAST_HB");
            for (final ShardStatus shard : response.getShardsList()) {
                out.printf(
                        "%-12s %-22s %-11s %6d %9d %10d %12d %8.1f %6d %10d %15s %6dms%n",
                        shard.getShard().getShardId(),
                        shard.getShard().getAddress(),
                        shard.getState().isEmpty() ? (shard.getLive() ? "live" : "gone") : shard.getState(),
                        shard.getSlotsOwned(),
                        shard.getSlotsRestoring(),
                        shard.getLoad().getRows(),
                        shard.getLoad().getBytes(),
                        shard.getLoad().getRequestsPerSecond(),
                        shard.getLoad().getApplyQueueDepth(),
                        shard.getLoad().getHeapUsedBytes() >> 20,
                        (shard.getLoad().getOffheapHeldBytes() >> 20) + "/"
                                + (shard.getLoad().getOffheapLimitBytes() >> 20),
                        shard.getMillisSinceHeartbeat());
            }
            for (final ShardStatus shard : response.getShardsList()) {
                if (shard.getLoad().getFencedSlots() > 0) {
                    out.printf(
                            "shard %s: %d slots fenced for a rebalance (their requests are refused and retried) for at"
                                    + " most %d s more; if no rebalance is running, run `psctl shard rebalance` to lift"
                                    + " them%n",
                            shard.getShard().getShardId(),
                            shard.getLoad().getFencedSlots(),
                            TimeUnit.MILLISECONDS.toSeconds(shard.getLoad().getFenceRemainingMillis()));
                }
                if (shard.getLoad().getKeptMovedSlots() > 0) {
                    out.printf(
                            "shard %s: keeps the rows of %d slots it gave away (a rebalance or its drain) until their new"
                                    + " owner has restored them (a damaged move checkpoint hands them back)%n",
                            shard.getShard().getShardId(), shard.getLoad().getKeptMovedSlots());
                }
            }
            for (final ShardStatus shard : response.getShardsList()) {
                if (shard.getLoad().getDroppedRows() > 0) {
                    out.printf(
                            "shard %s: %d row updates acknowledged but not applied (row cap, memory, slots moved"
                                    + " away or restored from a checkpoint meanwhile, or a failed write: see its log)%n",
                            shard.getShard().getShardId(), shard.getLoad().getDroppedRows());
                }
            }
            printJobs(
                    AdminServiceGrpc.newBlockingStub(channel)
                            .withDeadlineAfter(10, TimeUnit.SECONDS)
                            .listJobs(ListJobsRequest.getDefaultInstance()),
                    out);
            for (final RestoreDirective order : response.getPendingRestoresList()) {
                out.printf(
                        "restore order %d: shard %s loads %d slots from checkpoint %d (%s)%s%n",
                        order.getOrderId(),
                        order.getShardId(),
                        order.getSlotsCount(),
                        order.getCheckpointId(),
                        order.getReason(),
                        reportOf(response, order.getOrderId()));
            }
            for (final RollbackEvent event : response.getRollbacksList()) {
                out.println(PsClient.describe(event));
            }
            return 0;
        } finally {
            Cli.close(channel);
        }
    }

    /** Each job with its mode, tables and live workers, and its slowest worker (the one the others may wait for). */
    static void printJobs(final ListJobsResponse response, final PrintWriter out) {
        out.printf("%d jobs%n", response.getJobsCount());
        if (response.getJobsCount() == 0) {
            return;
        }
        out.printf("%-16s %-10s %-8s %8s %s%n", "JOB", "MODE", "STARTED", "WORKERS", "TABLES");
        for (final JobInfo job : response.getJobsList()) {
            out.printf(
                    "%-16s %-10s %-8s %8s %s%n",
                    job.getSpec().getJobId(),
                    UpdateModes.describe(job.getSpec()),
                    job.getStarted() ? "yes" : "no",
                    job.getWorkersCount() + "/" + Math.max(1, job.getSpec().getExpectedWorkers()),
                    job.getTablesCount() == 0 ? "-" : String.join(",", job.getTablesList()));
            if (job.getWorkersCount() == 0) {
                out.printf(
                        "    no live worker since %s%n",
                        job.getIdleSinceMillis() == 0 ? "-" : Instant.ofEpochMilli(job.getIdleSinceMillis()));
                continue;
            }
            out.printf("    %-8s %-6s %-24s %10s %10s %10s%n", "WORKER", "RANK", "HOST", "CLOCK", "START", "RENEWED");
            JobWorker slowest = null;
            for (final JobWorker worker : job.getWorkersList()) {
                out.printf(
                        "    %-8d %-6d %-24s %10d %10d %8dms%n",
                        worker.getWorkerId(),
                        worker.getRank(),
                        worker.getHost().isEmpty() ? "-" : worker.getHost(),
                        worker.getClock(),
                        worker.getStartClock(),
                        worker.getMillisSinceRenewal());
                if (slowest == null || worker.getClock() < slowest.getClock()) {
                    slowest = worker;
                }
            }
            out.printf("    slowest: worker %d at clock %d%n", slowest.getWorkerId(), slowest.getClock());
        }
    }

    private static String reportOf(final ListShardsResponse response, final long orderId) {
        for (final RestoreReport report : response.getRestoreReportsList()) {
            if (report.getOrderId() == orderId && !report.getNote().isEmpty()) {
                return ": " + report.getNote();
            }
        }
        return "";
    }
}
