package io.pscluster.server.table;

import java.nio.ByteBuffer;
import org.agrona.MutableDirectBuffer;

/** Plain SGD: {@code w -= lr * g}. No slots. */
final class SgdOptimizer implements Optimizer {
    private final float learningRate;

    SgdOptimizer(final float learningRate) {
        this.learningRate = learningRate;
    }

    @Override
    public int slotCount() {
        return 0;
    }

    @Override
    public int counterCount() {
        return 0;
    }

    @Override
    public void init(final MutableDirectBuffer record, final int values, final int dim) {}

    @Override
    public void apply(
            final MutableDirectBuffer record, final int values, final int dim, final float[] g, final int gOff) {
        int i = 0;
        final ByteBuffer direct = OptimizerKernels.directOf(record);
        if (direct != null) {
            i = VectorKernels.sgd(direct, values, dim, g, gOff, learningRate);
        }
        for (; i < dim; i++) {
            final int at = values + 4 * i;
            record.putFloat(at, record.getFloat(at) - learningRate * g[gOff + i]);
        }
    }
}
