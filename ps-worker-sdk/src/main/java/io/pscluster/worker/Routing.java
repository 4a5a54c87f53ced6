package io.pscluster.worker;

import io.pscluster.proto.v1.RoutingTable;
import io.pscluster.wire.Slots;

/** An immutable copy of the proxy's routing table: the address serving each slot, or null when none does. */
record Routing(long epoch, String[] addressOfSlot) {
    static final Routing EMPTY = new Routing(-1, new String[Slots.SLOT_COUNT]);

    static Routing of(final RoutingTable table) {
        final String[] addresses = new String[Slots.SLOT_COUNT];
        for (int slot = 0; slot < table.getSlotOwnerCount() && slot < addresses.length; slot++) {
            final int owner = table.getSlotOwner(slot);
            addresses[slot] = owner < 0 ? null : table.getShards(owner).getAddress();
        }
        return new Routing(table.getEpoch(), addresses);
    }
}
