package io.pscluster.server.table;

import io.pscluster.proto.v1.OptimizerSpec;
import org.agrona.MutableDirectBuffer;

/**
 * A server-side update rule over one row record in place. From byte offset {@code values} a record holds
 * {@code dim} float values, then {@link #slotCount()} blocks of {@code dim} float slots (slot {@code k} of value
 * {@code i} at {@code values + 4 * (dim * (k + 1) + i)}), then {@link #counterCount()} int counters.
 *
 * <p>Implementations are stateless apart from their hyper-parameters and are called by a table partition's single
 * writer thread only.
 */
public interface Optimizer {
    /** Float slots stored per value. */
    int slotCount();

    /** Int counters stored per record (Adam's step count). */
    int counterCount();

    /** Sets the slots and counters of a freshly created record (its values are already initialized). */
    void init(MutableDirectBuffer record, int values, int dim);

    /** Applies {@code gradient[gradientOffset .. +dim)} to the record. */
    void apply(MutableDirectBuffer record, int values, int dim, float[] gradient, int gradientOffset);

    /** The optimizer a (normalized) schema asks for. */
    static Optimizer of(final OptimizerSpec spec) {
        return switch (spec.getKind()) {
            case SGD -> new SgdOptimizer(spec.getLearningRate());
            case ADAGRAD ->
                new AdagradOptimizer(spec.getLearningRate(), spec.getInitialAccumulator(), spec.getEpsilon());
            case MOMENTUM -> new MomentumOptimizer(spec.getLearningRate(), spec.getMomentum());
            case ADAM -> new AdamOptimizer(spec.getLearningRate(), spec.getBeta1(), spec.getBeta2(), spec.getEpsilon());
            case FTRL -> new FtrlOptimizer(spec.getLearningRate(), spec.getFtrlBeta(), spec.getL1(), spec.getL2());
            default -> throw new IllegalArgumentException("unknown optimizer " + spec.getKind());
        };
    }
}
