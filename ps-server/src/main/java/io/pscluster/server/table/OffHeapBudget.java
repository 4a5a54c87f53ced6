package io.pscluster.server.table;

import com.sun.management.HotSpotDiagnosticMXBean;
import java.lang.management.ManagementFactory;
import java.lang.ref.Cleaner;
import java.nio.ByteBuffer;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The off-heap bytes the tables of this JVM may hold in records, below {@code -XX:MaxDirectMemorySize} by a headroom
 * that gRPC's buffers need. Every chunk of records is allocated here. A chunk that would pass the limit is refused
 * without asking the JDK, whose refusal costs a full GC and up to half a second of sleep in the writer for each row,
 * after at most one reclaim attempt of its own (a collection, so that chunks of dropped tables come back; again only a
 * second later while attempts free little). After the JDK refused memory anyway (gRPC took more than its headroom),
 * new chunks are refused without asking for {@link #COOL_DOWN_NANOS}. Bytes come back when the collector frees a chunk.
 */
final class OffHeapBudget {
    /** The budget of this JVM's tables. */
    static final OffHeapBudget JVM = new OffHeapBudget(tableLimit(maxDirectMemory()));

    private static final long MIB = 1L << 20;
    private static final long COOL_DOWN_NANOS = TimeUnit.SECONDS.toNanos(5);
    private static final long RECLAIM_INTERVAL_NANOS = TimeUnit.SECONDS.toNanos(1);
    private static final long MAX_RECLAIM_WAIT_NANOS = TimeUnit.SECONDS.toNanos(2);
    private static final Cleaner CLEANER = Cleaner.create();

    private final long limit;
    private final AtomicLong reserved = new AtomicLong();
    /** Of {@link #reserved}, the bytes counted for chunks not allocated yet ({@link RecordRoom} claims). */
    private final AtomicLong ahead = new AtomicLong();

    private volatile long coolUntilNanos = System.nanoTime();
    // Guarded by this.
    private long lastReclaimNanos = System.nanoTime() - RECLAIM_INTERVAL_NANOS;
    private boolean reclaimedBefore;
    private boolean lastReclaimUseful;

    OffHeapBudget(final long limit) {
        this.limit = limit;
    }

    /**
     * A zeroed direct buffer of {@code bytes}, counted against the budget.
     *
     * @throws OutOfMemoryError naming the limit, when it would be passed or the JDK refused memory moments ago.
     */
    ByteBuffer allocate(final int bytes) {
        if (!reserve(bytes, true)) {
            throw new OutOfMemoryError(shortage());
        }
        try {
            return allocateReserved(bytes);
        } catch (OutOfMemoryError refused) {
            unreserve(bytes);
            throw refused;
        }
    }

    /**
     * Counts {@code bytes} that a chunk allocated later ({@link #allocateReserved}) will take, or that are given back
     * ({@link #unreserve}); false (nothing counted) when they would pass the limit or the JDK refused memory moments
     * ago. With {@code mayReclaim}, asks the collector for dropped tables' chunks first when the limit is near (see
     * {@link #reclaim}).
     */
    boolean reserve(final long bytes, final boolean mayReclaim) {
        if (coolingDown()) {
            return false;
        }
        // A collection only gives back chunks that were allocated: not when the claims of pushes queued fill the rest.
        if (tryReserve(bytes)
                || (mayReclaim && allocatedBytes() + bytes > limit && reclaim(bytes) && tryReserve(bytes))) {
            ahead.addAndGet(bytes);
            return true;
        }
        return false;
    }

    /** Gives back bytes {@link #reserve} counted and no chunk took. */
    void unreserve(final long bytes) {
        if (bytes > 0) {
            ahead.addAndGet(-bytes);
            reserved.addAndGet(-bytes);
        }
    }

    /**
     * A zeroed direct buffer of {@code bytes} that {@link #reserve} counted; they come back when the collector frees
     * it. When the JDK refuses the memory (gRPC took more than its headroom) they stay counted, the caller's to give
     * back with {@link #unreserve}, and new reservations are refused for {@link #COOL_DOWN_NANOS}.
     */
    ByteBuffer allocateReserved(final int bytes) {
        final ByteBuffer buffer;
        try {
            buffer = ByteBuffer.allocateDirect(bytes);
        } catch (OutOfMemoryError refused) {
            coolUntilNanos = System.nanoTime() + COOL_DOWN_NANOS;
            throw refused;
        }
        ahead.addAndGet(-bytes);
        CLEANER.register(buffer, new Release(reserved, bytes));
        return buffer;
    }

    /** Whether bytes are counted for chunks not allocated yet: claims of pushes queued, which may go unused. */
    boolean anyAhead() {
        return ahead.get() > 0;
    }

    /** Whether reservations are refused for a few seconds because the JDK refused direct memory moments ago. */
    boolean coolingDown() {
        return System.nanoTime() - coolUntilNanos < 0;
    }

    /** Bytes of chunks allocated and not yet collected: what a collection can give back, at most. */
    private long allocatedBytes() {
        return reserved.get() - ahead.get();
    }

    /** Why memory was refused, with the figures: for messages. */
    String shortage() {
        if (coolingDown()) {
            return "direct memory was refused less than 5 s ago; table rows hold " + reserved.get() / MIB
                    + " MiB off-heap";
        }
        return "table rows would hold more than " + limit / MIB
                + " MiB off-heap (-XX:MaxDirectMemorySize less headroom for gRPC); they hold " + reserved.get() / MIB
                + " MiB (counting the new rows of pushes not yet applied)";
    }

    private boolean tryReserve(final long bytes) {
        long current;
        do {
            current = reserved.get();
            if (current + bytes > limit) {
                return false;
            }
        } while (!reserved.compareAndSet(current, current + bytes));
        return true;
    }

    /**
     * Asks the collector for the chunks of dropped tables, as the JDK does before it refuses direct memory, but not
     * for every refused row: again only a second after an attempt that freed little (memory really is full), at once
     * after one that freed a quarter of the budget or more (tables come and go). Returns whether there is room for
     * {@code bytes} now.
     */
    private synchronized boolean reclaim(final long bytes) {
        if (reserved.get() + bytes <= limit) {
            return true; // another writer's reclaim already made room
        }
        final long now = System.nanoTime();
        if (!lastReclaimUseful && now - lastReclaimNanos < RECLAIM_INTERVAL_NANOS) {
            return false;
        }
        lastReclaimNanos = now;
        // Watched as allocated bytes: claims given back meanwhile are not the collector's doing.
        final long before = allocatedBytes();
        System.gc();
        // Cleaners run on their own thread, one chunk at a time: wait while they are still returning bytes (thousands
        // of small chunks take a while on a loaded machine), and stop once 50 ms pass without any coming back. Until
        // the first bytes come back, a first reclaim or one after a useful one waits up to 250 ms (on a loaded
        // machine the cleaner thread may not run at once; the JDK waits about half a second before it refuses direct
        // memory); after one that freed little (memory really is full) 50 ms, so that a full table's writer, asking
        // once a second, is not held back for long.
        final int firstWaits = lastReclaimUseful || !reclaimedBefore ? 25 : 5;
        reclaimedBefore = true;
        final long giveUpNanos = now + MAX_RECLAIM_WAIT_NANOS;
        long seen = allocatedBytes();
        boolean returning = false;
        for (int idle = 0;
                idle < (returning ? 5 : firstWaits)
                        && reserved.get() + bytes > limit
                        && System.nanoTime() - giveUpNanos < 0; ) {
            try {
                Thread.sleep(10);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                break;
            }
            final long current = allocatedBytes();
            if (current < seen) {
                returning = true;
                idle = 0;
            } else {
                idle++;
            }
            seen = current;
        }
        final long freed = before - allocatedBytes();
        lastReclaimUseful = freed >= limit / 4;
        return reserved.get() + bytes <= limit;
    }

    /**
     * Whether {@code bytes} more fit now, after at most one collection to get back the chunks of dropped tables (see
     * {@link #reclaim}); counts nothing.
     */
    boolean hasRoomFor(final long bytes) {
        return available() >= bytes || (!coolingDown() && reclaim(bytes));
    }

    /** Bytes that may still be allocated. */
    long available() {
        return Math.max(0, limit - reserved.get());
    }

    long limit() {
        return limit;
    }

    /** Returns a collected chunk's bytes; holds no reference to the chunk. */
    private record Release(AtomicLong reserved, long bytes) implements Runnable {
        @Override
        public void run() {
            reserved.addAndGet(-bytes);
        }
    }

    /** The rows' share of {@code maxDirect}: all of it less an eighth, and at least 64 MiB, left to gRPC. */
    static long tableLimit(final long maxDirect) {
        return Math.max(0, maxDirect - Math.max(64 * MIB, maxDirect / 8));
    }

    /** -XX:MaxDirectMemorySize, or the maximum heap when it is not set (the JDK's default). */
    private static long maxDirectMemory() {
        try {
            final String value = ManagementFactory.getPlatformMXBean(HotSpotDiagnosticMXBean.class)
                    .getVMOption("MaxDirectMemorySize")
                    .getValue();
            final long set = Long.parseLong(value);
            return set > 0 ? set : Runtime.getRuntime().maxMemory();
        } catch (RuntimeException notHotSpot) {
            return Runtime.getRuntime().maxMemory();
        }
    }
}
