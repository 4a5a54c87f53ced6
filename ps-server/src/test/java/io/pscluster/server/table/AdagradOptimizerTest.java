package io.pscluster.server.table;

import static io.pscluster.server.table.TableFixture.put;
import static io.pscluster.server.table.TableFixture.recordOf;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.within;

import io.pscluster.proto.v1.InitializerKind;
import io.pscluster.proto.v1.InitializerSpec;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import org.assertj.core.data.Offset;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

class AdagradOptimizerTest {
    private final TableFixture fixture = new TableFixture(2);

    @AfterEach
    void closeWriters() {
        fixture.close();
    }

    private ParameterTable adagradTable(
            final TableKind kind, final float learningRate, final float initialAccumulator, final float epsilon) {
        return fixture.create(TableSchema.newBuilder()
                .setName("adagrad")
                .setKind(kind)
                .setDim(2)
                .setRows(kind == TableKind.DENSE ? 3 : 0)
                .setOptimizer(OptimizerSpec.newBuilder()
                        .setKind(OptimizerKind.ADAGRAD)
                        .setLearningRate(learningRate)
                        .setInitialAccumulator(initialAccumulator)
                        .setEpsilon(epsilon))
                .setInitializer(InitializerSpec.newBuilder().setKind(InitializerKind.ZEROS))
                .build());
    }

    private static Offset<Double> relative(final double expected) {
        return within(Math.abs(expected) * 1e-6);
    }

    @Test
    void shouldFillTheDocumentedDefaultsWhenAccumulatorAndEpsilonAreZero() {
        final ParameterTable table = adagradTable(TableKind.SPARSE, 0.5f, 0f, 0f);

        assertThat(table.schema().getOptimizer().getInitialAccumulator()).isEqualTo(0.1f);
        assertThat(table.schema().getOptimizer().getEpsilon()).isEqualTo(1e-8f);
        assertThat(table.rowWidth()).isEqualTo(4);
    }

    @Test
    void shouldMatchHandComputedValuesAndAccumulatorsWhenPushedTwiceWithDefaults() throws InterruptedException {
        final ParameterTable table = adagradTable(TableKind.SPARSE, 0.5f, 0f, 0f);

        table.push(new long[] {42}, new float[] {2f, 0.5f});

        // a += g*g; w -= lr*g / (sqrt(a) + eps), in float, lr=0.5, a0=0.1, eps=1e-8, w0=0
        final float a1x = 0.1f + 2f * 2f;
        final float w1x = 0f - 0.5f * 2f / ((float) Math.sqrt(a1x) + 1e-8f);
        final float a1y = 0.1f + 0.5f * 0.5f;
        final float w1y = 0f - 0.5f * 0.5f / ((float) Math.sqrt(a1y) + 1e-8f);
        assertThat(recordOf(table, 42)).containsExactly(w1x, w1y, a1x, a1y);

        table.push(new long[] {42}, new float[] {-1f, 0f});

        final float a2x = a1x + -1f * -1f;
        final float w2x = w1x - 0.5f * -1f / ((float) Math.sqrt(a2x) + 1e-8f);
        final float a2y = a1y; // a zero gradient leaves both the accumulator and the value alone
        final float w2y = w1y;
        final float[] record = recordOf(table, 42);
        assertThat(record).containsExactly(w2x, w2y, a2x, a2y);

        assertThat(table.pull(new long[] {42})).containsExactly(w2x, w2y);

        // The same two steps in double, as a check that the float expressions above are the formula.
        final double dw1x = -0.5 * 2 / Math.sqrt(4.1);
        final double dw2x = dw1x + 0.5 / Math.sqrt(5.1);
        assertThat((double) record[0]).isCloseTo(dw2x, relative(dw2x));
        assertThat((double) record[1]).isCloseTo(-0.5 * 0.5 / Math.sqrt(0.35), relative(0.25 / Math.sqrt(0.35)));
        assertThat((double) record[2]).isCloseTo(5.1, relative(5.1));
        assertThat((double) w1x).isCloseTo(dw1x, relative(dw1x));
    }

    @Test
    void shouldUseTheSchemaAccumulatorAndEpsilonWhenTheyAreGiven() throws InterruptedException {
        // a = 7 + 3*3 = 16; w = 0 - 2*3 / (sqrt(16) + 4) = -0.75, all exact in float
        final ParameterTable table = adagradTable(TableKind.SPARSE, 2f, 7f, 4f);

        table.push(new long[] {1}, new float[] {3f, -3f});

        assertThat(recordOf(table, 1)).containsExactly(-0.75f, 0.75f, 16f, 16f);
    }

    @Test
    void shouldContinueFromTheStoredAccumulatorWhenARecordWasPut() throws InterruptedException {
        final ParameterTable table = adagradTable(TableKind.SPARSE, 2f, 7f, 4f);
        put(table, 9, 1f, 1f, 12f, 60f);

        // x: a = 12 + 2*2 = 16, w = 1 - 2*2/(4+4) = 0.5; y: a = 60 + 2*2 = 64, w = 1 - 2*2/(8+4) = 1 - 1/3
        table.push(new long[] {9}, new float[] {2f, 2f});

        assertThat(recordOf(table, 9)).containsExactly(0.5f, 1f - 2f * 2f / (8f + 4f), 16f, 64f);
    }

    @Test
    void shouldInitializeTheAccumulatorsWhenADenseTableIsMaterialized() throws InterruptedException {
        final ParameterTable table = adagradTable(TableKind.DENSE, 0.5f, 0f, 0f);

        table.materializeDense(slot -> true);

        for (long key = 0; key < 3; key++) {
            assertThat(recordOf(table, key)).containsExactly(0f, 0f, 0.1f, 0.1f);
        }
    }
}
