package io.pscluster.local;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.pscluster.checkpoint.PausePoints;
import io.pscluster.server.FaultPoints;
import io.pscluster.wire.Slots;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.BitSet;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.stream.LongStream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;

/**
 * A table dropped and created again with the same schema after the last checkpoint, then a shard lost, on a real
 * cluster (proxy and two shards on loopback): the lost shard's slots come back from that checkpoint, which holds rows
 * of the dropped table under the same name. They must not come back into the new table (which would then hold a mix of
 * two tables): its restored slots start empty.
 */
@ExtendWith(FaultsAllowed.class)
class RecreatedTableFailoverTest {
    private static final long[] KEYS =
            LongStream.range(0, 2_000).map(i -> i * 7919 + 11).toArray();

    @TempDir
    Path dir;

    @Test
    void shouldNotRestoreADroppedTablesRowsIntoATableOfTheSameNameCreatedAfterTheCheckpoint() throws Exception {
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(2)
                        .checkpointRoot(dir.resolve("checkpoints").toUri().toString())
                        .keepCheckpoints(0)
                        .start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            PsTable table = countedTo4(client);
            AdminCalls.checkpointNow(cluster.proxyAddress());

            assertThat(client.dropTable("counter")).isTrue();
            table = client.createTable(CounterTable.schema("counter"));
            push(table);
            awaitAll(table, 1f);

            loseShardZeroAndExpectItsSlotsEmpty(cluster, table);
        }
    }

    /**
     * As above, with the table dropped and created again while a checkpoint was being written (while a shard wrote its
     * rows (after its cut, before its manifest): that checkpoint holds the dropped table's rows too, and a table created while it was
     * written is not one it holds.
     */
    @Test
    void shouldNotRestoreADroppedTablesRowsIntoATableCreatedAgainWhileTheCheckpointWasWritten() throws Exception {
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(2)
                        .checkpointRoot(dir.resolve("checkpoints").toUri().toString())
                        .keepCheckpoints(0)
                        .start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            PsTable table = countedTo4(client);
            PausePoints.arm(PausePoints.MID_ROW_FILE);
            final CompletableFuture<Long> checkpoint;
            try {
                checkpoint = CompletableFuture.supplyAsync(() -> AdminCalls.checkpointNow(cluster.proxyAddress()));
                await().atMost(Duration.ofSeconds(60)).until(() -> !PausePoints.armed(PausePoints.MID_ROW_FILE));

                assertThat(client.dropTable("counter")).isTrue();
                table = client.createTable(CounterTable.schema("counter"));
            } finally {
                PausePoints.disarm(PausePoints.MID_ROW_FILE);
            }
            assertThat(checkpoint.get(60, TimeUnit.SECONDS)).isPositive();
            push(table);
            awaitAll(table, 1f);

            loseShardZeroAndExpectItsSlotsEmpty(cluster, table);
        }
    }

    /**
     * As above, with the table dropped and created again while the lost shard's slots are being restored (their order
     * issued, its attempts failing): the order carries the catalog's table times anew, so the restore, once it
     * succeeds, leaves the new table's restored slots empty (before, it loaded the dropped table's rows into them).
     */
    @Test
    void shouldNotRestoreADroppedTablesRowsIntoATableCreatedAgainWhileTheSlotsAreBeingRestored() throws Exception {
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(2)
                        .checkpointRoot(dir.resolve("checkpoints").toUri().toString())
                        .keepCheckpoints(0)
                        .leaseMs(2_000)
                        .leaseMarginMs(500)
                        .heartbeatIntervalMs(200)
                        .start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            PsTable table = countedTo4(client);
            AdminCalls.checkpointNow(cluster.proxyAddress());
            AdminCalls.injectFault(cluster, 1, FaultPoints.FAIL_RESTORE, true, 0);
            cluster.crashShard(0);
            await().atMost(Duration.ofSeconds(60))
                    .until(() -> AdminCalls.status(cluster.proxyAddress()).getPendingRestoresCount() > 0);

            assertThat(client.dropTable("counter")).isTrue();
            table = client.createTable(CounterTable.schema("counter"));
            AdminCalls.injectFault(cluster, 1, FaultPoints.FAIL_RESTORE, false, 0);

            cluster.awaitHealthy(60_000);
            await().atMost(Duration.ofSeconds(60))
                    .until(() -> AdminCalls.status(cluster.proxyAddress()).getPendingRestoresCount() == 0);
            assertThat(table.pull(KEYS))
                    .as("the new table holds nothing of the dropped one")
                    .containsOnly(0f);
        }
    }

    /**
     * Crashes shard 0, whose slots come back from the checkpoint into the other shard: there they must start empty in
     * the table created again ({@code recreated}, whose every key holds 1), not hold the dropped table's rows.
     */
    private static void loseShardZeroAndExpectItsSlotsEmpty(final LocalCluster cluster, final PsTable recreated)
            throws Exception {
        final BitSet lost = cluster.shard(0).shard().ownedSlots();
        assertThat(lost.cardinality())
                .as("slots the lost shard held")
                .isPositive()
                .isLessThan(Slots.SLOT_COUNT);
        cluster.crashShard(0);
        cluster.awaitHealthy(60_000);
        final long hash = Slots.tableHash("counter");
        await().atMost(Duration.ofSeconds(60)).untilAsserted(() -> {
            final float[] values = recreated.pull(KEYS);
            for (int i = 0; i < KEYS.length; i++) {
                final boolean adopted = lost.get(Slots.slotOf(hash, KEYS[i]));
                assertThat(values[i])
                        .as("key %d (a slot of the lost shard: %s)", KEYS[i], adopted)
                        .isEqualTo(adopted ? 0f : 1f);
            }
        });
    }

    /** Creates the table "counter" and counts every key to 4. */
    private static PsTable countedTo4(final PsClient client) {
        final PsTable table = client.createTable(CounterTable.schema("counter"));
        for (int round = 0; round < 4; round++) {
            push(table);
        }
        awaitAll(table, 4f);
        return table;
    }

    /** Adds 1 to every key's value (SGD with lr 1 from zeros, gradient -1). */
    private static void push(final PsTable table) {
        final float[] gradients = new float[KEYS.length];
        Arrays.fill(gradients, -1f);
        table.push(KEYS, gradients);
    }

    private static void awaitAll(final PsTable table, final float value) {
        await().atMost(Duration.ofSeconds(20))
                .untilAsserted(() -> assertThat(table.pull(KEYS)).containsOnly(value));
    }
}
