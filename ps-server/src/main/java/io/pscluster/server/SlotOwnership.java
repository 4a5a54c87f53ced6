package io.pscluster.server;

import io.pscluster.wire.PsException;
import io.pscluster.wire.Slots;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.List;
import java.util.Map;

/**
 * The shard's view of which slots it serves, published as an immutable {@link View} through a volatile field:
 * request threads read one view per request (acquire) and every check of that request sees the same epoch.
 * Updates come from the proxy link and from restores and are serialized by this object's monitor.
 *
 * <p>Each owned slot carries its generation: the routing epoch at which this shard got it. A request routed with an
 * older epoch than a slot's generation was routed by a table that predates the move, and is refused (wrong-owner)
 * so that its sender refreshes rather than writing through a stale picture of the cluster.
 */
final class SlotOwnership {
    /**
     * An immutable ownership view.
     *
     * @param generation for each slot, the routing epoch at which this shard got it (0 for slots it does not own);
     *     never written after the view is published.
     */
    record View(
            long epoch,
            BitSet owned,
            BitSet restoring,
            BitSet writable,
            long[] generation,
            List<Trouble> troubles,
            Fence fence) {
        /** A view whose writable slots (owned and not restoring) are computed once. */
        static View of(
                final long epoch,
                final BitSet owned,
                final BitSet restoring,
                final long[] generation,
                final List<Trouble> troubles,
                final Fence fence) {
            final BitSet writable = (BitSet) owned.clone();
            writable.andNot(restoring);
            return new View(epoch, owned, restoring, writable, generation, troubles, fence);
        }

        /**
         * Checks, after {@link #check}, that the slot is not fenced for a move ({@link SlotOwnership#fence}): a fenced
         * slot's reads and writes are refused as while restoring (retryable; nothing applied). Reads too: once the
         * move commits, its new owner takes writes while this shard may not have heard of the move yet.
         */
        void checkNotFenced(
                final int slot,
                final String shardId,
                final String table,
                final long key,
                final String jobId,
                final long clock) {
            if (fence.slots().get(slot) && fence.holds() && !fence.lets(jobId, clock)) {
                throw PsException.restoring(
                        "shard " + shardId + " is handing slot " + slot + " (table '" + table + "', key " + key
                                + ") over to another shard: requests for it wait for the move",
                        epoch);
            }
        }

        /**
         * Checks that a request routed at {@code routedEpoch} may touch {@code slot}. Allocates nothing unless it
         * refuses.
         *
         * @throws PsException wrong-owner or restoring rejections, which guarantee nothing was applied.
         */
        void check(final int slot, final long routedEpoch, final String shardId, final String table, final long key) {
            if (restoring.get(slot)) {
                throw PsException.restoring(
                        "shard " + shardId + " is restoring slot " + slot + " (table '" + table + "', key " + key
                                + ") from a checkpoint" + troubleOf(slot),
                        epoch);
            }
            if (!owned.get(slot)) {
                throw PsException.wrongOwner(
                        "shard " + shardId + " does not own slot " + slot + " (table '" + table + "', key " + key
                                + ") at routing epoch " + epoch,
                        epoch);
            }
            final long slotGeneration = generation[slot];
            if (routedEpoch < slotGeneration) {
                throw PsException.wrongOwner(
                        "routed at epoch " + routedEpoch + ", slot " + slot + " (table '" + table + "', key " + key
                                + ") moved here (shard " + shardId + ") at epoch " + slotGeneration + ": refresh",
                        epoch);
            }
        }

        /** Why the restore of {@code slot} has not ended yet, as "; ..." for a refusal's message, or "". */
        private String troubleOf(final int slot) {
            for (final Trouble trouble : troubles) {
                if (trouble.slots().get(slot)) {
                    return "; " + trouble.why();
                }
            }
            return "";
        }

        int ownedCount() {
            return owned.cardinality();
        }

        long generationOf(final int slot) {
            return generation[slot];
        }
    }

    /**
     * Slots whose requests are refused while the proxy moves them: until {@code untilNanos} (this process's monotonic
     * clock), made by the proxy at {@code madeMillis} (its wall clock).
     */
    record Fence(BitSet slots, long untilNanos, long madeMillis, Map<String, Long> openSyncClocks) {
        static final Fence NONE = new Fence(new BitSet(), Long.MIN_VALUE, 0, Map.of());

        boolean holds() {
            return System.nanoTime() - untilNanos < 0;
        }

        /**
         * Whether a request of {@code jobId} at {@code clock} passes the fence: a SYNC push for a clock that was open
         * when the fence went up (see {@link JobClocks#openSyncClocks}), held for that clock and applied before the
         * move's cut.
         */
        boolean lets(final String jobId, final long clock) {
            final Long open = openSyncClocks.get(jobId);
            return open != null && clock <= open;
        }
    }

    /** The longest trouble told in a refusal. */
    static final int MAX_TROUBLE_CHARS = 1_000;

    /** Why a restore of {@code slots} has not ended yet (its last attempt failed), for the slots' refusals. */
    record Trouble(BitSet slots, String why) {}

    private volatile View view = View.of(
            0,
            new BitSet(Slots.SLOT_COUNT),
            new BitSet(Slots.SLOT_COUNT),
            new long[Slots.SLOT_COUNT],
            List.of(),
            Fence.NONE);

    View view() {
        return view;
    }

