package io.pscluster.server.table;

import java.nio.ByteBuffer;
import org.agrona.MutableDirectBuffer;

/**
 * Whether the optimizers update rows through the Vector API ({@link VectorKernels}) or float by float. The Vector API
 * is an incubator module in JDK 17: it is used when the JVM was started with {@code --add-modules
 * jdk.incubator.vector} (psctl's shard commands and the deploy files do), {@code -Dpscluster.vector=false} is not
 * set, the JVM has its optimizing compiler (C2: not {@code -Xint} nor C1 only, {@link #withoutC2}, where the Vector
 * API runs as plain Java, twice as slow as the loops; {@code -Dpscluster.vector=true} turns them on there anyway, as
 * the tests of the kernels do), and a check at start finds the API this code was written for (JDK 17's: its
 * byte-buffer access went in JDK 19) and working; otherwise every optimizer runs its own loop. Both give bit-identical
 * rows: the same float operations in the same order, lane by lane. The check runs before C2 compiles anything, so that the compiled
 * kernels keep the loops' bits is the tests' to show ({@code OptimizerKernelsTest}).
 *
 * <p>This class names no class of the incubator module, so it loads on any JVM.
 */
public final class OptimizerKernels {
    /** The system property that turns the vector kernels off ({@code false}), or on without C2 ({@code true}). */
    static final String PROPERTY = "pscluster.vector";

    private static final String MODULE = "jdk.incubator.vector";

    /** Why the kernels are off, or null when they are on. */
    private static final String OFF_BECAUSE = check();

    /** Whether optimizers use {@link VectorKernels} for records in direct buffers. */
    static final boolean VECTOR = OFF_BECAUSE == null;

    private OptimizerKernels() {}

    /**
     * The direct buffer under {@code record} whose indexes are the record's own, for {@link VectorKernels}; null when
     * the kernels are off or the record is not such a buffer, or a read-only one or one whose limit is short of its
     * capacity, which the Vector API would refuse where Agrona writes (then the caller updates float by float).
     */
    static ByteBuffer directOf(final MutableDirectBuffer record) {
        if (!VECTOR) {
            return null;
        }
        final ByteBuffer buffer = record.byteBuffer();
        return buffer != null
                        && buffer.isDirect()
                        && !buffer.isReadOnly()
                        && buffer.limit() >= record.capacity()
                        && record.wrapAdjustment() == 0
                ? buffer
                : null;
    }

    /** How optimizers update rows in this JVM, and why not through the Vector API if not: for a shard's log. */
    public static String describe() {
        return VECTOR ? "vector (" + VectorKernels.lanes() + " floats a step)" : "scalar: " + OFF_BECAUSE;
    }

    /**
     * Why this JVM compiles nothing with C2, or null: {@code -Xint} or {@code -XX:-UseCompiler} (no compiler), tiered
     * compilation stopped below level 4, or {@code -XX:CompilationMode=quick-only} (C1 only).
     */
    static String withoutC2() {
        final String info = System.getProperty("java.vm.info", "");
        if (info.contains("interpreted mode")) {
            return "the JVM interprets only (-Xint)";
        }
        try {
            final com.sun.management.HotSpotDiagnosticMXBean vm =
                    java.lang.management.ManagementFactory.getPlatformMXBean(
                            com.sun.management.HotSpotDiagnosticMXBean.class);
            if (!Boolean.parseBoolean(vm.getVMOption("UseCompiler").getValue())) {
                return "the JVM interprets only (-XX:-UseCompiler)";
            }
            if ("quick-only".equals(vm.getVMOption("CompilationMode").getValue())) {
                return "the JVM compiles with C1 only (-XX:CompilationMode=quick-only)";
            }
            final boolean tiered =
                    Boolean.parseBoolean(vm.getVMOption("TieredCompilation").getValue());
            final int stopAt =
                    Integer.parseInt(vm.getVMOption("TieredStopAtLevel").getValue());
            return tiered && stopAt < 4 ? "the JVM compiles with C1 only (-XX:TieredStopAtLevel=" + stopAt + ")" : null;
        } catch (RuntimeException | LinkageError notHotSpot) {
            // Another JVM's options are not HotSpot's: take its compiler as able.
            return null;
        }
    }

    private static String check() {
        if ("false".equalsIgnoreCase(System.getProperty(PROPERTY))) {
            return "-D" + PROPERTY + "=false";
        }
        if (ModuleLayer.boot().findModule(MODULE).isEmpty()) {
            return "the JVM was started without --add-modules " + MODULE;
        }
        final String noC2 = withoutC2();
        if (noC2 != null && !"true".equalsIgnoreCase(System.getProperty(PROPERTY))) {
            return noC2 + ", where the Vector API runs as plain Java (-D" + PROPERTY + "=true to use it anyway)";
        }
        try {
            return VectorKernels.selfCheck();
        } catch (LinkageError | RuntimeException unusable) {
            // A JDK whose incubating API differs from JDK 17's (byte-buffer access went in JDK 19).
            return "the Vector API of this JDK cannot be used (" + unusable + ")";
        }
    }
}
