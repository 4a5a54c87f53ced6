package io.pscluster.server.table;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;

import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import java.time.Duration;
import java.util.Arrays;
import java.util.concurrent.atomic.AtomicBoolean;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * Faults inside a table's writer, injected at the named points of {@link TableFaults}: whatever fails, the one row
 * or request fails, the table stays readable (no reader or writer spins) and the writer goes on with later pushes.
 * Reads that would hang on a broken table run under a preemptive timeout, so a regression fails instead of hanging.
 */
class TableWriterFaultsTest {
    /** Long enough for a healthy table by orders of magnitude; a broken one never answers. */
    private static final Duration HANG = Duration.ofSeconds(20);

    private final TableFixture fixture = new TableFixture(1);

    @AfterEach
    void close() {
        fixture.close();
    }

    /** SGD with lr 1 from zeros: a row holds minus the sum of its gradients. */
    private ParameterTable sgd(final int dim) {
        return fixture.create(TableSchema.newBuilder()
                .setName("faults")
                .setKind(TableKind.SPARSE)
                .setDim(dim)
                .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(1f))
                .build());
    }

    private static long[] range(final long from, final int count) {
        final long[] keys = new long[count];
        for (int i = 0; i < count; i++) {
            keys[i] = from + i;
        }
        return keys;
    }

    private static float[] ones(final int count) {
        final float[] values = new float[count];
        Arrays.fill(values, 1f);
        return values;
    }

    @Test
    void shouldRefuseNewRowsButStayReadableWhileTheIndexCannotGrow() throws Exception {
        final ParameterTable table = sgd(1);
        final long[] before = range(0, 8);
        table.push(before, ones(8));
        final AtomicBoolean outOfMemory = new AtomicBoolean(true);
        table.injectFaults(new TableFaults() {
            @Override
            public void indexGrowth() {
                if (outOfMemory.get()) {
                    throw new OutOfMemoryError("injected: Java heap space");
                }
            }
        });

        // Far more new keys than the first segment holds: every growth fails, so most rows are refused.
        final long[] refused = range(1_000, 5_000);
        assertTimeoutPreemptively(HANG, () -> table.push(refused, ones(refused.length)));
        assertThat(table.droppedRows())
                .as("rows refused while the index could not grow")
                .isPositive();
        final long rowsDuringFault = table.rowCount();
        assertThat(rowsDuringFault).isLessThan(before.length + refused.length);

        // Readable: absent keys answer (their initial values), present ones their values; nothing spins.
        final float[] values = assertTimeoutPreemptively(HANG, () -> table.pull(range(0, 6_000)));
        for (int i = 0; i < before.length; i++) {
            assertThat(values[i]).as("key %d pushed before the fault", i).isEqualTo(-1f);
        }
        assertThat(table.countAbsent(refused, table.slotsOf(refused)))
                .isEqualTo(refused.length - (int) (rowsDuringFault - before.length));

        // Once memory is back the same push creates every row, each exactly once.
        outOfMemory.set(false);
        assertTimeoutPreemptively(HANG, () -> table.push(refused, ones(refused.length)));
        assertThat(table.rowCount()).isEqualTo(before.length + refused.length);
        assertThat(table.countAbsent(refused, table.slotsOf(refused))).isZero();
        assertThat(table.pull(new long[] {0})[0]).isEqualTo(-1f);
    }

    @Test
    void shouldRefuseNewRowsWhileOffHeapMemoryIsShortAndCreateThemAfter() throws Exception {
        final ParameterTable table = sgd(4);
        final AtomicBoolean outOfMemory = new AtomicBoolean(true);
        table.injectFaults(new TableFaults() {
            @Override
            public void chunkAllocation() {
                if (outOfMemory.get()) {
                    throw new OutOfMemoryError("injected: Cannot reserve direct buffer memory");
                }
            }
        });
        final long[] keys = range(0, 100);
        table.push(keys, ones(4 * keys.length));
        assertThat(table.rowCount()).isZero();
        assertThat(table.droppedRows()).isEqualTo(keys.length);

        outOfMemory.set(false);
        table.push(keys, ones(4 * keys.length));
        assertThat(table.rowCount()).isEqualTo(keys.length);
        assertThat(table.pull(keys)).containsOnly(-1f);
    }

    @Test
    void shouldFailADenseTablesMaterializationWithTheReasonInsteadOfSkippingRows() throws Exception {
        final ParameterTable table = fixture.create(TableSchema.newBuilder()
                .setName("dense")
                .setKind(TableKind.DENSE)
                .setRows(10_000)
                .setDim(2)
                .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(1f))
                .build());
        table.injectFaults(new TableFaults() {
            @Override
            public void chunkAllocation() {
                throw new OutOfMemoryError("injected: Cannot reserve direct buffer memory");
            }
        });
        assertThatThrownBy(() -> table.materializeDense(slot -> true))
                .isInstanceOf(IllegalStateException.class)
                .hasMessageContaining("cannot create the row of key")
                .hasMessageContaining("out of memory");
    }

    @Test
    void shouldKeepARecordReadableAndTheWriterRunningWhenAWriteThrows() throws Exception {
        final ParameterTable table = sgd(4);
        final long poisoned = 42;
        final long[] keys = {7, poisoned, 9};
        table.push(keys, ones(12));
        table.injectFaults(new TableFaults() {
            @Override
            public void recordWrite(final long key) {
                if (key == poisoned) {
                    throw new IllegalStateException("injected: a bug in an update rule");
                }
            }
        });

        table.push(keys, ones(12));
        assertThat(table.droppedRows()).as("the one failed row").isEqualTo(1);
        // The failed record is readable at once (its sequence is even again) and holds what it held before.
        final float[] values = assertTimeoutPreemptively(HANG, () -> table.pull(keys));
        assertThat(Arrays.copyOfRange(values, 0, 4)).containsOnly(-2f);
        assertThat(Arrays.copyOfRange(values, 4, 8)).containsOnly(-1f);
        assertThat(Arrays.copyOfRange(values, 8, 12)).containsOnly(-2f);

        // A new row whose first write throws is not created; the writer goes on with the next push.
        final long newPoisoned = poisoned;
        table.injectFaults(new TableFaults() {
            @Override
            public void recordWrite(final long key) {
                if (key == 1_000) {
                    throw new IllegalStateException("injected: a bug in an initializer");
                }
            }
        });
        table.push(new long[] {1_000, 1_001}, ones(8));
        assertThat(TableFixture.hasRow(table, 1_000)).isFalse();
        assertThat(TableFixture.hasRow(table, 1_001)).isTrue();
        assertThat(table.rowCount()).as("rows: 3 pushed first, then 1_001").isEqualTo(4);
        // Not half there either: snapshots (checkpoints) and eviction see exactly the rows the index has.
        assertThat(table.snapshot(slot -> true).stream()
                        .mapToInt(SlotSnapshot::rows)
                        .sum())
                .isEqualTo(4);
        table.injectFaults(TableFaults.NONE);
        table.push(new long[] {newPoisoned, 1_000}, ones(8));
        assertThat(table.pull(new long[] {newPoisoned, 1_000})).containsExactly(-2f, -2f, -2f, -2f, -1f, -1f, -1f, -1f);
    }

    @Test
    void shouldKeepARecordReadableWhenARestoreWriteThrows() throws Exception {
        final ParameterTable table = sgd(4);
        final long[] keys = {7, 42};
        table.push(keys, ones(8));
        table.injectFaults(new TableFaults() {
            @Override
            public void recordWrite(final long key) {
                if (key == 42) {
                    throw new IllegalStateException("injected: a restore write failed");
                }
            }
        });
        assertThatThrownBy(() -> table.putRecords(keys, new float[2 * table.rowWidth()], 2))
                .hasMessageContaining("injected: a restore write failed");
        table.injectFaults(TableFaults.NONE);
        // Key 7 was restored (zeros) before 42 failed; 42 is readable and holds what it held.
        final float[] values = assertTimeoutPreemptively(HANG, () -> table.pull(keys));
        assertThat(Arrays.copyOfRange(values, 0, 4)).containsOnly(0f);
        assertThat(Arrays.copyOfRange(values, 4, 8)).containsOnly(-1f);
    }

    @Test
    void shouldEvictExpiredRowsAcrossManyStepsOfAPass() throws Exception {
        final ParameterTable table = fixture.create(TableSchema.newBuilder()
                .setName("ttl")
                .setKind(TableKind.SPARSE)
                .setDim(1)
                .setTtlSeconds(1)
                .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(1f))
                .build());
        // More records than three eviction steps look at: a pass must go on where each step stopped.
        final int count = 3 * ParameterTable.EVICTION_STEP_RECORDS + 1_000;
        final long[] keys = range(0, count);
        table.push(keys, ones(count));
        assertThat(table.rowCount()).isEqualTo(count);
        org.awaitility.Awaitility.await().atMost(Duration.ofSeconds(20)).untilAsserted(() -> {
            assertThat(table.rowCount()).isZero();
            assertThat(TableFixture.hasRow(table, count - 1)).isFalse();
        });
    }

    @Test
    void shouldHoldRowsWiderThanAChunkOfFourThousandRecords() throws Exception {
        // Adam keeps 3 floats per value: 600 KB a record, which overflowed an int-sized chunk of 4,096 records.
        final int dim = 50_000;
        final float learningRate = 0.01f;
        final ParameterTable table = fixture.create(TableSchema.newBuilder()
                .setName("wide")
                .setKind(TableKind.SPARSE)
                .setDim(dim)
                .setOptimizer(
                        OptimizerSpec.newBuilder().setKind(OptimizerKind.ADAM).setLearningRate(learningRate))
                .build());
        final long[] keys = {3, 5};
        final float[] gradients = new float[2 * dim];
        for (int i = 0; i < gradients.length; i++) {
            gradients[i] = i % 2 == 0 ? 0.5f : -0.25f;
        }
        table.push(keys, gradients);

        assertThat(table.rowCount()).isEqualTo(2);
        assertThat(table.droppedRows()).isZero();
        // Adam's first step from zero moves each value by about lr against the gradient's sign.
        final float[] values = table.pull(keys);
        for (int i = 0; i < values.length; i++) {
            assertThat(values[i])
                    .isCloseTo(i % 2 == 0 ? -learningRate : learningRate, org.assertj.core.data.Offset.offset(1e-4f));
        }
        assertThat(table.bytes())
                .isLessThan(4L
                        * PartitionStore.recordBytes(
                                dim, Optimizer.of(table.schema().getOptimizer())));
    }

    @Test
    void shouldRefuseAShortOutputBufferByNameAndKeepServing() throws Exception {
        final ParameterTable table = sgd(4);
        final long[] keys = {1, 2, 3};
        table.push(keys, ones(12));

        assertThatThrownBy(() -> table.pull(keys, table.slotsOf(keys), new byte[4 * 4 * 3 - 1]))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("48 output bytes")
                .hasMessageContaining("got 3 slots and 47 bytes");
        assertThatThrownBy(() -> table.pull(keys, new int[2], new byte[48]))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("got 2 slots");
        assertThat(table.pull(keys)).containsOnly(-1f);
    }
}
