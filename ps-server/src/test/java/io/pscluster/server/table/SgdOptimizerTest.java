package io.pscluster.server.table;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.proto.v1.InitializerKind;
import io.pscluster.proto.v1.InitializerSpec;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import java.util.List;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

class SgdOptimizerTest {
    private final TableFixture fixture = new TableFixture(2);

    @AfterEach
    void closeWriters() {
        fixture.close();
    }

    private ParameterTable sgdTable(final int dim, final float learningRate, final InitializerSpec init) {
        return fixture.create(TableSchema.newBuilder()
                .setName("sgd")
                .setKind(TableKind.SPARSE)
                .setDim(dim)
                .setOptimizer(
                        OptimizerSpec.newBuilder().setKind(OptimizerKind.SGD).setLearningRate(learningRate))
                .setInitializer(init)
                .build());
    }

    private static float[] pull(final ParameterTable table, final long... keys) {
        return table.pull(keys);
    }

    @Test
    void shouldStepAgainstTheGradientWhenPushedTwice() throws InterruptedException {
        final ParameterTable table = sgdTable(
                1,
                0.5f,
                InitializerSpec.newBuilder().setKind(InitializerKind.ZEROS).build());

        table.push(new long[] {7}, new float[] {2f});
        assertThat(pull(table, 7)).containsExactly(-1f); // 0 - 0.5 * 2

        table.push(new long[] {7}, new float[] {-1f});
        assertThat(pull(table, 7)).containsExactly(-0.5f); // -1 - 0.5 * -1
    }

    @Test
    void shouldApplyEachGradientRowToItsOwnKeyWhenOneBatchHoldsSeveralKeys() throws InterruptedException {
        final ParameterTable table = sgdTable(2, 0.5f, InitializerSpec.getDefaultInstance());

        table.push(new long[] {10, 20}, new float[] {1f, 2f, 3f, 4f});

        assertThat(pull(table, 10)).containsExactly(-0.5f, -1f);
        assertThat(pull(table, 20)).containsExactly(-1.5f, -2f);
        assertThat(pull(table, 20, 10)).containsExactly(-1.5f, -2f, -0.5f, -1f);
        assertThat(table.rowCount()).isEqualTo(2);
    }

    @Test
    void shouldStartFromTheInitialValuesWhenTheFirstPushCreatesTheRow() throws InterruptedException {
        final ParameterTable table = sgdTable(
                3,
                0.25f,
                InitializerSpec.newBuilder()
                        .setKind(InitializerKind.UNIFORM)
                        .setScale(1f)
                        .setSeed(99)
                        .build());
        final float[] initial = pull(table, 123);
        assertThat(initial).doesNotContain(0f);

        table.push(new long[] {123}, new float[] {4f, 0f, -8f});

        assertThat(pull(table, 123)).containsExactly(initial[0] - 1f, initial[1], initial[2] + 2f);
    }

    @Test
    void shouldStoreOnlyTheValuesWhenTheOptimizerIsSgd() throws InterruptedException {
        final ParameterTable table = sgdTable(2, 0.5f, InitializerSpec.getDefaultInstance());

        table.push(new long[] {5}, new float[] {2f, -2f});

        assertThat(table.rowWidth()).isEqualTo(2);
        final List<SlotSnapshot> snapshots = table.snapshot(slot -> true);
        assertThat(snapshots).hasSize(1);
        assertThat(snapshots.get(0).rowWidth()).isEqualTo(2);
        assertThat(snapshots.get(0).records()).containsExactly(-1f, 1f);
    }
}
