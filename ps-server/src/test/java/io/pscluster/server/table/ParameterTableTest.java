package io.pscluster.server.table;

import static io.pscluster.server.table.TableFixture.otherSlotThan;
import static io.pscluster.server.table.TableFixture.put;
import static io.pscluster.server.table.TableFixture.sameSlotAs;
import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.proto.v1.InitializerKind;
import io.pscluster.proto.v1.InitializerSpec;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.wire.Slots;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.IntPredicate;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/** Row storage of the table: dense materialization, snapshots, whole-record puts and slot clearing. */
class ParameterTableTest {
    private static final String NAME = "embeddings";

    private final TableFixture fixture = new TableFixture(2);

    @AfterEach
    void closeWriters() {
        fixture.close();
    }

    private ParameterTable denseTable(final long rows) {
        return fixture.create(TableSchema.newBuilder()
                .setName(NAME)
                .setKind(TableKind.DENSE)
                .setDim(2)
                .setRows(rows)
                .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(0.5f))
                .setInitializer(InitializerSpec.newBuilder()
                        .setKind(InitializerKind.UNIFORM)
                        .setScale(1f)
                        .setSeed(3))
                .build());
    }

    private ParameterTable sparseAdagradTable() {
        return fixture.create(TableSchema.newBuilder()
                .setName(NAME)
                .setKind(TableKind.SPARSE)
                .setDim(2)
                .setOptimizer(OptimizerSpec.newBuilder()
                        .setKind(OptimizerKind.ADAGRAD)
                        .setLearningRate(0.5f))
                .build());
    }

    private static float[] pull(final ParameterTable table, final long... keys) {
        return table.pull(keys);
    }

    /** Key -> raw bits of its record, from a snapshot. */
    private static Map<Long, List<Integer>> recordBits(final List<SlotSnapshot> snapshots) {
        final Map<Long, List<Integer>> records = new HashMap<>();
        for (final SlotSnapshot snapshot : snapshots) {
            for (int row = 0; row < snapshot.rows(); row++) {
                final List<Integer> bits = new ArrayList<>();
                for (int i = 0; i < snapshot.rowWidth(); i++) {
                    bits.add(Float.floatToRawIntBits(snapshot.records()[row * snapshot.rowWidth() + i]));
                }
                assertThat(records.put(snapshot.keys()[row], bits))
                        .as("key in two snapshots")
                        .isNull();
            }
        }
        return records;
    }

    private static List<Integer> bitsOf(final float... record) {
        final List<Integer> bits = new ArrayList<>();
        for (final float value : record) {
            bits.add(Float.floatToRawIntBits(value));
        }
        return bits;
    }

    /**
     * A dense table's off-heap need for its rows, never wrapped around: 5e15 rows (or Long.MAX_VALUE) once overflowed to
     * a small number, passed the memory check and filled every shard's memory (found by a hostile review).
     */
    @Test
    void shouldNeverUnderstateTheRoomADenseTableNeedsHoweverManyRowsItHas() {
        final ParameterTable modest = denseTable(4096 * 10);
        assertThat(modest.denseBytesFor(4096)).isEqualTo(4096L * 10 * modest.recordBytes());
        assertThat(modest.denseBytesFor(2048)).isEqualTo(2048L * 10 * modest.recordBytes());
        for (final long rows : new long[] {5_000_000_000_000_000L, Long.MAX_VALUE / 3, Long.MAX_VALUE}) {
            final ParameterTable huge = fixture.create(TableSchema.newBuilder()
                    .setName("huge-" + rows)
                    .setKind(TableKind.DENSE)
                    .setDim(4)
                    .setRows(rows)
                    .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(0.5f))
                    .build());
            for (final int slots : new int[] {1, 2048, 4096}) {
                final double exact = (double) rows * slots / 4096 * huge.recordBytes();
                assertThat(huge.denseBytesFor(slots))
                        .as("%d rows, %d slots", rows, slots)
                        .isGreaterThanOrEqualTo((long) Math.min(exact * 0.999, Long.MAX_VALUE));
            }
        }
    }

    @Test
    void shouldCreateEveryRowWithItsInitialValuesWhenADenseTableIsMaterialized() throws InterruptedException {
        final ParameterTable table = denseTable(1000);
        final ParameterTable untouched = denseTable(1000);

        table.materializeDense(slot -> true);

        assertThat(table.rowCount()).isEqualTo(1000);
        final Map<Long, List<Integer>> records = recordBits(table.snapshot(slot -> true));
        assertThat(records).hasSize(1000);
        for (long key = 0; key < 1000; key++) {
            assertThat(records.get(key)).as("key %d", key).isEqualTo(bitsOf(pull(untouched, key)));
        }
    }

    @Test
    void shouldCreateOnlyTheRowsOfAcceptedSlotsWhenMaterializedWithAFilter() throws InterruptedException {
        final ParameterTable table = denseTable(1000);
        final IntPredicate lowerHalf = slot -> slot < Slots.SLOT_COUNT / 2;
        final long tableHash = Slots.tableHash(NAME);
        final Set<Long> expected = new HashSet<>();
        for (long key = 0; key < 1000; key++) {
            if (lowerHalf.test(Slots.slotOf(tableHash, key))) {
                expected.add(key);
            }
        }
        assertThat(expected).hasSizeBetween(400, 600);

        table.materializeDense(lowerHalf);

        assertThat(table.rowCount()).isEqualTo(expected.size());
        assertThat(recordBits(table.snapshot(slot -> true)).keySet()).isEqualTo(expected);
    }

    @Test
    void shouldKeepPushedValuesWhenADenseTableIsMaterializedAgain() throws InterruptedException {
        final ParameterTable table = denseTable(10);
        table.materializeDense(slot -> true);
        table.push(new long[] {4}, new float[] {2f, 2f});
        final float[] pushed = pull(table, 4);

        table.materializeDense(slot -> true);

        assertThat(table.rowCount()).isEqualTo(10);
        assertThat(pull(table, 4)).containsExactly(pushed);
    }

    @Test
    void shouldCreateNoRowWhenASparseTableIsMaterialized() throws InterruptedException {
        final ParameterTable table = sparseAdagradTable();

        table.materializeDense(slot -> true);

        assertThat(table.rowCount()).isZero();
    }

    @Test
    void shouldSnapshotAPutRecordBitExactWhenItHoldsUnusualFloats() throws InterruptedException {
        final ParameterTable table = sparseAdagradTable();
        final float[] record = {-0.0f, Float.MIN_VALUE, Float.intBitsToFloat(0x7fc0_0001), 1.0e-38f};

        put(table, 42, record);

        final List<SlotSnapshot> snapshots = table.snapshot(slot -> true);
        assertThat(snapshots).hasSize(1);
        final SlotSnapshot snapshot = snapshots.get(0);
        assertThat(snapshot.slot()).isEqualTo(table.slotOf(42));
        assertThat(snapshot.rows()).isEqualTo(1);
        assertThat(snapshot.rowWidth()).isEqualTo(4);
        assertThat(snapshot.keys()).containsExactly(42L);
        assertThat(recordBits(snapshots)).containsEntry(42L, bitsOf(record));
        assertThat(Float.floatToRawIntBits(pull(table, 42)[0])).isEqualTo(Float.floatToRawIntBits(-0.0f));
    }

    @Test
    void shouldReplaceTheWholeRecordWhenAKeyIsPutTwice() throws InterruptedException {
        final ParameterTable table = sparseAdagradTable();
        table.push(new long[] {8}, new float[] {1f, 1f});

        put(table, 8, new float[] {5f, 6f, 7f, 8f});

        assertThat(table.rowCount()).isEqualTo(1);
        assertThat(recordBits(table.snapshot(slot -> true))).containsEntry(8L, bitsOf(5f, 6f, 7f, 8f));
    }

    @Test
    void shouldSnapshotOnlyAcceptedSlotsInInsertionOrderWhenFiltered() throws InterruptedException {
        final ParameterTable table = sparseAdagradTable();
        final long first = 100;
        final long second = sameSlotAs(table, first);
        final long elsewhere = otherSlotThan(table, first);
        put(table, second, new float[] {2f, 2f, 2f, 2f});
        put(table, elsewhere, new float[] {3f, 3f, 3f, 3f});
        put(table, first, new float[] {1f, 1f, 1f, 1f});

        final List<SlotSnapshot> snapshots = table.snapshot(slot -> slot == table.slotOf(first));

        assertThat(snapshots).hasSize(1);
        assertThat(snapshots.get(0).keys()).containsExactly(second, first);
        assertThat(snapshots.get(0).records()).containsExactly(2f, 2f, 2f, 2f, 1f, 1f, 1f, 1f);
    }

    @Test
    void shouldKeepASnapshotUnchangedWhenTheTableChangesAfterwards() throws InterruptedException {
        final ParameterTable table = sparseAdagradTable();
        put(table, 1, new float[] {1f, 1f, 1f, 1f});
        final SlotSnapshot snapshot = table.snapshot(slot -> true).get(0);

        put(table, 1, new float[] {9f, 9f, 9f, 9f});
        put(table, sameSlotAs(table, 1), new float[] {9f, 9f, 9f, 9f});

        assertThat(snapshot.rows()).isEqualTo(1);
        assertThat(snapshot.keys()).containsExactly(1L);
        assertThat(snapshot.records()).containsExactly(1f, 1f, 1f, 1f);
    }

    @Test
    void shouldWriteLittleEndianFloat32RowAfterRowWhenPulledIntoBytes() throws InterruptedException {
        final ParameterTable table = sparseAdagradTable();
        put(table, 3, 1.5f, -2.25f, 0.1f, 0.1f);
        final long[] keys = {3, 77, 3}; // 77 has no row: its initial values (zeros) in place

        final byte[] bytes = new byte[keys.length * 2 * 4];
        table.pull(keys, table.slotsOf(keys), bytes);

        final ByteBuffer buffer = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
        assertThat(new float[] {
                    buffer.getFloat(0), buffer.getFloat(4), buffer.getFloat(8),
                    buffer.getFloat(12), buffer.getFloat(16), buffer.getFloat(20)
                })
                .containsExactly(1.5f, -2.25f, 0f, 0f, 1.5f, -2.25f);
        assertThat(pull(table, keys)).containsExactly(1.5f, -2.25f, 0f, 0f, 1.5f, -2.25f);
    }

    @Test
    void shouldPutOnlyTheFirstCountRecordsWhenGivenACount() throws InterruptedException {
        final ParameterTable table = sparseAdagradTable();
        final long[] keys = {10, 11, 12};
        final float[] records = {1f, 1f, 1f, 1f, 2f, 2f, 2f, 2f, 3f, 3f, 3f, 3f};

        table.putRecords(keys, records, 2);

        assertThat(table.rowCount()).isEqualTo(2);
        assertThat(recordBits(table.snapshot(slot -> true)))
                .containsOnlyKeys(10L, 11L)
                .containsEntry(11L, bitsOf(2f, 2f, 2f, 2f));
    }

    @Test
    void shouldDropOnlyTheChosenSlotsWhenSlotsAreCleared() throws InterruptedException {
        final ParameterTable table = sparseAdagradTable();
        final Map<Long, List<Integer>> expected = new HashMap<>();
        for (long key = 0; key < 200; key++) {
            final float[] record = {key, -key, key + 0.5f, 0.25f};
            put(table, key, record);
            expected.put(key, bitsOf(record));
        }
        final Set<Integer> cleared = new HashSet<>();
        for (long key = 0; key < 200; key += 3) {
            cleared.add(table.slotOf(key));
        }
        expected.keySet().removeIf(key -> cleared.contains(table.slotOf(key)));
        assertThat(expected).isNotEmpty().hasSizeLessThan(200);

        table.clearSlots(cleared::contains);

        assertThat(table.rowCount()).isEqualTo(expected.size());
        assertThat(recordBits(table.snapshot(slot -> true))).isEqualTo(expected);
        assertThat(table.snapshot(cleared::contains)).isEmpty();
        assertThat(pull(table, 0)).containsExactly(0f, 0f); // back to the ZEROS initializer
    }

    @Test
    void shouldRecreateTheRowFromItsInitialValuesWhenPushedAfterItsSlotWasCleared() throws InterruptedException {
        final ParameterTable table = sparseAdagradTable();
        put(table, 5, new float[] {10f, 10f, 50f, 50f});
        table.clearSlots(slot -> true);

        table.push(new long[] {5}, new float[] {0f, 0f});

        // A fresh row: zeros and the default accumulator 0.1, not the cleared record.
        assertThat(recordBits(table.snapshot(slot -> true))).containsEntry(5L, bitsOf(0f, 0f, 0.1f, 0.1f));
    }
}
