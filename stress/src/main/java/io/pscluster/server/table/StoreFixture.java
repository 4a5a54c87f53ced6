package io.pscluster.server.table;

import io.pscluster.proto.v1.InitializerKind;
import io.pscluster.proto.v1.InitializerSpec;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteOrder;
import java.util.Arrays;

/**
 * Stores for the jcstress tests, and the row patterns they write and check. SGD keeps no optimizer slots, so a
 * record {@link PartitionStore#put} takes is just the row's values; rows start at zero and there is no row cap.
 *
 * <p>Every row a test writes holds one value in all its elements, so a copy that mixes two writes, or that shows
 * another key's row, is told apart by {@link #commonValue}.
 */
final class StoreFixture {
    /** What {@link #commonValue} returns when the elements of a copied row differ. */
    static final int TORN = -1;

    private static final VarHandle FLOATS =
            MethodHandles.byteArrayViewVarHandle(float[].class, ByteOrder.LITTLE_ENDIAN);

    private StoreFixture() {}

    static PartitionStore store(final int dim) {
        return new PartitionStore(
                dim,
                Optimizer.of(OptimizerSpec.newBuilder()
                        .setKind(OptimizerKind.SGD)
                        .setLearningRate(1f)
                        .build()),
                new Initializer(InitializerSpec.newBuilder()
                        .setKind(InitializerKind.ZEROS)
                        .build()),
                new RowBudget(0));
    }

    /** A whole SGD record of {@code dim} elements, all {@code value}. */
    static float[] row(final int dim, final int value) {
        final float[] row = new float[dim];
        Arrays.fill(row, value);
        return row;
    }

    /** The value all {@code dim} elements of a row copied by {@link PartitionStore#readValues} hold, or TORN. */
    static int commonValue(final byte[] copied, final int dim) {
        final float first = (float) FLOATS.get(copied, 0);
        for (int i = 1; i < dim; i++) {
            if ((float) FLOATS.get(copied, 4 * i) != first) {
                return TORN;
            }
        }
        return (int) first;
    }
}
