package io.pscluster.bench;

import io.pscluster.worker.PsTable;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Semaphore;
import java.util.concurrent.atomic.AtomicReference;

/**
 * kv10m: one push of 10M keys x 1 float in a single SDK call, then one pull of the same keys in a single call, into a
 * sparse SGD table of dim 1. The baseline sends the same bytes (8-byte key + 4-byte float per key; 8-byte keys in and
 * 4-byte floats out) over raw gRPC in ~1 MiB requests with 4 in flight, the fastest way VERSIONS.md found. Warm-up is
 * a few smaller push/pull pairs on other keys; then each side is measured {@code kvRounds} times, in turn, and the
 * median is reported. The first round's push creates the rows, later ones update them.
 *
 * <p>kv10m-random: the same, with the key array in random order. Both sides get the same array, shuffled again
 * before every round (a Fisher-Yates permutation with a fixed seed per round): the shard creates its rows in the order
 * of the first push, so one fixed permutation would still update them in the order they were laid out, as kv10m
 * does; a fresh one makes every later round reach rows in an order unrelated to where they are.
 */
final class KvWorkload implements Workload {
    static final String IN_ORDER = "kv10m";
    static final String RANDOM_ORDER = "kv10m-random";
    private static final int CHUNK_BYTES = 1 << 20;
    private static final int IN_FLIGHT = 4;
    private static final long SHUFFLE_SEED = 0x5eed_6b76L;

    private final String name;
    private final boolean shuffled;

    private KvWorkload(final String name, final boolean shuffled) {
        this.name = name;
        this.shuffled = shuffled;
    }

    /** kv10m: keys in the order {@link KeySets#block} makes them, the same every round. */
    static KvWorkload inOrder() {
        return new KvWorkload(IN_ORDER, false);
    }

    /** kv10m-random: the same keys, shuffled before every round. */
    static KvWorkload randomOrder() {
        return new KvWorkload(RANDOM_ORDER, true);
    }

    @Override
    public String name() {
        return name;
    }

    @Override
    public String describe(final BenchSettings settings) {
        return String.format(
                Locale.ROOT,
                "%,d keys x dim 1 (SGD)%s: one push call, then one pull call; baseline: ~1 MiB requests, %d in flight;"
                        + " median of %d round(s) after %d warm-up round(s) of %,d keys",
                settings.kvKeys(),
                shuffled ? " in random order, reshuffled every round" : "",
                IN_FLIGHT,
                settings.kvRounds(),
                settings.kvWarmupRounds(),
                settings.kvWarmupKeys());
    }

    @Override
    public List<BenchResult> run(final BenchHarness harness) throws Exception {
        final BenchSettings settings = harness.settings();
        final PsTable table = harness.createTable(name, 1);
        try {
            final SdkTarget ours = harness.ours(table);
            final RawGrpcTarget baseline = harness.baseline(1);
            final long[] warmKeys = KeySets.block(1, settings.kvWarmupKeys());
            final float[] warmGradients = KeySets.gradients(warmKeys.length);
            harness.progress("%s: warm-up %d x %,d keys per side", name, settings.kvWarmupRounds(), warmKeys.length);
            for (int round = 0; round < settings.kvWarmupRounds(); round++) {
                reorder(warmKeys, -1 - round);
                ours.push(warmKeys, warmGradients).join();
                ours.awaitApplied();
                check(ours.pull(warmKeys).join(), warmKeys.length);
                pushChunked(baseline, warmKeys, warmGradients);
                check(pullChunked(baseline, warmKeys), warmKeys.length);
            }

            final long[] keys = KeySets.block(0, settings.kvKeys());
            final float[] gradients = KeySets.gradients(keys.length);
            final int rounds = settings.kvRounds();
            final double[] push = new double[rounds];
            final double[] pushApplied = new double[rounds];
            final double[] pull = new double[rounds];
            final double[] rawPush = new double[rounds];
            final double[] rawPull = new double[rounds];
            for (int round = 0; round < rounds; round++) {
                harness.progress("%s: round %d of %d, %,d keys", name, round + 1, rounds, keys.length);
                reorder(keys, round);
                quiet();
                long start = System.nanoTime();
                ours.push(keys, gradients).join();
                push[round] = millisSince(start);
                ours.awaitApplied();
                pushApplied[round] = millisSince(start);

                quiet();
                start = System.nanoTime();
                check(ours.pull(keys).join(), keys.length);
                pull[round] = millisSince(start);

                quiet();
                start = System.nanoTime();
                pushChunked(baseline, keys, gradients);
                rawPush[round] = millisSince(start);

                quiet();
                start = System.nanoTime();
                check(pullChunked(baseline, keys), keys.length);
                rawPull[round] = millisSince(start);
            }

            final double keyCount = keys.length;
            final List<BenchResult> results = new ArrayList<>();
            results.add(BenchResult.time(name, "push_ms", median(push), median(rawPush), "ms"));
            results.add(BenchResult.rate(
                    name,
                    "push_keys_per_s",
                    keyCount * 1_000 / median(push),
                    keyCount * 1_000 / median(rawPush),
                    "keys/s"));
            if (harness.seesApplyBacklog()) {
                results.add(BenchResult.time(name, "push_applied_ms", median(pushApplied), median(rawPush), "ms"));
            }
            results.add(BenchResult.time(name, "pull_ms", median(pull), median(rawPull), "ms"));
            results.add(BenchResult.rate(
                    name,
                    "pull_keys_per_s",
                    keyCount * 1_000 / median(pull),
                    keyCount * 1_000 / median(rawPull),
                    "keys/s"));
            return results;
        } finally {
            harness.dropTable(table);
        }
    }

