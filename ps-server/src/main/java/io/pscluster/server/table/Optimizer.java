package io.pscluster.server.table;

import io.pscluster.proto.v1.OptimizerSpec;

/**
 * A server-side update rule. A row record is {@code dim} values followed by {@link #slotCount()} blocks of
 * {@code dim} optimizer slots; {@link #apply} updates one record in place from one gradient row.
 */
public interface Optimizer {
    /** Optimizer state stored per value (0 for SGD, 1 for Adagrad). */
    int slotCount();

    /** Sets the optimizer slots of a freshly created record. */
    void initSlots(float[] record, int offset, int dim);

    /** Applies {@code gradient[gradientOffset .. +dim)} to the record at {@code record[offset]}. */
    void apply(float[] record, int offset, int dim, float[] gradient, int gradientOffset);

    static Optimizer of(final OptimizerSpec spec) {
        return switch (spec.getKind()) {
            case SGD -> new SgdOptimizer(spec.getLearningRate());
            case ADAGRAD ->
                new AdagradOptimizer(spec.getLearningRate(), spec.getInitialAccumulator(), spec.getEpsilon());
            default -> throw new IllegalArgumentException("unknown optimizer " + spec.getKind());
        };
    }
}
