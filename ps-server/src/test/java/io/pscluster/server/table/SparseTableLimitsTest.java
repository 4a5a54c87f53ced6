package io.pscluster.server.table;

import static io.pscluster.server.table.TableFixture.hasRow;
import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import java.time.Duration;
import java.util.Arrays;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/** The limits of a sparse table on one shard: rows evicted after their TTL, and the cap on rows per shard. */
class SparseTableLimitsTest {
    private final TableFixture fixture = new TableFixture(2);

    @AfterEach
    void closeWriters() {
        fixture.close();
    }

    /** SGD with lr 1 from zeros: a row's value is minus the sum of the gradients it took. */
    private ParameterTable table(final long maxRowsPerShard, final long ttlSeconds) {
        return fixture.create(TableSchema.newBuilder()
                .setName("sparse")
                .setKind(TableKind.SPARSE)
                .setDim(2)
                .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(1f))
                .setMaxRowsPerShard(maxRowsPerShard)
                .setTtlSeconds(ttlSeconds)
                .build());
    }

    private static long[] keys(final int from, final int count) {
        final long[] keys = new long[count];
        for (int i = 0; i < count; i++) {
            keys[i] = from + i;
        }
        return keys;
    }

    private static float[] gradients(final int keys, final float value) {
        final float[] gradients = new float[keys * 2];
        Arrays.fill(gradients, value);
        return gradients;
    }

    @Test
    void shouldEvictIdleRowsButKeepRowsStillPushedWhenTheTtlPasses() throws InterruptedException {
        final ParameterTable table = table(0, 1);
        final long[] idle = keys(0, 40);
        final long[] kept = {1_000};
        final int[] idleSlots = table.slotsOf(idle);
        assertThat(Arrays.stream(idleSlots).map(slot -> slot % 2).distinct().count())
                .as("partitions of the idle keys")
                .isEqualTo(2);
        final long pushedAt = System.nanoTime();
        table.push(idle, gradients(idle.length, 1f));
        table.push(kept, gradients(1, -1f));
        final AtomicInteger keptPushes = new AtomicInteger(1);
        assertThat(table.rowCount()).isEqualTo(41);

        // The writers evict when idle, about once a second; the kept key is pushed every 200 ms meanwhile.
        await().atMost(Duration.ofSeconds(10))
                .pollInterval(Duration.ofMillis(200))
                .pollInSameThread()
                .until(() -> {
                    table.push(kept, gradients(1, -1f));
                    keptPushes.incrementAndGet();
                    return table.countAbsent(idle, idleSlots) == idle.length;
                });

        assertThat(Duration.ofNanos(System.nanoTime() - pushedAt))
                .as("time until the idle rows went")
                .isGreaterThanOrEqualTo(Duration.ofSeconds(1));
        assertThat(table.rowCount()).isEqualTo(1);
        assertThat(hasRow(table, kept[0])).isTrue();
        // Every push landed on the same row: it was never evicted and created again.
        assertThat(table.pull(kept)).containsOnly((float) keptPushes.get());
        assertThat(table.pull(idle))
                .as("evicted rows read as their initial values")
                .containsOnly(0f);

        await().atMost(Duration.ofSeconds(10))
                .pollInterval(Duration.ofMillis(100))
                .until(() -> table.rowCount() == 0);
        assertThat(table.pull(kept)).containsOnly(0f);

        table.push(idle, gradients(idle.length, 3f));
        assertThat(table.rowCount()).as("evicted keys pushed again").isEqualTo(idle.length);
        assertThat(table.pull(idle)).as("rows created afresh").containsOnly(-3f);
    }

    @Test
    void shouldNeverEvictWhenNoTtlIsSet() throws InterruptedException {
        final ParameterTable table = table(0, 0);
        final ParameterTable withTtl = table(0, 1);
        table.push(keys(0, 10), gradients(10, 1f));
        withTtl.push(keys(0, 10), gradients(10, 1f));

        // Wait for the writers to have run their eviction duty on the other table: then this one had its turn.
        await().atMost(Duration.ofSeconds(10))
                .pollInterval(Duration.ofMillis(100))
                .until(() -> withTtl.rowCount() == 0);

        assertThat(table.rowCount()).isEqualTo(10);
    }

    @Test
    void shouldDropNewRowsAndCountThemWhenEachPartitionsShareOfTheCapIsFull() throws InterruptedException {
        final ParameterTable table = table(100, 0);
        assertThat(table.maxRows()).isEqualTo(100);
        final long[] keys = keys(0, 300);

        for (int from = 0; from < keys.length; from += 30) {
            table.push(Arrays.copyOfRange(keys, from, from + 30), gradients(30, 1f));
        }

        // 300 keys fill both halves (50 rows per partition); the 200 others were refused by the writers.
        assertThat(table.rowCount()).isEqualTo(100);
        assertThat(table.droppedRows()).isEqualTo(200);
        final float[] values = table.pull(keys);
        int created = 0;
        for (int i = 0; i < keys.length; i++) {
            if (hasRow(table, keys[i])) {
                created++;
                assertThat(values[2 * i]).as("key %d", keys[i]).isEqualTo(-1f);
            } else {
                assertThat(values[2 * i]).as("key %d", keys[i]).isZero();
            }
        }
        assertThat(created).isEqualTo(100);

        // Rows that exist keep taking updates; new keys are still dropped.
        table.push(keys, gradients(keys.length, 1f));

        assertThat(table.rowCount()).isEqualTo(100);
        assertThat(table.droppedRows()).isEqualTo(400);
        final float[] after = table.pull(keys);
        for (int i = 0; i < keys.length; i++) {
            assertThat(after[2 * i]).as("key %d", keys[i]).isEqualTo(values[2 * i] == 0f ? 0f : -2f);
        }
    }

    @Test
    void shouldMakeRoomUnderTheCapWhenRowsAreCleared() throws InterruptedException {
        final ParameterTable table = table(100, 0);
        table.push(keys(0, 300), gradients(300, 1f));
        assertThat(table.rowCount()).isEqualTo(100);

        table.clearSlots(slot -> true);
        table.push(keys(1_000, 60), gradients(60, 1f));

        assertThat(table.rowCount()).isBetween(50L, 60L);
    }

    /**
     * An acknowledged (admitted) push names a key whose row exists, so it promises no row for it; TTL evicts the row
     * before the push is applied, and another push fills the cap meanwhile: the push creates the row again past the
     * cap (it was acknowledged), rather than dropping it. The push is held behind a control task on its partition's
     * writer, which takes the eviction pass itself, on that writer, once the push is queued.
     */
    @Test
    void shouldCreateTheRowOfAnAdmittedPushWhoseKeyWasEvictedBeforeItWasApplied() throws Exception {
        final ParameterTable table = table(8, 2);
        final PartitionWriters writers = fixture.writers();
        final long[] inSecond = keysIn(table, 1, 8);
        final long evicted = keysIn(table, 0, 1)[0];
        final long late = inSecond[7];
        final java.util.concurrent.CountDownLatch evict = new java.util.concurrent.CountDownLatch(1);
        final java.util.concurrent.CountDownLatch apply = new java.util.concurrent.CountDownLatch(1);
        try {
            table.push(new long[] {evicted}, gradients(1, 1f));
            final int touchedBy = table.touchNow();
            final java.util.concurrent.CompletableFuture<Boolean> held = writers.runOn(0, partition -> {
                try {
                    evict.await();
                    while (!table.evictStep(partition)) {
                        // The whole pass, on this writer.
                    }
                    apply.await();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
                return true;
            });
            await().atMost(Duration.ofSeconds(10)).until(() -> table.touchNow() > touchedBy + 2);
            final long[] seven = Arrays.copyOf(inSecond, 7);
            // Queued, not awaited: awaiting waits for the held writer too.
            assertThat(table.offerPush(seven, table.slotsOf(seven), gradients(7, 1f)))
                    .isTrue();
            await().atMost(Duration.ofSeconds(10)).until(() -> table.rowCount() == 8);

            queueAdmitted(table, evicted, "admitted: its row exists");
            evict.countDown();
            await().atMost(Duration.ofSeconds(10)).until(() -> table.rowCount() == 7);
            queueAdmitted(table, late, "the cap's last row, freed by the eviction");
            await().atMost(Duration.ofSeconds(10)).until(() -> table.rowCount() == 8);
            apply.countDown();
            assertThat(held.get(10, java.util.concurrent.TimeUnit.SECONDS)).isTrue();
            table.awaitApplied();

            assertThat(table.droppedRows()).as("rows dropped").isZero();
            assertThat(table.rowCount())
                    .as("every admitted row, one past the cap")
                    .isEqualTo(9);
            assertThat(table.rowsCounted()).isEqualTo(9);
            assertThat(table.pull(new long[] {evicted, late})).containsExactly(-1f, -1f, -1f, -1f);
        } finally {
            evict.countDown();
            apply.countDown();
        }
    }

    /** The first {@code count} keys from 0 up whose rows live in {@code partition}. */
    private long[] keysIn(final ParameterTable table, final int partition, final int count) {
        return java.util.stream.LongStream.iterate(0, key -> key + 1)
                .filter(key -> fixture.writers().partitionOf(table.slotOf(key)) == partition)
                .limit(count)
                .toArray();
    }

    /** Admits a push of {@code key} (gradient 1) as a shard does, which must succeed, and queues it. */
    private static void queueAdmitted(final ParameterTable table, final long key, final String why) {
        final long[] keys = {key};
        final int[] slots = table.slotsOf(keys);
        final ParameterTable.RowPromise promise = table.promiseNewRows(keys, slots);
        assertThat(promise).as(why).isNotNull();
        assertThat(table.offerPush(keys, slots, gradients(1, 1f), promise)).isTrue();
    }
}
