package io.pscluster.server;

import io.micrometer.core.instrument.Gauge;
import io.micrometer.core.instrument.MeterRegistry;
import io.pscluster.proto.v1.TableStats;
import io.pscluster.server.table.ParameterTable;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.ToLongFunction;

/**
 * A shard's metrics (Micrometer; Prometheus names in brackets), read from it when scraped: rows and bytes of row
 * storage over its tables ({@code pscluster_shard_rows}, {@code pscluster_shard_row_bytes}), updates it acknowledged
 * but could not apply ({@code pscluster_shard_dropped_rows}), its tables, pushes queued and not yet applied, the
 * off-heap bytes held against their budget, and the SYNC gradients held for clocks not yet applied.
 */
final class ShardMetrics {
    private final Shard shard;
    private List<TableStats> tables;
    private long readNanos;

    private ShardMetrics(final Shard shard) {
        this.shard = shard;
    }

    /**
     * Binds the shard's metrics to {@code registry}; returns what they read through, for the caller to hold (a registry
     * holds it only weakly: once collected, the metrics would read NaN).
     */
    static ShardMetrics bind(final MeterRegistry registry, final Shard shard) {
        final ShardMetrics metrics = new ShardMetrics(shard);
        metrics.sum(registry, "pscluster.shard.rows", "Rows held, over every table", TableStats::getRows);
        metrics.sum(
                registry,
                "pscluster.shard.row.bytes",
                "Bytes of row storage (values and optimizer slots), over every table",
                TableStats::getBytes);
        metrics.sum(
                registry,
                "pscluster.shard.dropped.rows",
                "Row updates acknowledged but not applied (past the row cap or memory, slots moved away, writes that"
                        + " threw), over every table; each cause is logged",
                TableStats::getDroppedRows);
        Gauge.builder("pscluster.shard.tables", metrics, m -> m.tables().size())
                .description("Tables held")
                .register(registry);
        Gauge.builder("pscluster.shard.apply.queue.depth", shard, Shard::applyQueueDepth)
                .description("Push batches accepted but not yet applied")
                .register(registry);
        Gauge.builder("pscluster.shard.apply.queue", shard, Shard::applyQueueBytes)
                .description("Heap the pushes accepted but not yet applied hold (keys and gradients)")
                .baseUnit("bytes")
                .register(registry);
        Gauge.builder("pscluster.shard.sync.buffered", shard, Shard::syncBufferedBytes)
                .description("SYNC gradients held for clocks not yet applied")
                .baseUnit("bytes")
                .register(registry);
        Gauge.builder(
                        "pscluster.shard.offheap.held",
                        shard,
                        s -> ParameterTable.offHeapLimit() - ParameterTable.offHeapAvailable())
                .description("Off-heap bytes the rows hold against their budget (with the room queued pushes claimed)")
                .baseUnit("bytes")
                .register(registry);
        Gauge.builder("pscluster.shard.offheap.limit", shard, s -> ParameterTable.offHeapLimit())
                .description("The rows' off-heap budget")
                .baseUnit("bytes")
                .register(registry);
        return metrics;
    }

    private void sum(
            final MeterRegistry registry,
            final String name,
            final String description,
            final ToLongFunction<TableStats> of) {
        Gauge.builder(name, this, m -> m.tables().stream().mapToLong(of).sum())
                .description(description)
                .register(registry);
    }

    /** The tables' figures, read at most every 200 ms: one scrape reads every metric from one reading. */
    private synchronized List<TableStats> tables() {
        final long now = System.nanoTime();
        if (tables == null || now - readNanos > TimeUnit.MILLISECONDS.toNanos(200)) {
            tables = shard.tableStats();
            readNanos = now;
        }
        return tables;
    }
}
