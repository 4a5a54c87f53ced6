package io.pscluster.wire;

/**
 * Settings of gRPC's Netty that a PSCluster process takes unless told otherwise, applied by its {@code main} before
 * any gRPC class is loaded (they are read once, when Netty's classes initialize).
 *
 * <p>{@value #MAX_ORDER_PROPERTY} = {@value #MAX_ORDER}: the pooled allocator's chunks of 16 MiB instead of 4 MiB. A
 * message of about 1 MiB (a large push or pull answer) then takes a sixteenth of a chunk, and a chunk holding a few
 * of them stays in the pool's first list, which Netty never frees; with 4 MiB chunks one such buffer fills a quarter
 * of a chunk, the chunk moves to a list whose chunks are freed once empty, and every few messages Netty allocates a
 * new chunk, zeroes it and faults its pages in (most of a shard handler's time on 1 MiB pulls in a profile). Set the
 * property on the command line to choose another value.
 */
public final class NettyTuning {
    /** The shaded Netty's name of {@code io.netty.allocator.maxOrder}. */
    public static final String MAX_ORDER_PROPERTY = "io.grpc.netty.shaded.io.netty.allocator.maxOrder";

    static final String MAX_ORDER = "11";

    private NettyTuning() {}

    /** Sets every property above that the command line did not set. */
    public static void applyDefaults() {
        if (System.getProperty(MAX_ORDER_PROPERTY) == null) {
            System.setProperty(MAX_ORDER_PROPERTY, MAX_ORDER);
        }
    }
}
