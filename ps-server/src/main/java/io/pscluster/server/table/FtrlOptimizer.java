package io.pscluster.server.table;

import org.agrona.MutableDirectBuffer;

/**
 * FTRL-proximal (McMahan et al., "Ad Click Prediction: a View from the Trenches", 2013), per coordinate, with
 * slots z and n from 0. The stored value is the proximal solution, so pulls read the weight directly:
 * {@code sigma = (sqrt(n + g^2) - sqrt(n)) / alpha; z += g - sigma w; n += g^2;
 * w = |z| <= l1 ? 0 : -(z - sign(z) l1) / ((beta + sqrt(n)) / alpha + l2)}.
 */
final class FtrlOptimizer implements Optimizer {
    private final float alpha;
    private final float beta;
    private final float l1;
    private final float l2;

    FtrlOptimizer(final float alpha, final float beta, final float l1, final float l2) {
        this.alpha = alpha;
        this.beta = beta;
        this.l1 = l1;
        this.l2 = l2;
    }

    @Override
    public int slotCount() {
        return 2;
    }

    @Override
    public int counterCount() {
        return 0;
    }

    @Override
    public void init(final MutableDirectBuffer record, final int values, final int dim) {
        record.setMemory(values + 4 * dim, 4 * 2 * dim, (byte) 0);
    }

    @Override
    public void apply(
            final MutableDirectBuffer record, final int values, final int dim, final float[] g, final int gOff) {
        for (int i = 0; i < dim; i++) {
            final int wAt = values + 4 * i;
            final int zAt = values + 4 * (dim + i);
            final int nAt = values + 4 * (2 * dim + i);
            final float gradient = g[gOff + i];
            final float n = record.getFloat(nAt);
            final float newN = n + gradient * gradient;
            final float sigma = ((float) Math.sqrt(newN) - (float) Math.sqrt(n)) / alpha;
            final float z = record.getFloat(zAt) + gradient - sigma * record.getFloat(wAt);
            record.putFloat(zAt, z);
            record.putFloat(nAt, newN);
            final float w = Math.abs(z) <= l1
                    ? 0f
                    : -(z - Math.signum(z) * l1) / ((beta + (float) Math.sqrt(newN)) / alpha + l2);
            record.putFloat(wAt, w);
        }
    }
}
