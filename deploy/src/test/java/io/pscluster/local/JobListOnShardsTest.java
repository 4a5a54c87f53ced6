package io.pscluster.local;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.pscluster.proto.v1.AdminServiceGrpc;
import io.pscluster.proto.v1.JobSpec;
import io.pscluster.proto.v1.JoinJobRequest;
import io.pscluster.proto.v1.JoinJobResponse;
import io.pscluster.proto.v1.LeaveJobRequest;
import io.pscluster.proto.v1.ListJobsRequest;
import io.pscluster.proto.v1.ProxyServiceGrpc;
import io.pscluster.proto.v1.RegisterJobRequest;
import io.pscluster.proto.v1.UpdateMode;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The job list on real shards: the proxy sends it to them before a join or a leave is answered, and a shard that
 * registers later gets it from the answer to its heartbeat (it reports an older jobs_version).
 */
class JobListOnShardsTest {
    @TempDir
    Path dir;

    @Test
    void shouldSendTheJobListBeforeAnsweringAndRepairALateShardThroughItsHeartbeat() throws Exception {
        try (LocalCluster cluster = LocalCluster.builder()
                .shards(1)
                .checkpointRoot(dir.toUri().toString())
                .start()) {
            final ManagedChannel channel = Grpc.newChannelBuilder(
                            cluster.proxyAddress(), InsecureChannelCredentials.create())
                    .build();
            try {
                final var proxy = ProxyServiceGrpc.newBlockingStub(channel);
                proxy.withDeadlineAfter(10, TimeUnit.SECONDS)
                        .registerJob(RegisterJobRequest.newBuilder()
                                .setSpec(JobSpec.newBuilder()
                                        .setJobId("lr")
                                        .setMode(UpdateMode.SYNC)
                                        .setExpectedWorkers(1))
                                .build());

                final JoinJobResponse joined = proxy.withDeadlineAfter(10, TimeUnit.SECONDS)
                        .joinJob(JoinJobRequest.newBuilder()
                                .setJobId("lr")
                                .setHost("test")
                                .build());
                assertThat(cluster.shard(0).shard().jobsVersion())
                        .as("the shard had the list before the join was answered")
                        .isEqualTo(joined.getJob().getVersion());

                proxy.withDeadlineAfter(10, TimeUnit.SECONDS)
                        .leaveJob(LeaveJobRequest.newBuilder()
                                .setJobId("lr")
                                .setWorkerId(joined.getWorkerId())
                                .build());
                final long afterLeave = AdminServiceGrpc.newBlockingStub(channel)
                        .withDeadlineAfter(10, TimeUnit.SECONDS)
                        .listJobs(ListJobsRequest.getDefaultInstance())
                        .getJobs(0)
                        .getVersion();
                assertThat(afterLeave).isGreaterThan(joined.getJob().getVersion());
                assertThat(cluster.shard(0).shard().jobsVersion()).isEqualTo(afterLeave);

                final int late = cluster.addShard();
                await().atMost(Duration.ofSeconds(10))
                        .until(() -> cluster.shard(late).shard().jobsVersion() == afterLeave);
            } finally {
                channel.shutdownNow();
                channel.awaitTermination(5, TimeUnit.SECONDS);
            }
        }
    }
}
