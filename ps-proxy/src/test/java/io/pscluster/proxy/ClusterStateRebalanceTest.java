package io.pscluster.proxy;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.grpc.Status;
import io.pscluster.proto.v1.HeartbeatRequest;
import io.pscluster.proto.v1.HeartbeatResponse;
import io.pscluster.proto.v1.RestoreDirective;
import io.pscluster.proto.v1.RestoreReport;
import io.pscluster.proto.v1.RollbackEvent;
import io.pscluster.wire.Slots;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.Test;

/** Planning and committing a rebalance: every live shard ends with its share of the slots, and nothing else moves. */
class ClusterStateRebalanceTest extends ClusterStateFixture {

    private static int moved(final ClusterState.Rebalance plan) {
        return plan.moves().stream().mapToInt(move -> move.slots().size()).sum();
    }

    private void reportOrdersDone(final String id) {
        heartbeat(id).getRestoreOrdersList().forEach(order -> reportDone(id, order));
    }

    @Test
    void shouldGiveAnAddedShardItsShareFromEveryOwnerAndRestoreItFromTheMovesCheckpoint() {
        final String a = register("h1:1");
        final String b = register("h2:1");
        state.addTable(EMB);
        final Set<Integer> slotsOfA = slotsOf(a);
        final String c = register("h3:1");
        final long epochBefore = state.epoch();

        final ClusterState.Rebalance plan = state.planRebalance();

        assertThat(plan.moves()).allSatisfy(move -> assertThat(move.to()).isEqualTo(c));
        assertThat(plan.moves()).extracting(ClusterState.Move::from).containsExactlyInAnyOrder(a, b);
        assertThat(moved(plan)).isEqualTo(Slots.SLOT_COUNT / 3);
        assertThat(plan.addresses()).containsEntry(a, "h1:1").containsEntry(b, "h2:1");
        assertThat(state.epoch()).as("planning changes nothing").isEqualTo(epochBefore);

        final long epoch = state.rebalanced(plan, 9, 90_000);

        assertThat(epoch).isEqualTo(epochBefore + 1).isEqualTo(state.epoch());
        final List<Integer> sizes = new ArrayList<>(
                List.of(slotsOf(a).size(), slotsOf(b).size(), slotsOf(c).size()));
        assertThat(sizes.stream().mapToInt(Integer::intValue).sum()).isEqualTo(Slots.SLOT_COUNT);
        assertThat(sizes).allSatisfy(size -> assertThat(size).isBetween(1365, 1366));
        assertThat(slotsOfA).containsAll(slotsOf(a));
        final Set<Integer> ordered = new HashSet<>();
        for (final RestoreDirective order : heartbeat(c).getRestoreOrdersList()) {
            assertThat(order.getCheckpointId()).isEqualTo(9);
            ordered.addAll(order.getSlotsList());
        }
        assertThat(ordered).as("c restores exactly the slots it got").isEqualTo(slotsOf(c));
        assertThat(heartbeat(a).getRestoreOrdersList()).isEmpty();
        assertThat(state.status().getRollbacksList())
                .hasSize(2)
                .allMatch(RollbackEvent::getLossless)
                .allMatch(event ->
                        event.getCheckpointId() == 9 && event.getToShardsList().equals(List.of(c)));
        assertThat(state.status().getRollbacksTotal())
                .as("a move is not a rollback")
                .isZero();
        assertThat(store.load().orElseThrow().getPendingRestoresCount())
                .as("the orders are durable")
                .isEqualTo(2);
    }

    private static RestoreDirective orderFrom(final List<RestoreDirective> orders, final String giver) {
        return orders.stream()
                .filter(order -> order.getFromShard().equals(giver))
                .findFirst()
                .orElseThrow();
    }

