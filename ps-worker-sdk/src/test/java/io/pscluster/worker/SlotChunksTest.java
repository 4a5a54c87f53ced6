package io.pscluster.worker;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.wire.Slots;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

class SlotChunksTest {
    private static final long TABLE_HASH = Slots.tableHash("t");

    @Test
    void shouldCutEachOwnersShareIntoEvenChunksOfWholeSlotsWhenSortingOrCounting() {
        final SplittableRandom random = new SplittableRandom(11);
        for (int round = 0; round < 200; round++) {
            final RandomCall call = RandomCall.next(random);
            final Routing routing = call.routing();
            final int shards = routing.addresses().length;
            final long[] keys = call.keys();
            final int[] positions = call.positions();
            final int targetKeys = call.targetKeys();
            final List<List<int[]>> sorted = call.sortedAsCounted(true);
            final int[] slotOf = SlotChunks.slotsOf(TABLE_HASH, keys, positions);
            checkChunks(sorted, keys, positions, routing, targetKeys, true);
            final List<List<int[]>> split =
                    SlotChunks.split(TABLE_HASH, keys, null, positions, routing, targetKeys, true);
            final int[] slotOfKey = Arrays.stream(keys)
                    .mapToInt(key -> Slots.slotOf(TABLE_HASH, key))
                    .toArray();
            assertThat(deep(SlotChunks.split(TABLE_HASH, keys, slotOfKey, positions, routing, targetKeys, true)))
                    .as("split with the keys' slots given")
                    .isEqualTo(deep(split));
            final List<List<int[]>> byOwner = SlotChunks.byOwner(slotOf, positions, routing, targetKeys);
            if (byOwner == null) {
                assertThat(deep(split)).isEqualTo(deep(sorted));
            } else {
                // One chunk per owner with keys: the same keys as the ordered cut, in the call's order.
                assertThat(byOwner).allSatisfy(chunks -> assertThat(chunks).hasSizeLessThanOrEqualTo(1));
                assertThat(deep(split)).isEqualTo(deep(byOwner));
                checkChunks(byOwner, keys, positions, routing, targetKeys, false);
                for (int owner = 0; owner < byOwner.size(); owner++) {
                    final List<Integer> inCallOrder = new ArrayList<>();
                    for (final int position : positions) {
                        final int slotOwner = routing.ownerOfSlot()[Slots.slotOf(TABLE_HASH, keys[position])];
                        if ((slotOwner < 0 ? shards : slotOwner) == owner) {
                            inCallOrder.add(position);
                        }
                    }
                    assertThat(byOwner.get(owner).stream()
                                    .flatMap(chunk -> Arrays.stream(chunk).boxed())
                                    .toList())
                            .as("owner %d's chunk", owner)
                            .isEqualTo(inCallOrder);
                }
            }
        }
    }

    /** dim 1 has a path of its own. */
    @org.junit.jupiter.params.ParameterizedTest
    @org.junit.jupiter.params.provider.ValueSource(ints = {1, 3})
    void shouldOrderACallBySlotKeepingEachSlotsKeysInCallOrderWithTheirRowsOrOrigins(final int dim) {
        final SplittableRandom random = new SplittableRandom(5);
        // Repeats of keys, and keys of the same slot far apart in the call.
        final long[] keys = new long[5_000];
        final float[] rows = new float[keys.length * dim];
        for (int i = 0; i < keys.length; i++) {
            keys[i] = random.nextInt(3) == 0 && i > 0 ? keys[random.nextInt(i)] : random.nextLong();
            for (int d = 0; d < dim; d++) {
                rows[i * dim + d] = i * dim + d;
            }
        }
        final SlotChunks.Ordered pushed = SlotChunks.orderBySlot(TABLE_HASH, keys, rows, dim);
        final SlotChunks.Ordered pulled = SlotChunks.orderBySlot(TABLE_HASH, keys, null, dim);
        assertThat(pushed.keys()).isEqualTo(pulled.keys());
        assertThat(pushed.origins()).isNull();
        assertThat(pulled.rows()).isNull();
        // Each row holds its call index, so the origins say where every ordered key came from.
        final int[] origins = pulled.origins();
        assertThat(Arrays.stream(origins).sorted().toArray())
                .isEqualTo(java.util.stream.IntStream.range(0, keys.length).toArray());
        for (int at = 0; at < keys.length; at++) {
            assertThat(pushed.keys()[at]).isEqualTo(keys[origins[at]]);
            assertThat(pushed.slots()[at]).isEqualTo(Slots.slotOf(TABLE_HASH, pushed.keys()[at]));
            assertThat(pulled.slots()[at]).isEqualTo(pushed.slots()[at]);
            for (int d = 0; d < dim; d++) {
                assertThat(pushed.rows()[at * dim + d]).isEqualTo(rows[origins[at] * dim + d]);
            }
            if (at > 0) {
                final int slot = Slots.slotOf(TABLE_HASH, pushed.keys()[at]);
                final int before = Slots.slotOf(TABLE_HASH, pushed.keys()[at - 1]);
                assertThat(slot).as("slot at %d", at).isGreaterThanOrEqualTo(before);
                if (slot == before) {
                    assertThat(origins[at])
                            .as("call order within slot %d", slot)
                            .isGreaterThan(origins[at - 1]);
                }
            }
        }
        final int[] positions = {7, 0, 4_999, 42};
        assertThat(pulled.originsOf(positions)).containsExactly(origins[7], origins[0], origins[4_999], origins[42]);
        assertThat(SlotChunks.ordersFirst(SlotChunks.ORDER_MIN_KEYS, KeyDedup.BULK_COPY_DIM - 1))
                .isTrue();
        assertThat(SlotChunks.ordersFirst(SlotChunks.ORDER_MIN_KEYS - 1, 1)).isFalse();
        assertThat(SlotChunks.ordersFirst(SlotChunks.ORDER_MIN_KEYS, KeyDedup.BULK_COPY_DIM))
                .isFalse();
    }

