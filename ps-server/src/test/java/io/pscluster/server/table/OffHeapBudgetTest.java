package io.pscluster.server.table;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.proto.v1.InitializerSpec;
import io.pscluster.wire.Slots;
import java.lang.management.GarbageCollectorMXBean;
import java.lang.management.ManagementFactory;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * Rows refused once the off-heap budget is used up cost no collection: the JDK's own refusal of direct memory runs a
 * full GC and sleeps up to half a second for every allocation it refuses, which stalled a writer (and every push
 * queued behind it) for each new row. Runs a partition in a child JVM with a small {@code -XX:MaxDirectMemorySize}.
 */
class OffHeapBudgetTest {
    private static final int REFUSALS = 40;

    @Test
    void shouldRefuseRowsPastTheBudgetWithoutAskingTheJdkForMemory() throws Exception {
        final String[] fields = ChildJvm.run(Child.class, List.of("-Xmx128m", "-XX:MaxDirectMemorySize=96m"), 120)
                .result();
        final long refused = Long.parseLong(fields[0]);
        final long collections = Long.parseLong(fields[1]);
        final long bytes = Long.parseLong(fields[2]);
        assertThat(refused).as("new rows refused past the budget").isEqualTo(REFUSALS);
        // The JDK collects once per refused allocation; the budget refuses before asking it.
        assertThat(collections).as("collections during %d refusals", REFUSALS).isLessThan(REFUSALS / 4);
        assertThat(bytes).as("off-heap bytes of rows").isLessThanOrEqualTo(OffHeapBudget.tableLimit(96L << 20));
    }

    /**
     * Chunks of dropped stores come back when the budget runs out, however many there are: the jcstress forks drop
     * thousands of small stores between collections, and a reclaim that waited a fixed 200 ms for the cleaners (slow
     * in an interpreter-only fork) refused a row with most of the budget garbage.
     */
    @Test
    void shouldReclaimEveryDroppedChunkBeforeRefusing() {
        final int chunk = 4096;
        final int chunks = 16_384;
        final OffHeapBudget budget = new OffHeapBudget((long) chunk * chunks);
        fillWithDroppedChunks(budget, chunk, chunks);

        // Nearly all of the budget at once: only a reclaim that waits for almost every cleaner has room for it.
        final int most = (chunks - 64) * chunk;
        assertThat(budget.allocate(most).capacity()).isEqualTo(most);
        assertThat(budget.available()).isLessThanOrEqualTo(64L * chunk);
    }

    /**
     * Room asked for ahead of a dense table's rows counts the chunks of dropped tables as free once collected: the
     * check collects once rather than refusing on the bytes they held (a shard with no table left refused a dense table
     * for memory on every heartbeat).
     */
    @Test
    void shouldFindRoomHeldByDroppedChunksWhenAskedForRoomAhead() {
        final int chunk = 4096;
        final int chunks = 1024;
        final OffHeapBudget budget = new OffHeapBudget((long) chunk * chunks);
        fillWithDroppedChunks(budget, chunk, chunks);
        assertThat(budget.hasRoomFor((long) (chunks - 64) * chunk))
                .as("room once the dropped chunks are collected")
                .isTrue();
        assertThat(budget.hasRoomFor((long) (chunks + 1) * chunk))
                .as("more than the budget")
                .isFalse();
    }

    /**
     * Allocates chunks of {@code chunk} bytes, each dropped at once (as a jcstress state's store is), until the budget
     * is used up. A collection meanwhile (other tests' garbage) lets the cleaners return some of them on their own, so
     * it allocates until the budget is full, not a fixed count.
     */
    private static void fillWithDroppedChunks(final OffHeapBudget budget, final int chunk, final int chunks) {
        long allocations = 0;
        while (budget.available() >= chunk) {
            budget.allocate(chunk);
            allocations++;
            assertThat(allocations).as("allocations to use the budget up").isLessThan(100L * chunks);
        }
        assertThat(budget.available()).isLessThan(chunk);
    }

    /** Fills a partition until a row is refused, then counts collections during more refusals. */
    public static final class Child {
        public static void main(final String[] args) {
            final PartitionStore store = new PartitionStore(
                    64, new SgdOptimizer(1f), new Initializer(InitializerSpec.getDefaultInstance()), new RowBudget(0));
            final float[] gradient = new float[64];
            final long[] key = new long[1];
            final int[] rows = {0};
            // The store's table is "": its keys' slots by that table's hash.
            final long tableHash = Slots.tableHash("");
            final int[] slot = {Slots.slotOf(tableHash, 0)};
            long next = 0;
            while (store.applyBatch(key, slot, rows, 1, gradient, 1) == 0) {
                key[0] = ++next;
                slot[0] = Slots.slotOf(tableHash, next);
            }
            final long before = collections();
            long refused = 0;
            for (int i = 0; i < REFUSALS; i++) {
                key[0] = ++next;
                slot[0] = Slots.slotOf(tableHash, next);
                refused += store.applyBatch(key, slot, rows, 1, gradient, 1);
            }
            final long offHeap = OffHeapBudget.JVM.limit() - OffHeapBudget.JVM.available();
            System.out.println("RESULT " + refused + " " + (collections() - before) + " " + offHeap);
        }

        private static long collections() {
            long count = 0;
            for (final GarbageCollectorMXBean gc : ManagementFactory.getGarbageCollectorMXBeans()) {
                count += gc.getCollectionCount();
            }
            return count;
        }
    }
}
