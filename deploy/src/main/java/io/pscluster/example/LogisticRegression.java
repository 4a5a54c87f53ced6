package io.pscluster.example;

import io.pscluster.proto.v1.InitializerKind;
import io.pscluster.proto.v1.InitializerSpec;
import io.pscluster.proto.v1.JobSpec;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.RollbackEvent;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.proto.v1.UpdateMode;
import io.pscluster.wire.Security;
import io.pscluster.wire.UpdateModes;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.CancellationException;
import java.util.concurrent.CompletionService;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorCompletionService;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Consumer;

/**
 * The example training job: sparse logistic regression trained by W workers, each with its own {@link PsClient}
 * (as separate training processes would be), against one sparse table of dim 1 holding a weight per feature plus a
 * bias. The workers form one job ({@link Settings#jobSpec()}: its id, its update mode, W expected workers). Each
 * mini-batch step pulls the weights of its features, computes the log-loss gradient locally, pushes it and ends the
 * worker's clock; the shards apply Adagrad.
 *
 * <p>What each worker sees per step depends only on the seed, the epoch and the worker's rank (its place among the
 * job's worker ids, which is also the order a SYNC shard combines their gradients in), never on thread timing: worker
 * {@code r} takes the samples {@code i % W == r}, shuffled by a generator seeded from (seed, epoch, r). Every worker
 * takes the same number of steps per epoch (a worker whose samples ran out only ends its clock), since a SYNC clock is
 * applied only once every worker has ended it. So in SYNC mode two runs with the same seed on fresh tables end with
 * the same weights to the bit.
 */
public final class LogisticRegression {
    /** The bias's key; libsvm feature indexes are never negative. */
    public static final long BIAS_KEY = -1;

    private LogisticRegression() {}

