package io.pscluster.server.table;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.wire.Slots;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * The index of a partition: a seeded, well-mixed hash keeps probes short for keys that share their low or high bits,
 * and growth splits one bounded segment at a time instead of rebuilding the whole index.
 */
class PartitionIndexTest {
    private final TableFixture fixture = new TableFixture(1);

    @AfterEach
    void close() {
        fixture.close();
    }

    private ParameterTable table(final String name) {
        return fixture.create(TableSchema.newBuilder()
                .setName(name)
                .setKind(TableKind.SPARSE)
                .setDim(1)
                .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(1f))
                .build());
    }

    @Test
    void shouldKeepProbesShortForKeysShapedAsFieldAndIdInTheHighAndLowBits() throws Exception {
        final ParameterTable table = table("shaped");
        // Feature-hashing style keys: a field id in the top byte, a small id below (an unseeded multiplicative hash
        // with low-bit buckets averaged 30 probes, at most 822, on these).
        final int perField = 50_000;
        final long[] keys = new long[8 * perField];
        for (int field = 0; field < 8; field++) {
            for (int id = 0; id < perField; id++) {
                keys[field * perField + id] = ((long) field << 56) | id;
            }
        }
        table.push(keys, new float[keys.length]);
        assertThat(table.rowCount()).isEqualTo(keys.length);

        final PartitionStore.IndexShape shape = table.indexShapes().get(0);
        // Linear probing below 80% load averages at most 3 probes for a present key with a uniform hash.
        assertThat(shape.meanProbe()).as("mean probe of %s", shape).isLessThan(3.0);
        assertThat(shape.longestProbe()).as("longest probe of %s", shape).isLessThan(400);
    }

    @Test
    void shouldKeepProbesShortForKeysThatDifferOnlyInTheirHighBits() throws Exception {
        final ParameterTable table = table("high");
        // Keys that share their low 48 bits: a hash that buckets on low bits without mixing puts them all in one run.
        final long[] keys = new long[20_000];
        for (int i = 0; i < keys.length; i++) {
            keys[i] = (long) i << 48;
        }
        table.push(keys, new float[keys.length]);
        final PartitionStore.IndexShape shape = table.indexShapes().get(0);
        assertThat(shape.meanProbe()).as("mean probe of %s", shape).isLessThan(3.0);
        assertThat(shape.longestProbe()).as("longest probe of %s", shape).isLessThan(400);
    }

    @Test
    void shouldGrowBySplittingBoundedSegmentsAndFindEveryKeyAfter() throws Exception {
        final ParameterTable table = table("grown");
        final int count = 400_000;
        final long[] keys = new long[count];
        for (int i = 0; i < count; i++) {
            keys[i] = i * 0x10000L; // a stride that defeats low-bit hashing
        }
        final float[] gradients = new float[count];
        java.util.Arrays.fill(gradients, 1f);
        // In pushes of 4096, as workers send them: each growth happens inside one of them.
        for (int from = 0; from < count; from += 4096) {
            final int to = Math.min(count, from + 4096);
            table.push(java.util.Arrays.copyOfRange(keys, from, to), java.util.Arrays.copyOfRange(gradients, from, to));
        }

        final PartitionStore.IndexShape shape = table.indexShapes().get(0);
        assertThat(shape.largestSegment()).as("%s", shape).isLessThanOrEqualTo(PartitionStore.MAX_SEGMENT);
        assertThat(shape.segments()).as("%s", shape).isGreaterThanOrEqualTo(count / PartitionStore.MAX_SEGMENT);
        assertThat(shape.depth()).isPositive();
        // Load stays between the split threshold and half of it: memory per row as a single doubling table has.
        final long entries = (long) shape.segments() * PartitionStore.MAX_SEGMENT;
        assertThat((double) count / entries).isBetween(0.39, 0.81);
        assertThat(table.pull(keys)).containsOnly(-1f);
        assertThat(table.countAbsent(keys, table.slotsOf(keys))).isZero();
    }

    @Test
    void shouldReuseSpaceOfRemovedRowsWithoutGrowingForever() throws Exception {
        final ParameterTable table = table("churn");
        // Rows come and go (as with TTL eviction): the index rebuilds without its deleted entries instead of growing.
        for (int round = 0; round < 50; round++) {
            final long[] keys = new long[2_000];
            for (int i = 0; i < keys.length; i++) {
                keys[i] = round * 1_000_000L + i;
            }
            table.push(keys, new float[keys.length]);
            table.clearSlots(slot -> true);
        }
        final List<PartitionStore.IndexShape> shapes = table.indexShapes();
        assertThat(table.rowCount()).isZero();
        assertThat(shapes.get(0).largestSegment()).as("%s", shapes.get(0)).isLessThanOrEqualTo(8_192);
    }

    @Test
    void shouldSeedEachPartitionsHashDifferently() {
        final Initializer zeros = new Initializer(io.pscluster.proto.v1.InitializerSpec.getDefaultInstance());
        final PartitionStore a = new PartitionStore(1, new SgdOptimizer(1f), zeros, new RowBudget(0));
        final PartitionStore b = new PartitionStore(1, new SgdOptimizer(1f), zeros, new RowBudget(0));
        // Two stores placing the same keys alike would let one crafted key set slow every shard.
        assertThat(a.hash(1) == b.hash(1) && a.hash(2) == b.hash(2)).isFalse();
    }

    @Test
    void shouldPutEachSlotsKeysUnderThatSlotsOwnPrefixOfTheIndexHash() {
        final long tableHash = Slots.tableHash("slots");
        // 1 partition: all 4,096 slots, a 12-bit prefix; 3 partitions: 1,366 slots each (slot / 3), 11 bits.
        final PartitionStore whole = store(tableHash, 1);
        final PartitionStore third = store(tableHash, 3);
        final SplittableRandom random = new SplittableRandom(3);
        for (int i = 0; i < 20_000; i++) {
            final long key = random.nextLong();
            final int slot = Slots.slotOf(tableHash, key);
            assertThat(whole.hash(key) >>> (64 - 12)).as("key %d", key).isEqualTo(slot);
            assertThat(third.hash(key) >>> (64 - 11)).as("key %d", key).isEqualTo(slot / 3);
        }
    }

    @Test
    void shouldSplitASlotThatOutgrowsASegmentOnTheSeededBitsAndFindEveryKey() {
        final long tableHash = Slots.tableHash("hot");
        final PartitionStore store = store(tableHash, 1);
        // 60,000 keys of one slot: more than two full segments, all under one 12-bit prefix.
        final long[] keys = new long[60_000];
        int found = 0;
        for (long candidate = 0; found < keys.length; candidate++) {
            if (Slots.slotOf(tableHash, candidate) == 1_234) {
                keys[found++] = candidate;
            }
        }
        for (final long key : keys) {
            store.ensure(key, 1);
        }
        final PartitionStore.IndexShape shape = store.indexShape();
        assertThat(shape.segments()).as("%s", shape).isGreaterThanOrEqualTo(3);
        assertThat(shape.largestSegment()).as("%s", shape).isLessThanOrEqualTo(PartitionStore.MAX_SEGMENT);
        assertThat(shape.meanProbe()).as("%s", shape).isLessThan(3.0);
        for (final long key : keys) {
            assertThat(store.find(key)).as("key %d", key).isNotNegative();
        }
    }

    @Test
    void shouldReserveFullSegmentsOnlyForPrefixesThatHaveSlots() {
        final long tableHash = Slots.tableHash("reserved");
        final PartitionStore whole = store(tableHash, 1);
        final PartitionStore third = store(tableHash, 3);
        whole.reserve(1_800_000, null);
        third.reserve(1_800_000, null);
        // 128 prefixes of 7 bits each way; with 1,366 of 2,048 11-bit slot indexes in use, 86 of them have slots.
        assertThat(whole.indexShape().segments()).isEqualTo(128);
        assertThat(third.indexShape().segments()).isEqualTo(128);
        assertThat((double) third.bytes() / whole.bytes()).isBetween(86 / 128.0, 87 / 128.0);
        final SplittableRandom random = new SplittableRandom(5);
        final long[] keys = random.longs(100_000).toArray();
        for (final long key : keys) {
            third.ensure(key, 1);
        }
        for (final long key : keys) {
            assertThat(third.find(key)).as("key %d", key).isNotNegative();
        }
    }

    /**
     * A shard restores a range of slots: on one of 4 shards, a partition's rows come from a quarter of its slot indexes,
     * so a quarter of the prefixes must hold them all, and the index must not grow while they come.
     */
    @Test
    void shouldReserveForTheSlotsTheRowsComeFrom() {
        final long tableHash = Slots.tableHash("quarter");
        final int partitions = 4;
        final PartitionStore store = store(tableHash, partitions);
        // Partition 0 of a shard that owns slots 0 .. 1023: slots 0, 4, 8, ..., local indexes 0 .. 255 of 1,024.
        final java.util.BitSet local = new java.util.BitSet();
        local.set(0, Slots.SLOT_COUNT / 4 / partitions);
        final int rows = 1_000_000;
        store.reserve(rows, local);
        final int reserved = store.indexShape().segments();
        // 1M rows fill 44 segments to 70%; a quarter of 256 prefixes is the first depth with as many.
        assertThat(reserved).isEqualTo(256);
        final SplittableRandom random = new SplittableRandom(9);
        final long[] keys = new long[rows];
        for (int n = 0; n < rows; ) {
            final long key = random.nextLong();
            final int slot = Slots.slotOf(tableHash, key);
            if (slot < Slots.SLOT_COUNT / 4 && slot % partitions == 0) {
                keys[n++] = key;
            }
        }
        for (final long key : keys) {
            store.ensure(key, 1);
        }
        assertThat(store.indexShape().segments())
                .as("segments after the rows came: none split")
                .isEqualTo(reserved);
        for (int i = 0; i < rows; i += 97) {
            assertThat(store.find(keys[i])).as("key %d", keys[i]).isNotNegative();
        }
    }

    private static PartitionStore store(final long tableHash, final int partitions) {
        return new PartitionStore(
                1,
                new SgdOptimizer(1f),
                new Initializer(io.pscluster.proto.v1.InitializerSpec.getDefaultInstance()),
                new RowBudget(0),
                OffHeapBudget.JVM,
                tableHash,
                partitions);
    }
}