    @Test
    void shouldSplitAPullsSlotLargerThanAChunkIntoEvenChunksAndAPushsByKeyKeepingRepeatsTogether() {
        final Routing routing = new Routing(1, new String[] {"a"}, new int[Slots.SLOT_COUNT]);
        // 100,000 repeats of one key, then 10 other keys: the repeats' slot alone is 100x the target.
        final long[] keys = new long[100_010];
        Arrays.fill(keys, 0, 100_000, 42L);
        for (int i = 0; i < 10; i++) {
            keys[100_000 + i] = 1_000_003L * (i + 1);
        }
        final int[] positions = java.util.stream.IntStream.range(0, keys.length).toArray();

        final List<List<int[]>> pull = SlotChunks.split(TABLE_HASH, keys, null, positions, routing, 1000, false);
        final int evenPart = SlotChunks.evenPartOf(keys.length, 1000);
        assertThat(pull.get(0)).hasSizeBetween(99, 101);
        assertThat(pull.get(0))
                .allSatisfy(chunk -> assertThat(chunk.length).isBetween(1, SlotChunks.limitOf(evenPart)));
        assertThat(pull.get(0).stream().flatMapToInt(Arrays::stream).sorted().toArray())
                .isEqualTo(positions);

        final List<List<int[]>> push = SlotChunks.split(TABLE_HASH, keys, null, positions, routing, 1000, true);
        assertThat(push.get(0).stream().mapToInt(chunk -> chunk.length).max().orElse(0))
                .as("the push's repeats stay in one request, where they are summed")
                .isGreaterThanOrEqualTo(100_000);
    }

