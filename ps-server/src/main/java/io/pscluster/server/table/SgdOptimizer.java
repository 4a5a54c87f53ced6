package io.pscluster.server.table;

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
    public void initSlots(final float[] record, final int offset, final int dim) {}

    @Override
    public void apply(final float[] record, final int offset, final int dim, final float[] gradient, final int gOff) {
        for (int i = 0; i < dim; i++) {
            record[offset + i] -= learningRate * gradient[gOff + i];
        }
    }
}
