package io.pscluster.server;

import io.pscluster.proto.v1.RoutingTable;
import io.pscluster.proto.v1.ShardInfo;
import io.pscluster.wire.Slots;
import java.util.BitSet;
import java.util.concurrent.TimeUnit;

/** Routing tables as the proxy would send them, for tests that drive a {@link Shard} directly. */
final class TestRouting {
    private TestRouting() {}

    /**
     * Applies {@code routing} to {@code shard} and grants it a lease of an hour, as the proxy link would after a
     * registration answer.
     */
    static void serve(final Shard shard, final RoutingTable routing) throws InterruptedException {
        shard.applyRouting(routing);
        shard.grantLeaseUntil(System.nanoTime() + TimeUnit.HOURS.toNanos(1));
    }

    /** Routing at {@code epoch} that assigns every slot to the one shard {@code shardId}. */
    static RoutingTable allSlotsTo(final String shardId, final long epoch) {
        final RoutingTable.Builder routing = RoutingTable.newBuilder()
                .setEpoch(epoch)
                .setSlotCount(Slots.SLOT_COUNT)
                .addShards(ShardInfo.newBuilder().setShardId(shardId).setAddress("localhost:1"));
        for (int slot = 0; slot < Slots.SLOT_COUNT; slot++) {
            routing.addSlotOwner(0);
        }
        return routing.build();
    }

    /**
     * Routing at {@code epoch} that assigns the slots in {@code moved} to shard {@code otherId} and every other slot
     * to {@code shardId}.
     */
    static RoutingTable movingSlots(final String shardId, final String otherId, final BitSet moved, final long epoch) {
        final RoutingTable.Builder routing = RoutingTable.newBuilder()
                .setEpoch(epoch)
                .setSlotCount(Slots.SLOT_COUNT)
                .addShards(ShardInfo.newBuilder().setShardId(shardId).setAddress("localhost:1"))
                .addShards(ShardInfo.newBuilder().setShardId(otherId).setAddress("localhost:2"));
        for (int slot = 0; slot < Slots.SLOT_COUNT; slot++) {
            routing.addSlotOwner(moved.get(slot) ? 1 : 0);
        }
        return routing.build();
    }
}
