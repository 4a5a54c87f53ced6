package io.pscluster.faults;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.pscluster.checkpoint.PausePoints;
import io.pscluster.local.AdminCalls;
import io.pscluster.proto.v1.RebalanceResponse;
import io.pscluster.proto.v1.ShardStatus;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The proxy is killed ({@code kill -9}) in the middle of a rebalance, with the moving slots fenced at their owners
 * and the move's checkpoint stopped before its manifest, while a counter job pushes. The move never happened: the
 * restarted proxy's heartbeat answers lift the fences its predecessor left (otherwise every push touching a moving slot
 * would be refused for the fence's 10 minutes), nothing acknowledged is lost, and a rebalance run again moves the
 * slots.
 */
@Tag("slow")
class RebalanceProxyKillTest {
    @TempDir
    Path dir;

    private static int slotsOwnedBy(final ProcessCluster cluster, final String shardId) {
        return cluster.status().getShardsList().stream()
                .filter(shard -> shard.getShard().getShardId().equals(shardId))
                .mapToInt(ShardStatus::getSlotsOwned)
                .sum();
    }

    @Test
    void shouldLiftTheFencesOfAMoveWhoseProxyWasKilledAndLoseNoAcknowledgedPush() throws Exception {
        try (ProcessCluster cluster = new ProcessCluster(dir, 3_000, 500, 300)) {
            cluster.startProxy();
            cluster.startShard("s0");
            cluster.startShard("s1");
            await().atMost(Duration.ofSeconds(30)).until(cluster::allSlotsServed);
            try (CounterLoad load = new CounterLoad(cluster.proxyAddress(), "counter")) {
                load.start(2);
                await().atMost(Duration.ofSeconds(30)).until(() -> load.pushes() > 100);
                final String added = cluster.startShard("s2");

                cluster.injectProxyFault(PausePoints.BEFORE_MANIFEST, true);
                final CompletableFuture<RebalanceResponse> rebalance =
                        CompletableFuture.supplyAsync(() -> AdminCalls.rebalance(cluster.proxyAddress(), false));
                cluster.awaitLine(
                        "proxy",
                        Pattern.compile(Pattern.quote(PausePoints.MARKER + PausePoints.BEFORE_MANIFEST)),
                        60_000);
                cluster.kill9("proxy");
                assertThat(rebalance).failsWithin(Duration.ofSeconds(60));
                cluster.startProxy();

                // Every push has 64 random keys of 4,096, so it touches slots that were to move from both shards.
                final long pushesAfterRestart = load.pushes();
                await().atMost(Duration.ofSeconds(45))
                        .alias("pushes go on after the restart")
                        .until(() -> load.pushes() > pushesAfterRestart + 200);
                assertThat(cluster.log("s0") + cluster.log("s1")).contains("made by a proxy that restarted since");
                assertThat(slotsOwnedBy(cluster, added))
                        .as("the move never happened")
                        .isZero();

                final RebalanceResponse again = await().atMost(Duration.ofSeconds(60))
                        .ignoreExceptions()
                        .until(() -> AdminCalls.rebalance(cluster.proxyAddress(), false), done -> true);
                assertThat(again.getMovesCount()).isPositive();
                await().atMost(Duration.ofSeconds(60)).until(cluster::allSlotsServed);
                assertThat(slotsOwnedBy(cluster, added)).isBetween(1365, 1366);
                final long pushesMoved = load.pushes();
                await().atMost(Duration.ofSeconds(60)).until(() -> load.pushes() > pushesMoved + 100);
                load.stop();

                assertThat(load.failures())
                        .as("pushes failed: %s", load.failureSamples())
                        .isZero();
                await().atMost(Duration.ofSeconds(20))
                        .untilAsserted(() ->
                                assertThat(load.mismatches()).as(cluster.logs()).isEmpty());
                assertThat(cluster.status().getRollbacksTotal()).isZero();
            }
        }
    }
}
