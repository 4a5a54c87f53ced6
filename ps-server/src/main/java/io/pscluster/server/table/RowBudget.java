package io.pscluster.server.table;

import java.util.concurrent.atomic.AtomicLong;

/**
 * The rows a table holds on this shard, across its partitions, and its cap: partitions' writers reserve a row here
 * before creating one, so the cap holds for the shard as a whole whichever partition a key falls in. Lock-free (a
 * CAS loop on one counter; only row creation and removal touch it).
 */
final class RowBudget {
    private final AtomicLong rows = new AtomicLong();
    private final long cap;

    /** @param cap the most rows; 0 for no cap. */
    RowBudget(final long cap) {
        this.cap = cap == 0 ? Long.MAX_VALUE : cap;
    }

    /** Counts one more row; when {@code capped}, refuses (returns false) if the cap is reached. */
    boolean reserve(final boolean capped) {
        if (!capped || cap == Long.MAX_VALUE) {
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

    void release() {
        rows.decrementAndGet();
    }

    long rows() {
        return rows.get();
    }

    /** The cap, or 0 when there is none. */
    long cap() {
        return cap == Long.MAX_VALUE ? 0 : cap;
    }
}
