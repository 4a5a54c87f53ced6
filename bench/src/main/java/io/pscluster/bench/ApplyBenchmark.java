package io.pscluster.bench;

import io.pscluster.proto.v1.OptimizerKind;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

/**
 * SGD updates: a batch of random existing rows updated through the table (index lookup, seqlock, optimizer on
 * off-heap records) against the same updates to the same number of rows of a plain {@code float[]} (the axpy loop
 * a table with no index, no concurrency and no off-heap memory would run). Each benchmark thread owns one
 * partition, as a partition's writer does, so 2 threads show how the table scales with writers.
 */
@BenchmarkMode(Mode.Throughput)
@OutputTimeUnit(TimeUnit.SECONDS)
public class ApplyBenchmark {
    static final int BATCH = 1024;

    /** The table shared by all threads, one partition per thread. */
    @State(Scope.Benchmark)
    public static class Shared {
        @Param({"1"})
        public int partitions;

        @Param({"500000"})
        public int rowsPerPartition;

        @Param({"16"})
        public int dim;

        final AtomicInteger nextPartition = new AtomicInteger();
        TableFixture fixture;

        @Setup(Level.Trial)
        public void setUp() {
            fixture = new TableFixture(partitions, rowsPerPartition, dim, OptimizerKind.SGD);
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            fixture.close();
        }
    }

    /** One thread's partition, its batch of keys and the baseline's array of the same rows. */
    @State(Scope.Thread)
    public static class PerThread {
        int partition;
        long[] keys;
        int[] slots;
        int[] rows;
        float[] gradients;
        float[] plain;
        int dim;
        int touch;

        @Setup(Level.Trial)
        public void setUp(final Shared shared) {
            partition = shared.nextPartition.getAndIncrement() % shared.partitions;
            dim = shared.dim;
            touch = shared.fixture.table.touchNow();
            plain = new float[shared.rowsPerPartition * dim];
            gradients = new float[BATCH * dim];
            final SplittableRandom random = new SplittableRandom(31 + partition);
            for (int i = 0; i < gradients.length; i++) {
                gradients[i] = (float) random.nextDouble(-1, 1);
            }
            keys = new long[BATCH];
            slots = new int[BATCH];
            rows = new int[BATCH];
            newBatch(shared, random);
        }

        private void newBatch(final Shared shared, final SplittableRandom random) {
            for (int i = 0; i < BATCH; i++) {
                rows[i] = random.nextInt(shared.rowsPerPartition);
                keys[i] = shared.fixture.keysOfPartition[partition][rows[i]];
                slots[i] = shared.fixture.slotsOfPartition[partition][rows[i]];
            }
        }
    }

    @Benchmark
    public void table(final Shared shared, final PerThread thread) {
        shared.fixture.table.applyPartition(
                thread.partition, thread.keys, thread.slots, thread.gradients, thread.touch);
    }

    @Benchmark
    public float[] plainArray(final PerThread thread) {
        return plainSgd(thread.plain, thread.rows, thread.gradients, thread.dim, BATCH);
    }

    /** The baseline's update of {@code count} rows of {@code dim} floats: {@code w[row] -= lr * g}, row by row. */
    static float[] plainSgd(final float[] w, final int[] rows, final float[] g, final int dim, final int count) {
        final float lr = TableFixture.LEARNING_RATE;
        for (int i = 0; i < count; i++) {
            final int base = rows[i] * dim;
            for (int d = 0; d < dim; d++) {
                w[base + d] -= lr * g[i * dim + d];
            }
        }
        return w;
    }
}
