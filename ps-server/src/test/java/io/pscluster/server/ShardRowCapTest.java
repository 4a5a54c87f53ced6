package io.pscluster.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

import io.grpc.Status;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.server.table.ParameterTable;
import io.pscluster.wire.PsException;
import io.pscluster.wire.Slots;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** The shard's check of {@code max_rows_per_shard}: a push that would pass the cap is refused whole. */
class ShardRowCapTest {
    private static final String TABLE = "capped";

    private final Shard shard = new Shard("s", 1 << 20, 2, 1024, new Configuration());

    @BeforeEach
    void ownEverySlot() throws InterruptedException {
        TestRouting.serve(shard, TestRouting.allSlotsTo("s", 1));
        assertThat(shard.ownedSlotCount()).isEqualTo(Slots.SLOT_COUNT);
    }

    @AfterEach
    void closeShard() {
        shard.close();
    }

    /** SGD with lr 1 from zeros, dim 2. */
    private static TableSchema schema(final long maxRowsPerShard) {
        return TableSchema.newBuilder()
                .setName(TABLE)
                .setKind(TableKind.SPARSE)
                .setDim(2)
                .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(1f))
                .setMaxRowsPerShard(maxRowsPerShard)
                .build();
    }

    private ParameterTable createTable(final long maxRowsPerShard) throws InterruptedException {
        shard.createTable(schema(maxRowsPerShard));
        return shard.table(TABLE);
    }

    private static float[] ones(final int keys) {
        final float[] gradients = new float[2 * keys];
        Arrays.fill(gradients, 1f);
        return gradients;
    }

    private float firstValue(final long key) {
        return ByteBuffer.wrap(shard.pull(TABLE, 1, new long[] {key}))
                .order(ByteOrder.LITTLE_ENDIAN)
                .getFloat(0);
    }

    private static boolean hasRow(final ParameterTable table, final long key) {
        final long[] keys = {key};
        return table.countAbsent(keys, table.slotsOf(keys)) == 0;
    }

    @Test
    void shouldRefuseWithResourceExhaustedNamingTheCapWhenANewKeyWouldPassIt() throws InterruptedException {
        final ParameterTable table = createTable(100);
        PsException refused = null;
        long refusedKey = -1;
        for (long key = 0; key < 1_000 && refused == null; key++) {
            try {
                shard.push(TABLE, 1, 0, 0, new long[] {key}, ones(1));
                shard.awaitQuiescent();
            } catch (PsException e) {
                refused = e;
                refusedKey = key;
            }
        }

        assertThat(refused).as("a push past the cap").isNotNull();
        assertThat(refused.code()).isEqualTo(Status.Code.RESOURCE_EXHAUSTED);
        assertThat(refused.getMessage()).contains("'" + TABLE + "'", "cap of 100 rows");
        shard.awaitQuiescent();
        assertThat(table.rowCount()).isLessThanOrEqualTo(100);
        assertThat(hasRow(table, refusedKey)).as("the refused key's row").isFalse();

        // Keys that have rows are still accepted and applied.
        final long existing = hasRow(table, 0) ? 0 : 1;
        assertThat(hasRow(table, existing)).isTrue();
        final float before = firstValue(existing);
        assertThat(shard.push(TABLE, 1, 0, 0, new long[] {existing}, ones(1)).accepted())
                .isEqualTo(1);
        shard.awaitQuiescent();
        assertThat(firstValue(existing)).isEqualTo(before - 1f);
    }

    /**
     * Pushes acknowledged while the writers are held have not created their rows yet: their new rows count against the
     * cap all the same, so a push that would pass it is refused at once instead of acknowledged and then dropped by the
     * writer. While the queued push is not applied the refusal is one to retry (the queued push might name the same
     * new keys); once it is applied, final.
     */
    @Test
    void shouldCountTheNewRowsOfQueuedPushesSoThatEveryAcknowledgedRowIsCreated() throws Exception {
        final ParameterTable table = createTable(100);
        final List<long[]> acknowledged = new ArrayList<>();
        final List<long[]> refused = new ArrayList<>();
        try (BlockedWriters blocked = BlockedWriters.block(shard, 2)) {
            for (int push = 0; push < 8; push++) {
                final long[] keys = new long[60];
                for (int i = 0; i < keys.length; i++) {
                    keys[i] = 1_000L * (push + 1) + i;
                }
                try {
                    shard.push(TABLE, 1, 0, 0, keys, ones(keys.length));
                    acknowledged.add(keys);
                } catch (PsException e) {
                    assertThat(e.code()).isEqualTo(Status.Code.RESOURCE_EXHAUSTED);
                    assertThat(PsException.rejectOf(PsException.toStatus(e)))
                            .as("to retry: the queued push has created none of its rows yet")
                            .isNotNull();
                    refused.add(keys);
                }
            }
        }
        shard.awaitQuiescent();

        assertThat(acknowledged).as("60 new rows fit a cap of 100 once").hasSize(1);
        assertThat(refused).hasSize(7);
        final PsException again =
                catchThrowableOfType(PsException.class, () -> shard.push(TABLE, 1, 0, 0, refused.get(0), ones(60)));
        assertThat(again).as("the same push once the queued one is applied").isNotNull();
        assertThat(PsException.rejectOf(PsException.toStatus(again)))
                .as("final")
                .isNull();
        assertThat(again.getMessage()).contains("holds 60 rows", "cap of 100 rows");
        for (final long key : acknowledged.get(0)) {
            assertThat(hasRow(table, key)).as("row of acknowledged key %d", key).isTrue();
            assertThat(firstValue(key)).isEqualTo(-1f);
        }
        for (final long[] keys : refused) {
            assertThat(table.countAbsent(keys, table.slotsOf(keys))).isEqualTo(keys.length);
        }
        assertThat(table.droppedRows()).as("rows dropped by the writers").isZero();
        assertThat(table.rowCount()).isEqualTo(60);
    }

    /**
     * Restores are not capped, so after a failover a shard can hold more rows than the cap: pushes that create no row
     * must still be taken there.
     */
    @Test
    void shouldTakeAPushOfExistingRowsWhenRestoredRowsLeftTheTableAboveItsCap() throws InterruptedException {
        final ParameterTable table = createTable(100);
        final long[] keys = new long[150];
        for (int i = 0; i < keys.length; i++) {
            keys[i] = i;
        }
        table.putRecords(keys, new float[keys.length * table.rowWidth()], keys.length);
        assertThat(table.rowCount()).isEqualTo(150);

        assertThat(shard.push(TABLE, 1, 0, 0, new long[] {5}, ones(1)).accepted())
                .isEqualTo(1);
        shard.awaitQuiescent();

        assertThat(firstValue(5)).isEqualTo(-1f);
        final PsException newRow =
                catchThrowableOfType(PsException.class, () -> shard.push(TABLE, 1, 0, 0, new long[] {1_000}, ones(1)));
        assertThat(newRow).as("a new row above the cap").isNotNull();
        assertThat(newRow.getMessage()).contains("cap of 100 rows");
    }

    @Test
    void shouldRefuseTheWholeBatchAndApplyNothingWhenItWouldPassTheCap() throws InterruptedException {
        final ParameterTable table = createTable(100);
        final long[] keys = new long[150];
        for (int i = 0; i < keys.length; i++) {
            keys[i] = 10_000 + i;
        }

        final PsException refused =
                catchThrowableOfType(PsException.class, () -> shard.push(TABLE, 1, 0, 0, keys, ones(150)));

        assertThat(refused).isNotNull();
        assertThat(refused.code()).isEqualTo(Status.Code.RESOURCE_EXHAUSTED);
        assertThat(refused.getMessage()).contains("150 new rows", "cap of 100 rows");
        shard.awaitQuiescent();
        assertThat(table.rowCount()).isZero();
        assertThat(table.droppedRows()).isZero();
    }

    @Test
    void shouldCreateTheRowOfEveryAcceptedPushWhenTheShardIsBelowItsCap() throws InterruptedException {
        final ParameterTable table = createTable(100);
        for (long key = 0; key < 1_000; key++) {
            final long rowsBefore = table.rowCount();
            try {
                shard.push(TABLE, 1, 0, 0, new long[] {key}, ones(1));
            } catch (PsException refused) {
                assertThat(rowsBefore)
                        .as("rows when the first push was refused")
                        .isEqualTo(100);
                return;
            }
            shard.awaitQuiescent();
            assertThat(hasRow(table, key))
                    .as("row of key %d, accepted with %d rows of 100 held", key, rowsBefore)
                    .isTrue();
        }
    }

    @Test
    void shouldHoldNoMoreRowsThanTheCapWhenTheCapIsBelowThePartitionCount() throws InterruptedException {
        final ParameterTable table = createTable(1);
        final long first = 0;
        long second = 1;
        while (table.slotOf(second) % 2 == table.slotOf(first) % 2) {
            second++;
        }

        shard.push(TABLE, 1, 0, 0, new long[] {first}, ones(1));
        shard.awaitQuiescent();
        final long other = second; // in the other partition
        final PsException refused =
                catchThrowableOfType(PsException.class, () -> shard.push(TABLE, 1, 0, 0, new long[] {other}, ones(1)));
        shard.awaitQuiescent();

        assertThat(table.maxRows()).isLessThanOrEqualTo(1);
        assertThat(refused)
                .as("refusal of a second key with max_rows_per_shard=1")
                .isNotNull();
        assertThat(table.rowCount()).isEqualTo(1);
    }

    @Test
    void shouldCountANewKeyOnceWhenAPushNamesItTwice() throws InterruptedException {
        // One partition, so that the per-partition split of the cap plays no part.
        try (Shard single = new Shard("s", 1 << 20, 1, 1024, new Configuration())) {
            TestRouting.serve(single, TestRouting.allSlotsTo("s", 1));
            single.createTable(schema(2));
            final ParameterTable table = single.table(TABLE);
            single.push(TABLE, 1, 0, 0, new long[] {1}, ones(1));
            single.awaitQuiescent();

            final PsException refused = catchThrowableOfType(
                    PsException.class, () -> single.push(TABLE, 1, 0, 0, new long[] {5, 5}, ones(2)));

            assertThat(refused)
                    .as("refusal of one new key named twice with 1 of 2 rows held")
                    .isNull();
            single.awaitQuiescent();
            assertThat(table.rowCount()).isEqualTo(2);
        }
    }
}
