package io.pscluster.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import io.grpc.Status;
import io.pscluster.proto.v1.HeartbeatRequest;
import io.pscluster.proto.v1.HeartbeatResponse;
import io.pscluster.proto.v1.RegisterShardResponse;
import io.pscluster.proto.v1.RestoreDirective;
import io.pscluster.proto.v1.RestoreReport;
import io.pscluster.proto.v1.RoutingTable;
import java.util.HashSet;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/** Once a table exists slots only move with a restore: whole to an idle shard, else split over the live ones. */
class ClusterStateStickyAssignmentTest extends ClusterStateFixture {
    private String a;
    private String b;
    private Set<Integer> slotsOfA;
    private Set<Integer> slotsOfB;

    private void startTwoShardsWithATable() {
        a = register("h1:1");
        b = register("h2:1");
        assertThat(state.addTable(EMB)).isTrue();
        slotsOfA = slotsOf(a);
        slotsOfB = slotsOf(b);
    }

    @Test
    void shouldGiveNoSlotToAShardThatJoinsLater() {
        startTwoShardsWithATable();

        final RegisterShardResponse response = register("", "h3:1", true);

        assertThat(slotsOf(response.getRouting(), response.getShardId())).isEmpty();
        assertThat(response.getRestoreOrdersList()).isEmpty();
        assertThat(slotsOf(a)).isEqualTo(slotsOfA);
        assertThat(slotsOf(b)).isEqualTo(slotsOfB);
        assertThat(state.routingTable().getShardsList()).hasSize(3);
    }

    @Test
    void shouldHandTheWholeGroupToTheIdleShardWithTheLatestCheckpointWhenAShardDeregisters() {
        startTwoShardsWithATable();
        final String c = register("h3:1");
        state.checkpointCommitted(7, 70_000);
        state.checkpointCommitted(5, 50_000); // an older one committing late does not win
        final long epoch = state.epoch();

        state.deregister(a);

        assertThat(state.epoch()).isGreaterThan(epoch);
        assertThat(slotsOf(c)).isEqualTo(slotsOfA);
        assertThat(slotsOf(b)).isEqualTo(slotsOfB);
        final RoutingTable routing = state.routingTable();
        slotsOfA.forEach(slot -> assertThat(routing.getSlotGeneration(slot)).isEqualTo(state.epoch()));
        final HeartbeatResponse response = heartbeat(c);
        final RestoreDirective restore = response.getRestoreOrders(0);
        assertThat(restore.getCheckpointId()).isEqualTo(7);
        assertThat(restore.getCheckpointRoot()).isEqualTo(ROOT);
        assertThat(restore.getShardId()).isEqualTo(c);
        assertThat(new HashSet<>(restore.getSlotsList()))
                .hasSize(restore.getSlotsCount())
                .isEqualTo(slotsOfA);
        assertThat(slotsOf(state.routingTable(), c)).isEqualTo(slotsOfA);
        assertThat(heartbeat(b).getRestoreOrdersList()).isEmpty();
        assertThat(state.status().getRollbacksList()).singleElement().satisfies(event -> {
            assertThat(event.getFromShard()).isEqualTo(a);
            assertThat(event.getToShardsList()).containsExactly(c);
            assertThat(event.getCheckpointId()).isEqualTo(7);
            assertThat(event.getCheckpointCreatedMillis()).isEqualTo(70_000);
            assertThat(event.getSlotCount()).isEqualTo(slotsOfA.size());
            assertThat(event.getLossless()).isFalse();
        });
        assertThat(state.status().getRollbacksTotal()).isEqualTo(1);
    }

