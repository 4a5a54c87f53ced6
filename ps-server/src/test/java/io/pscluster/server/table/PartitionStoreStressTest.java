package io.pscluster.server.table;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * Lock-free reads against the single writers, under load: pushers queue updates from several threads while readers
 * pull the same rows, and the rows are created (growing each partition's index), cleared and recreated (reusing
 * records for other keys) meanwhile.
 *
 * <p>Every update keeps a row's 16 elements equal, so a reader that copies half of an old row and half of a new one
 * (a torn read), or a row that belongs to another key, sees elements that differ or a value the key never had.
 */
class PartitionStoreStressTest {
    private static final int DIM = 16;
    private static final int KEYS = 4_000;
    private static final int PUSHERS = 3;
    private static final int READERS = 2;
    private static final int BATCH = 8;
    private static final long RUN_NANOS = TimeUnit.SECONDS.toNanos(3);
    private static final int MAX_PUSHES_PER_THREAD = 200_000;

    // A small capacity, so that pushers also meet backpressure (refused offers) and retry.
    private final TableFixture fixture = new TableFixture(2, 64);
    private final ExecutorService pool = Executors.newFixedThreadPool(PUSHERS + READERS);

    @AfterEach
    void stopThreads() throws InterruptedException {
        pool.shutdownNow();
        assertThat(pool.awaitTermination(10, TimeUnit.SECONDS)).isTrue();
        fixture.close();
    }

