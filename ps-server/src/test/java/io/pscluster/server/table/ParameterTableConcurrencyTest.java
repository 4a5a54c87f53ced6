package io.pscluster.server.table;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

class ParameterTableConcurrencyTest {
    private static final int PUSHERS = 4;
    private static final int PUSHES_PER_THREAD = 1000;
    private static final int KEYS = 100;
    private static final int DIM = 2;

    private final TableFixture fixture = new TableFixture(2);

    @AfterEach
    void closeWriters() {
        fixture.close();
    }

    @Test
    void shouldLoseNoUpdateWhenFourThreadsPushTheSameKeysAtOnce() throws Exception {
        // 0.125 * 1 is exact and so is every partial sum down to -500: any lost or torn update shows.
        final ParameterTable table = fixture.create(TableSchema.newBuilder()
                .setName("contended")
                .setKind(TableKind.SPARSE)
                .setDim(DIM)
                .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(0.125f))
                .build());
        final long[] keys = contendedKeys(table);
        final int[] slots = table.slotsOf(keys);
        final float[] gradients = new float[KEYS * DIM];
        Arrays.fill(gradients, 1f);

        final ExecutorService pool = Executors.newFixedThreadPool(PUSHERS + 1);
        try {
            final CountDownLatch start = new CountDownLatch(1);
            final AtomicBoolean pushing = new AtomicBoolean(true);
            final List<Future<?>> pushers = new ArrayList<>();
            for (int t = 0; t < PUSHERS; t++) {
                pushers.add(pool.submit(() -> {
                    start.await();
                    for (int i = 0; i < PUSHES_PER_THREAD; i++) {
                        // Queued without waiting for each to apply, so that pushes of all threads interleave in
                        // the writers' queues; refused offers (backpressure) are retried.
                        while (!table.offerPush(keys, slots, gradients)) {
                            Thread.yield();
                        }
                    }
                    return null;
                }));
            }
            // A reader alongside: every value it sees is some whole number of steps, never a torn or foreign one.
            final Future<Integer> reader = pool.submit(() -> {
                start.await();
                int reads = 0;
                while (pushing.get()) {
                    final float[] out = table.pull(keys);
                    for (final float value : out) {
                        assertThat(value).isBetween(-500f, 0f);
                        assertThat(value * 8).isEqualTo((float) Math.rint(value * 8));
                    }
                    reads++;
                }
                return reads;
            });

            start.countDown();
            for (final Future<?> pusher : pushers) {
                pusher.get(20, TimeUnit.SECONDS);
            }
            table.awaitApplied();
            pushing.set(false);
            assertThat(reader.get(20, TimeUnit.SECONDS)).isPositive();
        } finally {
            pool.shutdownNow();
        }

        assertThat(table.pull(keys)).containsOnly(-0.125f * PUSHERS * PUSHES_PER_THREAD);
        assertThat(table.rowCount()).isEqualTo(KEYS);
        assertThat(fixture.writers().pending()).isZero();
    }

    /** Half the keys share one slot (so one partition's writer) and its index growth; the rest are spread. */
    private static long[] contendedKeys(final ParameterTable table) {
        final long[] keys = new long[KEYS];
        final int hotSlot = table.slotOf(0);
        int n = 0;
        for (long candidate = 0; n < KEYS / 2; candidate++) {
            if (table.slotOf(candidate) == hotSlot) {
                keys[n++] = candidate;
            }
        }
        for (long key = -1; n < KEYS; key--) {
            keys[n++] = key * 1_000_003L;
        }
        return keys;
    }
}
