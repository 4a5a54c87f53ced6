package io.pscluster.server.table;

import java.nio.ByteBuffer;
import org.agrona.MutableDirectBuffer;

/**
 * Adam with bias correction, per row ("lazy" Adam, as sparse embeddings use it): slots m and v from 0, and the
 * row's own step count t as the one counter, so a row touched rarely is corrected for its own number of updates.
 * {@code m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; t += 1; w -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)}.
 */
final class AdamOptimizer implements Optimizer {
    private final float learningRate;
    private final float beta1;
    private final float beta2;
    private final float epsilon;

    AdamOptimizer(final float learningRate, final float beta1, final float beta2, final float epsilon) {
        this.learningRate = learningRate;
        this.beta1 = beta1;
        this.beta2 = beta2;
        this.epsilon = epsilon;
    }

    @Override
    public int slotCount() {
        return 2;
    }

    @Override
    public int counterCount() {
        return 1;
    }

    @Override
    public void init(final MutableDirectBuffer record, final int values, final int dim) {
        record.setMemory(values + 4 * dim, 4 * (2 * dim + 1), (byte) 0);
    }

    @Override
    public void apply(
            final MutableDirectBuffer record, final int values, final int dim, final float[] g, final int gOff) {
        final int stepAt = values + 4 * 3 * dim;
        final int step = record.getInt(stepAt) + 1;
        record.putInt(stepAt, step);
        final float correction1 = (float) (1 - Math.pow(beta1, step));
        final float correction2 = (float) (1 - Math.pow(beta2, step));
        int i = 0;
        final ByteBuffer direct = OptimizerKernels.directOf(record);
        if (direct != null) {
            i = VectorKernels.adam(
                    direct, values, dim, g, gOff, learningRate, beta1, beta2, epsilon, correction1, correction2);
        }
        for (; i < dim; i++) {
            final int w = values + 4 * i;
            final int mAt = values + 4 * (dim + i);
            final int vAt = values + 4 * (2 * dim + i);
            final float gradient = g[gOff + i];
            final float m = beta1 * record.getFloat(mAt) + (1 - beta1) * gradient;
            final float v = beta2 * record.getFloat(vAt) + (1 - beta2) * gradient * gradient;
            record.putFloat(mAt, m);
            record.putFloat(vAt, v);
            final float mHat = m / correction1;
            final float vHat = v / correction2;
            record.putFloat(w, record.getFloat(w) - learningRate * mHat / ((float) Math.sqrt(vHat) + epsilon));
        }
    }
}
