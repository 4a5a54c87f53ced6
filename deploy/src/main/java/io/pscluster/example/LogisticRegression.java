package io.pscluster.example;

import io.pscluster.proto.v1.InitializerKind;
import io.pscluster.proto.v1.InitializerSpec;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.RollbackEvent;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Consumer;

/**
 * The example training job: sparse logistic regression trained by W workers, each with its own {@link PsClient}
 * (as separate training processes would be), against one sparse table of dim 1 holding a weight per feature plus a
 * bias. Each mini-batch pulls the weights of its features, computes the log-loss gradient locally and pushes it;
 * the shards apply Adagrad.
 */
public final class LogisticRegression {
    /** The bias's key; libsvm feature indexes are never negative. */
    public static final long BIAS_KEY = -1;

    private LogisticRegression() {}

    /** Training settings. */
    public record Settings(String table, int workers, int epochs, int batchSize, float learningRate, long seed) {
        public Settings {
            if (workers < 1 || epochs < 1 || batchSize < 1 || !(learningRate > 0)) {
                throw new IllegalArgumentException("workers=" + workers + ", epochs=" + epochs + ", batchSize="
                        + batchSize + " must be >= 1 and learningRate=" + learningRate + " > 0");
            }
        }

        public static Settings defaults(final int workers, final int epochs) {
            return new Settings("lr_weights", workers, epochs, 64, 0.3f, 42);
        }
    }

    /** What one epoch achieved, measured on the whole data set after the epoch. */
    public record EpochResult(int epoch, double loss, double accuracy, long millis) {
        @Override
        public String toString() {
            return String.format("epoch %d: loss %.4f, accuracy %.2f%% (%d ms)", epoch, loss, accuracy * 100, millis);
        }
    }

    public static TableSchema schema(final Settings settings) {
        return TableSchema.newBuilder()
                .setName(settings.table())
                .setKind(TableKind.SPARSE)
                .setDim(1)
                .setOptimizer(OptimizerSpec.newBuilder()
                        .setKind(OptimizerKind.ADAGRAD)
                        .setLearningRate(settings.learningRate()))
                .setInitializer(InitializerSpec.newBuilder().setKind(InitializerKind.ZEROS))
                .build();
    }

    /** Trains and reports each epoch to {@code progress}; returns every epoch's result. */
    public static List<EpochResult> train(
            final String proxyAddress,
            final Dataset data,
            final Settings settings,
            final Consumer<EpochResult> progress)
            throws InterruptedException, ExecutionException {
        return train(proxyAddress, data, settings, progress, event -> {}, new AtomicLong());
    }

    /**
     * Trains as above; also reports each rollback the cluster announces (once, from the first worker's client) and
     * keeps in {@code longestStepNanos} the longest pull-and-push step of any worker (a failover shows as a stall).
     */
    public static List<EpochResult> train(
            final String proxyAddress,
            final Dataset data,
            final Settings settings,
            final Consumer<EpochResult> progress,
            final Consumer<RollbackEvent> rollbacks,
            final AtomicLong longestStepNanos)
            throws InterruptedException, ExecutionException {
        final List<PsClient> clients = new ArrayList<>();
        final ExecutorService workers = Executors.newFixedThreadPool(settings.workers());
        try {
            for (int w = 0; w < settings.workers(); w++) {
                clients.add(PsClient.connect(proxyAddress));
            }
            clients.get(0).addRollbackListener(rollbacks);
            clients.get(0).createTable(schema(settings));
            final List<PsTable> tables = new ArrayList<>();
            for (final PsClient client : clients) {
                tables.add(client.table(settings.table()));
            }
            final List<EpochResult> results = new ArrayList<>();
            for (int epoch = 1; epoch <= settings.epochs(); epoch++) {
                final long start = System.nanoTime();
                final List<Future<?>> running = new ArrayList<>();
                for (int w = 0; w < settings.workers(); w++) {
                    final int worker = w;
                    final int thisEpoch = epoch;
                    running.add(workers.submit(
                            () -> runWorker(tables.get(worker), data, settings, worker, thisEpoch, longestStepNanos)));
                }
                for (final Future<?> future : running) {
                    future.get();
                }
                final EpochResult result =
                        evaluate(tables.get(0), data, epoch, (System.nanoTime() - start) / 1_000_000);
                results.add(result);
                progress.accept(result);
            }
            return results;
        } finally {
            workers.shutdownNow();
            clients.forEach(PsClient::close);
        }
    }

