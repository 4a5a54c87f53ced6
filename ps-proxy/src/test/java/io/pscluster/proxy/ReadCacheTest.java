package io.pscluster.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

class ReadCacheTest {
    private static final int ROW = 8;
    private static final long SECOND = TimeUnit.SECONDS.toNanos(1);

    private static byte[] rows(final int count, final int fill) {
        final byte[] values = new byte[count * ROW];
        for (int i = 0; i < values.length; i++) {
            values[i] = (byte) (fill + i / ROW);
        }
        return values;
    }

    @Test
    void shouldServeARowReadAtTheCurrentVersionWhileItIsYoungEnoughForTheCaller() {
        final ReadCache cache = new ReadCache(1 << 20);
        cache.keep("t", new long[] {1, 2}, ROW, rows(2, 10), 0, 5);

        final byte[] out = new byte[3 * ROW];
        final boolean[] found = cache.lookUp("t", new long[] {2, 3, 1}, ROW, 5, 2 * SECOND, 2 * SECOND, out);

        assertThat(found).containsExactly(true, false, true);
        assertThat(out[0]).isEqualTo((byte) 11);
        assertThat(out[2 * ROW]).isEqualTo((byte) 10);
        assertThat(cache.hits()).isEqualTo(2);
        assertThat(cache.misses()).isEqualTo(1);
        assertThat(cache.lookUp("t", new long[] {1}, ROW, 5, 2 * SECOND + 1, 2 * SECOND, new byte[ROW]))
                .as("older than the caller accepts")
                .containsExactly(false);
        assertThat(cache.lookUp("t", new long[] {1}, ROW, 5, 0, 0, new byte[ROW]))
                .as("a caller that accepts no age")
                .containsExactly(false);
        assertThat(cache.lookUp("other", new long[] {1}, ROW, 5, 0, SECOND, new byte[ROW]))
                .containsExactly(false);
    }

    /** A failover, restore, move or table change since the row was read: it is never served again, and freed. */
    @Test
    void shouldNeverServeARowReadAtAnotherVersion() {
        final ReadCache cache = new ReadCache(1 << 20);
        cache.keep("t", new long[] {1}, ROW, rows(1, 10), 0, 5);
        final long held = cache.bytes();

        assertThat(cache.lookUp("t", new long[] {1}, ROW, 6, 0, SECOND, new byte[ROW]))
                .containsExactly(false);
        assertThat(cache.bytes()).isZero();
        assertThat(held).isEqualTo(ROW + ReadCache.ROW_OVERHEAD_BYTES);
        assertThat(cache.rows()).isZero();
    }

    @Test
    void shouldNotServeARowOfAnotherWidth() {
        final ReadCache cache = new ReadCache(1 << 20);
        cache.keep("t", new long[] {1}, ROW, rows(1, 10), 0, 5);

        assertThat(cache.lookUp("t", new long[] {1}, 2 * ROW, 5, 0, SECOND, new byte[2 * ROW]))
                .containsExactly(false);
    }

    @Test
    void shouldEvictTheLeastRecentlyUsedRowsToStayWithinItsCapacity() {
        final int perRow = ROW + ReadCache.ROW_OVERHEAD_BYTES;
        final ReadCache cache = new ReadCache(3L * perRow);
        cache.keep("t", new long[] {1, 2, 3}, ROW, rows(3, 10), 0, 1);
        cache.lookUp("t", new long[] {1}, ROW, 1, 0, SECOND, new byte[ROW]);

        cache.keep("t", new long[] {4}, ROW, rows(1, 20), 0, 1);

        assertThat(cache.bytes()).isEqualTo(3L * perRow);
        assertThat(cache.evictions()).isEqualTo(1);
        assertThat(cache.lookUp("t", new long[] {1, 2, 3, 4}, ROW, 1, 0, SECOND, new byte[4 * ROW]))
                .as("2 was the least recently used")
                .containsExactly(true, false, true, true);
        cache.keep("t", new long[] {4}, ROW, rows(1, 30), 0, 1);
        assertThat(cache.bytes()).as("a row read again replaces its copy").isEqualTo(3L * perRow);
    }

    @Test
    void shouldKeepNothingWithoutCapacity() {
        final ReadCache cache = new ReadCache(0);
        cache.keep("t", new long[] {1}, ROW, rows(1, 10), 0, 1);

        assertThat(cache.rows()).isZero();
        assertThat(cache.lookUp("t", new long[] {1}, ROW, 1, 0, SECOND, new byte[ROW]))
                .containsExactly(false);
    }
}
