package io.pscluster.server.table;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.proto.v1.TableSchema;
import io.pscluster.wire.TableSchemas;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * A shard's partition writers and the tables created on them, as tests need them: the writers see every table (so
 * TTL eviction runs on them) and {@link #close()} stops the writer threads. Close it in {@code @AfterEach}.
 */
final class TableFixture implements AutoCloseable {
    static final int DEFAULT_CAPACITY = 1024;

    private final List<ParameterTable> tables = new CopyOnWriteArrayList<>();
    private final PartitionWriters writers;

    TableFixture(final int partitions) {
        this(partitions, DEFAULT_CAPACITY);
    }

    TableFixture(final int partitions, final int capacity) {
        this.writers = new PartitionWriters("test-writer", partitions, capacity, () -> tables);
    }

    PartitionWriters writers() {
        return writers;
    }

    /** A table for {@code schema}, normalized first, as a shard creates it. */
    ParameterTable create(final TableSchema schema) {
        return create(schema, OffHeapBudget.JVM);
    }

    /** As {@link #create(TableSchema)}, its rows held in {@code memory}. */
    ParameterTable create(final TableSchema schema, final OffHeapBudget memory) {
        final ParameterTable table = new ParameterTable(TableSchemas.normalize(schema), writers, () -> null, memory);
        tables.add(table);
        return table;
    }

    @Override
    public void close() {
        writers.close();
    }

    /**
     * Blocks every writer inside a control task until {@code release} is counted down, and returns once all of them
     * are blocked: from then on pushes are queued but not applied. Count {@code release} down in {@code @AfterEach}
     * too, so that a failing test leaves no writer blocked. The future completes once the writers run again.
     */
    CompletableFuture<List<Object>> blockEveryWriter(final CountDownLatch release) throws InterruptedException {
        final CountDownLatch blocked = new CountDownLatch(writers.partitionCount());
        final CompletableFuture<List<Object>> stuck = writers.runOnAll(partition -> {
            blocked.countDown();
            try {
                release.await();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            return null;
        });
        assertThat(blocked.await(10, TimeUnit.SECONDS))
                .as("every writer blocked")
                .isTrue();
        return stuck;
    }

    // ---- helpers over a table

    /** Replaces the whole record of one key (values, optimizer slots, counter bits). */
    static void put(final ParameterTable table, final long key, final float... record) throws InterruptedException {
        assertThat(record).as("record width").hasSize(table.rowWidth());
        table.putRecords(new long[] {key}, record, 1);
    }

    /** The record of {@code key} from a snapshot: values, optimizer slots, then counters as raw int bits. */
    static float[] recordOf(final ParameterTable table, final long key) throws InterruptedException {
        final List<SlotSnapshot> snapshots = table.snapshot(slot -> slot == table.slotOf(key));
        assertThat(snapshots).as("snapshot of the slot of key %d", key).hasSize(1);
        final SlotSnapshot snapshot = snapshots.get(0);
        for (int row = 0; row < snapshot.rows(); row++) {
            if (snapshot.keys()[row] == key) {
                return Arrays.copyOfRange(
                        snapshot.records(), row * snapshot.rowWidth(), (row + 1) * snapshot.rowWidth());
            }
        }
        throw new AssertionError("no row for key " + key);
    }

    /** Whether {@code key} has a row (pulls never create one). */
    static boolean hasRow(final ParameterTable table, final long key) {
        final long[] keys = {key};
        return table.countAbsent(keys, table.slotsOf(keys)) == 0;
    }

    /** {@code count} keys of which at least one lives in each of the writers' partitions. */
    static long[] keysInEveryPartition(final ParameterTable table, final PartitionWriters writers, final int count) {
        final long[] keys = new long[count];
        for (int i = 0; i < count; i++) {
            keys[i] = 31L * i;
        }
        final long partitions = Arrays.stream(table.slotsOf(keys))
                .map(writers::partitionOf)
                .distinct()
                .count();
        assertThat(partitions).as("partitions the keys fall in").isEqualTo(writers.partitionCount());
        return keys;
    }

    /** A key other than {@code key} in the same slot. */
    static long sameSlotAs(final ParameterTable table, final long key) {
        for (long candidate = key + 1; ; candidate++) {
            if (table.slotOf(candidate) == table.slotOf(key)) {
                return candidate;
            }
        }
    }

    /** A key after {@code key} in another slot. */
    static long otherSlotThan(final ParameterTable table, final long key) {
        for (long candidate = key + 1; ; candidate++) {
            if (table.slotOf(candidate) != table.slotOf(key)) {
                return candidate;
            }
        }
    }
}
