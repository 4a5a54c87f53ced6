package io.pscluster.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.server.table.ParameterTable;
import java.time.Duration;
import java.util.Arrays;
import java.util.BitSet;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.stream.LongStream;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * The gate between a push's validation and its application: a push is checked against the shard's slots when it
 * arrives but applied later by the writers, and by then a slot may have moved to another shard (its rows cleared) or
 * begun a restore. The writers then skip that slot's rows and count them in {@link ParameterTable#droppedRows()}.
 */
class ShardPushGateTest {
    private static final String TABLE = "gated";
    private static final int PARTITIONS = 2;
    private static final Duration GENEROUS = Duration.ofSeconds(10);

    private final Shard shard = new Shard("s", 1 << 20, PARTITIONS, 1024, new Configuration());
    private BlockedWriters blocked;
    private ParameterTable table;
    /** Keys whose slots move away (or begin a restore) in each test. */
    private final long[] moving = LongStream.range(100, 108).toArray();
    /** Keys in slots that stay, each apart from every slot of {@link #moving}. */
    private long[] staying;

    private final BitSet movedSlots = new BitSet();

    @BeforeEach
    void ownEverySlotAndCreateTheTable() throws InterruptedException {
        TestRouting.serve(shard, TestRouting.allSlotsTo("s", 1));
        // SGD with lr 1 from zeros, dim 2: a row holds minus the sum of its gradients.
        shard.createTable(TableSchema.newBuilder()
                .setName(TABLE)
                .setKind(TableKind.SPARSE)
                .setDim(2)
                .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(1f))
                .build());
        table = shard.table(TABLE);
        for (final int slot : table.slotsOf(moving)) {
            movedSlots.set(slot);
        }
        staying = LongStream.iterate(1_000, key -> key + 1)
                .filter(key -> !movedSlots.get(table.slotOf(key)))
                .limit(4)
                .toArray();
    }

    @AfterEach
    void releaseAndClose() {
        if (blocked != null) {
            blocked.close();
        }
        shard.close();
    }

    private long[] allKeys() {
        return LongStream.concat(Arrays.stream(moving), Arrays.stream(staying)).toArray();
    }

    private static float[] ones(final int keys) {
        final float[] gradients = new float[2 * keys];
        Arrays.fill(gradients, 1f);
        return gradients;
    }

    private static boolean hasRow(final ParameterTable table, final long key) {
        final long[] keys = {key};
        return table.countAbsent(keys, table.slotsOf(keys)) == 0;
    }

    /** The moving keys have no row and were counted as dropped; the staying keys took the push. */
    private void assertAppliedOnlyToStayingSlots() {
        for (final long key : moving) {
            assertThat(hasRow(table, key))
                    .as("row of key %d in a slot it left", key)
                    .isFalse();
        }
        assertThat(table.pull(moving)).as("moving keys read as initial values").containsOnly(0f);
        assertThat(table.pull(staying)).as("staying keys").containsOnly(-1f);
        assertThat(table.rowCount()).isEqualTo(staying.length);
        assertThat(table.droppedRows()).isEqualTo(moving.length);
    }

    @Test
    void shouldDropAndCountAcceptedRowsWhenTheirSlotsMoveAwayBeforeTheWritersApplyThem() throws Exception {
        blocked = BlockedWriters.block(shard, PARTITIONS);
        final long[] keys = allKeys();
        assertThat(shard.push(TABLE, 1, 0, 0, keys, ones(keys.length)).accepted())
                .isEqualTo(keys.length);

        // applyRouting publishes the new ownership at once, then waits for the blocked writers to clear the slots.
        final CompletableFuture<Void> routed = CompletableFuture.runAsync(() -> {
            try {
                shard.applyRouting(TestRouting.movingSlots("s", "t", movedSlots, 2));
            } catch (InterruptedException e) {
                throw new IllegalStateException(e);
            }
        });
        await().atMost(GENEROUS).until(() -> shard.routingEpoch() == 2);
        assertThat(shard.ownedSlots().intersects(movedSlots)).isFalse();
        blocked.release();
        routed.get(GENEROUS.toSeconds(), TimeUnit.SECONDS);
        shard.awaitQuiescent();

        assertAppliedOnlyToStayingSlots();
    }

    @Test
    void shouldNotBringBackRowsOfMovedSlotsWhenAPushValidatedBeforeTheMoveIsQueuedAfterTheirClear() throws Exception {
        final long[] keys = allKeys();
        // What Shard.push computed and validated while the shard still owned every slot...
        final int[] slots = table.slotsOf(keys);
        shard.applyRouting(TestRouting.movingSlots("s", "t", movedSlots, 2));
        // ...and the rest of that push, reaching the writers only after the move cleared the slots.
        assertThat(table.offerPush(keys, slots, ones(keys.length))).isTrue();
        shard.awaitQuiescent();

        assertAppliedOnlyToStayingSlots();
    }

    @Test
    void shouldNotApplyAnAcceptedPushToSlotsWhenTheirRestoreBeginsBeforeTheWritersApplyIt() throws Exception {
        blocked = BlockedWriters.block(shard, PARTITIONS);
        final long[] keys = allKeys();
        assertThat(shard.push(TABLE, 1, 0, 0, keys, ones(keys.length)).accepted())
                .isEqualTo(keys.length);

        shard.markRestoring(movedSlots);
        blocked.release();
        shard.awaitQuiescent();

        assertThat(shard.restoringSlotCount()).isEqualTo(movedSlots.cardinality());
        assertAppliedOnlyToStayingSlots();
    }
}
