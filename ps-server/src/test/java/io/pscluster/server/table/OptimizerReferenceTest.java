package io.pscluster.server.table;

import static io.pscluster.server.table.TableFixture.hasRow;
import static io.pscluster.server.table.TableFixture.put;
import static io.pscluster.server.table.TableFixture.recordOf;
import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.proto.v1.InitializerKind;
import io.pscluster.proto.v1.InitializerSpec;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.function.Function;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Every optimizer against a reference written from its formula in {@code common.proto} (OptimizerKind): random
 * hyper-parameters, random gradients, several steps on several keys, each step pushing a random subset of the keys
 * (so that rows are created at different steps and Adam's per-row step counts differ). Pulled values and the whole
 * records (optimizer slots and counters, through a snapshot) must agree within 1e-6 relative, 1e-7 absolute.
 *
 * <p>The references compute in float, as the table stores rows: a reference in double drifts from any float
 * implementation by an ulp of the operands per step, which exceeds 1e-6 of the result whenever the step cancels
 * most of the value (w = 0.5 - 0.4). Only Adam's bias corrections {@code 1 - b^t} are computed in double, since in
 * float they would lose most of their digits for b2 near 1.
 */
class OptimizerReferenceTest {
    private static final int DIM = 6;
    private static final int KEYS = 8;
    private static final int STEPS = 10;
    private static final double RELATIVE = 1e-6;
    private static final double ABSOLUTE = 1e-7;

    private final TableFixture fixture = new TableFixture(2);

    @AfterEach
    void closeWriters() {
        fixture.close();
    }

    // ---- the references: one row each, values w and the optimizer's own state

    /** One row under a reference optimizer. */
    private abstract static class ReferenceRow {
        final float[] w;

        ReferenceRow(final float[] initial) {
            this.w = initial.clone();
        }

        abstract void step(float[] g);

        /** The record as the table lays it out: values, slot blocks, counters as raw int bits. */
        abstract float[] record();

        /** Int counters at the end of {@link #record()}, compared exactly rather than as floats. */
        int counters() {
            return 0;
        }

        static float[] concat(final float[]... blocks) {
            final List<Float> all = new ArrayList<>();
            for (final float[] block : blocks) {
                for (final float value : block) {
                    all.add(value);
                }
            }
            final float[] record = new float[all.size()];
            for (int i = 0; i < record.length; i++) {
                record[i] = all.get(i);
            }
            return record;
        }
    }

    /** w -= lr * g */
    private static final class SgdRow extends ReferenceRow {
        private final float lr;

        SgdRow(final float[] initial, final OptimizerSpec spec) {
            super(initial);
            this.lr = spec.getLearningRate();
        }

        @Override
        void step(final float[] g) {
            for (int i = 0; i < w.length; i++) {
                w[i] -= lr * g[i];
            }
        }

        @Override
        float[] record() {
            return w.clone();
        }
    }

    /** v = momentum * v + g; w -= lr * v; v from 0. */
    private static final class MomentumRow extends ReferenceRow {
        private final float lr;
        private final float momentum;
        private final float[] v;

        MomentumRow(final float[] initial, final OptimizerSpec spec) {
            super(initial);
            this.lr = spec.getLearningRate();
            this.momentum = spec.getMomentum();
            this.v = new float[initial.length];
        }

        @Override
        void step(final float[] g) {
            for (int i = 0; i < w.length; i++) {
                v[i] = momentum * v[i] + g[i];
                w[i] -= lr * v[i];
            }
        }

        @Override
        float[] record() {
            return concat(w, v);
        }
    }

    /** a += g * g; w -= lr * g / (sqrt(a) + epsilon); a from the initial accumulator. */
    private static final class AdagradRow extends ReferenceRow {
        private final float lr;
        private final float epsilon;
        private final float[] a;

        AdagradRow(final float[] initial, final OptimizerSpec spec) {
            super(initial);
            this.lr = spec.getLearningRate();
            this.epsilon = spec.getEpsilon();
            this.a = new float[initial.length];
            Arrays.fill(a, spec.getInitialAccumulator());
        }

        @Override
        void step(final float[] g) {
            for (int i = 0; i < w.length; i++) {
                a[i] += g[i] * g[i];
                w[i] -= lr * g[i] / (sqrt(a[i]) + epsilon);
            }
        }

        @Override
        float[] record() {
            return concat(w, a);
        }
    }

    /**
     * m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; t += 1 (this row's own count);
     * w -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + epsilon).
     */
    private static final class AdamRow extends ReferenceRow {
        private final float lr;
        private final float b1;
        private final float b2;
        private final float epsilon;
        private final float[] m;
        private final float[] v;
        private int t;

        AdamRow(final float[] initial, final OptimizerSpec spec) {
            super(initial);
            this.lr = spec.getLearningRate();
            this.b1 = spec.getBeta1();
            this.b2 = spec.getBeta2();
            this.epsilon = spec.getEpsilon();
            this.m = new float[initial.length];
            this.v = new float[initial.length];
        }

        @Override
        void step(final float[] g) {
            t++;
            final float unbias1 = (float) (1 - Math.pow(b1, t));
            final float unbias2 = (float) (1 - Math.pow(b2, t));
            for (int i = 0; i < w.length; i++) {
                m[i] = b1 * m[i] + (1 - b1) * g[i];
                v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
                w[i] -= lr * (m[i] / unbias1) / (sqrt(v[i] / unbias2) + epsilon);
            }
        }

        @Override
        float[] record() {
            return concat(w, m, v, new float[] {Float.intBitsToFloat(t)});
        }

        @Override
        int counters() {
            return 1;
        }
    }

    /**
     * FTRL-proximal, per coordinate: sigma = (sqrt(n + g^2) - sqrt(n)) / lr; z += g - sigma w; n += g^2;
     * w = |z| <= l1 ? 0 : -(z - sign(z) l1) / ((beta + sqrt(n)) / lr + l2); z and n from 0.
     */
    private static final class FtrlRow extends ReferenceRow {
        private final float alpha;
        private final float beta;
        private final float l1;
        private final float l2;
        private final float[] z;
        private final float[] n;
        int zeroed;
        int solved;

        FtrlRow(final float[] initial, final OptimizerSpec spec) {
            super(initial);
            this.alpha = spec.getLearningRate();
            this.beta = spec.getFtrlBeta();
            this.l1 = spec.getL1();
            this.l2 = spec.getL2();
            this.z = new float[initial.length];
            this.n = new float[initial.length];
        }

        @Override
        void step(final float[] g) {
            for (int i = 0; i < w.length; i++) {
                final float sigma = (sqrt(n[i] + g[i] * g[i]) - sqrt(n[i])) / alpha;
                // Left to right, (z + g) - sigma w: where those terms cancel, the other association differs
                // by an ulp of z + g, which can exceed 1e-6 of what remains.
                z[i] = z[i] + g[i] - sigma * w[i];
                n[i] += g[i] * g[i];
                if (Math.abs(z[i]) <= l1) {
                    w[i] = 0f;
                    zeroed++;
                } else {
                    w[i] = -(z[i] - Math.signum(z[i]) * l1) / ((beta + sqrt(n[i])) / alpha + l2);
                    solved++;
                }
            }
        }

        @Override
        float[] record() {
            return concat(w, z, n);
        }
    }

    private static float sqrt(final float x) {
        return (float) Math.sqrt(x);
    }

    // ---- the tests

    @ParameterizedTest
    @ValueSource(longs = {1, 2, 3, 4, 5})
    void shouldMatchTheReferenceWhenSgdRunsSeveralSteps(final long seed) throws InterruptedException {
        final Random random = new Random(seed);
        final OptimizerSpec spec = OptimizerSpec.newBuilder()
                .setKind(OptimizerKind.SGD)
                .setLearningRate(uniform(random, 0.01, 1))
                .build();
        runAgainstReference(spec, random, initial -> new SgdRow(initial, spec));
    }

    @ParameterizedTest
    @ValueSource(longs = {1, 2, 3, 4, 5})
    void shouldMatchTheReferenceWhenMomentumRunsSeveralSteps(final long seed) throws InterruptedException {
        final Random random = new Random(seed);
        final OptimizerSpec spec = OptimizerSpec.newBuilder()
                .setKind(OptimizerKind.MOMENTUM)
                .setLearningRate(uniform(random, 0.01, 0.5))
                .setMomentum(uniform(random, 0.5, 0.99))
                .build();
        runAgainstReference(spec, random, initial -> new MomentumRow(initial, spec));
    }

    @ParameterizedTest
    @ValueSource(longs = {1, 2, 3, 4, 5})
    void shouldMatchTheReferenceWhenAdagradRunsSeveralSteps(final long seed) throws InterruptedException {
        final Random random = new Random(seed);
        final OptimizerSpec spec = OptimizerSpec.newBuilder()
                .setKind(OptimizerKind.ADAGRAD)
                .setLearningRate(uniform(random, 0.01, 1))
                .setInitialAccumulator(uniform(random, 0.01, 1))
                .setEpsilon(uniform(random, 1e-8, 1e-2))
                .build();
        runAgainstReference(spec, random, initial -> new AdagradRow(initial, spec));
    }

    @ParameterizedTest
    @ValueSource(longs = {1, 2, 3, 4, 5})
    void shouldMatchTheReferenceWhenAdamRunsSeveralSteps(final long seed) throws InterruptedException {
        final Random random = new Random(seed);
        final OptimizerSpec spec = OptimizerSpec.newBuilder()
                .setKind(OptimizerKind.ADAM)
                .setLearningRate(uniform(random, 0.001, 0.1))
                .setBeta1(uniform(random, 0.5, 0.95))
                .setBeta2(uniform(random, 0.9, 0.9999))
                .setEpsilon(uniform(random, 1e-8, 1e-3))
                .build();
        final Map<Long, ReferenceRow> rows = runAgainstReference(spec, random, initial -> new AdamRow(initial, spec));

        // The subsets pushed differ per key, so rows carry different step counts: bias correction is per row.
        assertThat(rows.values().stream()
                        .mapToInt(row -> ((AdamRow) row).t)
                        .distinct()
                        .count())
                .as("distinct per-row step counts")
                .isGreaterThan(1);
    }

    @ParameterizedTest
    @ValueSource(longs = {1, 2, 3, 4, 5})
    void shouldMatchTheReferenceWhenFtrlRunsSeveralSteps(final long seed) throws InterruptedException {
        final Random random = new Random(seed);
        final OptimizerSpec spec = OptimizerSpec.newBuilder()
                .setKind(OptimizerKind.FTRL)
                .setLearningRate(uniform(random, 0.05, 0.5))
                .setFtrlBeta(uniform(random, 0.5, 2))
                .setL1(uniform(random, 0.3, 1.5))
                .setL2(uniform(random, 0.01, 1))
                .build();
        final Map<Long, ReferenceRow> rows = runAgainstReference(spec, random, initial -> new FtrlRow(initial, spec));

        // Both branches of the proximal step ran: some coordinates were clipped to 0 by l1, some were solved.
        assertThat(rows.values().stream()
                        .mapToInt(row -> ((FtrlRow) row).zeroed)
                        .sum())
                .as("coordinates zeroed by l1")
                .isPositive();
        assertThat(rows.values().stream()
                        .mapToInt(row -> ((FtrlRow) row).solved)
                        .sum())
                .as("coordinates solved")
                .isPositive();
    }

    @Test
    void shouldMatchTheReferenceWithTheDocumentedDefaultsWhenAdamHyperParametersAreUnset() throws InterruptedException {
        final OptimizerSpec given = OptimizerSpec.newBuilder()
                .setKind(OptimizerKind.ADAM)
                .setLearningRate(0.05f)
                .build();
        final OptimizerSpec documented = given.toBuilder()
                .setBeta1(0.9f)
                .setBeta2(0.999f)
                .setEpsilon(1e-8f)
                .build();
        runAgainstReference(given, new Random(4), initial -> new AdamRow(initial, documented));
    }

    @Test
    void shouldContinueFromTheStoredStepCountWhenAnAdamRecordWasPut() throws InterruptedException {
        final OptimizerSpec spec = OptimizerSpec.newBuilder()
                .setKind(OptimizerKind.ADAM)
                .setLearningRate(0.01f)
                .setBeta1(0.8f)
                .setBeta2(0.99f)
                .build();
        final ParameterTable table = table(spec);
        // A restored row that has seen 7 steps: bias correction must use t = 8 for the next one, not t = 1.
        final float[] w = {0.5f, -0.25f, 0.125f, 1f, -1f, 0f};
        final float[] m = {0.1f, -0.1f, 0.2f, 0f, 0.3f, -0.3f};
        final float[] v = {0.01f, 0.02f, 0.03f, 0.04f, 0.05f, 0.06f};
        put(table, 11, ReferenceRow.concat(w, m, v, new float[] {Float.intBitsToFloat(7)}));
        final AdamRow reference = new AdamRow(w, table.schema().getOptimizer());
        System.arraycopy(m, 0, reference.m, 0, DIM);
        System.arraycopy(v, 0, reference.v, 0, DIM);
        reference.t = 7;
        final float[] g = {1f, -2f, 0.5f, 0f, -0.5f, 3f};

        table.push(new long[] {11}, g);
        reference.step(g);

        final float[] record = recordOf(table, 11);
        assertThat(Float.floatToRawIntBits(record[3 * DIM])).as("step count").isEqualTo(8);
        assertRecord(record, reference, "record of key 11");
    }

    // ---- the driver

    /**
     * Pushes {@link #STEPS} steps of random gradients to random subsets of {@link #KEYS} random keys, stepping a
     * reference row alongside; after every step each key's pulled values, and at the end each record, must match.
     */
    private Map<Long, ReferenceRow> runAgainstReference(
            final OptimizerSpec spec, final Random random, final Function<float[], ReferenceRow> reference)
            throws InterruptedException {
        final ParameterTable table = table(spec);
        final Map<Long, ReferenceRow> rows = new LinkedHashMap<>();
        while (rows.size() < KEYS) {
            final long key = random.nextLong();
            // A pull of a key without a row reads its initial values: the reference starts from them.
            rows.computeIfAbsent(key, k -> reference.apply(table.pull(new long[] {k})));
        }
        final long[] allKeys = rows.keySet().stream().mapToLong(Long::longValue).toArray();
        assertThat(Arrays.stream(table.slotsOf(allKeys))
                        .map(slot -> slot % 2)
                        .distinct()
                        .count())
                .as("partitions the keys fall in")
                .isEqualTo(2);

        for (int step = 0; step < STEPS; step++) {
            final List<Long> pushed = new ArrayList<>();
            for (final long key : allKeys) {
                if (random.nextInt(4) != 0) {
                    pushed.add(key);
                }
            }
            final long[] keys = pushed.stream().mapToLong(Long::longValue).toArray();
            final float[] gradients = new float[keys.length * DIM];
            for (int i = 0; i < gradients.length; i++) {
                gradients[i] = (float) (random.nextGaussian() * 1.5);
            }

            table.push(keys, gradients);
            for (int k = 0; k < keys.length; k++) {
                rows.get(keys[k]).step(Arrays.copyOfRange(gradients, k * DIM, (k + 1) * DIM));
            }

            final float[] pulled = table.pull(allKeys);
            for (int k = 0; k < allKeys.length; k++) {
                assertClose(
                        Arrays.copyOfRange(pulled, k * DIM, (k + 1) * DIM),
                        rows.get(allKeys[k]).w,
                        spec.getKind() + " values of key " + allKeys[k] + " after step " + step);
            }
        }

        assertThat(table.rowWidth()).isEqualTo(rows.values().iterator().next().record().length);
        for (final long key : allKeys) {
            if (hasRow(table, key)) {
                assertRecord(recordOf(table, key), rows.get(key), spec.getKind() + " record of key " + key);
            }
        }
        return rows;
    }

    private ParameterTable table(final OptimizerSpec spec) {
        return fixture.create(TableSchema.newBuilder()
                .setName("reference")
                .setKind(TableKind.SPARSE)
                .setDim(DIM)
                .setOptimizer(spec)
                .setInitializer(InitializerSpec.newBuilder()
                        .setKind(InitializerKind.UNIFORM)
                        .setScale(0.5f)
                        .setSeed(17))
                .build());
    }

    private static float uniform(final Random random, final double from, final double to) {
        return (float) (from + random.nextDouble() * (to - from));
    }

    /** Values and slots as {@link #assertClose}, counters bit for bit. */
    private static void assertRecord(final float[] actual, final ReferenceRow reference, final String what) {
        final float[] expected = reference.record();
        assertThat(actual).as(what + ": width").hasSameSizeAs(expected);
        final int floats = expected.length - reference.counters();
        assertClose(Arrays.copyOf(actual, floats), Arrays.copyOf(expected, floats), what);
        for (int i = floats; i < expected.length; i++) {
            assertThat(Float.floatToRawIntBits(actual[i]))
                    .as("%s, counter %d", what, i - floats)
                    .isEqualTo(Float.floatToRawIntBits(expected[i]));
        }
    }

    /** Equal within {@link #RELATIVE} of the expected value, or {@link #ABSOLUTE} near 0; NaN never passes. */
    private static void assertClose(final float[] actual, final float[] expected, final String what) {
        assertThat(actual).as(what + ": width").hasSameSizeAs(expected);
        for (int i = 0; i < expected.length; i++) {
            final double tolerance = Math.max(RELATIVE * Math.abs(expected[i]), ABSOLUTE);
            assertThat(Math.abs((double) actual[i] - expected[i]))
                    .as("%s, element %d: got %s, expected %s", what, i, actual[i], expected[i])
                    .isLessThanOrEqualTo(tolerance);
        }
    }
}
