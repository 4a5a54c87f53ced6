package io.pscluster.server.table;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.stream.LongStream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * A snapshot streamed while pushes go on holds every row exactly as it was at the cut: rows changed, removed or
 * created after the cut (ahead of the copy or behind it) show their state at the cut, or are absent if they were. The
 * reference is the whole-table copy {@link ParameterTable#snapshot} taken on the writers at the same point.
 */
class ShardSnapshotTest {
    private static final int ROWS = 120_000;
    private static final int DIM = 4;

    private final TableFixture fixture = new TableFixture(4);
    private final ParameterTable table = fixture.create(TableSchema.newBuilder()
            .setName("emb")
            .setKind(TableKind.SPARSE)
            .setDim(DIM)
            .setOptimizer(
                    OptimizerSpec.newBuilder().setKind(OptimizerKind.ADAGRAD).setLearningRate(0.5f))
            .build());
    private final long[] keys = LongStream.range(0, ROWS).map(i -> i * 7919).toArray();

    @AfterEach
    void closeWriters() {
        fixture.close();
    }

    @Test
    void shouldStreamEveryRowAsItWasAtTheCutWhatEverChangedAfter() throws Exception {
        pushAll(keys, 1f);
        final int freedBefore = table.slotOf(keys[1]);
        final int gone = table.slotOf(TableFixture.otherSlotThan(table, keys[1]));
        table.clearSlots(slot -> slot == freedBefore); // free records at the cut, reused after it
        final Map<Long, List<Integer>> atCut = reference();

        try (ShardSnapshot snapshot = ShardSnapshot.begin(
                fixture.writers(), List.of(table), slot -> true, new ShardSnapshot.Limits(1 << 12, 1L << 30))) {
            // Changes after the cut, all applied before the copy is read: most rows are ahead of the copy.
            pushAll(LongStream.of(keys).filter(key -> table.slotOf(key) != gone).toArray(), 3f);
            table.clearSlots(slot -> slot == gone); // rows removed after the cut (and not changed before that)
            pushAll(LongStream.range(0, 5_000).map(i -> -1 - i).toArray(), 2f); // rows created after the cut

            final Map<Long, List<Integer>> streamed = drain(snapshot);

            assertThat(streamed).hasSize(atCut.size());
            assertThat(streamed).isEqualTo(atCut);
            assertThat(snapshot.peakSavedBytes()).as("rows kept aside").isPositive();
            assertThat(snapshot.heldPushNanos())
                    .as("pushes held (limit never reached)")
                    .isZero();
        }
        // The changes were applied meanwhile, and nothing is kept aside any more.
        assertThat(TableFixture.hasRow(table, -1)).isTrue();
        assertThat(reference()).isNotEqualTo(atCut);
        assertThat(savedBytes()).isZero();
    }

    @Test
    void shouldHoldPushesWhileRowsKeptAsideAreOverTheLimitAndStillCutExactly() throws Exception {
        pushAll(keys, 1f);
        final Map<Long, List<Integer>> atCut = reference();
        final long limit = 32 << 10;

        final AtomicBoolean stop = new AtomicBoolean();
        final CompletableFuture<Integer> pusher;
        final Map<Long, List<Integer>> streamed;
        final long peak;
        final long held;
        try (ShardSnapshot snapshot = ShardSnapshot.begin(
                fixture.writers(),
                List.of(table),
                slot -> true,
                new ShardSnapshot.Limits(1 << 12, limit * fixture.writers().partitionCount()))) {
            pusher = CompletableFuture.supplyAsync(() -> {
                int rounds = 0;
                try {
                    while (!stop.get()) {
                        // Small pushes spread over the table, so that a batch of them stays small beside the limit.
                        for (int from = 0; from < ROWS && !stop.get(); from += 97 * 64) {
                            final long[] some = new long[64];
                            for (int i = 0; i < some.length; i++) {
                                some[i] = keys[(from + 97 * i + rounds) % ROWS];
                            }
                            table.push(some, filled(some.length * DIM, 0.25f));
                        }
                        rounds++;
                    }
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
                return rounds;
            });
            // Hand no batch back until the pushes ahead of the copy have filled the limit: the writers must then
            // take no more pushes until the copy catches up.
            final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (snapshot.peakSavedBytes() <= limit && System.nanoTime() < deadline) {
                Thread.sleep(1);
            }
            assertThat(snapshot.peakSavedBytes()).as("rows kept aside").isGreaterThan(limit);
            streamed = drain(snapshot);
            peak = snapshot.peakSavedBytes();
            held = snapshot.heldPushNanos();
        } finally {
            stop.set(true);
        }
        assertThat(pusher.get(60, TimeUnit.SECONDS))
                .as("push rounds during the copy")
                .isPositive();
        assertThat(streamed).isEqualTo(atCut);
        assertThat(held).as("time the writers held pushes for the copy").isPositive();
        // Checked before each batch of pushes: over by at most what one drain batch of small pushes keeps aside.
        assertThat(peak).isLessThan(limit + (2L << 20));
    }

    @Test
    void shouldDropWhatItKeptWhenAbandonedAndAllowTheNextSnapshot() throws Exception {
        pushAll(keys, 1f);
        final ShardSnapshot first = ShardSnapshot.begin(
                fixture.writers(), List.of(table), slot -> true, new ShardSnapshot.Limits(1 << 12, 1L << 30));
        assertThatThrownBy(() -> ShardSnapshot.begin(
                        fixture.writers(), List.of(table), slot -> true, ShardSnapshot.Limits.defaults()))
                .isInstanceOf(IllegalStateException.class)
                .hasMessageContaining("already being taken");
        pushAll(keys, 3f);
        assertThat(savedBytes()).isPositive();
        first.close();
        assertThat(savedBytes()).isZero();

        final Map<Long, List<Integer>> now = reference();
        try (ShardSnapshot second =
                ShardSnapshot.begin(fixture.writers(), List.of(table), slot -> true, ShardSnapshot.Limits.defaults())) {
            assertThat(drain(second)).isEqualTo(now);
        }
    }

    @Test
    void shouldEndAtOnceWithoutTables() throws Exception {
        try (ShardSnapshot snapshot =
                ShardSnapshot.begin(fixture.writers(), List.of(), slot -> true, ShardSnapshot.Limits.defaults())) {
            assertThat(drain(snapshot)).isEmpty();
        }
    }

    @Test
    void shouldStreamOnlyTheAcceptedSlots() throws Exception {
        pushAll(keys, 1f);
        final Map<Long, List<Integer>> even = new HashMap<>();
        reference().forEach((key, record) -> {
            if (table.slotOf(key) % 2 == 0) {
                even.put(key, record);
            }
        });
        try (ShardSnapshot snapshot = ShardSnapshot.begin(
                fixture.writers(), List.of(table), slot -> slot % 2 == 0, ShardSnapshot.Limits.defaults())) {
            assertThat(drain(snapshot)).isEqualTo(even);
        }
    }

    private void pushAll(final long[] which, final float gradient) throws InterruptedException {
        for (int from = 0; from < which.length; from += 4096) {
            final long[] part = Arrays.copyOfRange(which, from, Math.min(which.length, from + 4096));
            table.push(part, filled(part.length * DIM, gradient));
        }
    }

    private static float[] filled(final int length, final float value) {
        final float[] values = new float[length];
        Arrays.fill(values, value);
        return values;
    }

    /** Key -> raw bits of its whole record, from the writers' copy. */
    private Map<Long, List<Integer>> reference() throws InterruptedException {
        final Map<Long, List<Integer>> records = new HashMap<>();
        for (final SlotSnapshot slot : table.snapshot(s -> true)) {
            for (int row = 0; row < slot.rows(); row++) {
                records.put(slot.keys()[row], bits(slot.records(), row * slot.rowWidth(), slot.rowWidth()));
            }
        }
        return records;
    }

    private static Map<Long, List<Integer>> drain(final ShardSnapshot snapshot) throws InterruptedException {
        final Map<Long, List<Integer>> rows = new HashMap<>();
        while (!snapshot.done()) {
            final SnapshotBatch batch = snapshot.poll(100, TimeUnit.MILLISECONDS);
            if (batch != null) {
                collect(batch, rows);
                snapshot.release(batch);
            }
        }
        return rows;
    }

    private static void collect(final SnapshotBatch batch, final Map<Long, List<Integer>> rows) {
        for (int row = 0; row < batch.rows(); row++) {
            final List<Integer> bits = new ArrayList<>(batch.rowWidth());
            for (int i = 0; i < batch.rowWidth(); i++) {
                bits.add(batch.recordBits(row, i));
            }
            final List<Integer> previous = rows.put(batch.key(row), bits);
            assertThat(previous).as("key %d streamed twice", batch.key(row)).isNull();
        }
    }

    private static List<Integer> bits(final float[] records, final int from, final int width) {
        final List<Integer> bits = new ArrayList<>(width);
        for (int i = from; i < from + width; i++) {
            bits.add(Float.floatToRawIntBits(records[i]));
        }
        return bits;
    }

    /** Bytes kept aside for a snapshot over every partition, read on the writers. */
    private long savedBytes() throws InterruptedException {
        return ParameterTable.await(
                        fixture.writers().runOnAll(p -> table.partition(p).snapshotHeldBytes()))
                .stream()
                .mapToLong(Long::longValue)
                .sum();
    }
}
