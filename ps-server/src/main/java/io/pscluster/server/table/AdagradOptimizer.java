package io.pscluster.server.table;

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
    public void initSlots(final float[] record, final int offset, final int dim) {
        java.util.Arrays.fill(record, offset + dim, offset + 2 * dim, initialAccumulator);
    }

    @Override
    public void apply(final float[] record, final int offset, final int dim, final float[] gradient, final int gOff) {
        final int acc = offset + dim;
        for (int i = 0; i < dim; i++) {
            final float g = gradient[gOff + i];
            final float a = record[acc + i] + g * g;
            record[acc + i] = a;
            record[offset + i] -= learningRate * g / ((float) Math.sqrt(a) + epsilon);
        }
    }
}