    /** SGD with lr 1 from zeros: a row holds minus the sum of its gradients in every element. */
    private ParameterTable table() {
        return fixture.create(TableSchema.newBuilder()
                .setName("stress")
                .setKind(TableKind.SPARSE)
                .setDim(DIM)
                .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(1f))
                .build());
    }

    private static long[] distinctKeys() {
        final long[] keys = new long[KEYS];
        for (int i = 0; i < KEYS; i++) {
            keys[i] = (i - KEYS / 2) * 1_000_003L; // negative and positive, spread over slots
        }
        return keys;
    }

    @Test
    void shouldNeverTearARowNorLoseAnUpdateWhenThreeThreadsPushAndTwoPullAtOnce() throws Exception {
        final ParameterTable table = table();
        final long[] keys = distinctKeys();
        final CountDownLatch readersStarted = new CountDownLatch(READERS);
        final AtomicBoolean reading = new AtomicBoolean(true);
        final long deadline = System.nanoTime() + RUN_NANOS;

        final List<Future<ReaderStats>> readers = new ArrayList<>();
        for (int r = 0; r < READERS; r++) {
            final long seed = 100 + r;
            readers.add(pool.submit(() -> read(table, keys, seed, readersStarted, reading)));
        }
        // Pushers start once readers are reading and reach new keys gradually over the first half of the run, so
        // that rows are created (and each index grows from 16 entries to thousands) while readers probe it.
        readersStarted.await();
        final List<Future<PusherStats>> pushers = new ArrayList<>();
        for (int t = 0; t < PUSHERS; t++) {
            final long seed = t;
            pushers.add(pool.submit(() -> push(table, keys, seed, deadline - RUN_NANOS, deadline)));
        }

        final long[] expected = new long[KEYS];
        long pushes = 0;
        long refusals = 0;
        for (final Future<PusherStats> pusher : pushers) {
            final PusherStats stats = pusher.get(30, TimeUnit.SECONDS);
            for (int k = 0; k < KEYS; k++) {
                expected[k] += stats.added[k];
            }
            pushes += stats.pushes;
            refusals += stats.refusals;
        }
        table.awaitApplied();
        reading.set(false);
        long rowsRead = 0;
        long batchesWhileGrowing = 0;
        for (final Future<ReaderStats> reader : readers) {
            final ReaderStats stats = reader.get(30, TimeUnit.SECONDS);
            rowsRead += stats.rowsRead;
            batchesWhileGrowing += stats.batchesWhileGrowing;
        }

        System.out.printf(
                "stress: %d pushes (%d refused offers), %d rows read, %d batches read while rows were created%n",
                pushes, refusals, rowsRead, batchesWhileGrowing);
        assertThat(pushes).as("pushes").isGreaterThan(1_000);
        assertThat(rowsRead).as("rows read alongside").isGreaterThan(10_000);
        assertThat(batchesWhileGrowing)
                .as("batches read while rows were created")
                .isGreaterThanOrEqualTo(100);

        // Every update applied exactly once: each key holds the sum of what all threads added (exact: < 2^24).
        final float[] values = table.pull(keys);
        long touched = 0;
        for (int k = 0; k < KEYS; k++) {
            assertThat(expected[k]).isLessThan(1 << 24);
            for (int i = 0; i < DIM; i++) {
                assertThat(values[k * DIM + i])
                        .as("key %d element %d", keys[k], i)
                        .isEqualTo((float) expected[k]);
            }
            if (expected[k] > 0) {
                touched++;
            }
        }
        assertThat(table.rowCount()).isEqualTo(touched);
        assertThat(table.droppedRows()).isZero();
        assertThat(fixture.writers().pending()).isZero();
    }

    private record PusherStats(long[] added, long pushes, long refusals) {}

    private record ReaderStats(long rowsRead, long batchesWhileGrowing) {}

    /**
     * Pushes batches of random keys, each with a gradient of -k in every element (k in 1..4), until the deadline. The
     * keys are drawn from a prefix of {@code keys} that grows to all of them by half time.
     */
    private static PusherStats push(
            final ParameterTable table, final long[] keys, final long seed, final long start, final long deadline) {
        final Random random = new Random(seed);
        final long[] added = new long[KEYS];
        long pushes = 0;
        long refusals = 0;
        long now;
        while ((now = System.nanoTime()) < deadline && pushes < MAX_PUSHES_PER_THREAD) {
            final int reachable = (int) Math.min(KEYS, 1 + KEYS * (now - start) / (RUN_NANOS / 2));
            // Fresh arrays every time: a queued push is applied later and keeps them. A batch may repeat a key.
            final long[] batch = new long[BATCH];
            final float[] gradients = new float[BATCH * DIM];
            final int[] chosen = new int[BATCH];
            for (int b = 0; b < BATCH; b++) {
                chosen[b] = random.nextInt(reachable);
                batch[b] = keys[chosen[b]];
                Arrays.fill(gradients, b * DIM, (b + 1) * DIM, -(1 + random.nextInt(4)));
            }
            final int[] slots = table.slotsOf(batch);
            while (!table.offerPush(batch, slots, gradients)) {
                refusals++;
                Thread.yield();
            }
            for (int b = 0; b < BATCH; b++) {
                added[chosen[b]] -= (long) gradients[b * DIM];
            }
            pushes++;
        }
        return new PusherStats(added, pushes, refusals);
    }

    /**
     * Pulls batches of random keys until told to stop. Every row must have 16 equal elements holding a whole number
     * >= 0, never smaller than what this reader saw for the key before (values only grow). Counts the batches read
     * while fewer than 90% of the keys had rows, that is while the writers were creating rows and growing indexes.
     */
    private static ReaderStats read(
            final ParameterTable table,
            final long[] keys,
            final long seed,
            final CountDownLatch started,
            final AtomicBoolean reading) {
        final Random random = new Random(seed);
        final float[] lastSeen = new float[KEYS];
        started.countDown();
        long rowsRead = 0;
        long batchesWhileGrowing = 0;
        final int[] chosen = new int[32];
        final long[] batch = new long[chosen.length];
        while (reading.get()) {
            for (int b = 0; b < chosen.length; b++) {
                chosen[b] = random.nextInt(KEYS);
                batch[b] = keys[chosen[b]];
            }
            final long rows = table.rowCount();
            final float[] values = table.pull(batch);
            if (rows > 0 && rows < KEYS * 9L / 10) {
                batchesWhileGrowing++;
            }
            for (int b = 0; b < chosen.length; b++) {
                final float first = values[b * DIM];
                for (int i = 1; i < DIM; i++) {
                    if (Float.floatToRawIntBits(values[b * DIM + i]) != Float.floatToRawIntBits(first)) {
                        throw new AssertionError("torn row of key " + batch[b] + ": "
                                + Arrays.toString(Arrays.copyOfRange(values, b * DIM, (b + 1) * DIM)));
                    }
                }
                if (first < lastSeen[chosen[b]] || first != Math.rint(first)) {
                    throw new AssertionError("key " + batch[b] + " read " + first + " after " + lastSeen[chosen[b]]);
                }
                lastSeen[chosen[b]] = first;
            }
            rowsRead += chosen.length;
        }
        return new ReaderStats(rowsRead, batchesWhileGrowing);
    }

    @Test
    void shouldNeverShowAnotherKeysRowWhenRowsAreClearedAndRecreatedWhileRead() throws Exception {
        final ParameterTable table = table();
        final long[] keys = distinctKeys();
        final AtomicBoolean reading = new AtomicBoolean(true);
        final CountDownLatch readersStarted = new CountDownLatch(READERS);

        // Key k's row, while it exists, holds k + 1 in every element; without a row it reads as zeros.
        final List<Future<Long>> readers = new ArrayList<>();
        for (int r = 0; r < READERS; r++) {
            final Random random = new Random(200 + r);
            readers.add(pool.submit(() -> {
                readersStarted.countDown();
                long rowsRead = 0;
                final int[] chosen = new int[32];
                final long[] batch = new long[chosen.length];
                while (reading.get()) {
                    for (int b = 0; b < chosen.length; b++) {
                        chosen[b] = random.nextInt(KEYS);
                        batch[b] = keys[chosen[b]];
                    }
                    final float[] values = table.pull(batch);
                    for (int b = 0; b < chosen.length; b++) {
                        final float own = chosen[b] + 1;
                        for (int i = 0; i < DIM; i++) {
                            final float value = values[b * DIM + i];
                            if (value != own && value != 0f) {
                                throw new AssertionError("key " + batch[b] + " (own value " + own + ") read "
                                        + Arrays.toString(Arrays.copyOfRange(values, b * DIM, (b + 1) * DIM)));
                            }
                        }
                    }
                    rowsRead += chosen.length;
                }
                return rowsRead;
            }));
        }
        readersStarted.await();

        // Each round puts every key in a new random order (so that freed records go to other keys than before),
        // then clears a random half of the slots (leaving deleted index entries and free records behind).
        final Random random = new Random(7);
        final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(2);
        int rounds = 0;
        while (System.nanoTime() < deadline || rounds < 5) {
            final int[] order = shuffled(random);
            final long[] roundKeys = new long[KEYS];
            final float[] records = new float[KEYS * DIM];
            for (int i = 0; i < KEYS; i++) {
                roundKeys[i] = keys[order[i]];
                Arrays.fill(records, i * DIM, (i + 1) * DIM, order[i] + 1);
            }
            table.putRecords(roundKeys, records, KEYS);
            final int parity = random.nextInt(2);
            final int modulus = 2 + random.nextInt(3);
            table.clearSlots(slot -> (slot / 2) % modulus == parity);
            rounds++;
        }
        reading.set(false);
        long rowsRead = 0;
        for (final Future<Long> reader : readers) {
            rowsRead += reader.get(30, TimeUnit.SECONDS);
        }

        System.out.printf("churn: %d rounds, %d rows read%n", rounds, rowsRead);
        assertThat(rounds).isGreaterThanOrEqualTo(5);
        assertThat(rowsRead).as("rows read alongside").isGreaterThan(10_000);
        assertThat(table.rowCount()).isBetween(1L, (long) KEYS - 1);
    }

    private static int[] shuffled(final Random random) {
        final int[] order = new int[KEYS];
        for (int i = 0; i < KEYS; i++) {
            order[i] = i;
        }
        for (int i = KEYS - 1; i > 0; i--) {
            final int j = random.nextInt(i + 1);
            final int swap = order[i];
            order[i] = order[j];
            order[j] = swap;
        }
        return order;
    }
}
