package io.pscluster.bench;

import io.pscluster.proto.v1.OptimizerKind;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
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
 * Pulls: a batch of random existing rows read through the table (index lookup and a seqlocked copy of each record
 * into the little-endian response bytes) against copying the same rows out of a plain {@code float[]}.
 */
@BenchmarkMode(Mode.Throughput)
@OutputTimeUnit(TimeUnit.SECONDS)
@State(Scope.Benchmark)
public class GatherBenchmark {
    static final int BATCH = 1024;

    @Param({"1000000"})
    public int rows;

    @Param({"16"})
    public int dim;

    private TableFixture fixture;
    private long[] keys;
    private int[] slots;
    private int[] rowOfKey;
    private byte[] out;
    private float[] plain;
    private float[] plainOut;

    @Setup(Level.Trial)
    public void setUp() {
        fixture = new TableFixture(1, rows, dim, OptimizerKind.SGD);
        final SplittableRandom random = new SplittableRandom(5);
        keys = new long[BATCH];
        slots = new int[BATCH];
        rowOfKey = new int[BATCH];
        for (int i = 0; i < BATCH; i++) {
            rowOfKey[i] = random.nextInt(rows);
            keys[i] = fixture.keysOfPartition[0][rowOfKey[i]];
            slots[i] = fixture.slotsOfPartition[0][rowOfKey[i]];
        }
        out = new byte[BATCH * dim * 4];
        plain = new float[rows * dim];
        plainOut = new float[BATCH * dim];
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        fixture.close();
    }

    @Benchmark
    public byte[] table() {
        fixture.table.pull(keys, slots, out);
        return out;
    }

    @Benchmark
    public float[] plainArray() {
        return plainGather(plain, rowOfKey, dim, plainOut, BATCH);
    }

    /** The baseline's pull: copies {@code count} rows of {@code dim} floats out of {@code plain}, row after row. */
    static float[] plainGather(
            final float[] plain, final int[] rows, final int dim, final float[] out, final int count) {
        if (dim == 1) {
            // A one-float row is a load and a store; a System.arraycopy call per float would handicap the baseline.
            for (int i = 0; i < count; i++) {
                out[i] = plain[rows[i]];
            }
            return out;
        }
        for (int i = 0; i < count; i++) {
            System.arraycopy(plain, rows[i] * dim, out, i * dim, dim);
        }
        return out;
    }
}
