package io.pscluster.faults;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.pscluster.proto.v1.ListShardsResponse;
import io.pscluster.proto.v1.RollbackEvent;
import java.nio.file.Path;
import java.time.Duration;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * SIGTERM on a shard process while a counter job pushes: the shard drains (refuses new pushes with the retryable
 * wrong-owner answer, applies what it acknowledged, hands its slots over through a checkpoint) and exits; every
 * acknowledged push is in the final values and the hand-over is reported as lossless, not as a rollback.
 */
@Tag("slow")
class GracefulStopTest {
    @TempDir
    Path dir;

    @Test
    void shouldLoseNoAcknowledgedPushWhenAShardIsStoppedWithSigterm() throws Exception {
        try (ProcessCluster cluster = new ProcessCluster(dir, 3_000, 500, 300)) {
            cluster.startProxy();
            cluster.startShard("s0");
            cluster.startShard("s1");
            cluster.startShard("s2");
            await().atMost(Duration.ofSeconds(30)).until(cluster::allSlotsServed);
            stopWithSigtermUnderLoad(cluster, "s1");
        }
    }

    /**
     * Stops shard {@code name} with SIGTERM while a counter job pushes: it must exit as a JVM stopped by the signal
     * does, after draining; every acknowledged push is in the final values, none failed, and the hand-over is reported
     * lossless, not as a rollback.
     */
    static void stopWithSigtermUnderLoad(final ProcessCluster cluster, final String name) throws Exception {
        try (CounterLoad load = new CounterLoad(cluster.proxyAddress(), "counter")) {
            load.start(2);
            await().atMost(Duration.ofSeconds(30)).until(() -> load.pushes() > 100);
            final String stopped = cluster.shardId(name);

            cluster.terminate(name);
            // 143 = 128 + SIGTERM: how a JVM stopped by the signal exits, after its shutdown hook ran.
            assertThat(cluster.awaitExit(name, 120_000)).as(cluster.logs()).isEqualTo(143);
            assertThat(cluster.log(name)).as(cluster.logs()).contains("drained:");
            await().atMost(Duration.ofSeconds(60)).until(cluster::allSlotsServed);
            final long pushesAfter = load.pushes();
            await().atMost(Duration.ofSeconds(60)).until(() -> load.pushes() > pushesAfter + 100);
            load.stop();

            await().atMost(Duration.ofSeconds(20))
                    .untilAsserted(() ->
                            assertThat(load.mismatches()).as(cluster.logs()).isEmpty());
            assertThat(load.failures())
                    .as("pushes failed: %s", load.failureSamples())
                    .isZero();
            final ListShardsResponse status = cluster.status();
            assertThat(status.getRollbacksTotal())
                    .as("a drain is not a rollback: %s", cluster.logs())
                    .isZero();
            assertThat(status.getRollbacksList())
                    .filteredOn(event -> event.getFromShard().equals(stopped))
                    .isNotEmpty()
                    .allMatch(RollbackEvent::getLossless);
        }
    }
}
