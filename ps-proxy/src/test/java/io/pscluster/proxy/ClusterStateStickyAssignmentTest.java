package io.pscluster.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import io.grpc.Status;
import io.pscluster.proto.v1.HeartbeatResponse;
import io.pscluster.proto.v1.RegisterShardResponse;
import io.pscluster.proto.v1.RestoreDirective;
import io.pscluster.proto.v1.RoutingTable;
import java.util.HashSet;
import java.util.Set;
import org.junit.jupiter.api.Test;

/** Once a table exists slots only move with their whole group, to an idle shard, with a restore. */
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
        assertThat(response.hasRestore()).isFalse();
        assertThat(slotsOf(a)).isEqualTo(slotsOfA);
        assertThat(slotsOf(b)).isEqualTo(slotsOfB);
        assertThat(state.routingTable().getShardsList()).hasSize(3);
    }

    @Test
    void shouldHandTheWholeGroupToTheIdleShardWithTheLatestCheckpointWhenAShardDeregisters() {
        startTwoShardsWithATable();
        final String c = register("h3:1");
        state.checkpointCommitted(7);
        state.checkpointCommitted(5); // an older one committing late does not win
        final long epoch = state.epoch();

        state.deregister(a);

        assertThat(state.epoch()).isGreaterThan(epoch);
        assertThat(slotsOf(c)).isEqualTo(slotsOfA);
        assertThat(slotsOf(b)).isEqualTo(slotsOfB);
        final HeartbeatResponse response = heartbeat(c);
        final RestoreDirective restore = response.getRestore();
        assertThat(response.hasRestore()).isTrue();
        assertThat(restore.getCheckpointId()).isEqualTo(7);
        assertThat(restore.getCheckpointRoot()).isEqualTo(ROOT);
        assertThat(new HashSet<>(restore.getSlotsList()))
                .hasSize(restore.getSlotsCount())
                .isEqualTo(slotsOfA);
        assertThat(slotsOf(response.getRouting(), c)).isEqualTo(slotsOfA);
        assertThat(heartbeat(c).hasRestore()).as("delivered once").isFalse();
        assertThat(heartbeat(b).hasRestore()).isFalse();
    }

    @Test
    void shouldDirectARestoreFromCheckpointZeroWhenNoCheckpointExists() {
        startTwoShardsWithATable();
        final String c = register("h3:1");

        state.deregister(a);

        final RestoreDirective restore = heartbeat(c).getRestore();
        assertThat(restore.getCheckpointId()).isZero();
        assertThat(new HashSet<>(restore.getSlotsList())).isEqualTo(slotsOfA);
    }

    @Test
    void shouldHandTheGroupOnWhenTheOwnersLeaseLapses() {
        startTwoShardsWithATable();
        final String c = register("h3:1");
        state.checkpointCommitted(3);

        advanceMillis(LEASE_MILLIS);
        heartbeat(b);
        heartbeat(c);
        advanceMillis(1);
        assertThat(state.expireLeases()).isTrue();

        assertThat(slotsOf(c)).isEqualTo(slotsOfA);
        final RestoreDirective restore = heartbeat(c).getRestore();
        assertThat(restore.getCheckpointId()).isEqualTo(3);
        assertThat(new HashSet<>(restore.getSlotsList())).isEqualTo(slotsOfA);
        assertStatus(() -> heartbeat(a), Status.Code.NOT_FOUND);
    }

    @Test
    void shouldLeaveTheGroupUnownedWhenNoIdleShardCanAdoptIt() {
        startTwoShardsWithATable();

        state.deregister(a);

        assertThat(state.unownedSlots()).isEqualTo(slotsOfA.size());
        final RoutingTable routing = state.routingTable();
        slotsOfA.forEach(slot -> assertThat(routing.getSlotOwner(slot)).isEqualTo(-1));
        assertThat(slotsOf(b)).isEqualTo(slotsOfB);
        assertThat(heartbeat(b).hasRestore()).isFalse();
    }

    @Test
    void shouldGiveARestartedShardItsOwnGroupAndARestoreWhenItStartsFresh() {
        startTwoShardsWithATable();
        state.checkpointCommitted(7);
        state.deregister(a);

        final RegisterShardResponse response = register(a, "h1:9", true);

        assertThat(slotsOf(response.getRouting(), a)).isEqualTo(slotsOfA);
        assertThat(response.hasRestore()).isTrue();
        assertThat(response.getRestore().getCheckpointId()).isEqualTo(7);
        assertThat(new HashSet<>(response.getRestore().getSlotsList())).isEqualTo(slotsOfA);
        assertThat(heartbeat(a).hasRestore()).as("delivered once").isFalse();
        assertThat(state.unownedSlots()).isZero();
    }

    @Test
    void shouldGiveARestartedShardItsOwnGroupWithoutARestoreWhenItKeptItsRows() {
        startTwoShardsWithATable();
        state.checkpointCommitted(7);
        state.deregister(a);

        final RegisterShardResponse response = register(a, "h1:1", false);

        assertThat(slotsOf(response.getRouting(), a)).isEqualTo(slotsOfA);
        assertThat(response.hasRestore()).isFalse();
        assertThat(heartbeat(a).hasRestore()).isFalse();
    }

    @Test
    void shouldGrowTheEpochWhenALapsedShardComesBackToItsSlots() {
        startTwoShardsWithATable();
        advanceMillis(LEASE_MILLIS);
        heartbeat(b);
        advanceMillis(1);
        state.expireLeases();
        final RoutingTable lapsed = state.routingTable();
        slotsOfA.forEach(slot -> assertThat(lapsed.getSlotOwner(slot)).isEqualTo(-1));

        final RegisterShardResponse response = register(a, "h1:1", false);

        assertThat(slotsOf(response.getRouting(), a)).isEqualTo(slotsOfA);
        assertThat(response.getRouting().getEpoch()).isGreaterThan(lapsed.getEpoch());
    }
}
