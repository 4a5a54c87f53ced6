package io.pscluster.server.table;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.SplittableRandom;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * A restore's loader: rows as row files store them, split by partition on the caller's thread and put in by each
 * partition's writer, bit-exact, over rows already there, in an index sized beforehand.
 */
class RowLoaderTest {
    private final TableFixture fixture = new TableFixture(3);

    @AfterEach
    void close() {
        fixture.close();
    }

    private ParameterTable adagrad(final String name) {
        return fixture.create(TableSchema.newBuilder()
                .setName(name)
                .setKind(TableKind.SPARSE)
                .setDim(3)
                .setOptimizer(OptimizerSpec.newBuilder()
                        .setKind(OptimizerKind.ADAGRAD)
                        .setLearningRate(0.5f))
                .build());
    }

    /** Rows as a row file stores them: key, then the record's float bits, little-endian. */
    private static byte[] rowBytes(final long[] keys, final float[][] records, final int width) {
        final ByteBuffer bytes =
                ByteBuffer.allocate(keys.length * (8 + 4 * width)).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < keys.length; i++) {
            bytes.putLong(keys[i]);
            for (final float value : records[i]) {
                bytes.putInt(Float.floatToRawIntBits(value));
            }
        }
        return bytes.array();
    }

    /** Records whose bits are random: NaN payloads, -0.0 and subnormals included. */
    private static float[][] randomRecords(final SplittableRandom random, final int count, final int width) {
        final float[][] records = new float[count][width];
        for (final float[] record : records) {
            for (int f = 0; f < width; f++) {
                record[f] = Float.intBitsToFloat(random.nextInt());
            }
        }
        return records;
    }

    /** Loads the rows in runs of up to {@code run} rows of one slot at a time, as a reader hands them out. */
    private static void load(final ParameterTable table, final long[] keys, final byte[] rows, final int run)
            throws InterruptedException {
        final RowLoader loader = table.loader();
        final int rowBytes = 8 + 4 * table.rowWidth();
        for (int from = 0; from < keys.length; ) {
            final int slot = table.slotOf(keys[from]);
            int to = from + 1;
            while (to < keys.length && to - from < run && table.slotOf(keys[to]) == slot) {
                to++;
            }
            loader.add(slot, rows, from * rowBytes, to - from);
            from = to;
        }
        loader.finish();
    }

    @Test
    void shouldPutEveryRowBitExactInEveryPartitionAndReplaceRowsThatWereThere() throws Exception {
        final ParameterTable table = adagrad("loaded");
        final int width = table.rowWidth();
        final SplittableRandom random = new SplittableRandom(7);
        final int count = 40_000;
        final long[] keys = new long[count];
        for (int i = 0; i < count; i++) {
            keys[i] = random.nextLong();
        }
        // Some rows exist already, with other values: the load replaces them.
        table.push(java.util.Arrays.copyOf(keys, 500), new float[500 * 3]);
        final float[][] records = randomRecords(random, count, width);

        load(table, keys, rowBytes(keys, records, width), 37);

        assertThat(table.rowCount()).isEqualTo(count);
        for (int i = 0; i < count; i += 997) {
            assertThat(floatBits(TableFixture.recordOf(table, keys[i])))
                    .as("record of key %d", keys[i])
                    .isEqualTo(floatBits(records[i]));
        }
        assertThat(floatBits(TableFixture.recordOf(table, keys[499]))).isEqualTo(floatBits(records[499]));
    }

    @Test
    void shouldNotGrowTheIndexWhileLoadingRowsReservedForAnEmptyTable() throws Exception {
        final ParameterTable table = adagrad("reserved");
        final int width = table.rowWidth();
        final SplittableRandom random = new SplittableRandom(11);
        final int count = 200_000;
        final long[] keys = new long[count];
        for (int i = 0; i < count; i++) {
            keys[i] = random.nextLong();
        }

        final java.util.BitSet everySlot = new java.util.BitSet();
        everySlot.set(0, io.pscluster.wire.Slots.SLOT_COUNT);
        table.reserveRows(count, everySlot);
        load(table, keys, rowBytes(keys, randomRecords(random, count, width), width), 1_000);

        assertThat(table.rowCount()).isEqualTo(count);
        assertThat(table.longestIndexGrowthNanos())
                .as("no segment grew or split")
                .isZero();
        for (final PartitionStore.IndexShape shape : table.indexShapes()) {
            assertThat(shape.largestSegment()).isEqualTo(PartitionStore.MAX_SEGMENT);
            assertThat(shape.meanProbe()).as("%s", shape).isLessThan(3.0);
        }
        assertThat(table.pull(new long[] {keys[123]})).hasSize(3);
    }

    @Test
    void shouldReportAWritersFailureFromFinishWhenARowCannotBeWritten() throws Exception {
        final ParameterTable table = adagrad("failing");
        final int width = table.rowWidth();
        final long[] keys = {1, 2, 3, 4, 5, 6};
        table.injectFaults(new TableFaults() {
            @Override
            public void recordWrite(final long key) {
                if (key == 4) {
                    throw new IllegalStateException("injected: the write of key 4 failed");
                }
            }
        });

        final byte[] rows = rowBytes(keys, randomRecords(new SplittableRandom(1), keys.length, width), width);
        assertThatThrownBy(() -> load(table, keys, rows, 1))
                .isInstanceOf(IllegalStateException.class)
                .hasMessageContaining("key 4");
    }

    private static int[] floatBits(final float[] record) {
        final int[] bits = new int[record.length];
        for (int i = 0; i < record.length; i++) {
            bits[i] = Float.floatToRawIntBits(record[i]);
        }
        return bits;
    }
}
