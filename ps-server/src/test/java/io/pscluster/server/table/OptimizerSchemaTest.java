package io.pscluster.server.table;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

import io.grpc.Status;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.wire.PsException;
import io.pscluster.wire.TableSchemas;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/** Optimizer hyper-parameters as schemas carry them: the documented defaults, refusals, and the record layout. */
class OptimizerSchemaTest {
    private final TableFixture fixture = new TableFixture(2);

    @AfterEach
    void closeWriters() {
        fixture.close();
    }

    private static TableSchema schema(final OptimizerSpec.Builder optimizer) {
        return TableSchema.newBuilder()
                .setName("opt")
                .setKind(TableKind.SPARSE)
                .setDim(4)
                .setOptimizer(optimizer)
                .build();
    }

    private static OptimizerSpec normalized(final OptimizerKind kind) {
        return TableSchemas.normalize(
                        schema(OptimizerSpec.newBuilder().setKind(kind).setLearningRate(0.1f)))
                .getOptimizer();
    }

    @Test
    void shouldFillTheDocumentedDefaultsWhenHyperParametersAreUnset() {
        assertThat(normalized(OptimizerKind.OPTIMIZER_KIND_UNSPECIFIED).getKind())
                .isEqualTo(OptimizerKind.SGD);

        assertThat(normalized(OptimizerKind.MOMENTUM).getMomentum()).isEqualTo(0.9f);

        final OptimizerSpec adam = normalized(OptimizerKind.ADAM);
        assertThat(adam.getBeta1()).isEqualTo(0.9f);
        assertThat(adam.getBeta2()).isEqualTo(0.999f);
        assertThat(adam.getEpsilon()).isEqualTo(1e-8f);

        final OptimizerSpec adagrad = normalized(OptimizerKind.ADAGRAD);
        assertThat(adagrad.getInitialAccumulator()).isEqualTo(0.1f);
        assertThat(adagrad.getEpsilon()).isEqualTo(1e-8f);

        final OptimizerSpec ftrl = normalized(OptimizerKind.FTRL);
        assertThat(ftrl.getFtrlBeta()).isEqualTo(1f);
        assertThat(ftrl.getL1()).isZero();
        assertThat(ftrl.getL2()).isZero();
    }

    @Test
    void shouldKeepGivenHyperParametersWhenTheyAreValid() {
        final OptimizerSpec adam = OptimizerSpec.newBuilder()
                .setKind(OptimizerKind.ADAM)
                .setLearningRate(0.01f)
                .setBeta1(0.5f)
                .setBeta2(0.75f)
                .setEpsilon(1e-3f)
                .build();
        final OptimizerSpec ftrl = OptimizerSpec.newBuilder()
                .setKind(OptimizerKind.FTRL)
                .setLearningRate(0.1f)
                .setFtrlBeta(2f)
                .setL1(0.5f)
                .setL2(0.25f)
                .build();

        assertThat(TableSchemas.normalize(schema(adam.toBuilder())).getOptimizer())
                .isEqualTo(adam);
        assertThat(TableSchemas.normalize(schema(ftrl.toBuilder())).getOptimizer())
                .isEqualTo(ftrl);
    }

    static Stream<Arguments> invalidHyperParameters() {
        return Stream.of(
                Arguments.of(
                        OptimizerSpec.newBuilder().setKind(OptimizerKind.ADAM).setBeta1(1f), "beta1", "1.0"),
                Arguments.of(
                        OptimizerSpec.newBuilder().setKind(OptimizerKind.ADAM).setBeta2(1.5f), "beta2", "1.5"),
                Arguments.of(
                        OptimizerSpec.newBuilder()
                                .setKind(OptimizerKind.MOMENTUM)
                                .setMomentum(-0.1f),
                        "momentum",
                        "-0.1"),
                Arguments.of(
                        OptimizerSpec.newBuilder().setKind(OptimizerKind.FTRL).setL1(-1f), "l1", "-1.0"),
                Arguments.of(
                        OptimizerSpec.newBuilder().setKind(OptimizerKind.FTRL).setL2(Float.POSITIVE_INFINITY),
                        "l2",
                        "Infinity"),
                Arguments.of(
                        OptimizerSpec.newBuilder().setKind(OptimizerKind.FTRL).setFtrlBeta(-2f), "ftrl_beta", "-2.0"),
                Arguments.of(
                        OptimizerSpec.newBuilder()
                                .setKind(OptimizerKind.ADAGRAD)
                                .setEpsilon(-1e-8f),
                        "epsilon",
                        "-1.0E-8"),
                Arguments.of(
                        OptimizerSpec.newBuilder()
                                .setKind(OptimizerKind.ADAGRAD)
                                .setInitialAccumulator(Float.NaN),
                        "initial_accumulator",
                        "NaN"),
                Arguments.of(
                        OptimizerSpec.newBuilder().setKind(OptimizerKind.SGD).setLearningRate(Float.NaN),
                        "learning_rate",
                        "NaN"),
                Arguments.of(OptimizerSpec.newBuilder().setKind(OptimizerKind.SGD), "learning_rate", "0.0"));
    }

    @ParameterizedTest(name = "{1}={2}")
    @MethodSource("invalidHyperParameters")
    void shouldRefuseTheSchemaNamingTheFieldWhenAHyperParameterIsInvalid(
            final OptimizerSpec.Builder optimizer, final String field, final String value) {
        if (optimizer.getLearningRate() == 0 && !field.equals("learning_rate")) {
            optimizer.setLearningRate(0.1f);
        }

        final PsException refused =
                catchThrowableOfType(PsException.class, () -> TableSchemas.normalize(schema(optimizer)));

        assertThat(refused).as("normalize should refuse %s=%s", field, value).isNotNull();
        assertThat(refused.code()).isEqualTo(Status.Code.INVALID_ARGUMENT);
        assertThat(refused.getMessage()).contains("optimizer." + field + "=" + value, "'opt'");
    }

    @Test
    void shouldLayOutValuesSlotsAndCountersWhenEachOptimizerIsUsed() {
        // dim * (1 + slots) + counters; a record adds a 16-byte header and rounds up to 8 bytes.
        assertThat(widthOf(OptimizerKind.SGD)).isEqualTo(4);
        assertThat(widthOf(OptimizerKind.MOMENTUM)).isEqualTo(8);
        assertThat(widthOf(OptimizerKind.ADAGRAD)).isEqualTo(8);
        assertThat(widthOf(OptimizerKind.ADAM)).isEqualTo(13);
        assertThat(widthOf(OptimizerKind.FTRL)).isEqualTo(12);
        assertThat(fixture.create(schema(OptimizerSpec.newBuilder()
                                .setKind(OptimizerKind.ADAM)
                                .setLearningRate(0.1f)))
                        .recordBytes())
                .isEqualTo(16 + 56);
    }

    private int widthOf(final OptimizerKind kind) {
        return fixture.create(schema(OptimizerSpec.newBuilder().setKind(kind).setLearningRate(0.1f)))
                .rowWidth();
    }
}
