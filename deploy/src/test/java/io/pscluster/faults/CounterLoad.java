package io.pscluster.faults;

import io.pscluster.local.CounterTable;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicLongArray;

/**
 * A counter job: every push adds exactly 1 to each of its keys (SGD, learning rate 1, gradient -1, zeros), so a
 * key's final value must equal the number of acknowledged pushes that touched it. Any lost or doubly applied push
 * shows. A push that failed (after the SDK's own retries) may or may not have been applied: it is counted apart, and
 * the check allows a key's value anywhere in {@code [acknowledged, acknowledged + uncertain]}.
 */
final class CounterLoad implements AutoCloseable {
    static final int KEYS = 4096;
    private static final int KEYS_PER_PUSH = 64;

    private final PsClient client;
    private final PsTable table;
    private final AtomicLongArray acknowledged = new AtomicLongArray(KEYS);
    private final AtomicLongArray uncertain = new AtomicLongArray(KEYS);
    private final AtomicLong pushes = new AtomicLong();
    private final AtomicLong failures = new AtomicLong();
    private final List<Throwable> failureSamples = new CopyOnWriteArrayList<>();
    private final AtomicBoolean running = new AtomicBoolean();
    private final List<Thread> threads = new ArrayList<>();

    CounterLoad(final String proxyAddress, final String tableName) {
        this(proxyAddress, tableName, 60_000);
    }

    /** With a call deadline of {@code deadlineMs} (the SDK retries within it). */
    CounterLoad(final String proxyAddress, final String tableName, final long deadlineMs) {
        this.client = PsClient.connect(
                new PsClient.Context().proxyAddress(proxyAddress).deadlineMs(deadlineMs));
        this.table = client.createTable(CounterTable.schema(tableName));
    }

    static long key(final int index) {
        return index * 1_000_003L + 17;
    }

    PsClient client() {
        return client;
    }

    /** Starts {@code threads} pushers, each pushing batches of distinct random keys until {@link #stop()}. */
    void start(final int threadCount) {
        running.set(true);
        for (int t = 0; t < threadCount; t++) {
            final SplittableRandom random = new SplittableRandom(1000 + t);
            final Thread thread = new Thread(() -> run(random), "counter-" + t);
            thread.setDaemon(true);
            threads.add(thread);
            thread.start();
        }
    }

    /** Pushes one batch synchronously; returns true if it was acknowledged. */
    boolean pushOnce(final SplittableRandom random) {
        final int[] indexes =
                random.ints(0, KEYS).distinct().limit(KEYS_PER_PUSH).toArray();
        final long[] keys = Arrays.stream(indexes).mapToLong(CounterLoad::key).toArray();
        final float[] gradients = new float[keys.length];
        Arrays.fill(gradients, -1f);
        try {
            table.push(keys, gradients);
            for (final int index : indexes) {
                acknowledged.incrementAndGet(index);
            }
            pushes.incrementAndGet();
            return true;
        } catch (RuntimeException e) {
            for (final int index : indexes) {
                uncertain.incrementAndGet(index);
            }
            failures.incrementAndGet();
            if (failureSamples.size() < 5) {
                failureSamples.add(e);
            }
            return false;
        }
    }

    private void run(final SplittableRandom random) {
        while (running.get()) {
            pushOnce(random);
        }
    }

    /** Stops the pushers and waits for the push each was making. */
    void stop() throws InterruptedException {
        running.set(false);
        for (final Thread thread : threads) {
            thread.join(120_000);
        }
    }

    long pushes() {
        return pushes.get();
    }

    long failures() {
        return failures.get();
    }

    List<Throwable> failureSamples() {
        return failureSamples;
    }

    /**
     * Pulls every key and compares with what was acknowledged; returns a description of each key that is off (at
     * most 10), empty when all agree. Call after {@link #stop()} and once every acknowledged push is applied.
     */
    List<String> mismatches() {
        final long[] keys = new long[KEYS];
        for (int i = 0; i < KEYS; i++) {
            keys[i] = key(i);
        }
        final float[] values = table.pull(keys);
        final List<String> wrong = new ArrayList<>();
        for (int i = 0; i < KEYS && wrong.size() < 10; i++) {
            final long low = acknowledged.get(i);
            final long high = low + uncertain.get(i);
            if (values[i] < low || values[i] > high) {
                wrong.add("key " + keys[i] + ": value " + values[i] + ", acknowledged pushes " + low
                        + (high > low ? " (+" + (high - low) + " failed)" : ""));
            }
        }
        return wrong;
    }

    @Override
    public void close() throws InterruptedException {
        stop();
        client.close();
    }
}
