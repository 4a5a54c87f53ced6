package io.pscluster.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatCode;
import static org.assertj.core.api.Assertions.catchThrowableOfType;
import static org.awaitility.Awaitility.await;

import io.grpc.Status;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.RoutingTable;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.server.table.ParameterTable;
import io.pscluster.wire.PsException;
import io.pscluster.wire.Slots;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * Fencing on the shard: it serves only under a valid lease and only requests routed at an epoch no older than the
 * generation of every slot they touch. Every refusal is the retryable wrong-owner answer and applies nothing.
 */
class ShardFencingTest {
    private static final String TABLE = "fenced";

    private final Shard shard = new Shard("s", 1 << 20, 2, 1024, new Configuration());
    private ParameterTable table;

    @BeforeEach
    void createTable() throws InterruptedException {
        shard.applyRouting(TestRouting.allSlotsTo("s", 1));
        // SGD with lr 1 from zeros, dim 1: a row holds minus the sum of its gradients.
        shard.createTable(TableSchema.newBuilder()
                .setName(TABLE)
                .setKind(TableKind.SPARSE)
                .setDim(1)
                .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(1f))
                .build());
        table = shard.table(TABLE);
    }

    @AfterEach
    void closeShard() {
        shard.close();
    }

    private static PsException wrongOwner(final Runnable request) {
        final PsException refused = catchThrowableOfType(PsException.class, request::run);
        assertThat(refused).as("refusal").isNotNull();
        assertThat(PsException.rejectOf(PsException.toStatus(refused)))
                .as("reject of: %s", refused.getMessage())
                .isEqualTo(PsException.Reject.WRONG_OWNER);
        assertThat(refused.code()).isEqualTo(Status.Code.FAILED_PRECONDITION);
        return refused;
    }

    @Test
    void shouldRefuseWritesAndReadsWhenTheLeaseLapsedAndServeThemAgainWhenRenewed() throws InterruptedException {
        final long[] keys = {1, 2, 3};
        shard.grantLeaseUntil(System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(200));
        assertThat(shard.push(TABLE, 1, 0, 0, keys, new float[] {1, 1, 1}).accepted())
                .isEqualTo(3);
        shard.awaitQuiescent();

        await().atMost(Duration.ofSeconds(5)).until(() -> shard.leaseRemainingNanos() <= 0);

        final PsException push = wrongOwner(() -> shard.push(TABLE, 1, 0, 0, keys, new float[] {1, 1, 1}));
        assertThat(push.getMessage()).contains("lease lapsed", "ms ago");
        final PsException pull = wrongOwner(() -> shard.pull(TABLE, 1, keys));
        assertThat(pull.getMessage()).contains("lease lapsed");
        shard.awaitQuiescent();
        assertThat(table.pull(keys)).as("only the push under the lease applied").containsOnly(-1f);

        shard.grantLeaseUntil(System.nanoTime() + TimeUnit.HOURS.toNanos(1));

        assertThat(shard.push(TABLE, 1, 0, 0, keys, new float[] {1, 1, 1}).accepted())
                .isEqualTo(3);
        shard.awaitQuiescent();
        assertThat(shard.pull(TABLE, 1, keys)).hasSize(12);
        assertThat(table.pull(keys)).containsOnly(-2f);
    }

    @Test
    void shouldRefuseEveryRequestWhenNoLeaseWasEverGranted() {
        final PsException refused = wrongOwner(() -> shard.pull(TABLE, 1, new long[] {1}));

        assertThat(refused.getMessage()).contains("no lease");
    }

    @Test
    void shouldRefuseARequestRoutedBeforeTheSlotMovedHereWhenTheGenerationIsNewer() throws InterruptedException {
        final long[] key = {42};
        final int slot = table.slotOf(42);
        // Epoch 9: every slot here since epoch 1, except the key's slot, which came at epoch 7.
        final RoutingTable.Builder routing = TestRouting.allSlotsTo("s", 9).toBuilder();
        for (int s = 0; s < Slots.SLOT_COUNT; s++) {
            routing.addSlotGeneration(s == slot ? 7 : 1);
        }
        TestRouting.serve(shard, routing.build());

        final PsException stale = wrongOwner(() -> shard.push(TABLE, 6, 0, 0, key, new float[] {1}));
        assertThat(stale.getMessage()).contains("routed at epoch 6", "slot " + slot, "at epoch 7", "refresh");
        wrongOwner(() -> shard.pull(TABLE, 6, key));
        assertThatCode(() -> shard.push(TABLE, 6, 0, 0, new long[] {otherSlotKey(slot)}, new float[] {1}))
                .as("a key in a slot held since epoch 1")
                .doesNotThrowAnyException();
        assertThat(shard.push(TABLE, 7, 0, 0, key, new float[] {1}).accepted()).isEqualTo(1);
        shard.awaitQuiescent();
        assertThat(table.pull(key))
                .as("only the push routed at the slot's generation")
                .containsOnly(-1f);
    }

    @Test
    void shouldGiveGainedSlotsTheRoutingEpochWhenTheRoutingCarriesNoGenerations() throws InterruptedException {
        final int slot = table.slotOf(42);
        final java.util.BitSet moved = new java.util.BitSet();
        moved.set(slot);
        TestRouting.serve(shard, TestRouting.movingSlots("s", "t", moved, 2));
        shard.applyRouting(TestRouting.allSlotsTo("s", 5));

        wrongOwner(() -> shard.push(TABLE, 4, 0, 0, new long[] {42}, new float[] {1}));
        assertThatCode(() -> shard.push(TABLE, 4, 0, 0, new long[] {otherSlotKey(slot)}, new float[] {1}))
                .as("a key in a slot kept since epoch 1")
                .doesNotThrowAnyException();
        assertThatCode(() -> shard.push(TABLE, 5, 0, 0, new long[] {42}, new float[] {1}))
                .doesNotThrowAnyException();
    }

    @Test
    void shouldRefuseARequestRoutedAtEpochZero() throws InterruptedException {
        TestRouting.serve(shard, TestRouting.allSlotsTo("s", 1));

        final PsException refused = wrongOwner(() -> shard.push(TABLE, 0, 0, 0, new long[] {1}, new float[] {1}));

        assertThat(refused.getMessage()).contains("routed at epoch 0");
        wrongOwner(() -> shard.pull(TABLE, 0, new long[] {1}));
    }

    @Test
    void shouldRefuseWithDrainingAndKeepRefusingWhenALeaseIsGrantedWhileDraining() throws InterruptedException {
        TestRouting.serve(shard, TestRouting.allSlotsTo("s", 1));

        shard.beginDrain();
        shard.grantLeaseUntil(System.nanoTime() + TimeUnit.HOURS.toNanos(1));

        final PsException refused = wrongOwner(() -> shard.push(TABLE, 1, 0, 0, new long[] {1}, new float[] {1}));
        assertThat(refused.getMessage()).contains("shard s is draining");
        wrongOwner(() -> shard.pull(TABLE, 1, new long[] {1}));
    }

    private long otherSlotKey(final int slot) {
        long key = 0;
        while (table.slotOf(key) == slot) {
            key++;
        }
        return key;
    }

    /**
     * A move's fence: pushes and pulls of the fenced slots are refused as while restoring (retryable), nothing of a
     * refused push is applied, other slots serve on, and lifting the fence serves them again.
     */
    @Test
    void shouldRefusePushesAndPullsOfSlotsFencedForAMoveUntilTheFenceIsLifted() throws InterruptedException {
        shard.grantLeaseUntil(System.nanoTime() + TimeUnit.MINUTES.toNanos(10));
        final long fenced = 1;
        final long free = java.util.stream.LongStream.range(2, 1_000)
                .filter(key -> table.slotsOf(new long[] {key})[0] != table.slotsOf(new long[] {fenced})[0])
                .findFirst()
                .orElseThrow();
        final java.util.BitSet slots = new java.util.BitSet();
        slots.set(table.slotsOf(new long[] {fenced})[0]);

        assertThat(shard.fenceSlots(slots, 60_000, 1))
                .as("no SYNC gradients held")
                .isEmpty();

        for (final Runnable request : java.util.List.<Runnable>of(
                () -> shard.push(TABLE, 1, 0, 0, new long[] {free, fenced}, new float[] {1, 1}),
                () -> shard.pull(TABLE, 1, new long[] {fenced}))) {
            final PsException refused = catchThrowableOfType(PsException.class, request::run);
            assertThat(refused).isNotNull();
            assertThat(PsException.rejectOf(PsException.toStatus(refused))).isEqualTo(PsException.Reject.RESTORING);
            assertThat(refused.getMessage()).contains("over to another shard");
        }
        assertThat(shard.push(TABLE, 1, 0, 0, new long[] {free}, new float[] {1})
                        .accepted())
                .isEqualTo(1);
        shard.awaitQuiescent();
        assertThat(table.rowCount()).as("the refused push applied nothing").isEqualTo(1);

        assertThat(shard.fenceSlots(new java.util.BitSet(), 0, 0)).isEmpty();
        assertThatCode(() -> shard.push(TABLE, 1, 0, 0, new long[] {fenced}, new float[] {1}))
                .doesNotThrowAnyException();
        assertThatCode(() -> shard.pull(TABLE, 1, new long[] {fenced})).doesNotThrowAnyException();
    }

    private long keyInAnotherSlot(final java.util.BitSet taken) {
        return java.util.stream.LongStream.range(1, 10_000)
                .filter(key -> !taken.get(table.slotsOf(new long[] {key})[0]))
                .findFirst()
                .orElseThrow();
    }

    private java.util.BitSet slotOf(final long key) {
        final java.util.BitSet slot = new java.util.BitSet();
        slot.set(table.slotsOf(new long[] {key})[0]);
        return slot;
    }

    /**
     * A move takes fenced slots away: their rows stay (refused as another shard's) until the proxy's list of moves not
     * done drops them; a move undone serves them again as they were; a kept slot given back without a take-back order
     * does not serve what it kept.
     */
    @Test
    void shouldKeepTheRowsAMoveTookAwayUntilReleasedAndServeThemAgainOnlyWhenTakenBack() throws InterruptedException {
        shard.grantLeaseUntil(System.nanoTime() + TimeUnit.MINUTES.toNanos(10));
        final java.util.BitSet taken = new java.util.BitSet();
        final long[] keys = new long[3];
        for (int i = 0; i < keys.length; i++) {
            keys[i] = keyInAnotherSlot(taken);
            taken.or(slotOf(keys[i]));
        }
        assertThat(shard.push(TABLE, 1, 0, 0, keys, new float[] {1, 2, 3}).accepted())
                .isEqualTo(3);
        shard.awaitQuiescent();
        final java.util.BitSet kept = slotOf(keys[0]);
        final java.util.BitSet released = slotOf(keys[1]);
        final java.util.BitSet both = (java.util.BitSet) kept.clone();
        both.or(released);
        shard.fenceSlots(both, 60_000, 1);

        shard.applyRouting(TestRouting.movingSlots("s", "t", both, 2));

        assertThat(shard.keptMovedSlotCount()).isEqualTo(2);
        assertThat(table.rowCount()).as("the moved rows are kept").isEqualTo(3);
        wrongOwner(() -> shard.pull(TABLE, 10, new long[] {keys[0]}));
        shard.keepMovedSlots(java.util.List.of(kept.nextSetBit(0)));
        assertThat(shard.keptMovedSlotCount()).isEqualTo(1);
        assertThat(table.rowCount()).as("the row of the move done is dropped").isEqualTo(2);

        // The move of keys[0]'s slot is undone: a take-back order marks it, the routing gives it back.
        shard.markRestoring(kept);
        shard.applyRouting(TestRouting.allSlotsTo("s", 3));
        assertThat(shard.takeBackKeptRows(kept)).isTrue();
        assertThatCode(() -> shard.pull(TABLE, 10, new long[] {keys[0]})).doesNotThrowAnyException();
        assertThat(table.pull(new long[] {keys[0]})).as("served as it was").containsExactly(-1f);
        assertThat(shard.keptMovedSlotCount()).isZero();

        // keys[2]'s slot moves away and comes back with no order to load it: what it kept is not served.
        final java.util.BitSet third = slotOf(keys[2]);
        shard.fenceSlots(third, 60_000, 1);
        shard.applyRouting(TestRouting.movingSlots("s", "t", third, 4));
        assertThat(shard.keptMovedSlotCount()).isEqualTo(1);
        shard.applyRouting(TestRouting.allSlotsTo("s", 5));
        assertThat(shard.keptMovedSlotCount()).isZero();
        assertThat(table.rowCount()).as("the kept row is dropped").isEqualTo(1);
        assertThat(table.pull(new long[] {keys[2]})).containsExactly(0f);
        assertThat(shard.takeBackKeptRows(third))
                .as("nothing kept to take back")
                .isFalse();
    }
}