    /**
     * The taker finds the move's checkpoint damaged: the giver, which kept the rows, gets the slots back with an order
     * to serve what it kept; one lossless event says so and nothing counts as a rollback.
     */
    @Test
    void shouldHandAMovesSlotsBackToTheGiverWhenTheTakerFindsItsCheckpointDamaged() {
        final String a = register("h1:1");
        final String b = register("h2:1");
        state.addTable(EMB);
        final Set<Integer> slotsOfA = slotsOf(a);
        final String c = register("h3:1");
        state.rebalanced(state.planRebalance(), 9, 90_000);
        final RestoreDirective fromA = orderFrom(heartbeat(c).getRestoreOrdersList(), a);
        assertThat(fromA.getGiverKeepsRows()).isTrue();
        assertThat(heartbeat(a).getKeepMovedSlotsList()).containsExactlyInAnyOrderElementsOf(fromA.getSlotsList());
        final long epochBefore = state.epoch();

        reportDamaged(c, fromA);

        assertThat(state.epoch()).isGreaterThan(epochBefore);
        assertThat(slotsOf(a)).isEqualTo(slotsOfA);
        assertThat(heartbeat(c).getRestoreOrdersList())
                .extracting(RestoreDirective::getFromShard)
                .containsExactly(b);
        final HeartbeatResponse toA = heartbeat(a);
        assertThat(toA.getRestoreOrdersList()).singleElement().satisfies(order -> {
            assertThat(order.getTakeBackKeptRows()).isTrue();
            assertThat(order.getCheckpointId()).isEqualTo(9);
            assertThat(order.getSlotsList()).containsExactlyInAnyOrderElementsOf(fromA.getSlotsList());
        });
        assertThat(toA.getKeepMovedSlotsList()).as("kept until taken back").hasSize(fromA.getSlotsCount());
        assertThat(state.status().getRollbacksList())
                .filteredOn(event -> event.getReason().contains("undone"))
                .singleElement()
                .satisfies(event -> {
                    assertThat(event.getLossless()).isTrue();
                    assertThat(event.getReason()).contains("crc32c mismatch", "kept their rows");
                    assertThat(event.getToShardsList()).containsExactly(a);
                });

        reportDone(a, toA.getRestoreOrders(0));

        assertThat(heartbeat(a).getKeepMovedSlotsList()).isEmpty();
        assertThat(state.status().getRollbacksTotal()).as("nothing rolled back").isZero();
    }

    /**
     * The taker is lost before it restored the move (its lease lapses): the slots go back to the giver, which kept
     * their rows, losslessly, instead of to any shard from the move's checkpoint.
     */
    @Test
    void shouldHandAMovesSlotsBackToTheGiverWhenTheTakerIsLostBeforeItRestored() {
        final String a = register("h1:1");
        final String b = register("h2:1");
        state.addTable(EMB);
        final Set<Integer> slotsOfA = slotsOf(a);
        final Set<Integer> slotsOfB = slotsOf(b);
        final String c = register("h3:1");
        state.rebalanced(state.planRebalance(), 9, 90_000);

        advanceMillis(LEASE_MILLIS + MARGIN_MILLIS + 1);
        heartbeat(a);
        heartbeat(b);
        state.expireLeases();

        assertThat(slotsOf(a)).isEqualTo(slotsOfA);
        assertThat(slotsOf(b)).isEqualTo(slotsOfB);
        assertThat(heartbeat(a).getRestoreOrdersList())
                .singleElement()
                .satisfies(order -> assertThat(order.getTakeBackKeptRows()).isTrue());
        assertThat(state.status().getRollbacksList())
                .filteredOn(event -> event.getReason().contains("undone"))
                .hasSize(2)
                .allMatch(RollbackEvent::getLossless)
                .allMatch(RollbackEvent::getKeptRows)
                .allMatch(event -> event.getReason().contains("shard " + c + " missed its lease before it restored"));
        assertThat(state.status().getRollbacksList())
                .filteredOn(event -> !event.getReason().contains("undone"))
                .as("the moves themselves: their rows came through the checkpoint")
                .hasSize(2)
                .noneMatch(RollbackEvent::getKeptRows);
        assertThat(state.status().getRollbacksTotal()).isZero();
    }

    /**
     * The catalog changes while orders are outstanding: they carry the table times anew (a dropped table as dropped at
     * the end of time, one created again at its new time), so that no restore brings the dropped table's rows back.
     */
    @Test
    void shouldSendOutstandingOrdersTheCatalogsTableTimesAnew() {
        register("h1:1");
        register("h2:1");
        state.addTable(EMB);
        final String c = register("h3:1");
        state.rebalanced(state.planRebalance(), 9, 90_000);
        final long created = heartbeat(c).getRestoreOrders(0).getTableCreatedMillisOrThrow(EMB.getName());

        state.removeTable(EMB.getName());

        assertThat(heartbeat(c).getRestoreOrdersList())
                .hasSize(2)
                .allSatisfy(order -> assertThat(order.getTableCreatedMillisOrThrow(EMB.getName()))
                        .isEqualTo(Long.MAX_VALUE));

        wall.addAndGet(5_000);
        state.addTable(EMB);

        assertThat(heartbeat(c).getRestoreOrdersList())
                .hasSize(2)
                .allSatisfy(order -> assertThat(order.getTableCreatedMillisOrThrow(EMB.getName()))
                        .isGreaterThan(created)
                        .isLessThan(Long.MAX_VALUE));
    }

