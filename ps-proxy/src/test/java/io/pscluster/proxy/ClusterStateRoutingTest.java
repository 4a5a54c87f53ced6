package io.pscluster.proxy;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.grpc.Status;
import io.pscluster.proto.v1.RoutingTable;
import io.pscluster.wire.PsException;
import io.pscluster.wire.Slots;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** Routing while no table exists (even spread) and the owner list for cluster-wide operations. */
class ClusterStateRoutingTest extends ClusterStateFixture {

    @Test
    void shouldAssignNoSlotAtEpochZeroWhenNoShardRegistered() {
        final RoutingTable routing = state.routingTable();

        assertThat(routing.getEpoch()).isZero();
        assertThat(routing.getSlotCount()).isEqualTo(Slots.SLOT_COUNT);
        assertThat(routing.getShardsList()).isEmpty();
        assertThat(routing.getSlotOwnerList()).hasSize(Slots.SLOT_COUNT).containsOnly(-1);
        assertThat(state.unownedSlots()).isEqualTo(Slots.SLOT_COUNT);
    }

    @Test
    void shouldSplitTheSlotsInHalvesWhenTwoShardsRegister() {
        final String a = register("10.0.0.1:7000");
        final String b = register("10.0.0.2:7000");

        final RoutingTable routing = state.routingTable();
        assertThat(slotsOf(routing, a)).hasSize(2048);
        assertThat(slotsOf(routing, b)).hasSize(2048);
        assertThat(routing.getSlotOwnerList()).doesNotContain(-1);
        assertThat(state.unownedSlots()).isZero();
    }

    @Test
    void shouldKeepShareSizesWithinOneWhenThreeShardsRegister() {
        final List<String> ids = List.of(register("h1:1"), register("h2:1"), register("h3:1"));

        final RoutingTable routing = state.routingTable();
        final List<Integer> sizes = new ArrayList<>();
        ids.forEach(id -> sizes.add(slotsOf(routing, id).size()));
        assertThat(sizes.stream().mapToInt(Integer::intValue).sum()).isEqualTo(Slots.SLOT_COUNT);
        assertThat(sizes.stream().mapToInt(Integer::intValue).max().getAsInt()
                        - sizes.stream().mapToInt(Integer::intValue).min().getAsInt())
                .isLessThanOrEqualTo(1);
    }

    @Test
    void shouldPointEverySlotAtItsOwnersAddressWhenTheRoutingTableIsBuilt() {
        final Map<String, String> addressOf = new HashMap<>();
        for (final String address : List.of("h1:7001", "h2:7002", "h3:7003")) {
            addressOf.put(register(address), address);
        }

        final RoutingTable routing = state.routingTable();
        final String[] owners = state.slotOwners();
        assertThat(routing.getShardsList()).hasSize(3);
        routing.getShardsList()
                .forEach(shard -> assertThat(shard.getAddress()).isEqualTo(addressOf.get(shard.getShardId())));
        for (int slot = 0; slot < Slots.SLOT_COUNT; slot++) {
            final int index = routing.getSlotOwner(slot);
            assertThat(routing.getShards(index).getShardId())
                    .as("slot %d", slot)
                    .isEqualTo(owners[slot]);
            assertThat(routing.getShards(index).getAddress()).isEqualTo(addressOf.get(owners[slot]));
        }
    }

    @Test
    void shouldGrowTheEpochWithEveryChangeWhenShardsComeAndGo() {
        final List<Long> epochs = new ArrayList<>();
        epochs.add(state.epoch());
        final String a = register("h1:1");
        epochs.add(state.epoch());
        final String b = register("h2:1");
        epochs.add(state.epoch());
        register("h3:1");
        epochs.add(state.epoch());
        state.deregister(b);
        epochs.add(state.epoch());
        advanceMillis(EXPIRY_MILLIS + 1);
        assertThat(state.expireLeases()).isTrue();
        epochs.add(state.epoch());

        assertThat(epochs).doesNotHaveDuplicates().isSorted();
        assertThat(epochs.get(0)).isZero();
        assertThat(state.routingTable().getEpoch()).isEqualTo(state.epoch());
        assertThat(slotsOf(a)).isEmpty();
    }

    @Test
    void shouldSpreadAllSlotsOverTheRemainingShardsWhenOneDeregisters() {
        final String a = register("h1:1");
        final String b = register("h2:1");
        register("h3:1");

        state.deregister(b);

        assertThat(slotsOf(b)).isEmpty();
        assertThat(state.routingTable().getSlotOwnerList()).doesNotContain(-1);
        assertThat(slotsOf(a)).hasSize(2048);
    }

    @Test
    void shouldReturnEveryOwnerAndItsSlotsWhenEverySlotIsOnALiveShard() {
        final Map<String, String> addressOf = new HashMap<>();
        for (final String address : List.of("h1:1", "h2:1", "h3:1")) {
            addressOf.put(register(address), address);
        }
        state.addTable(EMB);

        final List<ClusterState.Owner> owners = state.ownersForClusterOperation("checkpoint");

        assertThat(owners).hasSize(3);
        final int[] covered = new int[Slots.SLOT_COUNT];
        for (final ClusterState.Owner owner : owners) {
            assertThat(owner.address()).isEqualTo(addressOf.get(owner.shardId()));
            assertThat(new HashSet<>(owner.slots())).isEqualTo(slotsOf(owner.shardId()));
            owner.slots().forEach(slot -> covered[slot]++);
        }
        assertThat(Arrays.stream(covered)).as("each slot exactly once").containsOnly(1);
    }

    @Test
    void shouldRejectAsFailedPreconditionWhenASlotsOwnerIsNotLive() {
        final String a = register("h1:1");
        final String b = register("h2:1");
        state.addTable(EMB);
        state.beginDrain(b); // takes no slots: a's group has nowhere to go
        state.deregister(a);

        assertThatThrownBy(() -> state.ownersForClusterOperation("checkpoint"))
                .isInstanceOfSatisfying(
                        PsException.class, e -> assertThat(e.code()).isEqualTo(Status.Code.FAILED_PRECONDITION))
                .hasMessageContaining("checkpoint")
                .hasMessageContaining(a)
                .hasMessageContaining("2048 slots");
    }

    @Test
    void shouldRejectAsFailedPreconditionWhenNoShardExists() {
        assertStatus(() -> state.ownersForClusterOperation("restore"), Status.Code.FAILED_PRECONDITION);
    }
}
