package io.pscluster.server.table;

import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.LongAdder;

/**
 * The rows a table holds on this shard, across its partitions, and its cap: partitions' writers reserve a row here
 * before creating one, so the cap holds for the shard as a whole whichever partition a key falls in. Lock-free: a
 * CAS loop on one counter when the table has a cap; without one, a striped counter, so that partitions creating rows
 * at once (a restore) do not contend for one cache line on every row.
 */
final class RowBudget {
    private final AtomicLong rows = new AtomicLong();
    private final LongAdder uncappedRows = new LongAdder();
    private final long cap;

    /** @param cap the most rows; 0 for no cap. */
    RowBudget(final long cap) {
        this.cap = cap == 0 ? Long.MAX_VALUE : cap;
    }

    /** Counts one more row; when {@code capped}, refuses (returns false) if the cap is reached. */
    boolean reserve(final boolean capped) {
        if (cap == Long.MAX_VALUE) {
            uncappedRows.increment();
            return true;
        }
        if (!capped) {
            rows.incrementAndGet();
            return true;
        }
        long current;
        do {
            current = rows.get();
            if (current >= cap) {
                return false;
            }
        } while (!rows.compareAndSet(current, current + 1));
        return true;
    }

    /**
     * Counts {@code rows} rows a push will create, before it is queued, so that it is refused at once rather than its
     * rows dropped by the writer after it was acknowledged; false (nothing counted) if they would pass the cap. Only
     * for a capped table. The writers consume the promise as they create the rows ({@link PartitionStore}) and give
     * back what they did not use ({@link #releasePromised}).
     */
    boolean promise(final long rows) {
        if (rows == 0) {
            // A push that creates no row is never refused for the cap, even when restores (which are not capped) left
            // the table above it.
            return true;
        }
        long current;
        do {
            current = this.rows.get();
            if (current + rows > cap) {
                return false;
            }
        } while (!this.rows.compareAndSet(current, current + rows));
        return true;
    }

    /** Gives back {@code unused} promised rows that were not created. */
    void releasePromised(final long unused) {
        if (unused > 0) {
            rows.addAndGet(-unused);
        }
    }

    void release() {
        if (cap == Long.MAX_VALUE) {
            uncappedRows.decrement();
        } else {
            rows.decrementAndGet();
        }
    }

    long rows() {
        return cap == Long.MAX_VALUE ? uncappedRows.sum() : rows.get();
    }

    /** The cap, or 0 when there is none. */
    long cap() {
        return cap == Long.MAX_VALUE ? 0 : cap;
    }
}
