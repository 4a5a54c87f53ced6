package io.pscluster.server.table;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import java.util.List;
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
}
