package io.pscluster.server.table;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.wire.TableSchemas;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import org.junit.jupiter.api.Test;

class ParameterTableConcurrencyTest {
    private static final int PUSHERS = 4;
    private static final int PUSHES_PER_THREAD = 1000;
    private static final int KEYS = 100;
    private static final int DIM = 2;

    @Test
    void shouldLoseNoUpdateWhenFourThreadsPushTheSameKeysAtOnce() throws Exception {
        // 0.125 * 1 is exact and so is every partial sum down to -500: any lost or torn update shows.
        final ParameterTable table = new ParameterTable(TableSchemas.normalize(TableSchema.newBuilder()
                .setName("contended")
                .setKind(TableKind.SPARSE)
                .setDim(DIM)
                .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(0.125f))
                .build()));
        final long[] keys = contendedKeys(table);
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
                        table.push(keys, gradients);
                    }
                    return null;
                }));
            }
            // A reader alongside: every value it sees is some whole number of steps, never a torn or foreign one.
            final Future<Integer> reader = pool.submit(() -> {
                start.await();
                final float[] out = new float[KEYS * DIM];
                int reads = 0;
                while (pushing.get()) {
                    table.pull(keys, out);
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
            pushing.set(false);
            assertThat(reader.get(20, TimeUnit.SECONDS)).isPositive();
        } finally {
            pool.shutdownNow();
        }

        final float[] values = new float[KEYS * DIM];
        table.pull(keys, values);
        assertThat(values).containsOnly(-0.125f * PUSHERS * PUSHES_PER_THREAD);
        assertThat(table.rowCount()).isEqualTo(KEYS);
    }

    /** Half the keys share one slot so that threads meet on its lock and its growth; the rest are spread. */
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
