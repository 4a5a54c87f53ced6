package io.pscluster.proxy;

import io.micrometer.core.instrument.FunctionCounter;
import io.micrometer.core.instrument.Gauge;
import io.micrometer.core.instrument.MeterRegistry;
import io.pscluster.proto.v1.ListShardsResponse;
import io.pscluster.proto.v1.ShardStatus;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.ToDoubleFunction;

/**
 * The proxy's metrics (Micrometer; Prometheus names in brackets), read from its state when scraped: rollbacks
 * ({@code pscluster_proxy_rollbacks_total}, invariant 5), shards by state ({@code pscluster_proxy_shards{state}}), the
 * routing epoch, unowned and restoring slots, pending restore orders, an unfinished operator's restore, the latest
 * checkpoint (id, age), the checkpoints committed and failed since the proxy started, and the read cache's hits,
 * misses, evictions and size.
 */
final class ProxyMetrics {
    private static final List<String> SHARD_STATES = List.of("registering", "live", "suspect", "draining", "gone");

    private final ClusterState state;
    private ListShardsResponse status;
    private long readNanos;

    private ProxyMetrics(final ClusterState state) {
        this.state = state;
    }

    /**
     * Binds the proxy's metrics to {@code registry}; returns what they read through, for the caller to hold (a registry
     * holds it only weakly: once collected, the metrics would read NaN).
     */
    static ProxyMetrics bind(
            final MeterRegistry registry,
            final ClusterState state,
            final CheckpointCoordinator checkpoints,
            final ReadCache cache) {
        final ProxyMetrics metrics = new ProxyMetrics(state);
        FunctionCounter.builder(
                        "pscluster.proxy.rollbacks", metrics, m -> m.status().getRollbacksTotal())
                .description("Rollbacks since the cluster began: acknowledged updates of some slots undone back to a"
                        + " checkpoint (lossless hand-overs excluded)")
                .register(registry);
        for (final String shardState : SHARD_STATES) {
            metrics.gauge(
                            "pscluster.proxy.shards",
                            "Shards by state",
                            m -> m.status().getShardsList().stream()
                                    .filter(shard -> shard.getState().equals(shardState))
                                    .count())
                    .tag("state", shardState)
                    .register(registry);
        }
        metrics.gauge(
                        "pscluster.proxy.routing.epoch",
                        "The routing table's epoch",
                        m -> m.status().getRoutingEpoch())
                .register(registry);
        metrics.gauge(
                        "pscluster.proxy.slots.unowned",
                        "Slots no live shard owns",
                        m -> m.status().getUnownedSlots())
                .register(registry);
        metrics.gauge(
                        "pscluster.proxy.slots.restoring",
                        "Slots being restored from a checkpoint (they refuse requests meanwhile)",
                        m -> m.status().getShardsList().stream()
                                .mapToLong(ShardStatus::getSlotsRestoring)
                                .sum())
                .register(registry);
        metrics.gauge(
                        "pscluster.proxy.restores.pending",
                        "Restore orders not done yet",
                        m -> m.status().getPendingRestoresCount())
                .register(registry);
        metrics.gauge(
                        "pscluster.proxy.restore.unfinished",
                        "The checkpoint an operator's restore into every shard did not finish (0: none): the model may"
                                + " be a mix, and checkpoints are refused",
                        m -> m.status().getUnfinishedRestoreId())
                .register(registry);
        Gauge.builder("pscluster.proxy.checkpoint.latest.id", state, ClusterState::latestCheckpointId)
                .description("The latest committed checkpoint (0: none)")
                .register(registry);
        Gauge.builder("pscluster.proxy.checkpoint.latest.age", state, ProxyMetrics::ageSeconds)
                .description("Seconds since the latest committed checkpoint was taken (NaN: none)")
                .baseUnit("seconds")
                .register(registry);
        FunctionCounter.builder("pscluster.proxy.checkpoints.committed", checkpoints, c -> c.committedCount())
                .description("Checkpoints (periodic and on demand) committed since the proxy started")
                .register(registry);
        FunctionCounter.builder("pscluster.proxy.checkpoints.failed", checkpoints, c -> c.failedCount())
                .description("Checkpoints (periodic and on demand) that failed since the proxy started")
                .register(registry);
        FunctionCounter.builder("pscluster.proxy.read.cache.hits", cache, ReadCache::hits)
                .description("Rows of pulls through the proxy served from its read cache")
                .register(registry);
        FunctionCounter.builder("pscluster.proxy.read.cache.misses", cache, ReadCache::misses)
                .description("Rows of pulls through the proxy read from their shards")
                .register(registry);
        FunctionCounter.builder("pscluster.proxy.read.cache.evictions", cache, ReadCache::evictions)
                .description("Rows the read cache dropped to stay within its capacity")
                .register(registry);
        Gauge.builder("pscluster.proxy.read.cache.size", cache, ReadCache::bytes)
                .description("Bytes the read cache holds (rows and an estimate of their bookkeeping)")
                .baseUnit("bytes")
                .register(registry);
        return metrics;
    }

    private Gauge.Builder<ProxyMetrics> gauge(
            final String name, final String description, final ToDoubleFunction<ProxyMetrics> value) {
        return Gauge.builder(name, this, value).description(description);
    }

    /** The proxy's status, read at most every 200 ms: one scrape reads every metric from one reading. */
    private synchronized ListShardsResponse status() {
        final long now = System.nanoTime();
        if (status == null || now - readNanos > TimeUnit.MILLISECONDS.toNanos(200)) {
            status = state.status();
            readNanos = now;
        }
        return status;
    }

    private static double ageSeconds(final ClusterState state) {
        final long created = state.latestCheckpointCreatedMillis();
        return created == 0 ? Double.NaN : (System.currentTimeMillis() - created) / 1000.0;
    }
}
