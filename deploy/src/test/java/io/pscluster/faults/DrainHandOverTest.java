package io.pscluster.faults;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.pscluster.local.AdminCalls;
import io.pscluster.local.CheckpointFiles;
import io.pscluster.local.FaultsAllowed;
import io.pscluster.local.LocalCluster;
import io.pscluster.proto.v1.ListShardsResponse;
import io.pscluster.proto.v1.RestoreDirective;
import io.pscluster.proto.v1.RollbackEvent;
import io.pscluster.server.FaultPoints;
import java.nio.file.Path;
import java.time.Duration;
import java.util.SplittableRandom;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;

/**
 * A drained shard (stopped as SIGTERM stops it) keeps the rows of the slots it handed over until their new owners have
 * restored them, so a drain whose checkpoint is damaged before they read it loses nothing: the slots come back to the
 * draining shard, which hands them over again through a new checkpoint, instead of their new owners falling back to an
 * older checkpoint that lacks the pushes acknowledged since.
 */
@ExtendWith(FaultsAllowed.class)
class DrainHandOverTest {
    @TempDir
    Path dir;

    @Test
    void shouldHandTheSlotsOverAgainWhenTheDrainsCheckpointIsDamagedLosingNoAcknowledgedPush() throws Exception {
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(3)
                        .checkpointRoot(dir.resolve("checkpoints").toUri().toString())
                        .leaseMs(3_000)
                        .leaseMarginMs(500)
                        .heartbeatIntervalMs(300)
                        .start();
                CounterLoad load = new CounterLoad(cluster.proxyAddress(), "counter", 10_000)) {
            final SplittableRandom random = new SplittableRandom(21);
            for (int round = 0; round < 2; round++) {
                for (int i = 0; i < 10; i++) {
                    assertThat(load.pushOnce(random))
                            .as("%s", load.failureSamples())
                            .isTrue();
                }
                if (round == 0) {
                    // An older checkpoint to fall back to, which lacks the pushes after it.
                    AdminCalls.checkpointNow(cluster.proxyAddress());
                }
            }
            final String drainedId = cluster.shard(0).shardId();
            final int drainedSlots = cluster.shard(0).shard().ownedSlots().cardinality();
            for (int taker = 1; taker <= 2; taker++) {
                AdminCalls.injectFault(cluster, taker, FaultPoints.FAIL_RESTORE, true, 0);
            }

            final AtomicReference<Throwable> stopFailed = new AtomicReference<>();
            final Thread stopping = new Thread(
                    () -> {
                        try {
                            cluster.shard(0).close();
                        } catch (Throwable e) {
                            stopFailed.set(e);
                        }
                    },
                    "sigterm-shard-0");
            stopping.start();
            final AtomicReference<RestoreDirective> order = new AtomicReference<>();
            await().atMost(Duration.ofSeconds(60)).untilAsserted(() -> {
                assertThat(cluster.shard(0).shard().keptMovedSlotCount())
                        .as("the draining shard keeps the rows it handed over")
                        .isEqualTo(drainedSlots);
                final ListShardsResponse status = AdminCalls.status(cluster.proxyAddress());
                assertThat(status.getPendingRestoresList())
                        .isNotEmpty()
                        .allMatch(pending -> pending.getFromShard().equals(drainedId))
                        .allMatch(RestoreDirective::getGiverKeepsRows);
                order.set(status.getPendingRestores(0));
            });
            assertThat(stopping.isAlive()).as("it waits for the restores").isTrue();
            CheckpointFiles.flipABitInEachRowFile(
                    dir.resolve("checkpoints"), order.get().getCheckpointId(), "");
            for (int taker = 1; taker <= 2; taker++) {
                AdminCalls.injectFault(cluster, taker, FaultPoints.FAIL_RESTORE, false, 0);
            }

            stopping.join(120_000);
            assertThat(stopping.isAlive()).as("the drain ends").isFalse();
            assertThat(stopFailed.get()).isNull();
            cluster.stopShard(0);
            cluster.awaitHealthy(60_000);
            assertThat(cluster.shard(1).shard().ownedSlots().cardinality()
                            + cluster.shard(2).shard().ownedSlots().cardinality())
                    .isEqualTo(io.pscluster.wire.Slots.SLOT_COUNT);
            assertThat(load.mismatches()).as("every acknowledged push is kept").isEmpty();
            final ListShardsResponse status = AdminCalls.status(cluster.proxyAddress());
            assertThat(status.getPendingRestoresCount()).isZero();
            assertThat(status.getRollbacksTotal())
                    .as("nothing was rolled back: %s", status.getRollbacksList())
                    .isZero();
            assertThat(status.getRollbacksList())
                    .filteredOn(event -> event.getReason().contains("undone"))
                    .isNotEmpty()
                    .allMatch(RollbackEvent::getLossless)
                    .allMatch(event -> event.getReason().contains("is damaged"));
            assertThat(status.getRollbacksList())
                    .filteredOn(event -> event.getReason().contains("drained"))
                    .as("two hand-overs, the second from a new checkpoint")
                    .hasSize(2)
                    .allMatch(RollbackEvent::getLossless);
            for (int i = 0; i < 10; i++) {
                assertThat(load.pushOnce(random))
                        .as("%s", load.failureSamples())
                        .isTrue();
            }
            assertThat(load.mismatches()).isEmpty();
        }
    }
}
