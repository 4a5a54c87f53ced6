package io.pscluster.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.proto.v1.RegisterShardResponse;
import io.pscluster.proto.v1.RestoreDirective;
import io.pscluster.proto.v1.RoutingTable;
import io.pscluster.wire.Slots;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import org.junit.jupiter.api.Test;

/** A proxy without a state record starts from the newest checkpoint and hands the old groups on after the grace. */
class ClusterStateCheckpointLoadTest extends ClusterStateFixture {

    private void startFrom(final long checkpointId, final String[] owners, final long epoch) {
        state = open(
                new MemoryStateStore(),
                Optional.of(new ClusterState.Bootstrap(checkpointId, 1234L, List.of(EMB), owners, epoch)));
    }

    @Test
    void shouldLetEachFreshShardAdoptOneOldGroupWhenTheGraceEnds() {
        final String[] oldOwners = SlotOwners.decode("old-a=0-999,3000-3099;old-b=1000-2999,3100-4095");
        startFrom(12, oldOwners, 30);
        assertThat(state.epoch()).isEqualTo(31);
        assertThat(state.tables()).containsExactly(EMB);

        final RegisterShardResponse first = register("", "h1:1", true);
        final RegisterShardResponse second = register("", "h2:1", true);
        assertThat(slotsOf(first.getShardId()))
                .as("nothing moves during the grace")
                .isEmpty();
        assertThat(slotsOf(second.getShardId())).isEmpty();
        heartbeat(first.getShardId());
        heartbeat(second.getShardId());
        passGrace();

        final Map<String, Set<Integer>> oldGroups = new HashMap<>();
        for (int slot = 0; slot < oldOwners.length; slot++) {
            oldGroups.computeIfAbsent(oldOwners[slot], id -> new HashSet<>()).add(slot);
        }
        final RoutingTable routing = state.routingTable();
        final Set<Integer> firstSlots = slotsOf(routing, first.getShardId());
        final Set<Integer> secondSlots = slotsOf(routing, second.getShardId());
        assertThat(List.of(firstSlots, secondSlots))
                .containsExactlyInAnyOrder(oldGroups.get("old-a"), oldGroups.get("old-b"));
        assertThat(state.unownedSlots()).isZero();
        assertThat(state.epoch()).isGreaterThan(31);
        for (final RegisterShardResponse response : List.of(first, second)) {
            assertThat(response.getTablesList()).containsExactly(EMB);
            final RestoreDirective restore = heartbeat(response.getShardId()).getRestoreOrders(0);
            assertThat(restore.getCheckpointId()).isEqualTo(12);
            assertThat(new HashSet<>(restore.getSlotsList())).isEqualTo(slotsOf(routing, response.getShardId()));
        }
        assertThat(state.status().getRollbacksList())
                .extracting(event -> event.getFromShard())
                .containsExactlyInAnyOrder("old-a", "old-b");
    }

    @Test
    void shouldNotReuseAnOldOwnersIdAndServeEverySlotWhenFewerShardsCome() {
        final String[] oldOwners = SlotOwners.decode("shard-0=0-2047;shard-1=2048-4095");
        startFrom(4, oldOwners, 2);

        final String id = register("h1:1");
        heartbeat(id);
        passGrace();

        assertThat(id).isNotIn("shard-0", "shard-1");
        assertThat(slotsOf(id)).hasSize(Slots.SLOT_COUNT);
        assertThat(state.unownedSlots()).isZero();
    }

    @Test
    void shouldGiveAnOldOwnerItsOwnGroupBackWhenItRegistersWithItsOldId() {
        startFrom(4, SlotOwners.decode("x=0-99;y=100-4095"), 2);

        final RegisterShardResponse response = register("x", "h1:1", true);

        assertThat(slotsOf(response.getRouting(), "x")).hasSize(100).contains(0, 99);
        assertThat(response.getRestoreOrdersList()).singleElement().satisfies(order -> {
            assertThat(order.getCheckpointId()).isEqualTo(4);
            assertThat(order.getSlotsList()).hasSize(100);
        });
    }
}
