package io.pscluster.bench;

import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.server.table.ParameterTable;
import io.pscluster.server.table.PartitionWriters;
import io.pscluster.wire.TableSchemas;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

/**
 * A shard table outside any server, for the micro-benchmarks: {@code partitions} writer partitions, pre-filled with
 * {@code rowsPerPartition} rows in each, and per partition a set of its keys to update or read. Benchmark threads
 * drive {@link ParameterTable#applyPartition} themselves, one partition each, exactly as a partition's writer does.
 */
final class TableFixture implements AutoCloseable {
    /** The SGD learning rate of the table, and of the plain-array baselines' updates. */
    static final float LEARNING_RATE = 0.01f;

    final PartitionWriters writers;
    final ParameterTable table;
    final long[][] keysOfPartition;
    final int[][] slotsOfPartition;

    TableFixture(final int partitions, final int rowsPerPartition, final int dim, final OptimizerKind optimizer) {
        final List<ParameterTable> tables = new ArrayList<>();
        writers = new PartitionWriters("bench", partitions, 1024, () -> tables);
        table = new ParameterTable(
                TableSchemas.normalize(TableSchema.newBuilder()
                        .setName("bench")
                        .setKind(TableKind.SPARSE)
                        .setDim(dim)
                        .setOptimizer(
                                OptimizerSpec.newBuilder().setKind(optimizer).setLearningRate(LEARNING_RATE))
                        .build()),
                writers);
        tables.add(table);
        keysOfPartition = new long[partitions][rowsPerPartition];
        slotsOfPartition = new int[partitions][rowsPerPartition];
        final int[] filled = new int[partitions];
        final SplittableRandom random = new SplittableRandom(17);
        int remaining = partitions * rowsPerPartition;
        while (remaining > 0) {
            final long key = random.nextLong();
            final int slot = table.slotOf(key);
            final int p = writers.partitionOf(slot);
            if (filled[p] < rowsPerPartition) {
                keysOfPartition[p][filled[p]] = key;
                slotsOfPartition[p][filled[p]] = slot;
                filled[p]++;
                remaining--;
            }
        }
        final float[] zeros = new float[rowsPerPartition * dim];
        for (int p = 0; p < partitions; p++) {
            table.applyPartition(p, keysOfPartition[p], slotsOfPartition[p], zeros, table.touchNow());
        }
    }

    /** A table of one partition and no rows yet, for a benchmark that creates the rows itself. */
    static TableFixture empty(final int dim, final OptimizerKind optimizer) {
        return new TableFixture(1, 0, dim, optimizer);
    }

    /** Stops the writers; the table's off-heap records are freed once it is garbage collected. */
    @Override
    public void close() {
        writers.close();
    }
}