    @Test
    void shouldSplitAPushsSlotOfMoreDistinctKeysThanAChunkByKeyInTheCallsOrder() {
        final String[] addresses = {"a", "b"};
        final int[] owners = new int[Slots.SLOT_COUNT];
        for (int slot = 0; slot < owners.length; slot++) {
            owners[slot] = slot % 2;
        }
        final Routing routing = new Routing(1, addresses, owners);
        // 6,000 distinct keys crafted into one slot, each 1-3 times, shuffled among 3,000 keys of other slots.
        final int hot = Slots.slotOf(TABLE_HASH, 0L);
        final SplittableRandom random = new SplittableRandom(21);
        final List<Long> call = new ArrayList<>();
        int found = 0;
        for (long key = 0; found < 6_000; key++) {
            if (Slots.slotOf(TABLE_HASH, key) == hot) {
                found++;
                for (int r = random.nextInt(3); r >= 0; r--) {
                    call.add(key);
                }
            }
        }
        for (int i = 0; i < 3_000; i++) {
            final long key = random.nextLong();
            if (Slots.slotOf(TABLE_HASH, key) != hot) {
                call.add(key);
            }
        }
        java.util.Collections.shuffle(call, new java.util.Random(22));
        final long[] keys = call.stream().mapToLong(Long::longValue).toArray();
        final int[] positions = java.util.stream.IntStream.range(0, keys.length).toArray();
        final int targetKeys = 1_000;

        final List<List<int[]>> push = SlotChunks.split(TABLE_HASH, keys, null, positions, routing, targetKeys, true);

        assertThat(deep(push))
                .as("by counting as by sorting")
                .isEqualTo(deep(SlotChunks.bySorting(
                        keys, SlotChunks.slotsOf(TABLE_HASH, keys, positions), positions, routing, targetKeys, true)));
        checkChunks(push, keys, positions, routing, targetKeys, true);
        final int hotOwner = owners[hot];
        final int hotPlaces = (int) Arrays.stream(keys)
                .filter(key -> Slots.slotOf(TABLE_HASH, key) == hot)
                .count();
        final int share =
                push.get(hotOwner).stream().mapToInt(chunk -> chunk.length).sum();
        final int evenPart = SlotChunks.evenPartOf(share, targetKeys);
        final List<int[]> hotChunks = new ArrayList<>();
        for (final int[] chunk : push.get(hotOwner)) {
            if (Slots.slotOf(TABLE_HASH, keys[chunk[0]]) == hot) {
                hotChunks.add(chunk);
                // The slot's chunks hold its keys alone, in the call's order.
                assertThat(Arrays.stream(chunk).allMatch(p -> Slots.slotOf(TABLE_HASH, keys[p]) == hot))
                        .isTrue();
                assertThat(chunk).isSorted();
                assertThat(chunk.length)
                        .as("places of a chunk of the crowded slot, even part %d", evenPart)
                        .isLessThanOrEqualTo(SlotChunks.limitOf(evenPart));
            }
        }
        // No key repeats more than the slack of the limit, so every chunk but the slot's last holds the even part.
        assertThat(hotChunks)
                .hasSizeBetween(hotPlaces / SlotChunks.limitOf(evenPart), (hotPlaces + evenPart - 1) / evenPart);
    }

    @Test
    void shouldCutACrowdedSlotOfAPushIntoWholeKeysWithinTheLimitWhateverTheKeys() {
        // One slot's places: a key repeated 5,000 times, then 20,000 places of 7,000 keys (some repeated), shuffled.
        final int hot = Slots.slotOf(TABLE_HASH, 0L);
        final SplittableRandom random = new SplittableRandom(23);
        final List<Long> slotKeys = new ArrayList<>();
        for (long key = 1; slotKeys.size() < 7_000; key++) {
            if (Slots.slotOf(TABLE_HASH, key) == hot) {
                slotKeys.add(key);
            }
        }
        final List<Long> call = new ArrayList<>(java.util.Collections.nCopies(5_000, 0L));
        for (int i = 0; i < 20_000; i++) {
            call.add(slotKeys.get(i < slotKeys.size() ? i : random.nextInt(slotKeys.size())));
        }
        java.util.Collections.shuffle(call, new java.util.Random(24));
        final long[] keys = call.stream().mapToLong(Long::longValue).toArray();
        final int[] ordered = java.util.stream.IntStream.range(0, keys.length).toArray();
        final int evenPart = 1_000;

        final List<int[]> chunks = SlotChunks.byKey(keys, ordered, 0, keys.length, evenPart);

        final Map<Long, Integer> chunkOfKey = new HashMap<>();
        int places = 0;
        for (int c = 0; c < chunks.size(); c++) {
            final int[] chunk = chunks.get(c);
            places += chunk.length;
            assertThat(chunk).isNotEmpty().isSorted();
            final long distinct =
                    Arrays.stream(chunk).mapToLong(p -> keys[p]).distinct().count();
            assertThat(chunk.length <= SlotChunks.limitOf(evenPart) || distinct == 1)
                    .as("chunk %d: %d places of %d keys", c, chunk.length, distinct)
                    .isTrue();
            for (final int position : chunk) {
                assertThat(chunkOfKey.putIfAbsent(keys[position], c)).isIn(null, c);
            }
        }
        assertThat(places).isEqualTo(keys.length);
        // The hot key alone; the other 20,000 places in chunks of 1,000 or a little more, the last perhaps less.
        assertThat(chunks.get(chunkOfKey.get(0L))).hasSize(5_000);
        assertThat(chunks).hasSizeBetween(1 + 20_000 / SlotChunks.limitOf(evenPart), 1 + 20);
    }

