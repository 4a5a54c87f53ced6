package io.pscluster.server.table;

import java.nio.ByteBuffer;
import org.agrona.MutableDirectBuffer;

/** Momentum (heavy ball): {@code v = momentum * v + g; w -= lr * v}, with the velocity as the one slot, from 0. */
final class MomentumOptimizer implements Optimizer {
    private final float learningRate;
    private final float momentum;

    MomentumOptimizer(final float learningRate, final float momentum) {
        this.learningRate = learningRate;
        this.momentum = momentum;
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
        record.setMemory(values + 4 * dim, 4 * dim, (byte) 0);
    }

    @Override
    public void apply(
            final MutableDirectBuffer record, final int values, final int dim, final float[] g, final int gOff) {
        int i = 0;
        final ByteBuffer direct = OptimizerKernels.directOf(record);
        if (direct != null) {
            i = VectorKernels.momentum(direct, values, dim, g, gOff, learningRate, momentum);
        }
        for (; i < dim; i++) {
            final int w = values + 4 * i;
            final int velocity = values + 4 * (dim + i);
            final float v = momentum * record.getFloat(velocity) + g[gOff + i];
            record.putFloat(velocity, v);
            record.putFloat(w, record.getFloat(w) - learningRate * v);
        }
    }
}
