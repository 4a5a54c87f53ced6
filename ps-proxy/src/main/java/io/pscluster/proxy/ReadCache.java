package io.pscluster.proxy;

import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The proxy's read cache: rows pulled through the proxy, kept for later pulls that accept their age. Bounded by
 * bytes; the least recently used rows go first. A row is served only when it is young enough for the caller and was
 * read at the cluster's current {@link ClusterState#readVersion}: a failover, a restore, a move or a table dropped
 * and created again makes every row read before it a miss, so the cache never serves rows of a branch the cluster
 * left. Pushes do not pass the proxy, so a cached row lags them by at most the age the caller accepts.
 *
 * <p>One monitor guards the map (lookups reorder it); the pull path holds it for a batch of lookups or inserts.
 */
final class ReadCache {
    /** What a cached row costs beyond its values: the map entry, the key and the row object (an estimate). */
    static final int ROW_OVERHEAD_BYTES = 160;

    /** No cache: every lookup misses, nothing is kept (and nothing counted). */
    static final ReadCache NONE = new ReadCache(0);

    private record RowKey(String table, long key) {}

    private record Row(byte[] values, long readNanos, long version) {}

    private final long capacityBytes;
    private final LinkedHashMap<RowKey, Row> rows = new LinkedHashMap<>(1024, 0.75f, true);
    private long bytes;
    private final AtomicLong hits = new AtomicLong();
    private final AtomicLong misses = new AtomicLong();
    private final AtomicLong evictions = new AtomicLong();

    /** @param capacityBytes 0: no cache (every pull reads its shards). */
    ReadCache(final long capacityBytes) {
        if (capacityBytes < 0) {
            throw new IllegalArgumentException("read cache capacity " + capacityBytes + " bytes must be >= 0");
        }
        this.capacityBytes = capacityBytes;
    }

    /**
     * Copies the cached rows of {@code keys} that are at most {@code maxAgeNanos} old at {@code nowNanos} and were
     * read at {@code version} into {@code out} (row {@code i} at {@code i * rowBytes}); returns which were found
     * ({@code found[i]}), counting hits and misses.
     */
    boolean[] lookUp(
            final String table,
            final long[] keys,
            final int rowBytes,
            final long version,
            final long nowNanos,
            final long maxAgeNanos,
            final byte[] out) {
        final boolean[] found = new boolean[keys.length];
        if (capacityBytes == 0 || maxAgeNanos <= 0) {
            misses.addAndGet(keys.length);
            return found;
        }
        int hit = 0;
        synchronized (this) {
            for (int i = 0; i < keys.length; i++) {
                final RowKey rowKey = new RowKey(table, keys[i]);
                final Row row = rows.get(rowKey);
                if (row != null && (row.version != version || row.values.length != rowBytes)) {
                    // Read before the rows could have changed (or of a table since created again): never again.
                    rows.remove(rowKey);
                    bytes -= row.values.length + ROW_OVERHEAD_BYTES;
                } else if (row != null && nowNanos - row.readNanos <= maxAgeNanos) {
                    System.arraycopy(row.values, 0, out, i * rowBytes, rowBytes);
                    found[i] = true;
                    hit++;
                }
            }
        }
        hits.addAndGet(hit);
        misses.addAndGet(keys.length - hit);
        return found;
    }

    /**
     * Keeps the rows of {@code keys} (row {@code i} at {@code i * rowBytes} of {@code values}), read from their shards
     * at {@code readNanos} under {@code version}, replacing older copies; evicts the least recently used rows while
     * over capacity.
     */
    void keep(
            final String table,
            final long[] keys,
            final int rowBytes,
            final byte[] values,
            final long readNanos,
            final long version) {
        if (capacityBytes == 0 || rowBytes + ROW_OVERHEAD_BYTES > capacityBytes) {
            return;
        }
        synchronized (this) {
            for (int i = 0; i < keys.length; i++) {
                final byte[] copy = new byte[rowBytes];
                System.arraycopy(values, i * rowBytes, copy, 0, rowBytes);
                final Row before = rows.put(new RowKey(table, keys[i]), new Row(copy, readNanos, version));
                bytes += rowBytes + ROW_OVERHEAD_BYTES;
                if (before != null) {
                    bytes -= before.values.length + ROW_OVERHEAD_BYTES;
                }
            }
            final var oldest = rows.entrySet().iterator();
            while (bytes > capacityBytes && oldest.hasNext()) {
                final Map.Entry<RowKey, Row> evicted = oldest.next();
                bytes -= evicted.getValue().values.length + ROW_OVERHEAD_BYTES;
                oldest.remove();
                evictions.incrementAndGet();
            }
        }
    }

    long capacityBytes() {
        return capacityBytes;
    }

    synchronized long bytes() {
        return bytes;
    }

    synchronized int rows() {
        return rows.size();
    }

    long hits() {
        return hits.get();
    }

    long misses() {
        return misses.get();
    }

    long evictions() {
        return evictions.get();
    }
}
