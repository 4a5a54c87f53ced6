package io.pscluster.server.table;

import java.nio.ByteBuffer;
import org.agrona.MutableDirectBuffer;

/**
 * Adagrad: {@code a += g*g; w -= lr * g / (sqrt(a) + eps)}, with the accumulator {@code a} as the one slot,
 * starting at the schema's initial accumulator. Arithmetic is in float, as stored, so a restored row continues
 * exactly as the original would have.
 */
final class AdagradOptimizer implements Optimizer {
    private final float learningRate;
    private final float initialAccumulator;
    private final float epsilon;

    AdagradOptimizer(final float learningRate, final float initialAccumulator, final float epsilon) {
        this.learningRate = learningRate;
        this.initialAccumulator = initialAccumulator;
        this.epsilon = epsilon;
    }

    @Override
    public int slotCount() {
        return 1;
    }

    @Override
    public int counterCount() {
        return 0;
    }

    @Override
    public void init(final MutableDirectBuffer record, final int values, final int dim) {
        for (int i = 0; i < dim; i++) {
            record.putFloat(values + 4 * (dim + i), initialAccumulator);
        }
    }

    @Override
    public void apply(
            final MutableDirectBuffer record, final int values, final int dim, final float[] g, final int gOff) {
        int i = 0;
        final ByteBuffer direct = OptimizerKernels.directOf(record);
        if (direct != null) {
            i = VectorKernels.adagrad(direct, values, dim, g, gOff, learningRate, epsilon);
        }
        for (; i < dim; i++) {
            final int w = values + 4 * i;
            final int acc = values + 4 * (dim + i);
            final float gradient = g[gOff + i];
            final float a = record.getFloat(acc) + gradient * gradient;
            record.putFloat(acc, a);
            record.putFloat(w, record.getFloat(w) - learningRate * gradient / ((float) Math.sqrt(a) + epsilon));
        }
    }
}
