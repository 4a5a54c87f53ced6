package io.pscluster.server.table;

import static io.pscluster.server.table.TableFixture.sameSlotAs;
import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.proto.v1.InitializerKind;
import io.pscluster.proto.v1.InitializerSpec;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import java.util.Arrays;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/** The initializer seen through the table: reads of rows that do not exist, and rows created by a push. */
class InitializerTest {
    private static final int KEYS = 20_000;

    private final TableFixture fixture = new TableFixture(2);

    @AfterEach
    void closeWriters() {
        fixture.close();
    }

    private ParameterTable table(final InitializerKind kind, final float scale, final long seed, final int dim) {
        return fixture.create(TableSchema.newBuilder()
                .setName("init")
                .setKind(TableKind.SPARSE)
                .setDim(dim)
                .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(0.1f))
                .setInitializer(InitializerSpec.newBuilder()
                        .setKind(kind)
                        .setScale(scale)
                        .setSeed(seed))
                .build());
    }

    private static float[] pull(final ParameterTable table, final long... keys) {
        return table.pull(keys);
    }

    private static long[] keys(final int count) {
        final long[] keys = new long[count];
        for (int i = 0; i < count; i++) {
            keys[i] = i * 7919L - 5_000_000L; // negative and positive keys, not consecutive
        }
        return keys;
    }

    @Test
    void shouldReadZerosWithoutCreatingARowWhenASparseKeyWasNeverPushed() throws InterruptedException {
        final ParameterTable table = table(InitializerKind.ZEROS, 0f, 0, 4);
        final long[] keys = {3, Long.MIN_VALUE};
        final byte[] out = new byte[2 * 4 * 4];
        Arrays.fill(out, (byte) 0x41); // 12.0f in every element unless the pull overwrites it

        table.pull(keys, table.slotsOf(keys), out);

        assertThat(out).containsOnly((byte) 0);
        assertThat(table.rowCount()).isZero();
        assertThat(table.snapshot(slot -> true)).isEmpty();
    }

    @Test
    void shouldReadTheValuesAPushWouldStartFromWithoutCreatingARowWhenTheKeyWasNeverPushed()
            throws InterruptedException {
        final ParameterTable readOnly = table(InitializerKind.UNIFORM, 0.5f, 11, 4);
        final ParameterTable written = table(InitializerKind.UNIFORM, 0.5f, 11, 4);
        written.push(new long[] {77}, new float[4]); // a zero gradient creates the row with its initial values

        final float[] pulled = pull(readOnly, 77);

        assertThat(readOnly.rowCount()).isZero();
        final SlotSnapshot created = written.snapshot(slot -> true).get(0);
        assertThat(created.keys()).containsExactly(77L);
        assertThat(created.records()).containsExactly(pulled);
        assertThat(pulled).doesNotContain(0f);
    }

    @Test
    void shouldReadTheInitialValuesWhenTheKeyHasNoRowButItsSlotHasOthers() throws InterruptedException {
        final ParameterTable table = table(InitializerKind.NORMAL, 1f, 5, 3);
        final long neighbour = sameSlotAs(table, 1000L);
        final float[] before = pull(table, neighbour);

        table.push(new long[] {1000L}, new float[] {1f, 1f, 1f});

        assertThat(pull(table, neighbour)).containsExactly(before);
        assertThat(table.rowCount()).isEqualTo(1);
    }

    @Test
    void shouldProduceBitIdenticalRowsWhenTwoTablesShareTheSeed() {
        for (final InitializerKind kind : new InitializerKind[] {InitializerKind.UNIFORM, InitializerKind.NORMAL}) {
            final long[] keys = keys(1_000);
            final float[] first = pull(table(kind, 0.3f, 1234, 8), keys);
            final float[] second = pull(table(kind, 0.3f, 1234, 8), keys);
            final float[] otherSeed = pull(table(kind, 0.3f, 1235, 8), keys);

            assertThat(Arrays.equals(first, second)).as("%s same seed", kind).isTrue();
            assertThat(distinctCount(first)).as("%s distinct values", kind).isGreaterThan(first.length - 10);
            assertThat(countEqual(first, otherSeed)).as("%s other seed", kind).isLessThan(10);
        }
    }

    @Test
    void shouldCreateBitIdenticalRowsWhenTheSameKeysArePushedOnShardsWithDifferentPartitionCounts()
            throws InterruptedException {
        // The same table on a one-writer shard and on a three-writer shard: a key's row lands in different
        // partitions (and record ids) but must start from the same values.
        final long[] keys = keys(500);
        final TableSchema schema = TableSchema.newBuilder()
                .setName("init")
                .setKind(TableKind.SPARSE)
                .setDim(6)
                .setOptimizer(OptimizerSpec.newBuilder()
                        .setKind(OptimizerKind.ADAGRAD)
                        .setLearningRate(0.1f))
                .setInitializer(InitializerSpec.newBuilder()
                        .setKind(InitializerKind.NORMAL)
                        .setScale(0.2f)
                        .setSeed(77))
                .build();
        try (TableFixture single = new TableFixture(1);
                TableFixture triple = new TableFixture(3)) {
            final ParameterTable one = single.create(schema);
            final ParameterTable three = triple.create(schema);
            final float[] readBefore = pull(three, keys);

            one.push(keys, new float[keys.length * 6]); // zero gradients: rows hold their initial values
            three.push(keys, new float[keys.length * 6]);

            assertThat(one.rowCount()).isEqualTo(keys.length);
            assertThat(three.rowCount()).isEqualTo(keys.length);
            final float[] fromOne = pull(one, keys);
            assertThat(Arrays.equals(fromOne, pull(three, keys))).isTrue();
            assertThat(Arrays.equals(fromOne, readBefore)).isTrue();
            for (final long key : new long[] {keys[0], keys[17], keys[499]}) {
                final float[] record = TableFixture.recordOf(three, key);
                assertThat(Arrays.equals(record, TableFixture.recordOf(one, key)))
                        .as("record of key %d", key)
                        .isTrue();
            }
        }
    }

    @Test
    void shouldGiveEachKeyAndEachElementItsOwnValueWhenInitializedRandomly() {
        for (final InitializerKind kind : new InitializerKind[] {InitializerKind.UNIFORM, InitializerKind.NORMAL}) {
            final ParameterTable table = table(kind, 1f, 42, 4);
            final float[] key1 = pull(table, 1);
            final float[] key2 = pull(table, 2);

            assertThat(key1).as("%s key 1 vs key 2", kind).isNotEqualTo(key2);
            assertThat(distinctCount(key1)).as("%s elements of one row", kind).isEqualTo(4);
        }
    }

    @Test
    void shouldStayWithinPlusMinusScaleAndCoverItWhenUniform() {
        final float scale = 0.05f;
        final float[] values = pull(table(InitializerKind.UNIFORM, scale, 7, 5), keys(KEYS));

        final double[] stats = meanAndStd(values);
        float min = Float.MAX_VALUE;
        float max = -Float.MAX_VALUE;
        for (final float v : values) {
            min = Math.min(min, v);
            max = Math.max(max, v);
        }
        assertThat(min).isGreaterThanOrEqualTo(-scale).isLessThan(-0.99f * scale);
        assertThat(max).isLessThan(scale).isGreaterThan(0.99f * scale);
        assertThat(stats[0]).isBetween(-0.02 * scale, 0.02 * scale);
        // The standard deviation of U(-s, s) is s / sqrt(3).
        assertThat(stats[1]).isBetween(0.97 * scale / Math.sqrt(3), 1.03 * scale / Math.sqrt(3));
    }

    @Test
    void shouldHaveMeanZeroAndStdScaleWhenNormal() {
        final float scale = 0.5f;
        final float[] values = pull(table(InitializerKind.NORMAL, scale, 3, 4), keys(KEYS));

        final double[] stats = meanAndStd(values);
        int beyondTwoStd = 0;
        for (final float v : values) {
            if (Math.abs(v) > 2 * scale) {
                beyondTwoStd++;
            }
        }
        assertThat(stats[0]).isBetween(-0.02 * scale, 0.02 * scale);
        assertThat(stats[1]).isBetween(0.97 * scale, 1.03 * scale);
        // About 4.55% of a normal lies beyond two standard deviations; a uniform of that std would have none.
        assertThat((double) beyondTwoStd / values.length).isBetween(0.035, 0.056);
    }

    @Test
    void shouldStayBelowScaleWhenTheUniformDrawRoundsUpInFloat() {
        // unit(seed 0, key 65552721, element 0) = 0.99999999749..., so (2u - 1) = 0.999999995 rounds to 1.0f.
        final float[] value = pull(table(InitializerKind.UNIFORM, 1f, 0, 1), 65_552_721L);

        assertThat(value[0]).isLessThan(1f);
    }

    private static double[] meanAndStd(final float[] values) {
        double sum = 0;
        for (final float v : values) {
            sum += v;
        }
        final double mean = sum / values.length;
        double squares = 0;
        for (final float v : values) {
            squares += (v - mean) * (v - mean);
        }
        return new double[] {mean, Math.sqrt(squares / values.length)};
    }

    private static long distinctCount(final float[] values) {
        final float[] sorted = values.clone();
        Arrays.sort(sorted);
        long distinct = sorted.length == 0 ? 0 : 1;
        for (int i = 1; i < sorted.length; i++) {
            if (sorted[i] != sorted[i - 1]) {
                distinct++;
            }
        }
        return distinct;
    }

    private static int countEqual(final float[] a, final float[] b) {
        int equal = 0;
        for (int i = 0; i < a.length; i++) {
            if (a[i] == b[i]) {
                equal++;
            }
        }
        return equal;
    }
}