    /** A giver restarted without its rows keeps none: the taker's order may fall back again. */
    @Test
    void shouldNoLongerCountOnTheKeptRowsOfAGiverThatRestarted() {
        final String a = register("h1:1");
        register("h2:1");
        state.addTable(EMB);
        final String c = register("h3:1");
        state.rebalanced(state.planRebalance(), 9, 90_000);

        register(a, "h1:1", true);

        assertThat(heartbeat(c).getRestoreOrdersList())
                .filteredOn(order -> order.getFromShard().equals(a))
                .singleElement()
                .satisfies(order -> {
                    assertThat(order.getGiverKeepsRows()).isFalse();
                    assertThat(order.getReason()).contains("which kept the rows, restarted without its rows");
                });
        assertThat(heartbeat(a).getKeepMovedSlotsList()).isEmpty();
    }

    /**
     * With the giver gone its kept rows are gone too: the taker's order may fall back (before it even found the
     * checkpoint damaged), which counts as a rollback.
     */
    @Test
    void shouldLetAMovesOrderFallBackWhenItsGiverIsGone() {
        final String a = register("h1:1");
        final String b = register("h2:1");
        state.addTable(EMB);
        final String c = register("h3:1");
        state.rebalanced(state.planRebalance(), 9, 90_000);
        final RestoreDirective fromA = orderFrom(heartbeat(c).getRestoreOrdersList(), a);
        advanceMillis(LEASE_MILLIS + MARGIN_MILLIS + 1);
        heartbeat(b);
        heartbeat(c);
        state.expireLeases();

        final RestoreDirective cleared = heartbeat(c).getRestoreOrdersList().stream()
                .filter(order -> order.getOrderId() == fromA.getOrderId())
                .findFirst()
                .orElseThrow();
        assertThat(cleared.getGiverKeepsRows()).isFalse();
        assertThat(cleared.getReason()).contains("shard " + a + ", which kept the rows, missed its lease");
        assertThat(slotsOf(c)).containsAll(fromA.getSlotsList());
        final long rollbacksBefore = state.status().getRollbacksTotal();
        state.heartbeat(HeartbeatRequest.newBuilder()
                .setShardId(c)
                .setRoutingEpoch(state.epoch())
                .addRestores(RestoreReport.newBuilder()
                        .setOrderId(cleared.getOrderId())
                        .setDone(true)
                        .setCheckpointId(8)
                        .setNote("checkpoint 9 damaged; restored checkpoint 8"))
                .build());
        assertThat(state.status().getRollbacksTotal()).isEqualTo(rollbacksBefore + 1);
    }

    @Test
    void shouldPlanNothingWhenEveryShareIsMetOrNoTableExists() {
        register("h1:1");
        register("h2:1");
        register("h3:1");
        assertThat(state.planRebalance().moves())
                .as("no table: nothing to move")
                .isEmpty();

        state.addTable(EMB);

        assertThat(state.planRebalance().moves())
                .as("slots spread over all three before the table came")
                .isEmpty();
    }

    @Test
    void shouldMoveOnlyTheSurplusBetweenUnevenShards() {
        final String a = register("h1:1");
        state.addTable(EMB);
        final String b = register("h2:1");
        state.rebalanced(state.planRebalance(), 3, 30_000);
        reportOrdersDone(b);
        final String c = register("h3:1");
        final String d = register("h4:1");

        final ClusterState.Rebalance plan = state.planRebalance();

        assertThat(moved(plan)).isEqualTo(2 * 2048 - 2 * 1024);
        assertThat(plan.moves()).allSatisfy(move -> {
            assertThat(move.from()).isIn(a, b);
            assertThat(move.to()).isIn(c, d);
        });
        state.rebalanced(plan, 4, 40_000);
        assertThat(List.of(slotsOf(a), slotsOf(b), slotsOf(c), slotsOf(d)))
                .allSatisfy(slots -> assertThat(slots).hasSize(1024));
    }

