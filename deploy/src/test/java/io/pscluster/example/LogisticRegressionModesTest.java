package io.pscluster.example;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;

import io.pscluster.local.LocalCluster;
import io.pscluster.proto.v1.UpdateMode;
import io.pscluster.worker.PsClient;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.stream.IntStream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The example job in its three update modes on one local cluster (a proxy and 2 shards over loopback), 4 workers as
 * threads each with its own client: the same accuracy in async, sync and ssp:2 on the same data, and two sync runs with
 * the same seed on fresh tables ending with the same weights to the bit.
 */
class LogisticRegressionModesTest {
    private static final int WORKERS = 4;
    private static final int FEATURES = 400;
    private static final int EPOCHS = 4;
    private static final Dataset DATA = Dataset.synthetic(7, 4_000, FEATURES, 10);

    @TempDir
    static Path checkpoints;

    private static LocalCluster cluster;

    @BeforeAll
    static void startCluster() throws Exception {
        cluster = LocalCluster.builder()
                .shards(2)
                .checkpointRoot(checkpoints.toUri().toString())
                .start();
    }

    @AfterAll
    static void stopCluster() throws InterruptedException {
        cluster.close();
    }

    private static LogisticRegression.Settings settings(final String table, final String mode) {
        return LogisticRegression.Settings.defaults(WORKERS, EPOCHS)
                .withTable(table)
                .withJobId("job-" + table)
                .withMode(mode);
    }

    private static double finalAccuracy(final LogisticRegression.Settings settings) throws Exception {
        final List<LogisticRegression.EpochResult> epochs =
                LogisticRegression.train(cluster.proxyAddress(), DATA, settings, epoch -> {});
        assertThat(epochs).hasSize(EPOCHS);
        return epochs.get(EPOCHS - 1).accuracy();
    }

    /** Every feature's weight and the bias, as a client outside any job reads them once everything is applied. */
    private static int[] weightBits(final String table) {
        final long[] keys = new long[FEATURES + 1];
        for (int f = 0; f < FEATURES; f++) {
            keys[f] = f;
        }
        keys[FEATURES] = LogisticRegression.BIAS_KEY;
        try (PsClient reader = PsClient.connect(cluster.proxyAddress())) {
            reader.flush();
            final float[] weights = reader.table(table).pull(keys);
            final int[] bits = new int[weights.length];
            for (int i = 0; i < weights.length; i++) {
                bits[i] = Float.floatToRawIntBits(weights[i]);
            }
            return bits;
        }
    }

    @Test
    void shouldReachTheSameAccuracyWhenTrainedAsyncSyncOrSsp2() throws Exception {
        final double async = finalAccuracy(settings("acc_async", "async"));
        final double sync = finalAccuracy(settings("acc_sync", "sync"));
        final double ssp = finalAccuracy(settings("acc_ssp", "ssp:2"));

        assertThat(async).as("async accuracy").isGreaterThan(0.9);
        assertThat(sync).as("sync accuracy against async").isCloseTo(async, within(0.01));
        assertThat(ssp).as("ssp:2 accuracy against async").isCloseTo(async, within(0.01));
    }

    @Test
    void shouldEndWithBitIdenticalWeightsWhenSyncRunsTwiceWithTheSameSeed() throws Exception {
        final double first = finalAccuracy(settings("repeat_a", "sync"));
        final double second = finalAccuracy(settings("repeat_b", "sync"));

        final int[] a = weightBits("repeat_a");
        final int[] b = weightBits("repeat_b");
        assertThat(Arrays.stream(a).filter(bits -> bits != 0))
                .as("trained weights")
                .isNotEmpty();
        final List<String> differing = IntStream.range(0, a.length)
                .filter(i -> a[i] != b[i])
                .mapToObj(i -> "key " + (i == FEATURES ? LogisticRegression.BIAS_KEY : i) + ": "
                        + Float.intBitsToFloat(a[i]) + " vs " + Float.intBitsToFloat(b[i]))
                .toList();
        assertThat(differing).as("weights that differ between the runs").isEmpty();
        assertThat(second).isEqualTo(first);
    }

    @Test
    void shouldGiveEveryWorkerAFixedShareAndTheSameStepCountWhenSamplesDoNotDivideEvenly() {
        final LogisticRegression.Settings settings =
                LogisticRegression.Settings.defaults(3, 1).withSeed(5);
        final int samples = 200; // 67, 67 and 66 samples: 2, 2 and 2 steps of 64
        final Set<Integer> seen = new HashSet<>();
        for (int rank = 0; rank < 3; rank++) {
            final int[] mine = LogisticRegression.samplesOf(samples, settings, rank, 2);
            assertThat(mine).isEqualTo(LogisticRegression.samplesOf(samples, settings, rank, 2));
            assertThat(mine).isNotEqualTo(LogisticRegression.samplesOf(samples, settings, rank, 3));
            for (final int sample : mine) {
                assertThat(sample % 3).isEqualTo(rank);
                assertThat(seen.add(sample)).isTrue();
            }
        }
        assertThat(seen)
                .containsExactlyInAnyOrderElementsOf(
                        IntStream.range(0, samples).boxed().toList());
        assertThat(LogisticRegression.stepsPerEpoch(samples, settings)).isEqualTo(2);
        assertThat(LogisticRegression.stepsPerEpoch(192, settings)).isEqualTo(1);
        assertThat(LogisticRegression.stepsPerEpoch(193, settings)).isEqualTo(2);
    }

    @Test
    void shouldReadTheModeAndDeriveTheJobFromTheTableWhenNoneIsGiven() {
        final LogisticRegression.Settings defaults = LogisticRegression.Settings.defaults(4, 1);
        assertThat(defaults.job().getMode()).isEqualTo(UpdateMode.ASYNC);
        assertThat(defaults.job().getJobId()).isEqualTo("train-lr_weights");
        assertThat(defaults.jobSpec().getExpectedWorkers()).isEqualTo(4);

        final LogisticRegression.Settings ssp = defaults.withMode("ssp:3");
        assertThat(ssp.job().getMode()).isEqualTo(UpdateMode.SSP);
        assertThat(ssp.job().getStaleness()).isEqualTo(3);
        assertThat(defaults.withMode("ssp:0").job().getMode()).isEqualTo(UpdateMode.SYNC);
        assertThat(ssp.withMode("async").job().getStaleness()).isZero();
        assertThatThrownBy(() -> defaults.withMode("sideways"))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("'sideways' is not one of async, sync, ssp:S");
    }
}
