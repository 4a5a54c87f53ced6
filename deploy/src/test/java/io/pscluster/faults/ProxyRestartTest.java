package io.pscluster.faults;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.pscluster.local.AdminCalls;
import io.pscluster.proto.v1.ListShardsResponse;
import io.pscluster.proto.v1.ShardStatus;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * The proxy is killed (SIGKILL) while a counter job pushes, and restarted on its state directory at the same moment
 * as a brand-new shard registers. Nothing may happen to the model: no restore, no table dropped, no rollback, and every
 * acknowledged push is in the final values. Before any checkpoint exists, after one, and with the state file lost
 * (the proxy then learns tables and slots back from what the live shards report).
 */
@Tag("slow")
class ProxyRestartTest {
    @TempDir
    Path dir;

    /** What the proxy restarts on. */
    enum Restart {
        /** Its state file, no checkpoint ever taken. */
        STATE_NO_CHECKPOINT,
        /** Its state file, after a checkpoint. */
        STATE_AND_CHECKPOINT,
        /** No state file (its disk was lost) and no checkpoint: what the live shards hold and report is all there is. */
        NO_STATE_NO_CHECKPOINT,
        /** Its state file, after 10 s down: every shard's lease lapsed meanwhile and gRPC's reconnect backoff grew. */
        STATE_AFTER_LONG_OUTAGE
    }

    @ParameterizedTest(name = "{0}")
    @EnumSource(Restart.class)
    void shouldKeepTablesOwnersAndEveryPushWhenTheProxyIsKilledAndRestarted(final Restart restart) throws Exception {
        try (ProcessCluster cluster = new ProcessCluster(dir, 3_000, 500, 300)) {
            cluster.startProxy();
            cluster.startShard("s0");
            cluster.startShard("s1");
            await().atMost(Duration.ofSeconds(30)).until(cluster::allSlotsServed);
            try (CounterLoad load = new CounterLoad(cluster.proxyAddress(), "counter")) {
                load.start(2);
                await().atMost(Duration.ofSeconds(30)).until(() -> load.pushes() > 50);
                if (restart == Restart.STATE_AND_CHECKPOINT) {
                    AdminCalls.checkpointNow(cluster.proxyAddress());
                }
                final long epochBefore = cluster.status().getRoutingEpoch();
                final ShardOwnership before = ShardOwnership.of(cluster.status());

                cluster.kill9("proxy");
                if (restart == Restart.NO_STATE_NO_CHECKPOINT) {
                    cluster.deleteProxyState();
                }
                if (restart == Restart.STATE_AFTER_LONG_OUTAGE) {
                    // The outage itself is the fault under test: shards keep failing heartbeats for this long.
                    TimeUnit.SECONDS.sleep(10);
                }
                // The restarted proxy and a new shard come up together: the new shard must not take anything.
                final Thread newShard = new Thread(() -> {
                    try {
                        cluster.startShard("s2");
                    } catch (Exception e) {
                        throw new IllegalStateException(e);
                    }
                });
                newShard.start();
                cluster.startProxy();
                newShard.join(90_000);
                assertThat(cluster.shardId("s2")).as(cluster.logs()).isNotNull();

                // Past the grace period (one lease plus margin), with pushes going on: a wrong reassignment, a
                // restore or a dropped table would have happened by then.
                await().atMost(Duration.ofSeconds(60))
                        .until(() -> cluster.status().getGraceRemainingMillis() == 0);
                final long pushesAfterGrace = load.pushes();
                await().atMost(Duration.ofSeconds(60)).until(() -> load.pushes() > pushesAfterGrace + 200);
                load.stop();

                final ListShardsResponse after = cluster.status();
                assertThat(after.getRollbacksTotal()).as(cluster.logs()).isZero();
                assertThat(after.getRollbacksList()).as(cluster.logs()).isEmpty();
                assertThat(after.getPendingRestoresList()).isEmpty();
                assertThat(after.getRoutingEpoch()).isGreaterThanOrEqualTo(epochBefore);
                assertThat(ShardOwnership.of(after).slotsOf(cluster.shardId("s2")))
                        .as("the new shard took nothing\n%s", cluster.logs())
                        .isZero();
                assertThat(ShardOwnership.of(after).slotsOf(cluster.shardId("s0")))
                        .isEqualTo(before.slotsOf(cluster.shardId("s0")));
                assertThat(AdminCalls.tableNames(cluster.proxyAddress())).contains("counter");
                await().atMost(Duration.ofSeconds(20))
                        .untilAsserted(() -> assertThat(load.mismatches())
                                .as(
                                        "keys off their acknowledged pushes (%s); the processes' logs:%n%s",
                                        restart, cluster.logs())
                                .isEmpty());
                assertThat(load.failures())
                        .as("pushes failed: %s", load.failureSamples())
                        .isZero();
                assertThat(cluster.log("s0")).doesNotContain("restor");
            }
        }
    }

    /** Slots owned per shard id, from a status answer. */
    record ShardOwnership(java.util.Map<String, Integer> slots) {
        static ShardOwnership of(final ListShardsResponse status) {
            final java.util.Map<String, Integer> slots = new java.util.HashMap<>();
            for (final ShardStatus shard : status.getShardsList()) {
                slots.put(shard.getShard().getShardId(), shard.getSlotsOwned());
            }
            return new ShardOwnership(slots);
        }

        int slotsOf(final String shardId) {
            return slots.getOrDefault(shardId, 0);
        }
    }
}
