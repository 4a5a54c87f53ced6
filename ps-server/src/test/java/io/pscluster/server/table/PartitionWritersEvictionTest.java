package io.pscluster.server.table;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import java.time.Duration;
import java.util.Arrays;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * TTL eviction is driven by time, not by idleness: a writer whose queue never runs dry still removes the rows past
 * their table's TTL, between the batches it drains.
 */
class PartitionWritersEvictionTest {
    private static final int PARTITIONS = 2;
    private static final int DIM = 4;
    /**
     * Room for thousands of queued pushes per partition: with the pushes below that is a few hundred milliseconds of
     * work queued ahead of each writer, far longer than a pusher thread waits for a core, so the queues never empty.
     */
    private static final int CAPACITY = 16_384;
    /** Keys per push: enough that applying one takes tens of microseconds. */
    private static final int HOT_KEYS = 2_048;

    private final TableFixture fixture = new TableFixture(PARTITIONS, CAPACITY);
    private final AtomicBoolean stop = new AtomicBoolean();

    @AfterEach
    void stopAndClose() {
        stop.set(true);
        fixture.close();
    }

    private static long[] keys(final long from, final int count) {
        final long[] keys = new long[count];
        for (int i = 0; i < count; i++) {
            keys[i] = from + i;
        }
        return keys;
    }

    private static float[] filled(final int length, final float value) {
        final float[] values = new float[length];
        Arrays.fill(values, value);
        return values;
    }

    @Test
    void shouldEvictRowsPastTheTtlWhenTheWritersQueuesNeverRunDry() throws Exception {
        final ParameterTable table = fixture.create(TableSchema.newBuilder()
                .setName("ttl-under-load")
                .setKind(TableKind.SPARSE)
                .setDim(DIM)
                .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(1f))
                .setTtlSeconds(1)
                .build());
        final long[] idle = keys(0, 40);
        final int[] idleSlots = table.slotsOf(idle);
        assertThat(Arrays.stream(idleSlots).map(fixture.writers()::partitionOf).distinct())
                .as("partitions of the idle keys")
                .hasSize(PARTITIONS);
        final long[] hot = keys(1_000_000, HOT_KEYS);
        final int[] hotSlots = table.slotsOf(hot);
        final float[] hotGradients = filled(HOT_KEYS * DIM, 1f);
        table.push(idle, filled(idle.length * DIM, 1f));
        table.push(hot, hotGradients);
        assertThat(table.rowCount()).isEqualTo(idle.length + HOT_KEYS);

        // One pusher keeps both partitions' queues full: whenever the shard refuses for want of room, it waits a
        // moment and offers again. The hot rows are touched all the time; the idle ones never again.
        final AtomicLong acknowledged = new AtomicLong();
        final CompletableFuture<Void> pusher = CompletableFuture.runAsync(
                () -> {
                    while (!stop.get()) {
                        if (table.offerPush(hot, hotSlots, hotGradients)) {
                            acknowledged.incrementAndGet();
                        } else {
                            LockSupport.parkNanos(TimeUnit.MICROSECONDS.toNanos(100));
                        }
                    }
                },
                task -> {
                    final Thread thread = new Thread(task, "eviction-test-pusher");
                    thread.setDaemon(true);
                    thread.start();
                });
        await().atMost(Duration.ofSeconds(10)).until(() -> fixture.writers().pending() > CAPACITY / 2);

        // Every look at the queues while waiting must find them busy, or the test would not show what it claims
        // (a writer that evicts only when idle would pass it).
        final AtomicInteger looks = new AtomicInteger();
        final AtomicInteger idleLooks = new AtomicInteger();
        await().atMost(Duration.ofSeconds(15))
                .pollInterval(Duration.ofMillis(50))
                .until(() -> {
                    looks.incrementAndGet();
                    if (fixture.writers().pending() == 0) {
                        idleLooks.incrementAndGet();
                    }
                    return table.countAbsent(idle, idleSlots) == idle.length;
                });
        final long acknowledgedAtEviction = acknowledged.get();

        assertThat(idleLooks)
                .as("looks (of %d) that found the queues empty", looks.get())
                .hasValue(0);
        assertThat(table.rowCount()).as("the hot rows, still pushed, are kept").isEqualTo(HOT_KEYS);
        assertThat(table.countAbsent(hot, hotSlots)).isZero();
        assertThat(table.pull(idle))
                .as("evicted rows read as their initial values")
                .containsOnly(0f);
        // The load went on through the eviction: pushes are still being acknowledged and applied.
        await().atMost(Duration.ofSeconds(10)).until(() -> acknowledged.get() > acknowledgedAtEviction + 100);
        assertThat(pusher).isNotDone();
        assertThat(fixture.writers().pending()).isPositive();
    }
}
