package io.pscluster.faults;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.pscluster.local.LocalCluster;
import io.pscluster.proto.v1.InjectFaultRequest;
import io.pscluster.proto.v1.ShardAdminServiceGrpc;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Acknowledged means applied once: shards accept pushes but lose their answers (a fault point), so the SDK cannot
 * tell and sends each again with the same (client id, sequence). The counter table must hold exactly one increment per
 * acknowledged push: a retry applied twice shows as a value above the count.
 */
class PushRetryDedupTest {
    private static final int LOST_ANSWERS_PER_SHARD = 40;

    @TempDir
    Path dir;

    @BeforeAll
    static void allowFaults() {
        System.setProperty("pscluster.faults", "true");
    }

    @AfterAll
    static void disallowFaults() {
        System.clearProperty("pscluster.faults");
    }

    @Test
    void shouldApplyAPushOnceWhenItsAnswerIsLostAndTheSdkSendsItAgain() throws Exception {
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(2)
                        .checkpointRoot(dir.toUri().toString())
                        .start();
                CounterLoad load = new CounterLoad(cluster.proxyAddress(), "counter")) {
            for (int i = 0; i < 2; i++) {
                final ManagedChannel channel = ManagedChannelBuilder.forTarget(
                                cluster.shard(i).address())
                        .usePlaintext()
                        .build();
                try {
                    ShardAdminServiceGrpc.newBlockingStub(channel)
                            .withDeadlineAfter(10, TimeUnit.SECONDS)
                            .injectFault(InjectFaultRequest.newBuilder()
                                    .setPoint("lose-push-answer")
                                    .setEnabled(true)
                                    .setTimes(LOST_ANSWERS_PER_SHARD)
                                    .build());
                } finally {
                    channel.shutdownNow();
                }
            }
            load.start(2);
            // Every push of 64 random keys out of 4096 reaches both shards, so the first 40 of each lose an answer.
            await().atMost(Duration.ofSeconds(60)).until(() -> load.pushes() > 4 * LOST_ANSWERS_PER_SHARD);
            load.stop();

            assertThat(load.failures())
                    .as("pushes failed: %s", load.failureSamples())
                    .isZero();
            await().atMost(Duration.ofSeconds(20))
                    .untilAsserted(() -> assertThat(load.mismatches()).isEmpty());
        }
    }
}
