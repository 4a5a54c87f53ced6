package io.pscluster.server;

import io.pscluster.wire.PsException;
import io.pscluster.wire.Slots;
import java.util.BitSet;

/**
 * The shard's view of which slots it serves, published as an immutable {@link View} through a volatile field:
 * request threads read one view per request (acquire) and every check of that request sees the same epoch.
 * Updates come from the proxy link and from restores and are serialized by this object's monitor.
 */
final class SlotOwnership {
    /** An immutable ownership view. */
    record View(long epoch, BitSet owned, BitSet restoring, BitSet writable) {
        /** A view whose writable slots (owned and not restoring) are computed once. */
        static View of(final long epoch, final BitSet owned, final BitSet restoring) {
            final BitSet writable = (BitSet) owned.clone();
            writable.andNot(restoring);
            return new View(epoch, owned, restoring, writable);
        }

        /**
         * Checks that a request may touch {@code slot}.
         *
         * @throws PsException wrong-owner or restoring rejections, which guarantee nothing was applied.
         */
        void check(final int slot, final String shardId, final String table, final long key) {
            if (restoring.get(slot)) {
                throw PsException.restoring(
                        "shard " + shardId + " is restoring slot " + slot + " (table '" + table + "', key " + key
                                + ") from a checkpoint",
                        epoch);
            }
            if (!owned.get(slot)) {
                throw PsException.wrongOwner(
                        "shard " + shardId + " does not own slot " + slot + " (table '" + table + "', key " + key
                                + ") at routing epoch " + epoch,
                        epoch);
            }
        }

        int ownedCount() {
            return owned.cardinality();
        }
    }

    private volatile View view = View.of(0, new BitSet(Slots.SLOT_COUNT), new BitSet(Slots.SLOT_COUNT));

    View view() {
        return view;
    }

    /** Takes a new routing epoch and owned set; returns the slots that were owned before and are not now. */
    synchronized BitSet route(final long epoch, final BitSet owned) {
        final View current = view;
        final BitSet lost = (BitSet) current.owned.clone();
        lost.andNot(owned);
        // Slots being restored stay refused until their restore ends, even if the routing moves on meanwhile.
        view = View.of(epoch, (BitSet) owned.clone(), current.restoring);
        return lost;
    }

    /** Marks slots as being restored: requests for them are refused with a retryable status until released. */
    synchronized void beginRestore(final BitSet slots) {
        final View current = view;
        final BitSet restoring = (BitSet) current.restoring.clone();
        restoring.or(slots);
        view = View.of(current.epoch, current.owned, restoring);
    }

    synchronized void endRestore(final BitSet slots) {
        final View current = view;
        final BitSet restoring = (BitSet) current.restoring.clone();
        restoring.andNot(slots);
        view = View.of(current.epoch, current.owned, restoring);
    }
}