    @Test
    void shouldCutAPullLikeAPushUnlessASlotIsLargerThanAChunkAndThenKeepEveryChunkWithinTheLimit() {
        final SplittableRandom random = new SplittableRandom(13);
        for (int round = 0; round < 200; round++) {
            final RandomCall call = RandomCall.next(random);
            final int shards = call.routing().addresses().length;
            final long[] keys = call.keys();
            final List<List<int[]>> sorted = call.sortedAsCounted(false);
            final List<List<int[]>> whole = call.sortedAsCounted(true);
            final List<Integer> all = new ArrayList<>();
            boolean slotOverLimit = false;
            for (int owner = 0; owner <= shards; owner++) {
                final int share = sorted.get(owner).stream()
                        .mapToInt(chunk -> chunk.length)
                        .sum();
                final int maxKeys = SlotChunks.limitOf(SlotChunks.evenPartOf(share, call.targetKeys()));
                for (final int[] chunk : sorted.get(owner)) {
                    assertThat(chunk.length).isBetween(1, maxKeys);
                    for (final int position : chunk) {
                        all.add(position);
                        final int slot = Slots.slotOf(TABLE_HASH, keys[position]);
                        final int slotOwner = call.routing().ownerOfSlot()[slot];
                        assertThat(slotOwner < 0 ? shards : slotOwner).isEqualTo(owner);
                    }
                }
                final Map<Integer, Integer> keysPerSlot = new HashMap<>();
                for (final int[] chunk : whole.get(owner)) {
                    for (final int position : chunk) {
                        keysPerSlot.merge(Slots.slotOf(TABLE_HASH, keys[position]), 1, Integer::sum);
                    }
                }
                slotOverLimit |= keysPerSlot.values().stream().anyMatch(count -> count > maxKeys);
            }
            assertThat(all)
                    .containsExactlyInAnyOrderElementsOf(
                            Arrays.stream(call.positions()).boxed().toList());
            if (!slotOverLimit) {
                assertThat(deep(sorted))
                        .as("no slot over the limit: cut as a push")
                        .isEqualTo(deep(whole));
            }
        }
    }

    @Test
    void shouldPutKeysOfUnownedSlotsLast() {
        final int[] owners = new int[Slots.SLOT_COUNT];
        Arrays.fill(owners, -1);
        final Routing routing = new Routing(1, new String[] {"a"}, owners);
        final List<List<int[]>> chunks =
                SlotChunks.split(TABLE_HASH, new long[] {1, 2, 3}, null, new int[] {0, 1, 2}, routing, 10, true);
        assertThat(chunks).hasSize(2);
        assertThat(chunks.get(0)).isEmpty();
        assertThat(chunks.get(1)).hasSize(1);
        assertThat(chunks.get(1).get(0)).containsExactlyInAnyOrder(0, 1, 2);
    }

    private static void checkChunks(
            final List<List<int[]>> chunksOf,
            final long[] keys,
            final int[] positions,
            final Routing routing,
            final int targetKeys,
            final boolean slotOrdered) {
        final int shards = routing.addresses().length;
        assertThat(chunksOf).hasSize(shards + 1);
        final Map<Integer, Integer> expected = new HashMap<>();
        for (final int position : positions) {
            expected.merge(position, 1, Integer::sum);
        }
        final Map<Integer, Integer> seen = new HashMap<>();
        final Set<Integer> slotsSeen = new HashSet<>();
        final Map<Long, int[]> chunkOfKey = new HashMap<>();
        for (int owner = 0; owner <= shards; owner++) {
            int lastSlot = -1;
            final int share =
                    chunksOf.get(owner).stream().mapToInt(chunk -> chunk.length).sum();
            final long parts = Math.max(1, Math.round((double) share / targetKeys));
            // Even parts of the share, a sixteenth over at most.
            final int evenPart = (int) ((share + parts - 1) / parts);
            final int maxKeys = evenPart + (evenPart + 15) / 16;
            assertThat(SlotChunks.evenPartOf(share, targetKeys)).isEqualTo(evenPart);
            assertThat(SlotChunks.limitOf(evenPart)).isEqualTo(maxKeys);
            final Map<Integer, Integer> keysPerSlot = new HashMap<>();
            for (final int[] chunk : chunksOf.get(owner)) {
                for (final int position : chunk) {
                    keysPerSlot.merge(Slots.slotOf(TABLE_HASH, keys[position]), 1, Integer::sum);
                }
            }
            final int largestSlot = keysPerSlot.values().stream()
                    .mapToInt(Integer::intValue)
                    .max()
                    .orElse(0);
            if (largestSlot <= maxKeys - evenPart) {
                // No slot is larger than the slack: every chunk but the last is at least the even part, and there are
                // no more chunks than parts.
                final List<int[]> chunks = chunksOf.get(owner);
                assertThat(chunks.size())
                        .as("chunks of a share of %d keys, target %d", share, targetKeys)
                        .isLessThanOrEqualTo((int) parts);
                for (int c = 0; c + 1 < chunks.size(); c++) {
                    assertThat(chunks.get(c).length).isGreaterThanOrEqualTo(evenPart);
                }
            }
            for (final int[] chunk : chunksOf.get(owner)) {
                assertThat(chunk).isNotEmpty();
                final Set<Integer> chunkSlots = new HashSet<>();
                int previousInChunk = -1;
                for (final int position : chunk) {
                    seen.merge(position, 1, Integer::sum);
                    final int[] firstChunk = chunkOfKey.putIfAbsent(keys[position], chunk);
                    assertThat(firstChunk == null || firstChunk == chunk)
                            .as("every repeat of key %d in one chunk", keys[position])
                            .isTrue();
                    final int slot = Slots.slotOf(TABLE_HASH, keys[position]);
                    final int slotOwner = routing.ownerOfSlot()[slot] < 0 ? shards : routing.ownerOfSlot()[slot];
                    assertThat(slotOwner).isEqualTo(owner);
                    if (!slotOrdered) {
                        // In the call's order: a slot's keys are in this chunk, and in no other.
                        assertThat(chunkSlots.contains(slot) || slotsSeen.add(slot))
                                .isTrue();
                        chunkSlots.add(slot);
                        continue;
                    }
                    assertThat(slot).isGreaterThanOrEqualTo(lastSlot);
                    if (slot != previousInChunk) {
                        // A slot never continues in another chunk, nor comes back later in this one, unless it is
                        // larger than a chunk, and then its chunks hold it alone (checked below).
                        assertThat(slotsSeen.add(slot) || keysPerSlot.get(slot) > maxKeys)
                                .as("slot %d continued", slot)
                                .isTrue();
                    }
                    previousInChunk = slot;
                    lastSlot = slot;
                    chunkSlots.add(slot);
                }
                assertThat(chunk.length <= maxKeys || chunkSlots.size() == 1)
                        .as("chunk of %d keys in %d slots, max %d", chunk.length, chunkSlots.size(), maxKeys)
                        .isTrue();
                assertThat(chunkSlots.size() == 1 || chunkSlots.stream().allMatch(s -> keysPerSlot.get(s) <= maxKeys))
                        .as("a slot larger than a chunk in chunks of its own")
                        .isTrue();
            }
        }
        assertThat(seen).isEqualTo(expected);
    }