    /** A failover between the plan and its commit: the plan's picture is stale, so nothing of it is applied. */
    @Test
    void shouldCommitNothingWhenASlotMovedAfterThePlan() {
        final String a = register("h1:1");
        final String b = register("h2:1");
        state.addTable(EMB);
        final String c = register("h3:1");
        final ClusterState.Rebalance plan = state.planRebalance();

        passGrace();
        heartbeat(a);
        heartbeat(c);
        advanceMillis(EXPIRY_MILLIS + 1);
        heartbeat(a);
        heartbeat(c);
        state.expireLeases();
        final long epochAfterFailover = state.epoch();
        final Set<Integer> slotsOfC = slotsOf(c);

        assertStatus(() -> state.rebalanced(plan, 9, 90_000), Status.Code.FAILED_PRECONDITION);
        assertThat(state.epoch()).isEqualTo(epochAfterFailover);
        assertThat(slotsOf(c)).isEqualTo(slotsOfC);
        assertThat(slotsOf(b)).as("b's lease lapsed").isEmpty();
        assertStatus(state::planRebalance, Status.Code.FAILED_PRECONDITION);
    }

    /**
     * A move's taker reports its orders done but serves their slots only once it follows the answer that no longer
     * sends them: a checkpoint begun in between would be refused by the shard ("restoring slot"), so the proxy refuses
     * it itself, saying why, until the taker's next heartbeat no longer reports them held.
     */
    @Test
    void shouldRefuseAClusterOperationUntilTheTakerServesTheSlotsOfAMoveItRestored() {
        final String a = register("h1:1");
        final String b = register("h2:1");
        state.addTable(EMB);
        final String c = register("h3:1");
        state.rebalanced(state.planRebalance(), 9, 90_000);
        final HeartbeatRequest.Builder done =
                HeartbeatRequest.newBuilder().setShardId(c).setRoutingEpoch(state.epoch());
        heartbeat(c)
                .getRestoreOrdersList()
                .forEach(order -> done.addRestores(RestoreReport.newBuilder()
                        .setOrderId(order.getOrderId())
                        .setDone(true)
                        .setHeld(true)
                        .setCheckpointId(order.getCheckpointId())));

        assertThat(state.heartbeat(done.build()).getRestoreOrdersList())
                .as("the answer that lets the taker serve")
                .isEmpty();

        assertStatus(() -> state.ownersForClusterOperation("a checkpoint"), Status.Code.FAILED_PRECONDITION);
        assertThatThrownBy(() -> state.ownersForClusterOperation("a checkpoint"))
                .hasMessageContaining("shard " + c + " does not serve the slots of restore order(s) [")
                .hasMessageContaining("serve from its next heartbeat");
        heartbeat(a);
        heartbeat(b);
        assertStatus(() -> state.ownersForClusterOperation("a checkpoint"), Status.Code.FAILED_PRECONDITION);
        assertThat(state.planRebalance().moves())
                .as("a rebalance with nothing to move says so, also meanwhile")
                .isEmpty();

        heartbeat(c);

        assertThat(state.ownersForClusterOperation("a checkpoint"))
                .extracting(ClusterState.Owner::shardId)
                .containsExactlyInAnyOrder(a, b, c);
    }

    @Test
    void shouldRefuseToPlanWhileAnOwnerIsNotLive() {
        final String a = register("h1:1");
        register("h2:1");
        state.addTable(EMB);
        register("h3:1");
        state.checkpointCommitted(5, 50_000);
        passGrace();
        assertThat(state.beginDrain(a)).isTrue();

        assertStatus(state::planRebalance, Status.Code.FAILED_PRECONDITION);
    }

    @Test
    void shouldTellShardsToLiftFencesMadeBeforeItStartedAndStampItsOwnAfter() {
        final String a = register("h1:1");
        final long started = wall.get();

        assertThat(heartbeat(a).getLiftFencesBeforeMillis()).isEqualTo(started);
        wall.addAndGet(5_000);
        assertThat(state.fenceMillis()).isEqualTo(started + 5_000);
        wall.addAndGet(-60_000);
        assertThat(state.fenceMillis())
                .as("a wall clock stepped back: its own heartbeats must not lift the fence")
                .isEqualTo(started);
    }
}