    private static void runWorker(
            final PsTable table,
            final Dataset data,
            final Settings settings,
            final int worker,
            final int epoch,
            final AtomicLong longestStepNanos) {
        final int[] mine = java.util.stream.IntStream.range(0, data.size())
                .filter(i -> i % settings.workers() == worker)
                .toArray();
        shuffle(mine, new SplittableRandom(settings.seed() * 31 + epoch * 1009L + worker));
        for (int from = 0; from < mine.length; from += settings.batchSize()) {
            final int[] batch = Arrays.copyOfRange(mine, from, Math.min(mine.length, from + settings.batchSize()));
            final long stepStart = System.nanoTime();
            final long[] keys = uniqueKeys(data, batch);
            final float[] weights = table.pull(keys);
            final float[] gradients = new float[keys.length];
            for (final int sample : batch) {
                final float error = (float) (sigmoid(score(data, sample, keys, weights)) - data.labels()[sample]);
                final long[] features = data.keys()[sample];
                for (int f = 0; f < features.length; f++) {
                    gradients[Arrays.binarySearch(keys, features[f])] += error * data.values()[sample][f];
                }
                gradients[Arrays.binarySearch(keys, BIAS_KEY)] += error;
            }
            for (int i = 0; i < gradients.length; i++) {
                gradients[i] /= batch.length;
            }
            table.push(keys, gradients);
            longestStepNanos.accumulateAndGet(System.nanoTime() - stepStart, Math::max);
        }
    }

    /** Log-loss and accuracy of the current weights over the whole data set. */
    public static EpochResult evaluate(final PsTable table, final Dataset data, final int epoch, final long millis) {
        final int[] all = java.util.stream.IntStream.range(0, data.size()).toArray();
        final long[] keys = uniqueKeys(data, all);
        final float[] weights = table.pull(keys);
        double loss = 0;
        int correct = 0;
        for (int sample = 0; sample < data.size(); sample++) {
            final double p = sigmoid(score(data, sample, keys, weights));
            final int label = data.labels()[sample];
            loss -= label == 1 ? Math.log(Math.max(p, 1e-12)) : Math.log(Math.max(1 - p, 1e-12));
            if ((p >= 0.5) == (label == 1)) {
                correct++;
            }
        }
        return new EpochResult(epoch, loss / data.size(), (double) correct / data.size(), millis);
    }

    private static double score(final Dataset data, final int sample, final long[] keys, final float[] weights) {
        double score = weights[Arrays.binarySearch(keys, BIAS_KEY)];
        final long[] features = data.keys()[sample];
        for (int f = 0; f < features.length; f++) {
            score += weights[Arrays.binarySearch(keys, features[f])] * data.values()[sample][f];
        }
        return score;
    }

    /** The sorted distinct feature keys of the samples, plus the bias key. */
    static long[] uniqueKeys(final Dataset data, final int[] samples) {
        int total = 1;
        for (final int sample : samples) {
            total += data.keys()[sample].length;
        }
        final long[] keys = new long[total];
        int n = 0;
        keys[n++] = BIAS_KEY;
        for (final int sample : samples) {
            for (final long key : data.keys()[sample]) {
                keys[n++] = key;
            }
        }
        Arrays.sort(keys);
        int unique = 0;
        for (int i = 0; i < keys.length; i++) {
            if (i == 0 || keys[i] != keys[i - 1]) {
                keys[unique++] = keys[i];
            }
        }
        return Arrays.copyOf(keys, unique);
    }

    private static double sigmoid(final double z) {
        return 1 / (1 + Math.exp(-z));
    }

    private static void shuffle(final int[] values, final SplittableRandom random) {
        for (int i = values.length - 1; i > 0; i--) {
            final int j = random.nextInt(i + 1);
            final int swap = values[i];
            values[i] = values[j];
            values[j] = swap;
        }
    }
}
