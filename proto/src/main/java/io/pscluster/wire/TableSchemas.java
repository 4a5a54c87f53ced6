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
        if (schema.getMaxRowsPerShard() < 0 || schema.getTtlSeconds() < 0) {
            throw PsException.invalidArgument("table '" + name + "': max_rows_per_shard=" + schema.getMaxRowsPerShard()
                    + " and ttl_seconds=" + schema.getTtlSeconds() + " must be >= 0");
        }
        if (schema.getKind() == TableKind.DENSE && (schema.getMaxRowsPerShard() != 0 || schema.getTtlSeconds() != 0)) {
            throw PsException.invalidArgument(
                    "table '" + name + "': max_rows_per_shard and ttl_seconds are only for SPARSE tables");
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
        } else if (spec.getKind() == OptimizerKind.UNRECOGNIZED) {
            throw PsException.invalidArgument("table '" + table + "': unknown optimizer " + spec.getKindValue());
        }
        positive(table, "learning_rate", spec.getLearningRate());
        switch (builder.getKind()) {
            case ADAGRAD -> {
                builder.setInitialAccumulator(
                        orDefault(table, "initial_accumulator", spec.getInitialAccumulator(), 0.1f));
                builder.setEpsilon(orDefault(table, "epsilon", spec.getEpsilon(), 1e-8f));
            }
            case MOMENTUM -> builder.setMomentum(fraction(table, "momentum", spec.getMomentum(), 0.9f));
            case ADAM -> {
                builder.setBeta1(fraction(table, "beta1", spec.getBeta1(), 0.9f));
                builder.setBeta2(fraction(table, "beta2", spec.getBeta2(), 0.999f));
                builder.setEpsilon(orDefault(table, "epsilon", spec.getEpsilon(), 1e-8f));
            }
            case FTRL -> {
                builder.setFtrlBeta(orDefault(table, "ftrl_beta", spec.getFtrlBeta(), 1f));
                notNegative(table, "l1", spec.getL1());
                notNegative(table, "l2", spec.getL2());
            }
            default -> {}
        }
        return builder.build();
    }

    /** {@code value} if it is finite and > 0, {@code fallback} if it is 0 (unset). */
    private static float orDefault(final String table, final String field, final float value, final float fallback) {
        if (value == 0) {
            return fallback;
        }
        positive(table, field, value);
        return value;
    }

    /** {@code value} if it is in (0, 1), {@code fallback} if it is 0 (unset). */
    private static float fraction(final String table, final String field, final float value, final float fallback) {
        if (value == 0) {
            return fallback;
        }
        if (!(value > 0 && value < 1)) {
            throw PsException.invalidArgument(
                    "table '" + table + "': optimizer." + field + "=" + value + " must be in (0, 1)");
        }
        return value;
    }

    private static void positive(final String table, final String field, final float value) {
        if (!(value > 0) || !Float.isFinite(value)) {
            throw PsException.invalidArgument(
                    "table '" + table + "': optimizer." + field + "=" + value + " must be finite and > 0");
        }
    }

    private static void notNegative(final String table, final String field, final float value) {
        if (!(value >= 0) || !Float.isFinite(value)) {
            throw PsException.invalidArgument(
                    "table '" + table + "': optimizer." + field + "=" + value + " must be finite and >= 0");
        }
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