    /**
     * Training settings.
     *
     * @param job the job's id, mode and staleness; its expected workers are set from {@code workers} (see
     *     {@link #jobSpec()}).
     */
    public record Settings(
            String table, int workers, int epochs, int batchSize, float learningRate, long seed, JobSpec job) {
        public Settings {
            if (workers < 1 || epochs < 1 || batchSize < 1 || !(learningRate > 0)) {
                throw new IllegalArgumentException("workers=" + workers + ", epochs=" + epochs + ", batchSize="
                        + batchSize + " must be >= 1 and learningRate=" + learningRate + " > 0");
            }
            if (table == null || table.isEmpty()) {
                throw new IllegalArgumentException("table is empty: name the table to train");
            }
            if (job == null) {
                throw new IllegalArgumentException("job is null: give the job's id and update mode");
            }
            job = UpdateModes.validate(job);
        }

        /** Asynchronous, in the job {@link #defaultJobId(String) named after the table}. */
        public Settings(
                final String table,
                final int workers,
                final int epochs,
                final int batchSize,
                final float learningRate,
                final long seed) {
            this(table, workers, epochs, batchSize, learningRate, seed, asyncJob(defaultJobId(table)));
        }

        public static Settings defaults(final int workers, final int epochs) {
            return new Settings("lr_weights", workers, epochs, 64, 0.3f, 42);
        }

        /** The job id used when none is given: {@code train-<table>}, so that two tables train as two jobs. */
        public static String defaultJobId(final String table) {
            return "train-" + table;
        }

        /** These settings with the update mode given as {@code async}, {@code sync} or {@code ssp:S}. */
        public Settings withMode(final String mode) {
            return new Settings(
                    table,
                    workers,
                    epochs,
                    batchSize,
                    learningRate,
                    seed,
                    UpdateModes.parse(mode, job.toBuilder()).build());
        }

        /** These settings in the job {@code jobId}. */
        public Settings withJobId(final String jobId) {
            return new Settings(
                    table,
                    workers,
                    epochs,
                    batchSize,
                    learningRate,
                    seed,
                    job.toBuilder().setJobId(jobId).build());
        }

        /** These settings on another table (the job id stays as it is). */
        public Settings withTable(final String name) {
            return new Settings(name, workers, epochs, batchSize, learningRate, seed, job);
        }

        public Settings withSeed(final long value) {
            return new Settings(table, workers, epochs, batchSize, learningRate, value, job);
        }

        /** The spec every worker joins with: {@link #job} expecting {@link #workers} workers. */
        public JobSpec jobSpec() {
            return job.toBuilder().setExpectedWorkers(workers).build();
        }

        private static JobSpec asyncJob(final String jobId) {
            return JobSpec.newBuilder()
                    .setJobId(jobId)
                    .setMode(UpdateMode.ASYNC)
                    .build();
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
     * keeps in {@code longestStepNanos} the longest step (pull, push and end of clock) of any worker: a failover shows
     * as a stall, and so does, in SYNC and SSP, a wait for the slowest worker.
     */
    public static List<EpochResult> train(
            final String proxyAddress,
            final Dataset data,
            final Settings settings,
            final Consumer<EpochResult> progress,
            final Consumer<RollbackEvent> rollbacks,
            final AtomicLong longestStepNanos)
            throws InterruptedException, ExecutionException {
        return train(proxyAddress, Security.NONE, data, settings, progress, rollbacks, longestStepNanos);
    }

    /** Trains as above, the workers' clients connecting with {@code security} (TLS, a token). */
    public static List<EpochResult> train(
            final String proxyAddress,
            final Security security,
            final Dataset data,
            final Settings settings,
            final Consumer<EpochResult> progress,
            final Consumer<RollbackEvent> rollbacks,
            final AtomicLong longestStepNanos)
            throws InterruptedException, ExecutionException {
        final ExecutorService workers = Executors.newFixedThreadPool(settings.workers());
        List<PsClient> clients = List.of();
        try {
            clients = joinJob(proxyAddress, security, settings, workers);
            clients.get(0).addRollbackListener(rollbacks);
            clients.get(0).createTable(schema(settings));
            final List<PsTable> tables = new ArrayList<>();
            for (final PsClient client : clients) {
                tables.add(client.table(settings.table()));
            }
            final int steps = stepsPerEpoch(data.size(), settings);
            final List<EpochResult> results = new ArrayList<>();
            for (int epoch = 1; epoch <= settings.epochs(); epoch++) {
                final long start = System.nanoTime();
                final List<Future<?>> running = new ArrayList<>();
                for (int rank = 0; rank < settings.workers(); rank++) {
                    final PsClient client = clients.get(rank);
                    final PsTable table = tables.get(rank);
                    final int worker = rank;
                    final int thisEpoch = epoch;
                    running.add(workers.submit(() ->
                            runWorker(client, table, data, settings, worker, thisEpoch, steps, longestStepNanos)));
                }
                for (final Future<?> future : running) {
                    future.get();
                }
                // Async and SSP pushes are applied in the background: evaluate what every worker pushed. (A SYNC pull
                // waits for the last clock anyway.)
                clients.get(0).flush();
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

    /**
     * Connects the workers' clients to the job, all at once (each connect waits until the job's expected workers have
     * joined), and returns them in the order of their worker ids: a client's index is its worker's rank. When one
     * fails, the others stop waiting (their threads are interrupted, which cancels their calls) and every client that
     * joined is closed.
     */
    private static List<PsClient> joinJob(
            final String proxyAddress, final Security security, final Settings settings, final ExecutorService workers)
            throws InterruptedException, ExecutionException {
        final CompletionService<PsClient> joining = new ExecutorCompletionService<>(workers);
        final List<Future<PsClient>> calls = new ArrayList<>();
        // Guarded by itself: a connect that returns after the join was given up closes its own client.
        final List<PsClient> joined = new ArrayList<>();
        final boolean[] abandoned = {false};
        for (int w = 0; w < settings.workers(); w++) {
            calls.add(joining.submit(() -> {
                final PsClient client = PsClient.connect(new PsClient.Context()
                        .proxyAddress(proxyAddress)
                        .security(security)
                        .job(settings.jobSpec()));
                synchronized (joined) {
                    if (abandoned[0]) {
                        client.close();
                        throw new CancellationException("another worker failed to join");
                    }
                    joined.add(client);
                }
                return client;
            }));
        }
        try {
            for (int w = 0; w < settings.workers(); w++) {
                joining.take().get();
            }
        } catch (InterruptedException | ExecutionException e) {
            synchronized (joined) {
                abandoned[0] = true;
                joined.forEach(PsClient::close);
            }
            calls.forEach(call -> call.cancel(true));
            throw e;
        }
        final List<PsClient> clients = new ArrayList<>(joined);
        clients.sort(Comparator.comparingInt(PsClient::workerId));
        return clients;
    }

    /** Steps every worker takes per epoch: enough for the worker with the most samples. */
    static int stepsPerEpoch(final int samples, final Settings settings) {
        final int mostPerWorker = (samples + settings.workers() - 1) / settings.workers();
        return Math.max(1, (mostPerWorker + settings.batchSize() - 1) / settings.batchSize());
    }

    /** The samples worker {@code rank} trains on in {@code epoch}, in the order it takes them. */
    static int[] samplesOf(final int samples, final Settings settings, final int rank, final int epoch) {
        final int[] mine = java.util.stream.IntStream.range(0, samples)
                .filter(i -> i % settings.workers() == rank)
                .toArray();
        shuffle(mine, new SplittableRandom(settings.seed() * 31 + epoch * 1009L + rank));
        return mine;
    }

    private static void runWorker(
            final PsClient client,
            final PsTable table,
            final Dataset data,
            final Settings settings,
            final int rank,
            final int epoch,
            final int steps,
            final AtomicLong longestStepNanos) {
        final int[] mine = samplesOf(data.size(), settings, rank, epoch);
        for (int step = 0; step < steps; step++) {
            final long stepStart = System.nanoTime();
            final int from = Math.min(mine.length, step * settings.batchSize());
            final int[] batch = Arrays.copyOfRange(mine, from, Math.min(mine.length, from + settings.batchSize()));
            if (batch.length > 0) {
                final long[] keys = uniqueKeys(data, batch);
                table.push(keys, gradients(data, batch, keys, table.pull(keys)));
            }
            client.clock();
            longestStepNanos.accumulateAndGet(System.nanoTime() - stepStart, Math::max);
        }
    }

    /** The mean log-loss gradient of {@code batch} for each of {@code keys}, given their {@code weights}. */
    private static float[] gradients(final Dataset data, final int[] batch, final long[] keys, final float[] weights) {
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
        return gradients;
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
