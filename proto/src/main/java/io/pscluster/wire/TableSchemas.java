package io.pscluster.wire;

import io.pscluster.proto.v1.InitializerKind;
import io.pscluster.proto.v1.InitializerSpec;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;

/**
 * Validates a table schema and fills its defaults, once, wherever a schema enters the cluster (proxy, shard,
 * checkpoint restore), so every process holds the identical normalized schema and can compare schemas with
 * {@code equals}.
 */
public final class TableSchemas {
    /** The longest table name accepted. */
    public static final int MAX_NAME_LENGTH = 200;

    /** The widest row accepted. */
    public static final int MAX_DIM = 1 << 16;

    static final float DEFAULT_INITIAL_ACCUMULATOR = 0.1f;
    static final float DEFAULT_EPSILON = 1e-8f;

    private TableSchemas() {}

    /**
     * Returns the schema with defaults filled in.
     *
     * @throws PsException INVALID_ARGUMENT naming the field and the value that is wrong.
     */
    public static TableSchema normalize(final TableSchema schema) {
        final String name = schema.getName();
        if (name.isEmpty() || name.length() > MAX_NAME_LENGTH || name.isBlank()) {
            throw PsException.invalidArgument(
                    "table name must be 1.." + MAX_NAME_LENGTH + " characters and not blank, got '" + name + "'");
        }
        for (int i = 0; i < name.length(); i++) {
            if (Character.isISOControl(name.charAt(i))) {
                throw PsException.invalidArgument("table name '" + name + "' contains a control character");
            }
        }
        if (schema.getKind() != TableKind.DENSE && schema.getKind() != TableKind.SPARSE) {
            throw PsException.invalidArgument(
                    "table '" + name + "': kind must be DENSE or SPARSE, got " + schema.getKind());
        }
        if (schema.getDim() < 1 || schema.getDim() > MAX_DIM) {
            throw PsException.invalidArgument(
                    "table '" + name + "': dim=" + schema.getDim() + " must be in 1.." + MAX_DIM);
        }
        if (schema.getKind() == TableKind.DENSE && schema.getRows() < 1) {
            throw PsException.invalidArgument(
                    "table '" + name + "': a DENSE table needs rows > 0, got rows=" + schema.getRows());
        }
        if (schema.getKind() == TableKind.SPARSE && schema.getRows() != 0) {
            throw PsException.invalidArgument(
                    "table '" + name + "': rows=" + schema.getRows() + " is only for DENSE tables; SPARSE needs 0");
        }
        return schema.toBuilder()
                .setOptimizer(normalize(name, schema.getOptimizer()))
                .setInitializer(normalize(name, schema.getInitializer()))
                .build();
    }

    private static OptimizerSpec normalize(final String table, final OptimizerSpec spec) {
        final OptimizerSpec.Builder builder = spec.toBuilder();
        if (spec.getKind() == OptimizerKind.OPTIMIZER_KIND_UNSPECIFIED) {
            builder.setKind(OptimizerKind.SGD);
        } else if (spec.getKind() != OptimizerKind.SGD && spec.getKind() != OptimizerKind.ADAGRAD) {
            throw PsException.invalidArgument("table '" + table + "': unknown optimizer " + spec.getKind());
        }
        if (!(spec.getLearningRate() > 0) || !Float.isFinite(spec.getLearningRate())) {
            throw PsException.invalidArgument("table '" + table + "': optimizer.learning_rate=" + spec.getLearningRate()
                    + " must be finite and > 0");
        }
        if (builder.getKind() == OptimizerKind.ADAGRAD) {
            if (spec.getInitialAccumulator() == 0) {
                builder.setInitialAccumulator(DEFAULT_INITIAL_ACCUMULATOR);
            } else if (!(spec.getInitialAccumulator() > 0) || !Float.isFinite(spec.getInitialAccumulator())) {
                throw PsException.invalidArgument("table '" + table + "': optimizer.initial_accumulator="
                        + spec.getInitialAccumulator() + " must be finite and > 0");
            }
            if (spec.getEpsilon() == 0) {
                builder.setEpsilon(DEFAULT_EPSILON);
            } else if (!(spec.getEpsilon() > 0) || !Float.isFinite(spec.getEpsilon())) {
                throw PsException.invalidArgument(
                        "table '" + table + "': optimizer.epsilon=" + spec.getEpsilon() + " must be finite and > 0");
            }
        }
        return builder.build();
    }

    private static InitializerSpec normalize(final String table, final InitializerSpec spec) {
        final InitializerSpec.Builder builder = spec.toBuilder();
        if (spec.getKind() == InitializerKind.INITIALIZER_KIND_UNSPECIFIED) {
            builder.setKind(InitializerKind.ZEROS);
        }
        if (builder.getKind() != InitializerKind.ZEROS
                && (!(spec.getScale() > 0) || !Float.isFinite(spec.getScale()))) {
            throw PsException.invalidArgument("table '" + table + "': initializer.scale=" + spec.getScale()
                    + " must be finite and > 0 for " + builder.getKind());
        }
        return builder.build();
    }
}