    /**
     * kv10m-random's shuffle of {@code keys} in place before a round (untimed); kv10m leaves them be. The gradients
     * are all equal, so moving the keys alone moves whole (key, gradient) pairs.
     */
    private void reorder(final long[] keys, final int round) {
        if (!shuffled) {
            return;
        }
        final SplittableRandom random = new SplittableRandom(SHUFFLE_SEED + round);
        for (int i = keys.length - 1; i > 0; i--) {
            final int j = random.nextInt(i + 1);
            final long swap = keys[i];
            keys[i] = keys[j];
            keys[j] = swap;
        }
    }

    /** Raw push in ~1 MiB requests (8-byte key + 4-byte float each), {@link #IN_FLIGHT} at a time. */
    private static void pushChunked(final RawGrpcTarget baseline, final long[] keys, final float[] gradients)
            throws InterruptedException {
        final int chunk = CHUNK_BYTES / (Long.BYTES + Float.BYTES * baseline.dim());
        inFlight(keys.length, chunk, (from, to) -> baseline.push(keys, gradients, from, to));
    }

    /** Raw pull in ~1 MiB requests of keys, {@link #IN_FLIGHT} at a time, each answered with its floats. */
    private static float[] pullChunked(final RawGrpcTarget baseline, final long[] keys) throws InterruptedException {
        final float[] values = new float[keys.length * baseline.dim()];
        inFlight(keys.length, CHUNK_BYTES / Long.BYTES, (from, to) -> baseline.pull(keys, from, to, values));
        return values;
    }

    @FunctionalInterface
    private interface RangeCall {
        CompletableFuture<Void> send(int from, int to);
    }

    private static void inFlight(final int count, final int chunk, final RangeCall call) throws InterruptedException {
        final Semaphore permits = new Semaphore(IN_FLIGHT);
        final AtomicReference<Throwable> failure = new AtomicReference<>();
        for (int from = 0; from < count && failure.get() == null; from += chunk) {
            permits.acquire();
            call.send(from, Math.min(count, from + chunk)).whenComplete((done, error) -> {
                if (error != null) {
                    failure.compareAndSet(null, error);
                }
                permits.release();
            });
        }
        permits.acquire(IN_FLIGHT);
        if (failure.get() != null) {
            throw new IllegalStateException("baseline call failed: " + failure.get(), failure.get());
        }
    }

    private static void check(final float[] values, final int keys) {
        if (values.length != keys) {
            throw new IllegalStateException("pulled " + values.length + " values for " + keys + " keys of dim 1");
        }
    }

    /** Collects the previous step's garbage, so that neither side pays for the other's. */
    private static void quiet() {
        System.gc();
    }

    private static double millisSince(final long start) {
        return (System.nanoTime() - start) / 1e6;
    }

    private static double median(final double[] values) {
        final double[] sorted = values.clone();
        Arrays.sort(sorted);
        final int middle = sorted.length / 2;
        return sorted.length % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
    }
}
