package io.pscluster.server.table;

import java.util.concurrent.atomic.AtomicLong;

/**
 * The records one partition of a table may fill, claimed before they are filled: a push's new rows are claimed when
 * the push is admitted, so that a push acknowledged never finds its writer short of off-heap memory (the row would be
 * dropped after the client saw success). Rows created without a claim (restores, dense tables, a SYNC clock's sum)
 * claim their record as they are created.
 *
 * <p>Records come in chunks; a claim that needs more records than the chunks counted so far hold counts the bytes of
 * the chunks missing against the {@link OffHeapBudget} at once, so the writer that allocates them later never asks
 * the budget again. Claimed records are the live rows plus the rows claimed and not yet created; the chunks counted
 * are at least those allocated, and at least enough for the claimed records. One {@code long} holds both, changed by
 * compare-and-set: claims never lock, nor do releases that give no chunk back. A release that gives chunks back, and
 * the writer's count of the chunks it allocated, take this object's lock, so that a release never stops counting a
 * chunk allocated meanwhile (its record may have been freed since, and the claims no longer cover it).
 */
final class RecordRoom {
    private static final int CHUNK_BITS = 26;
    private static final long CHUNK_MASK = (1L << CHUNK_BITS) - 1;
    /** An upper bound of a claim takes chunks only while they are at most this share of the budget's free bytes. */
    private static final int BOUND_SHARE_DIVISOR = 4;

    private final OffHeapBudget budget;
    private final int recordsPerChunk;
    private final long chunkBytes;
    /** Claimed records above {@link #CHUNK_BITS}, chunks counted against the budget below. */
    private final AtomicLong state = new AtomicLong();
    /** Chunks the writer allocated; written under this object's lock, read without it. */
    private volatile int allocated;

    RecordRoom(final OffHeapBudget budget, final int recordsPerChunk, final long chunkBytes) {
        this.budget = budget;
        this.recordsPerChunk = recordsPerChunk;
        this.chunkBytes = chunkBytes;
    }

    /**
     * Claims {@code records} more records, counting the bytes of any chunk they need; false (nothing claimed) when the
     * budget has no room for those chunks. An {@code exact} claim (records that will be created unless a push queued
     * before creates them) may make the budget ask the collector for dropped tables' chunks first (a full collection,
     * at most once a second while memory stays full); an upper bound (every key of a push, most of which may have
     * rows) never does, and takes chunks only while they are a small share of the free bytes, so that bounds held by
     * queued pushes never crowd out the rows really needed. Any thread.
     */
    boolean claim(final long records, final boolean exact) {
        if (records == 0) {
            return true;
        }
        while (true) {
            final long current = state.get();
            final long claimed = (current >>> CHUNK_BITS) + records;
            final long counted = current & CHUNK_MASK;
            final long needed = Math.max(counted, chunksFor(claimed));
            if (needed > CHUNK_MASK) {
                return false; // more records than a partition can hold, whatever the memory
            }
            final long extraBytes = (needed - counted) * chunkBytes;
            if (extraBytes > 0
                    && (!exact && extraBytes > budget.available() / BOUND_SHARE_DIVISOR
                            || !budget.reserve(extraBytes, exact))) {
                return false;
            }
            if (state.compareAndSet(current, claimed << CHUNK_BITS | needed)) {
                return true;
            }
            budget.unreserve(extraBytes);
        }
    }

    /**
     * Gives back {@code records} claimed records (claims not used, rows removed), and the bytes of counted chunks no
     * longer needed: those neither allocated nor needed by the records still claimed. Any thread.
     */
    void release(final long records) {
        if (records == 0) {
            return;
        }
        while (true) {
            final long current = state.get();
            final long claimed = Math.max(0, (current >>> CHUNK_BITS) - records);
            final long counted = current & CHUNK_MASK;
            if (Math.max(allocated, chunksFor(claimed)) < counted) {
                releaseGivingBackChunks(records);
                return;
            }
            if (state.compareAndSet(current, claimed << CHUNK_BITS | counted)) {
                return;
            }
        }
    }

    private synchronized void releaseGivingBackChunks(final long records) {
        while (true) {
            final long current = state.get();
            final long claimed = Math.max(0, (current >>> CHUNK_BITS) - records);
            final long counted = current & CHUNK_MASK;
            final long kept = Math.min(counted, Math.max(allocated, chunksFor(claimed)));
            if (state.compareAndSet(current, claimed << CHUNK_BITS | kept)) {
                budget.unreserve((counted - kept) * chunkBytes);
                return;
            }
        }
    }

    /** Counts a chunk the writer allocated (its bytes were counted by a claim). Writer-only. */
    synchronized void chunkAllocated() {
        allocated = allocated + 1;
    }

    /** Records claimed: live rows and rows claimed, not yet created. */
    long claimed() {
        return state.get() >>> CHUNK_BITS;
    }

    /** Chunks whose bytes are counted against the budget, allocated or not. */
    long countedChunks() {
        return state.get() & CHUNK_MASK;
    }

    private long chunksFor(final long records) {
        return (records + recordsPerChunk - 1) / recordsPerChunk;
    }
}
