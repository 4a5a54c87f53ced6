package io.pscluster.worker;

import io.pscluster.proto.v1.RoutingTable;
import io.pscluster.wire.Slots;

/**
 * An immutable copy of the proxy's routing table: {@code ownerOfSlot[s]} indexes {@code addresses}, or is -1 when no
 * live shard owns slot {@code s}.
 */
record Routing(long epoch, String[] addresses, int[] ownerOfSlot) {
    static final Routing EMPTY = new Routing(-1, new String[0], filled(-1));

    static Routing of(final RoutingTable table) {
        final String[] addresses = new String[table.getShardsCount()];
        for (int i = 0; i < addresses.length; i++) {
            addresses[i] = table.getShards(i).getAddress();
        }
        final int[] owners = filled(-1);
        for (int slot = 0; slot < table.getSlotOwnerCount() && slot < owners.length; slot++) {
            owners[slot] = table.getSlotOwner(slot);
        }
        return new Routing(table.getEpoch(), addresses, owners);
    }

    private static int[] filled(final int value) {
        final int[] owners = new int[Slots.SLOT_COUNT];
        java.util.Arrays.fill(owners, value);
        return owners;
    }
}
