package io.pscluster.worker;

import io.pscluster.wire.Slots;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Splits a call's keys by the shard that owns their slot, and each shard's share into chunks of whole slots of about
 * {@code targetKeys} keys, so that every duplicate of a key is in one request (which a push needs; see below). A share
 * of {@code n} keys makes {@code k = max(1, round(n / targetKeys))} chunks of about {@code n / k} keys each (see {@link
 * #limitOf}): a call just past the target goes in one request rather than in a full one and a sliver (a 1 MiB stream1m
 * call of 4,096 dim-64 keys went in 3,971 keys and 125), and a larger one in even parts. A slot with more keys than a
 * chunk's limit (repeats of keys, or keys crafted into one slot) goes in chunks of its own split by key when every
 * repeat of a key must stay in one request (a push, whose repeats are summed in their request: {@link #byKey}), and in
 * even parts like a share otherwise (a pull, where any key may go in any request). So no set of keys makes a request
 * past the shard's limits.
 *
 * <p>When every owner's share goes in one chunk (the usual case), the keys are grouped by owner in the call's order,
 * in two passes over the keys ({@link #byOwner}). Otherwise they are ordered by (owner, slot, position in the call) in
 * one pass, then cut in a second: a small call is
 * sorted as packed {@code long}s (n log n, nothing sized by the slot count), a large one by a counting sort over the
 * slots, so that neither pays for the other's case. Both give the same chunks: within an owner's share, slots
 * ascend, and the keys of a slot keep the call's order.
 */
final class SlotChunks {
    /** Calls of up to this many keys are sorted; larger ones counted (a count costs a few passes over the slots). */
    static final int SORT_MAX_KEYS = 512;

    private static final int SLOT_BITS = Integer.numberOfTrailingZeros(Slots.SLOT_COUNT);

    /**
     * Calls of at least this many keys with rows narrower than {@link KeyDedup#BULK_COPY_DIM} are put in slot order
     * before they are split ({@link #orderBySlot}): past the caches, reading each request's keys (and a push's rows)
     * through positions scattered over the call's arrays costs a memory miss a key for each (splitting and encoding a
     * push of 4M keys of dim 1: 44 ns a key, against 23 ordered first; at dim 8, 70 against 45). Below this the order
     * costs more than it saves (at 64K keys of dim 1, 10 against 16 ns a key; even at 256K).
     */
    static final int ORDER_MIN_KEYS = 1 << 18;

    /**
     * A call's keys in slot order, with each one's slot (so that splitting them computes none again); a push's rows
     * in the same order, or a pull's origins: for each ordered key, its index in the call.
     */
    record Ordered(long[] keys, int[] slots, float[] rows, int[] origins) {
        /** The call's indexes of the ordered keys at {@code positions}. */
        int[] originsOf(final int[] positions) {
            final int[] inCall = new int[positions.length];
            for (int i = 0; i < positions.length; i++) {
                inCall[i] = origins[positions[i]];
            }
            return inCall;
        }
    }

    /** Whether a call of {@code keys} keys of {@code dim} floats is ordered before it is split. */
    static boolean ordersFirst(final int keys, final int dim) {
        return keys >= ORDER_MIN_KEYS && dim < KeyDedup.BULK_COPY_DIM;
    }

    /**
     * A call of {@code keys} in slot order ({@link #orderBySlot}) when it is large enough to gain from it
     * ({@link #ordersFirst}), else null; null too when the heap has no room for the ordered copy and its scratch
     * ({@code 16n + 4n dim} bytes for a push of n keys, {@code 20n} for a pull: keys, slots and rows or origins, and
     * the call's slots; then a buffer of the largest of 64 parts of the slots, a 64th of that for keys spread by hash,
     * up to as much again when one hot key fills a part): the order only saves time, so a caller whose call fits the
     * heap but not twice goes on with the call's own arrays.
     */
    static Ordered inSlotOrder(final long tableHash, final long[] keys, final float[] rows, final int dim) {
        if (!ordersFirst(keys.length, dim)) {
            return null;
        }
        try {
            return orderBySlot(tableHash, keys, rows, dim);
        } catch (OutOfMemoryError noRoom) {
            return null;
        }
    }

    /** Bits of a slot that the first pass of {@link #orderBySlot} orders by (its high ones), then the second. */
    private static final int LOW_SLOT_BITS = 6;

    /**
     * {@code keys} in ascending slot order, keys of one slot in the call's order (so a push's repeats of a key are
     * summed in the same order either way), with their {@code dim}-float rows when {@code rows} is not null, else
     * with their origins. A counting sort in two passes, each stable: by the slot's high bits into the ordered arrays
     * (64 places written at, each moving on in order, so that the writes stay in cache and in the TLB, where writing at
     * the 4,096 slots' places at once missed both: 12 ns a key at 10M keys), then each of those 64 parts, a copy of it
     * in cache, by the slot's low bits back into its place.
     */
    static Ordered orderBySlot(final long tableHash, final long[] keys, final float[] rows, final int dim) {
        final int n = keys.length;
        final int[] slotOf = new int[n];
        final int[] next = new int[Slots.SLOT_COUNT];
        for (int i = 0; i < n; i++) {
            final int slot = Slots.slotOf(tableHash, keys[i]);
            slotOf[i] = slot;
            next[slot]++;
        }
        final int parts = Slots.SLOT_COUNT >>> LOW_SLOT_BITS;
        final int[] partNext = new int[parts + 1];
        int start = 0;
        int largest = 0;
        for (int slot = 0; slot < Slots.SLOT_COUNT; slot++) {
            if ((slot & ((1 << LOW_SLOT_BITS) - 1)) == 0) {
                partNext[slot >>> LOW_SLOT_BITS] = start;
            }
            final int count = next[slot];
            next[slot] = start;
            start += count;
        }
        partNext[parts] = n;
        for (int part = 0; part < parts; part++) {
            largest = Math.max(largest, partNext[part + 1] - partNext[part]);
        }
        final int[] partStarts = partNext.clone();
        final long[] orderedKeys = new long[n];
        final int[] orderedSlots = new int[n];
        final boolean pull = rows == null;
        final int[] origins = pull ? new int[n] : null;
        final float[] orderedRows = pull ? null : new float[rows.length];
        for (int i = 0; i < n; i++) {
            final int slot = slotOf[i];
            final int at = partNext[slot >>> LOW_SLOT_BITS]++;
            orderedKeys[at] = keys[i];
            orderedSlots[at] = slot;
            if (pull) {
                origins[at] = i;
            } else if (dim == 1) {
                orderedRows[at] = rows[i];
            } else {
                for (int d = 0; d < dim; d++) {
                    orderedRows[at * dim + d] = rows[i * dim + d];
                }
            }
        }
        final long[] partKeys = new long[largest];
        final int[] partSlots = new int[largest];
        final int[] partOrigins = pull ? new int[largest] : null;
        final float[] partRows = pull ? null : new float[largest * dim];
        for (int part = 0; part < parts; part++) {
            final int from = partStarts[part];
            final int length = partStarts[part + 1] - from;
            System.arraycopy(orderedKeys, from, partKeys, 0, length);
            System.arraycopy(orderedSlots, from, partSlots, 0, length);
            if (pull) {
                System.arraycopy(origins, from, partOrigins, 0, length);
            } else {
                System.arraycopy(orderedRows, from * dim, partRows, 0, length * dim);
            }
            for (int j = 0; j < length; j++) {
                final int slot = partSlots[j];
                final int at = next[slot]++;
                orderedKeys[at] = partKeys[j];
                orderedSlots[at] = slot;
                if (pull) {
                    origins[at] = partOrigins[j];
                } else if (dim == 1) {
                    orderedRows[at] = partRows[j];
                } else {
                    for (int d = 0; d < dim; d++) {
                        orderedRows[at * dim + d] = partRows[j * dim + d];
                    }
                }
            }
        }
        return new Ordered(orderedKeys, orderedSlots, orderedRows, origins);
    }

    private SlotChunks() {}

    /**
     * @param slots the slot of each of {@code keys} when the caller has them ({@link Ordered#slots}), else null.
     * @param positions indexes into {@code keys} of the keys to split.
     * @return for each owner index of {@code routing.addresses()} its chunks (arrays of positions), then, at index
     *     {@code addresses().length}, the chunks of keys whose slot no shard owns.
     */
    static List<List<int[]>> split(
            final long tableHash,
            final long[] keys,
            final int[] slots,
            final int[] positions,
            final Routing routing,
            final int targetKeys,
            final boolean wholeKeys) {
        // Each key's slot once, for whichever way the call is split.
        final int[] slotOf = slots == null ? slotsOf(tableHash, keys, positions) : slotsAt(slots, positions);
        final List<List<int[]>> whole = byOwner(slotOf, positions, routing, targetKeys);
        if (whole != null) {
            return whole;
        }
        return positions.length <= SORT_MAX_KEYS
                ? bySorting(keys, slotOf, positions, routing, targetKeys, wholeKeys)
                : byCounting(keys, slotOf, positions, routing, targetKeys, wholeKeys);
    }

    /** The slots {@code slots[positions[i]]}, at {@code i}. */
    static int[] slotsAt(final int[] slots, final int[] positions) {
        final int[] slotOf = new int[positions.length];
        for (int i = 0; i < positions.length; i++) {
            slotOf[i] = slots[positions[i]];
        }
        return slotOf;
    }

    /** The slot of each key {@code keys[positions[i]]}, at {@code i}. */
    static int[] slotsOf(final long tableHash, final long[] keys, final int[] positions) {
        final int[] slotOf = new int[positions.length];
        for (int i = 0; i < positions.length; i++) {
            slotOf[i] = Slots.slotOf(tableHash, keys[positions[i]]);
        }
        return slotOf;
    }

    /**
     * When every owner's share goes in one chunk (the usual case: a call smaller than the target per shard, and every
     * re-split of a retry), the chunks grouped by owner in the call's order, with no ordering by slot: a chunk that
     * holds the whole share holds every key of its slots whatever the order. Null when a share needs more chunks.
     */
    static List<List<int[]>> byOwner(
            final int[] slotOf, final int[] positions, final Routing routing, final int targetKeys) {
        final int n = positions.length;
        final int shards = routing.addresses().length;
        final int[] owners = routing.ownerOfSlot();
        final int[] ownerOf = new int[n];
        final int[] count = new int[shards + 1];
        for (int i = 0; i < n; i++) {
            final int owner = owners[slotOf[i]];
            ownerOf[i] = owner < 0 ? shards : owner;
            count[ownerOf[i]]++;
        }
        final int[][] chunk = new int[shards + 1][];
        for (int owner = 0; owner <= shards; owner++) {
            if (count[owner] > evenPartOf(count[owner], targetKeys)) {
                return null;
            }
            chunk[owner] = new int[count[owner]];
        }
        final int[] fill = new int[shards + 1];
        for (int i = 0; i < n; i++) {
            chunk[ownerOf[i]][fill[ownerOf[i]]++] = positions[i];
        }
        final List<List<int[]>> chunksOf = new ArrayList<>(shards + 1);
        for (int owner = 0; owner <= shards; owner++) {
            chunksOf.add(count[owner] == 0 ? List.of() : List.of(chunk[owner]));
        }
        return chunksOf;
    }

    static List<List<int[]>> bySorting(
            final long[] keys,
            final int[] slotOf,
            final int[] positions,
            final Routing routing,
            final int targetKeys,
            final boolean wholeKeys) {
        final int n = positions.length;
        final int shards = routing.addresses().length;
        final int[] owners = routing.ownerOfSlot();
        // (owner, slot) in the high 32 bits, the index into positions in the low: sorting keeps a slot's keys in order.
        final long[] packed = new long[n];
        for (int i = 0; i < n; i++) {
            final int slot = slotOf[i];
            final int owner = owners[slot] < 0 ? shards : owners[slot];
            packed[i] = ((long) ((owner << SLOT_BITS) | slot) << 32) | i;
        }
        Arrays.sort(packed);
        final int[] ordered = new int[n];
        final int[] orderedSlot = new int[n];
        final int[] ownerEnd = new int[shards + 1];
        for (int k = 0; k < n; k++) {
            final int ownerSlot = (int) (packed[k] >>> 32);
            ordered[k] = positions[(int) packed[k]];
            orderedSlot[k] = ownerSlot & (Slots.SLOT_COUNT - 1);
            ownerEnd[ownerSlot >>> SLOT_BITS] = k + 1;
        }
        for (int owner = 1; owner <= shards; owner++) {
            ownerEnd[owner] = Math.max(ownerEnd[owner], ownerEnd[owner - 1]);
        }
        return cut(keys, ordered, orderedSlot, ownerEnd, targetKeys, wholeKeys);
    }

    static List<List<int[]>> byCounting(
            final long[] keys,
            final int[] slotOf,
            final int[] positions,
            final Routing routing,
            final int targetKeys,
            final boolean wholeKeys) {
        final int n = positions.length;
        final int shards = routing.addresses().length;
        final int[] owners = routing.ownerOfSlot();
        // Keys per slot, then where each slot's keys start in the (owner, slot) order.
        final int[] next = new int[Slots.SLOT_COUNT];
        for (int i = 0; i < n; i++) {
            next[slotOf[i]]++;
        }
        final int[] ownerEnd = new int[shards + 1];
        for (int slot = 0; slot < Slots.SLOT_COUNT; slot++) {
            ownerEnd[owners[slot] < 0 ? shards : owners[slot]] += next[slot];
        }
        final int[] ownerFill = new int[shards + 1];
        for (int owner = 0; owner <= shards; owner++) {
            ownerFill[owner] = owner == 0 ? 0 : ownerEnd[owner - 1];
            ownerEnd[owner] += ownerFill[owner];
        }
        for (int slot = 0; slot < Slots.SLOT_COUNT; slot++) {
            final int owner = owners[slot] < 0 ? shards : owners[slot];
            final int count = next[slot];
            next[slot] = ownerFill[owner];
            ownerFill[owner] += count;
        }
        final int[] ordered = new int[n];
        final int[] orderedSlot = new int[n];
        for (int i = 0; i < n; i++) {
            final int at = next[slotOf[i]]++;
            ordered[at] = positions[i];
            orderedSlot[at] = slotOf[i];
        }
        return cut(keys, ordered, orderedSlot, ownerEnd, targetKeys, wholeKeys);
    }

    /** Keys of each of the even parts a share of {@code shareKeys} keys goes in (see the class comment). */
    static int evenPartOf(final int shareKeys, final int targetKeys) {
        if (targetKeys < 1) {
            throw new IllegalArgumentException("targetKeys=" + targetKeys + " must be >= 1");
        }
        final long parts = Math.max(1, Math.round((double) shareKeys / targetKeys));
        return (int) ((shareKeys + parts - 1) / parts);
    }

    /**
     * The most keys of a chunk whose share's even part is {@code evenPart}: a sixteenth more, so that cutting at slot
     * boundaries does not leave a sliver over for a chunk of its own.
     */
    static int limitOf(final int evenPart) {
        return (int) Math.min(Integer.MAX_VALUE, evenPart + (evenPart + 15L) / 16);
    }

    /**
     * Cuts each owner's range of {@code ordered} (positions into {@code keys}) into chunks of whole slots. A slot larger
     * than a chunk's limit goes in chunks of the even part, or, when {@code wholeKeys} (every repeat of a key in one
     * request), in chunks of its own split by key ({@link #byKey}).
     */
    private static List<List<int[]>> cut(
            final long[] keys,
            final int[] ordered,
            final int[] orderedSlot,
            final int[] ownerEnd,
            final int targetKeys,
            final boolean wholeKeys) {
        final List<List<int[]>> chunksOf = new ArrayList<>(ownerEnd.length);
        int from = 0;
        for (final int end : ownerEnd) {
            // A chunk ends at the first slot boundary at or past the even part, or before a slot that would take
            // it past the limit: chunks are even, and the last takes what the others' whole slots left.
            final int evenPart = evenPartOf(end - from, targetKeys);
            final int maxKeys = limitOf(evenPart);
            final List<int[]> chunks = new ArrayList<>(1);
            int chunkStart = from;
            int k = from;
            while (k < end) {
                final int slot = orderedSlot[k];
                int slotEnd = k + 1;
                while (slotEnd < end && orderedSlot[slotEnd] == slot) {
                    slotEnd++;
                }
                final boolean overLimit = slotEnd - k > maxKeys;
                if (overLimit && wholeKeys) {
                    // The chunk under way ends before the slot, which goes in chunks of its own by key.
                    if (k > chunkStart) {
                        chunks.add(Arrays.copyOfRange(ordered, chunkStart, k));
                    }
                    chunks.addAll(byKey(keys, ordered, k, slotEnd, evenPart));
                    k = slotEnd;
                    chunkStart = k;
                    continue;
                }
                // A slot larger than a chunk, of a call that may split slots anyhow, fills the chunk under way first.
                if (!overLimit && k > chunkStart && slotEnd - chunkStart > maxKeys) {
                    chunks.add(Arrays.copyOfRange(ordered, chunkStart, k));
                    chunkStart = k;
                }
                while (overLimit && slotEnd - chunkStart > maxKeys) {
                    chunks.add(Arrays.copyOfRange(ordered, chunkStart, chunkStart + evenPart));
                    chunkStart += evenPart;
                }
                k = slotEnd;
                if (k - chunkStart >= evenPart && k < end) {
                    chunks.add(Arrays.copyOfRange(ordered, chunkStart, k));
                    chunkStart = k;
                }
            }
            if (end > chunkStart) {
                chunks.add(Arrays.copyOfRange(ordered, chunkStart, end));
            }
            chunksOf.add(chunks);
            from = end;
        }
        return chunksOf;
    }

    /**
     * The keys {@code ordered[from, to)} of one slot, more than a chunk holds, in chunks of whole keys: every repeat of
     * a key in one chunk, in the call's order, so that a push's repeats are summed in one request in the same order as
     * for a whole slot. The slot's keys, sorted, are cut into ranges as a share is cut into slots: a range ends at the
     * first key boundary at or past {@code evenPart} places, or before a key that would take it past {@link #limitOf}
     * the even part; a key with more places than that is a range of its own. So no chunk holds more places than the
     * limit but a single key's, whatever the keys (a hash of them could be crafted to crowd one chunk). Each chunk is
     * a request with its own push sequence, like any other.
     */
    static List<int[]> byKey(final long[] keys, final int[] ordered, final int from, final int to, final int evenPart) {
        final int n = to - from;
        final long[] sorted = new long[n];
        for (int i = 0; i < n; i++) {
            sorted[i] = keys[ordered[from + i]];
        }
        Arrays.sort(sorted);
        final int limit = limitOf(evenPart);
        // The first key of each range, ascending.
        final long[] firsts = new long[n];
        int ranges = 0;
        int places = 0;
        for (int i = 0; i < n; ) {
            int next = i + 1;
            while (next < n && sorted[next] == sorted[i]) {
                next++;
            }
            if (places > 0 && places + (next - i) > limit) {
                places = 0;
            }
            if (places == 0) {
                firsts[ranges++] = sorted[i];
            }
            places += next - i;
            if (places >= evenPart) {
                places = 0;
            }
            i = next;
        }
        final int[] rangeOf = new int[n];
        final int[] count = new int[ranges];
        for (int i = 0; i < n; i++) {
            final int found = Arrays.binarySearch(firsts, 0, ranges, keys[ordered[from + i]]);
            rangeOf[i] = found >= 0 ? found : -found - 2;
            count[rangeOf[i]]++;
        }
        final int[][] chunks = new int[ranges][];
        for (int r = 0; r < ranges; r++) {
            chunks[r] = new int[count[r]];
            count[r] = 0;
        }
        for (int i = 0; i < n; i++) {
            final int r = rangeOf[i];
            chunks[r][count[r]++] = ordered[from + i];
        }
        return Arrays.asList(chunks);
    }
}