    /** A random call: keys (few distinct ones in some, so that slots with many keys, some larger than a chunk). */
    private record RandomCall(Routing routing, long[] keys, int[] positions, int targetKeys) {
        static RandomCall next(final SplittableRandom random) {
            final Routing routing = randomRouting(random, 1 + random.nextInt(4));
            final int n = random.nextInt(3000);
            final long keyRange = random.nextBoolean() ? 1L << 40 : 1 + random.nextInt(50);
            final long[] keys = new long[n + 5];
            for (int i = 0; i < keys.length; i++) {
                keys[i] = random.nextLong(keyRange) - keyRange / 2;
            }
            final int[] positions = new int[n];
            for (int i = 0; i < n; i++) {
                positions[i] = random.nextInt(keys.length);
            }
            return new RandomCall(routing, keys, positions, 1 + random.nextInt(600));
        }

        /** The chunks by sorting, checked to be those by counting. */
        List<List<int[]>> sortedAsCounted(final boolean wholeKeys) {
            final int[] slotOf = SlotChunks.slotsOf(TABLE_HASH, keys, positions);
            final List<List<int[]>> sorted =
                    SlotChunks.bySorting(keys, slotOf, positions, routing, targetKeys, wholeKeys);
            assertThat(deep(sorted))
                    .isEqualTo(deep(SlotChunks.byCounting(keys, slotOf, positions, routing, targetKeys, wholeKeys)));
            return sorted;
        }
    }

    private static Routing randomRouting(final SplittableRandom random, final int shards) {
        final String[] addresses = new String[shards];
        for (int i = 0; i < shards; i++) {
            addresses[i] = "shard-" + i;
        }
        final int[] owners = new int[Slots.SLOT_COUNT];
        for (int slot = 0; slot < owners.length; slot++) {
            owners[slot] = random.nextInt(10) == 0 ? -1 : random.nextInt(shards);
        }
        return new Routing(1, addresses, owners);
    }

    private static List<List<List<Integer>>> deep(final List<List<int[]>> chunksOf) {
        final List<List<List<Integer>>> out = new ArrayList<>();
        for (final List<int[]> chunks : chunksOf) {
            final List<List<Integer>> owner = new ArrayList<>();
            for (final int[] chunk : chunks) {
                owner.add(Arrays.stream(chunk).boxed().toList());
            }
            out.add(owner);
        }
        return out;
    }
}