    @Test
    void shouldRepeatTheRestoreOrderUntilTheShardReportsItDone() {
        startTwoShardsWithATable();
        final String c = register("h3:1");
        state.deregister(a);
        final RestoreDirective order = heartbeat(c).getRestoreOrders(0);

        assertThat(heartbeat(c).getRestoreOrdersList()).as("repeated").containsExactly(order);
        assertThat(state.status().getShardsList())
                .filteredOn(status -> status.getShard().getShardId().equals(c))
                .singleElement()
                .satisfies(status -> assertThat(status.getSlotsRestoring()).isEqualTo(slotsOfA.size()));
        state.heartbeat(HeartbeatRequest.newBuilder()
                .setShardId(c)
                .setRoutingEpoch(state.epoch())
                .addRestores(RestoreReport.newBuilder()
                        .setOrderId(order.getOrderId())
                        .setNote("reading: connection reset"))
                .build());
        assertThat(state.status().getRestoreReportsList())
                .singleElement()
                .satisfies(report -> assertThat(report.getNote()).contains("connection reset"));
        assertThat(heartbeat(c).getRestoreOrdersList())
                .as("still repeated while failing")
                .containsExactly(order);

        assertThat(reportDone(c, order).getRestoreOrdersList()).isEmpty();

        assertThat(heartbeat(c).getRestoreOrdersList()).isEmpty();
        assertThat(state.status().getPendingRestoresList()).isEmpty();
        assertThat(state.status().getRestoreReportsList()).isEmpty();
        assertThat(store.saved().getPendingRestoresList()).isEmpty();
    }

    @Test
    void shouldDirectARestoreFromCheckpointZeroWhenNoCheckpointExists() {
        startTwoShardsWithATable();
        final String c = register("h3:1");

        state.deregister(a);

        final RestoreDirective restore = heartbeat(c).getRestoreOrders(0);
        assertThat(restore.getCheckpointId()).isZero();
        assertThat(new HashSet<>(restore.getSlotsList())).isEqualTo(slotsOfA);
    }

    /** How often the proxy's timer checks leases in the pause tests. */
    private static final long TICK_MILLIS = 100;

    @Test
    void shouldNotCountAPauseOfTheProxyItselfAgainstAnyShardsLease() {
        startTwoShardsWithATable();
        state.checkpointCommitted(3, 30_000);
        state.detectOwnPauses(TimeUnit.MILLISECONDS.toNanos(TICK_MILLIS), TimeUnit.MILLISECONDS.toNanos(MARGIN_MILLIS));

        // The proxy did not run for three leases (a long collection): it heard nobody, nobody could be heard.
        advanceMillis(3 * (LEASE_MILLIS + MARGIN_MILLIS));
        assertThat(state.expireLeases()).as("right after the pause").isFalse();
        assertThat(slotsOf(a)).isEqualTo(slotsOfA);
        assertThat(state.status().getShardsList())
                .as("the real silence is still reported")
                .allSatisfy(shard -> assertThat(shard.getMillisSinceHeartbeat())
                        .isGreaterThanOrEqualTo(3 * (LEASE_MILLIS + MARGIN_MILLIS)));

        // Running again, checks on time: b is heard, a stays silent for a lease and margin of the proxy's time.
        for (long ran = 0; ran <= LEASE_MILLIS; ran += TICK_MILLIS) {
            advanceMillis(TICK_MILLIS);
            heartbeat(b);
            assertThat(state.expireLeases()).as("%d ms after the pause", ran).isFalse();
        }
        for (long ran = 0; ran < MARGIN_MILLIS; ran += TICK_MILLIS) {
            advanceMillis(TICK_MILLIS);
            heartbeat(b);
            state.expireLeases();
        }
        assertThat(slotsOf(a))
                .as("a is gone once silent for a lease and margin of running time")
                .isEmpty();
        assertThat(slotsOf(b)).containsAll(slotsOfA);
    }

