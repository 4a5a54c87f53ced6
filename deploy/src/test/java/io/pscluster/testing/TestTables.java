package io.pscluster.testing;

import io.pscluster.proto.v1.InitializerKind;
import io.pscluster.proto.v1.InitializerSpec;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;

/** Table schemas several tests share. */
public final class TestTables {
    private TestTables() {}

    /**
     * A sparse table of {@code dim} that starts at zeros and takes each gradient as is (SGD, learning rate 1): after
     * pushes of -1, a row's values count the pushes applied to it.
     */
    public static TableSchema counting(final String name, final int dim) {
        return TableSchema.newBuilder()
                .setName(name)
                .setKind(TableKind.SPARSE)
                .setDim(dim)
                .setOptimizer(
                        OptimizerSpec.newBuilder().setKind(OptimizerKind.SGD).setLearningRate(1f))
                .setInitializer(InitializerSpec.newBuilder().setKind(InitializerKind.ZEROS))
                .build();
    }
}
