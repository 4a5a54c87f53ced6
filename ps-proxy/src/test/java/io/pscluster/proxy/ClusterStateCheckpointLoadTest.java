package io.pscluster.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.proto.v1.RegisterShardResponse;
import io.pscluster.proto.v1.RestoreDirective;
import io.pscluster.proto.v1.RoutingTable;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.junit.jupiter.api.Test;

/** A proxy started from a checkpoint hands the old slot groups to the shards that register. */
class ClusterStateCheckpointLoadTest extends ClusterStateFixture {

    @Test
    void shouldLetEachFreshShardAdoptOneOldGroupWhenShardsRegisterAfterLoading() {
        final String[] oldOwners = SlotOwners.decode("old-a=0-999,3000-3099;old-b=1000-2999,3100-4095");
        state.loadCheckpoint(12, List.of(EMB), oldOwners, 30);
        assertThat(state.epoch()).isEqualTo(31);
        assertThat(state.tables()).containsExactly(EMB);

        final RegisterShardResponse first = register("", "h1:1", true);
        final RegisterShardResponse second = register("", "h2:1", true);

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
            final RestoreDirective restore = response.hasRestore()
                    ? response.getRestore()
                    : heartbeat(response.getShardId()).getRestore();
            assertThat(restore.getCheckpointId()).isEqualTo(12);
            assertThat(new HashSet<>(restore.getSlotsList())).isEqualTo(slotsOf(routing, response.getShardId()));
        }
    }

    @Test
    void shouldNotReuseAnOldOwnersIdWhenAssigningIdsAfterLoading() {
        final String[] oldOwners = SlotOwners.decode("shard-0=0-2047;shard-1=2048-4095");
        state.loadCheckpoint(4, List.of(EMB), oldOwners, 2);

        final String id = register("h1:1");

        assertThat(id).isNotIn("shard-0", "shard-1");
        assertThat(slotsOf(id)).hasSize(2048);
    }

    @Test
    void shouldGiveAnOldOwnerItsOwnGroupBackWhenItRegistersWithItsOldId() {
        state.loadCheckpoint(4, List.of(EMB), SlotOwners.decode("x=0-99;y=100-4095"), 2);

        final RegisterShardResponse response = register("x", "h1:1", true);

        assertThat(slotsOf(response.getRouting(), "x")).hasSize(100).contains(0, 99);
        assertThat(response.getRestore().getCheckpointId()).isEqualTo(4);
        assertThat(response.getRestore().getSlotsList()).hasSize(100);
    }
}