    /**
     * The timer thread was starved (the check ran three leases late) while the process ran and took b's heartbeats:
     * that was no pause, so a, silent all along, is not credited the lateness and is gone at the late check.
     */
    @Test
    void shouldNotCreditAStarvedTimersLatenessWhileHeartbeatsWereTaken() {
        startTwoShardsWithATable();
        state.checkpointCommitted(3, 30_000);
        state.detectOwnPauses(TimeUnit.MILLISECONDS.toNanos(TICK_MILLIS), TimeUnit.MILLISECONDS.toNanos(MARGIN_MILLIS));

        for (long ran = 0; ran < 3 * (LEASE_MILLIS + MARGIN_MILLIS); ran += TICK_MILLIS) {
            advanceMillis(TICK_MILLIS);
            heartbeat(b);
        }
        assertThat(state.expireLeases()).isTrue();
        assertThat(slotsOf(a)).isEmpty();
        assertThat(slotsOf(b)).containsAll(slotsOfA);
    }

    @Test
    void shouldCountEverySilenceAgainstTheLeaseWhenPausesAreNotDetected() {
        startTwoShardsWithATable();
        state.checkpointCommitted(3, 30_000);

        advanceMillis(3 * (LEASE_MILLIS + MARGIN_MILLIS));
        heartbeat(b);
        assertThat(state.expireLeases()).isTrue();
        assertThat(slotsOf(a)).isEmpty();
    }

    @Test
    void shouldHandTheGroupOnWhenTheOwnersLeaseAndMarginLapse() {
        startTwoShardsWithATable();
        final String c = register("h3:1");
        state.checkpointCommitted(3, 30_000);

        advanceMillis(LEASE_MILLIS + 1);
        heartbeat(b);
        heartbeat(c);
        assertThat(state.expireLeases()).as("past the lease, within the margin").isFalse();
        assertThat(slotsOf(a)).isEqualTo(slotsOfA);
        advanceMillis(MARGIN_MILLIS);
        assertThat(state.expireLeases()).isTrue();

        assertThat(slotsOf(c)).isEqualTo(slotsOfA);
        final RestoreDirective restore = heartbeat(c).getRestoreOrders(0);
        assertThat(restore.getCheckpointId()).isEqualTo(3);
        assertThat(new HashSet<>(restore.getSlotsList())).isEqualTo(slotsOfA);
        assertStatus(() -> heartbeat(a), Status.Code.NOT_FOUND);
    }

    @Test
    void shouldSplitTheGroupAcrossLiveShardsFewestSlotsFirstWhenNoIdleShardExists() {
        startTwoShardsWithATable(); // a and b own 2048 each
        final String c = register("h3:1");
        final String d = register("h4:1");
        state.deregister(d); // c now idle, d gone
        assertThat(slotsOf(c)).isEmpty();
        state.deregister(c);
        state.checkpointCommitted(9, 90_000);

        state.deregister(a);

        assertThat(slotsOf(b)).containsAll(slotsOfA).containsAll(slotsOfB);
        assertThat(state.unownedSlots()).isZero();
        assertThat(heartbeat(b).getRestoreOrdersList()).singleElement().satisfies(order -> {
            assertThat(new HashSet<>(order.getSlotsList())).isEqualTo(slotsOfA);
            assertThat(order.getCheckpointId()).isEqualTo(9);
        });
    }

    @Test
    void shouldSplitEvenlyOverThreeLiveShardsWhenNoIdleShardExists() {
        final String s1 = register("h1:1");
        final String s2 = register("h2:1");
        final String s3 = register("h3:1");
        final String s4 = register("h4:1");
        state.addTable(EMB);
        final Set<Integer> lost = slotsOf(s1);

        state.deregister(s1);

        int total = 0;
        for (final String heir : new String[] {s2, s3, s4}) {
            final Set<Integer> part =
                    new HashSet<>(heartbeat(heir).getRestoreOrders(0).getSlotsList());
            assertThat(lost).containsAll(part);
            assertThat(part.size()).isBetween(lost.size() / 3, lost.size() / 3 + 1);
            total += part.size();
        }
        assertThat(total).isEqualTo(lost.size());
        assertThat(state.unownedSlots()).isZero();
        assertThat(state.status().getRollbacksList())
                .singleElement()
                .satisfies(event -> assertThat(event.getToShardsList()).containsExactlyInAnyOrder(s2, s3, s4));
    }

