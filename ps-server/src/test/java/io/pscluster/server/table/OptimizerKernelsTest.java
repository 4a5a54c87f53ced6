package io.pscluster.server.table;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.agrona.concurrent.UnsafeBuffer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The optimizers' vector kernels against their own loops float by float: the same record in a direct buffer (the
 * kernels' path, as a table's chunks are) and on the heap (float by float) must hold the same bits after every step,
 * for every width around the vector length (the kernels do whole vectors, the loop the rest). The tests run with
 * {@code --add-modules jdk.incubator.vector} (the build's argLine), so the kernels must be on here.
 */
class OptimizerKernelsTest {
    private static final int STEPS = 5;
    /** Where the values start in the record's buffer: a record's header comes first in a chunk. */
    private static final int VALUES = 16;

    @Test
    void shouldUseTheVectorKernelsWhenTheModuleIsThere() {
        assumeJdkWithByteBufferVectors();
        assertThat(OptimizerKernels.VECTOR).as(OptimizerKernels.describe()).isTrue();
        assertThat(OptimizerKernels.directOf(new UnsafeBuffer(ByteBuffer.allocateDirect(64))))
                .isNotNull();
        assertThat(OptimizerKernels.directOf(new UnsafeBuffer(new byte[64]))).isNull();
        final ByteBuffer sliced = ByteBuffer.allocateDirect(128);
        assertThat(OptimizerKernels.directOf(new UnsafeBuffer(sliced, 32, 64)))
                .as("a buffer whose indexes are not the direct buffer's")
                .isNull();
        assertThat(OptimizerKernels.directOf(
                        new UnsafeBuffer(ByteBuffer.allocateDirect(64).asReadOnlyBuffer())))
                .as("a read-only buffer")
                .isNull();
    }

    @ParameterizedTest
    @ValueSource(strings = {"sgd", "momentum", "adagrad", "adam"})
    void shouldGiveTheSameBitsAsTheLoopFloatByFloat(final String kind) {
        assertThat(mismatches(kind, STEPS)).isEmpty();
    }

    /** The optimizer {@code kind} names, with hyper-parameters a model would use. */
    private static Optimizer optimizer(final String kind) {
        return switch (kind) {
            case "sgd" -> new SgdOptimizer(0.05f);
            case "momentum" -> new MomentumOptimizer(0.05f, 0.9f);
            case "adagrad" -> new AdagradOptimizer(0.05f, 0.1f, 1e-8f);
            case "adam" -> new AdamOptimizer(0.001f, 0.9f, 0.999f, 1e-8f);
            default -> throw new IllegalArgumentException(kind);
        };
    }

    /**
     * Updates the same rows in a direct buffer and on the heap, {@code steps} times for each width around the vector
     * length, and says where their bits first differed (empty when never). Fails if the updates changed nothing.
     */
    static List<String> mismatches(final String kind, final int steps) {
        final SplittableRandom random = new SplittableRandom(kind.hashCode());
        // Without the module the class of the kernels cannot load: any width will do then.
        final int lanes = OptimizerKernels.VECTOR ? VectorKernels.lanes() : 8;
        final List<String> found = new ArrayList<>();
        for (final int dim : List.of(1, lanes - 1, lanes, lanes + 1, 2 * lanes - 1, 2 * lanes, 3 * lanes + 5, 64, 67)) {
            final Optimizer rule = optimizer(kind);
            final int bytes = VALUES + 4 * dim * (1 + rule.slotCount()) + 4 * rule.counterCount();
            final UnsafeBuffer direct = new UnsafeBuffer(ByteBuffer.allocateDirect(bytes));
            final UnsafeBuffer heap = new UnsafeBuffer(new byte[bytes]);
            final float[] initial = new float[dim];
            for (int i = 0; i < dim; i++) {
                initial[i] = (float) random.nextGaussian();
                direct.putFloat(VALUES + 4 * i, initial[i]);
                heap.putFloat(VALUES + 4 * i, initial[i]);
            }
            rule.init(direct, VALUES, dim);
            rule.init(heap, VALUES, dim);
            final float[][] gradients = new float[16][];
            for (int i = 0; i < gradients.length; i++) {
                gradients[i] = gradients(random, 3 + dim);
            }
            boolean differed = false;
            for (int step = 0; step < steps && !differed; step++) {
                final float[] g = gradients[step % gradients.length];
                rule.apply(direct, VALUES, dim, g, 3);
                rule.apply(heap, VALUES, dim, g, 3);
                for (int at = 0; at < bytes; at += 4) {
                    if (direct.getInt(at) != heap.getInt(at)) {
                        found.add(String.format(
                                "%s, dim %d, step %d: float %d of the record is %s (0x%08x) in a direct buffer, %s"
                                        + " (0x%08x) float by float",
                                kind,
                                dim,
                                step,
                                (at - VALUES) / 4,
                                direct.getFloat(at),
                                direct.getInt(at),
                                heap.getFloat(at),
                                heap.getInt(at)));
                        break;
                    }
                }
            }
            int moved = 0;
            for (int i = 0; i < dim; i++) {
                moved += direct.getFloat(VALUES + 4 * i) != initial[i] ? 1 : 0;
            }
            assertThat(moved)
                    .as("%s, dim %d: values the updates changed", kind, dim)
                    .isPositive();
        }
        return found;
    }

    /** JDK 19 replaced the Vector API's byte-buffer access, which the kernels use: there they stay off (Tables). */
    private static void assumeJdkWithByteBufferVectors() {
        org.junit.jupiter.api.Assumptions.assumeTrue(
                Runtime.version().feature() < 19, "the kernels use JDK 17's Vector API (byte buffers), gone in JDK 19");
    }

    /** Gradients of every size a model meets: zeros, tiny, ordinary and large, both signs. */
    private static float[] gradients(final SplittableRandom random, final int length) {
        final float[] g = new float[length];
        for (int i = 0; i < length; i++) {
            final double scale = switch (random.nextInt(4)) {
                case 0 -> 0;
                case 1 -> 1e-6;
                case 2 -> 1;
                default -> 1e3;
            };
            g[i] = (float) (scale * random.nextGaussian());
        }
        return g;
    }

    @Test
    void shouldGoFloatByFloatWithoutTheModuleOrWhenTurnedOff() throws Exception {
        final ChildJvm.Run without = ChildJvm.run(Compare.class, List.of("-Xmx64m"), 60, "10");
        assertThat(without.result()).containsExactly("scalar", "0");
        assertThat(without.output()).contains("without --add-modules jdk.incubator.vector");
        final ChildJvm.Run off = ChildJvm.run(
                Compare.class,
                List.of("-Xmx64m", "--add-modules", "jdk.incubator.vector", "-Dpscluster.vector=false"),
                60,
                "10");
        assertThat(off.result()).containsExactly("scalar", "0");
    }

    @Test
    void shouldGoFloatByFloatWithoutC2UnlessTurnedOnAnyway() throws Exception {
        assumeJdkWithByteBufferVectors();
        assertScalarSaying("the JVM compiles with C1 only (-XX:TieredStopAtLevel=1)", "-XX:TieredStopAtLevel=1");
        assertScalarSaying("C1 only (-XX:CompilationMode=quick-only)", "-XX:CompilationMode=quick-only");
        assertScalarSaying("the JVM interprets only (-Xint)", "-Xint");
        assertScalarSaying("interprets only (-XX:-UseCompiler)", "-XX:-UseCompiler");
        final ChildJvm.Run forced = ChildJvm.run(
                Compare.class,
                List.of(
                        "-Xmx64m",
                        "--add-modules",
                        "jdk.incubator.vector",
                        "-XX:TieredStopAtLevel=1",
                        "-Dpscluster.vector=true"),
                60,
                "10");
        assertThat(forced.result()).as(forced.output()).containsExactly("vector", "0");
    }

    /** A child JVM with the module and {@code compilerOption} goes float by float and says {@code why}. */
    private static void assertScalarSaying(final String why, final String compilerOption) throws Exception {
        // Interpreted, a few steps are enough (and all a time limit allows).
        final ChildJvm.Run run = ChildJvm.run(
                Compare.class, List.of("-Xmx64m", "--add-modules", "jdk.incubator.vector", compilerOption), 120, "2");
        assertThat(run.result()).as(run.output()).containsExactly("scalar", "0");
        assertThat(run.output()).contains(why);
    }

    /**
     * This JVM runs the kernels in C1 (the build's argLine stops there), where the Vector API is plain Java; compiled
     * by C2 they are the processor's vector instructions. A child with the default compilers runs enough updates for
     * C2 to compile the kernels, and must find the same bits.
     */
    @Test
    void shouldGiveTheSameBitsOnceCompiledByC2() throws Exception {
        assumeJdkWithByteBufferVectors();
        final ChildJvm.Run on = ChildJvm.run(
                Compare.class,
                List.of("-Xmx128m", "--add-modules", "jdk.incubator.vector", "-XX:-TieredCompilation"),
                120,
                "20000");
        assertThat(on.result()).as(on.output()).containsExactly("vector", "0");
    }

    /** Prints {@code RESULT vector|scalar <mismatches>} after {@code args[0]} steps of each optimizer and width. */
    public static final class Compare {
        public static void main(final String[] args) {
            final int steps = Integer.parseInt(args[0]);
            int mismatches = 0;
            for (final String kind : List.of("sgd", "momentum", "adagrad", "adam")) {
                for (final String found : mismatches(kind, steps)) {
                    System.out.println(found);
                    mismatches++;
                }
            }
            System.out.println(OptimizerKernels.describe());
            System.out.println("RESULT " + (OptimizerKernels.VECTOR ? "vector" : "scalar") + " " + mismatches);
        }
    }
}
