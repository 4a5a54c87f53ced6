package io.pscluster.server.table;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorSpecies;

/**
 * The optimizers' updates over whole vectors of a record's floats (JDK 17's incubating Vector API). Each kernel
 * updates the record's values and slots from index 0 for as many whole vectors as fit in {@code dim} and returns
 * where it stopped; the optimizer updates the rest float by float. Each lane does exactly the float operations of
 * the optimizer's own loop, in the same order (no fused multiply-add), so both give the same bits.
 *
 * <p>Used only through {@link OptimizerKernels}, which checks that the module is there.
 */
final class VectorKernels {
    /**
     * The machine's widest vectors of floats up to 8 (256 bits): rows of 8 floats are common, and wider vectors would
     * leave them float by float (AVX-512 gives 16).
     */
    private static final VectorSpecies<Float> SPECIES = VectorSpecies.of(
            float.class, VectorShape.forBitSize(Math.min(FloatVector.SPECIES_PREFERRED.vectorBitSize(), 256)));

    private static final int LANES = SPECIES.length();
    /** Agrona's buffers store floats in the machine's order. */
    private static final ByteOrder ORDER = ByteOrder.nativeOrder();

    private VectorKernels() {}

    static int lanes() {
        return LANES;
    }

    /** {@code w -= lr * g}. */
    static int sgd(
            final ByteBuffer record,
            final int values,
            final int dim,
            final float[] g,
            final int gOff,
            final float learningRate) {
        int i = 0;
        for (; i <= dim - LANES; i += LANES) {
            final int w = values + 4 * i;
            final FloatVector gradient = FloatVector.fromArray(SPECIES, g, gOff + i);
            load(record, w).sub(gradient.mul(learningRate)).intoByteBuffer(record, w, ORDER);
        }
        return i;
    }

    /** {@code v = momentum * v + g; w -= lr * v}. */
    static int momentum(
            final ByteBuffer record,
            final int values,
            final int dim,
            final float[] g,
            final int gOff,
            final float learningRate,
            final float momentum) {
        int i = 0;
        for (; i <= dim - LANES; i += LANES) {
            final int w = values + 4 * i;
            final int velocity = values + 4 * (dim + i);
            final FloatVector v = load(record, velocity).mul(momentum).add(FloatVector.fromArray(SPECIES, g, gOff + i));
            v.intoByteBuffer(record, velocity, ORDER);
            load(record, w).sub(v.mul(learningRate)).intoByteBuffer(record, w, ORDER);
        }
        return i;
    }

    /** {@code a += g * g; w -= lr * g / (sqrt(a) + eps)}. */
    static int adagrad(
            final ByteBuffer record,
            final int values,
            final int dim,
            final float[] g,
            final int gOff,
            final float learningRate,
            final float epsilon) {
        int i = 0;
        for (; i <= dim - LANES; i += LANES) {
            final int w = values + 4 * i;
            final int acc = values + 4 * (dim + i);
            final FloatVector gradient = FloatVector.fromArray(SPECIES, g, gOff + i);
            final FloatVector a = load(record, acc).add(gradient.mul(gradient));
            a.intoByteBuffer(record, acc, ORDER);
            final FloatVector step = gradient.mul(learningRate)
                    .div(a.lanewise(VectorOperators.SQRT).add(epsilon));
            load(record, w).sub(step).intoByteBuffer(record, w, ORDER);
        }
        return i;
    }

    /**
     * {@code m = b1 * m + (1 - b1) * g; v = b2 * v + (1 - b2) * g * g; w -= lr * (m / c1) / (sqrt(v / c2) + eps)},
     * with the bias corrections {@code c1}, {@code c2} of this step computed by the caller.
     */
    static int adam(
            final ByteBuffer record,
            final int values,
            final int dim,
            final float[] g,
            final int gOff,
            final float learningRate,
            final float beta1,
            final float beta2,
            final float epsilon,
            final float correction1,
            final float correction2) {
        final float keep1 = 1 - beta1;
        final float keep2 = 1 - beta2;
        int i = 0;
        for (; i <= dim - LANES; i += LANES) {
            final int w = values + 4 * i;
            final int mAt = values + 4 * (dim + i);
            final int vAt = values + 4 * (2 * dim + i);
            final FloatVector gradient = FloatVector.fromArray(SPECIES, g, gOff + i);
            final FloatVector m = load(record, mAt).mul(beta1).add(gradient.mul(keep1));
            final FloatVector v =
                    load(record, vAt).mul(beta2).add(gradient.mul(keep2).mul(gradient));
            m.intoByteBuffer(record, mAt, ORDER);
            v.intoByteBuffer(record, vAt, ORDER);
            final FloatVector mHat = m.div(correction1);
            final FloatVector vHat = v.div(correction2);
            final FloatVector step = mHat.mul(learningRate)
                    .div(vHat.lanewise(VectorOperators.SQRT).add(epsilon));
            load(record, w).sub(step).intoByteBuffer(record, w, ORDER);
        }
        return i;
    }

    private static FloatVector load(final ByteBuffer record, final int at) {
        return FloatVector.fromByteBuffer(SPECIES, record, at, ORDER);
    }

    /**
     * Runs {@link #sgd} on a small row and compares it with the same update float by float: null when they agree,
     * else why the kernels must not be used.
     */
    static String selfCheck() {
        final int dim = LANES + 3;
        final ByteBuffer record = ByteBuffer.allocateDirect(4 * dim).order(ORDER);
        final float[] g = new float[dim];
        for (int i = 0; i < dim; i++) {
            record.putFloat(4 * i, 0.5f + i);
            g[i] = 0.25f - i;
        }
        final int done = sgd(record, 0, dim, g, 0, 0.1f);
        for (int i = 0; i < done; i++) {
            final float expected = (0.5f + i) - 0.1f * (0.25f - i);
            if (Float.floatToRawIntBits(record.getFloat(4 * i)) != Float.floatToRawIntBits(expected)) {
                return "the Vector API's result differed from the float-by-float update at float " + i;
            }
        }
        return done == LANES ? null : "the Vector API updated " + done + " of " + LANES + " floats";
    }
}