    /**
     * Takes a new routing epoch and owned set; returns the slots that were owned before and are not now. Slots owned
     * before and still owned keep their generation; slots gained get {@code epoch}.
     */
    synchronized BitSet route(final long epoch, final BitSet owned) {
        final View current = view;
        final long[] generation = new long[Slots.SLOT_COUNT];
        for (int slot = owned.nextSetBit(0); slot >= 0; slot = owned.nextSetBit(slot + 1)) {
            generation[slot] = current.owned.get(slot) ? current.generation[slot] : epoch;
        }
        return route(epoch, owned, generation);
    }

    /**
     * Takes a new routing epoch, owned set and per-slot generations (as the proxy sent them; entries of slots not in
     * {@code owned} are ignored); returns the slots that were owned before and are not now.
     */
    synchronized BitSet route(final long epoch, final BitSet owned, final long[] generations) {
        final View current = view;
        final BitSet lost = (BitSet) current.owned.clone();
        lost.andNot(owned);
        final long[] generation = new long[Slots.SLOT_COUNT];
        for (int slot = owned.nextSetBit(0); slot >= 0; slot = owned.nextSetBit(slot + 1)) {
            generation[slot] = generations[slot];
        }
        // Slots being restored stay refused until their restore ends, even if the routing moves on meanwhile. A fence
        // ends for the slots that moved away: should one come back, its writes are not held by a move long finished.
        view = View.of(
                epoch,
                (BitSet) owned.clone(),
                current.restoring,
                generation,
                current.troubles,
                lost.intersects(current.fence.slots()) ? without(current.fence, lost) : current.fence);
        return lost;
    }

    /**
     * Fences {@code slots} (replacing any fence) for {@code holdNanos} from now: their requests are refused until then,
     * or until {@link #unfence} or a routing that moves them away (see {@link View#checkNotFenced}).
     */
    synchronized void fence(
            final BitSet slots, final long holdNanos, final long madeMillis, final Map<String, Long> openSyncClocks) {
        final View current = view;
        view = View.of(
                current.epoch,
                current.owned,
                current.restoring,
                current.generation,
                current.troubles,
                new Fence(
                        (BitSet) slots.clone(), System.nanoTime() + holdNanos, madeMillis, Map.copyOf(openSyncClocks)));
    }

    /** Lifts the fence; returns the number of slots it held (0: none, or it had lapsed). */
    synchronized int unfence() {
        final View current = view;
        final int held = current.fence.holds() ? current.fence.slots().cardinality() : 0;
        view = View.of(
                current.epoch, current.owned, current.restoring, current.generation, current.troubles, Fence.NONE);
        return held;
    }

    /** Lifts a fence made before {@code millis} (by an earlier proxy); returns the number of slots it held. */
    synchronized int unfenceMadeBefore(final long millis) {
        final Fence fence = view.fence;
        return fence != Fence.NONE && fence.madeMillis() < millis ? unfence() : 0;
    }

    private static Fence without(final Fence fence, final BitSet slots) {
        final BitSet kept = (BitSet) fence.slots().clone();
        kept.andNot(slots);
        return new Fence(kept, fence.untilNanos(), fence.madeMillis(), fence.openSyncClocks());
    }

    /** Marks slots as being restored: requests for them are refused with a retryable status until released. */
    synchronized void beginRestore(final BitSet slots) {
        final View current = view;
        final BitSet restoring = (BitSet) current.restoring.clone();
        restoring.or(slots);
        // A trouble told stays until the restore ends or fails again: each retry marks the slots again.
        view = View.of(current.epoch, current.owned, restoring, current.generation, current.troubles, current.fence);
    }

    /** Ends the restore of {@code slots}: they serve again, and no trouble of theirs is told any more. */
    synchronized void endRestore(final BitSet slots) {
        final View current = view;
        final BitSet restoring = (BitSet) current.restoring.clone();
        restoring.andNot(slots);
        view = View.of(
                current.epoch,
                current.owned,
                restoring,
                current.generation,
                without(current.troubles, slots),
                current.fence);
    }

    /**
     * Records why the restore of {@code slots} has not ended (its last attempt failed and is retried): a refusal of
     * one of them says so, so that a caller whose deadline passes sees the cause and not only "restoring".
     */
    synchronized void restoreFailed(final BitSet slots, final String why) {
        final View current = view;
        final List<Trouble> troubles = new ArrayList<>(without(current.troubles, slots));
        // Short enough for a status message's trailer (a fallback over many damaged checkpoints says much).
        final String told = why.length() <= MAX_TROUBLE_CHARS ? why : why.substring(0, MAX_TROUBLE_CHARS) + "...";
        troubles.add(new Trouble((BitSet) slots.clone(), told));
        view = View.of(
                current.epoch,
                current.owned,
                current.restoring,
                current.generation,
                List.copyOf(troubles),
                current.fence);
    }

    private static List<Trouble> without(final List<Trouble> troubles, final BitSet slots) {
        if (troubles.isEmpty()) {
            return troubles;
        }
        final List<Trouble> kept = new ArrayList<>();
        for (final Trouble trouble : troubles) {
            if (!trouble.slots().intersects(slots)) {
                kept.add(trouble);
            }
        }
        return List.copyOf(kept);
    }

    /** The generations of the owned slots, parallel to their ascending order, for re-registration. */
    static long[] generationsOf(final View view) {
        final long[] out = new long[view.owned.cardinality()];
        int i = 0;
        for (int slot = view.owned.nextSetBit(0); slot >= 0; slot = view.owned.nextSetBit(slot + 1)) {
            out[i++] = view.generation[slot];
        }
        return Arrays.copyOf(out, i);
    }
}
