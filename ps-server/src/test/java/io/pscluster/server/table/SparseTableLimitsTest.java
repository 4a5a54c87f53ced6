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
}