    @Test
    void shouldPreferTheIdleShardWhenOneExists() {
        startTwoShardsWithATable();
        final String c = register("h3:1");

        state.deregister(a);

        assertThat(slotsOf(c)).isEqualTo(slotsOfA);
        assertThat(slotsOf(b)).isEqualTo(slotsOfB);
        assertThat(heartbeat(b).getRestoreOrdersList()).isEmpty();
    }

    @Test
    void shouldReplanTheRestoreWhenTheShardCarryingItOutDies() {
        startTwoShardsWithATable();
        final String c = register("h3:1");
        final String d = register("h4:1");
        state.deregister(a);
        final Set<Integer> adopted = slotsOf(c).isEmpty() ? slotsOf(d) : slotsOf(c);
        final String first = slotsOf(c).isEmpty() ? d : c;
        final String other = first.equals(c) ? d : c;
        final RestoreDirective order = heartbeat(first).getRestoreOrders(0);

        state.deregister(first);

        assertThat(slotsOf(other)).isEqualTo(adopted);
        final RestoreDirective replanned = heartbeat(other).getRestoreOrders(0);
        assertThat(replanned.getOrderId()).isNotEqualTo(order.getOrderId());
        assertThat(new HashSet<>(replanned.getSlotsList())).isEqualTo(slotsOfA);
        assertThat(state.status().getPendingRestoresList()).containsExactly(replanned);
    }

    @Test
    void shouldGiveARestartedShardItsOwnGroupAndARestoreWhenItStartsFresh() {
        startTwoShardsWithATable();
        state.checkpointCommitted(7, 70_000);

        final RegisterShardResponse response = register(a, "h1:1", true);

        assertThat(slotsOf(response.getRouting(), a)).isEqualTo(slotsOfA);
        assertThat(response.getRestoreOrdersList()).singleElement().satisfies(order -> {
            assertThat(order.getCheckpointId()).isEqualTo(7);
            assertThat(new HashSet<>(order.getSlotsList())).isEqualTo(slotsOfA);
        });
        assertThat(heartbeat(a).getRestoreOrdersList())
                .as("repeated until done")
                .hasSize(1);
        assertThat(state.unownedSlots()).isZero();
    }

    @Test
    void shouldGiveARestartedShardItsOwnGroupWithoutARestoreWhenItKeptItsRows() {
        startTwoShardsWithATable();
        state.checkpointCommitted(7, 70_000);

        final RegisterShardResponse response = register(a, "h1:1", false);

        assertThat(slotsOf(response.getRouting(), a)).isEqualTo(slotsOfA);
        assertThat(response.getRestoreOrdersList()).isEmpty();
        assertThat(heartbeat(a).getRestoreOrdersList()).isEmpty();
    }

    @Test
    void shouldGiveALapsedShardItsOwnSlotsBackWithoutARestoreWhenNoShardTookThem() {
        startTwoShardsWithATable();
        advanceMillis(EXPIRY_MILLIS + 1);
        state.expireLeases(); // both gone, nobody to take anything
        final RoutingTable lapsed = state.routingTable();
        slotsOfA.forEach(slot -> assertThat(lapsed.getSlotOwner(slot)).isEqualTo(-1));

        final RegisterShardResponse response = register(a, "h1:1", false);

        assertThat(slotsOf(response.getRouting(), a)).containsAll(slotsOfA).containsAll(slotsOfB);
        assertThat(response.getRouting().getEpoch()).isGreaterThan(lapsed.getEpoch());
        assertThat(response.getRestoreOrdersList())
                .as("only the lost shard's slots are restored")
                .singleElement()
                .satisfies(
                        order -> assertThat(new HashSet<>(order.getSlotsList())).isEqualTo(slotsOfB));
    }
}
