package io.pscluster.cli;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.pscluster.local.AdminCalls;
import io.pscluster.local.LocalCluster;
import io.pscluster.testing.TestTables;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.stream.LongStream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Each process's Prometheus endpoint, scraped over real HTTP while a real cluster works: the proxy's rollbacks
 * (invariant 5: every rollback is reported, in metrics too), shards by state and checkpoints; the shards' rows and
 * their gRPC calls by method and status.
 */
class MetricsEndpointTest {
    private static final int KEYS = 2_000;

    @TempDir
    Path dir;

    private final HttpClient http = HttpClient.newHttpClient();

    @Test
    void shouldReportRollbacksShardsCheckpointsRowsAndCallsAsTheyHappen() throws Exception {
        final Map<String, MetricsEndpoint> endpoints = new HashMap<>();
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(2)
                        .checkpointRoot(dir.resolve("ckpt").toUri().toString())
                        .leaseMs(1_000)
                        .leaseMarginMs(300)
                        .heartbeatIntervalMs(200)
                        .meterRegistries(process -> {
                            try {
                                final MetricsEndpoint endpoint = MetricsEndpoint.start(0);
                                endpoints.put(process, endpoint);
                                return endpoint.registry();
                            } catch (java.io.IOException e) {
                                throw new java.io.UncheckedIOException(e);
                            }
                        })
                        .start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final String proxy = scrape(endpoints.get("proxy"));
            assertThat(value(proxy, "pscluster_proxy_rollbacks_total")).isZero();
            assertThat(value(proxy, "pscluster_proxy_shards{state=\"live\"}")).isEqualTo(2);
            assertThat(value(proxy, "pscluster_proxy_checkpoint_latest_id")).isZero();

            final PsTable table = client.createTable(TestTables.counting("t", 4));
            final long[] keys = LongStream.rangeClosed(1, KEYS)
                    .map(k -> k * 0x9E3779B97F4A7C15L)
                    .toArray();
            table.push(keys, new float[KEYS * 4]);
            client.flush();
            final long checkpoint = AdminCalls.checkpointNow(cluster.proxyAddress());

            long rows = 0;
            for (final String shard : new String[] {"shard-0", "shard-1"}) {
                final String text = scrape(endpoints.get(shard));
                rows += (long) value(text, "pscluster_shard_rows");
                assertThat(text)
                        .as("%s: pushes counted by method and status", shard)
                        .containsPattern("grpc_server_\\w+\\{[^}]*method=\"Push\"[^}]*statusCode=\"OK\"[^}]*} [1-9]");
            }
            assertThat(rows).as("rows over the shards' endpoints").isEqualTo(KEYS);
            final String afterCheckpoint = scrape(endpoints.get("proxy"));
            assertThat(value(afterCheckpoint, "pscluster_proxy_checkpoint_latest_id"))
                    .isEqualTo(checkpoint);
            assertThat(value(afterCheckpoint, "pscluster_proxy_checkpoints_committed_total"))
                    .isEqualTo(1);
            assertThat(value(afterCheckpoint, "pscluster_proxy_checkpoint_latest_age_seconds"))
                    .isBetween(0.0, 600.0);

            // Pulls through the proxy: the first reads the shards, the second the read cache.
            for (int i = 0; i < 2; i++) {
                final PsctlRun pull = PsctlRun.psctl(
                        "pull",
                        "--proxy",
                        cluster.proxyAddress(),
                        "--table",
                        "t",
                        "--keys",
                        keys[0] + "," + keys[1],
                        "--max-staleness-ms",
                        "600000");
                assertThat(pull.exit()).as(pull.text()).isZero();
            }
            final String afterPulls = scrape(endpoints.get("proxy"));
            assertThat(value(afterPulls, "pscluster_proxy_read_cache_misses_total"))
                    .isEqualTo(2);
            assertThat(value(afterPulls, "pscluster_proxy_read_cache_hits_total"))
                    .isEqualTo(2);
            assertThat(value(afterPulls, "pscluster_proxy_read_cache_size_bytes"))
                    .isPositive();

            // A shard killed: its slots come back from the checkpoint on the other, a rollback the proxy reports.
            cluster.crashShard(0);
            await().atMost(Duration.ofSeconds(60)).untilAsserted(() -> {
                final String text = scrape(endpoints.get("proxy"));
                assertThat(value(text, "pscluster_proxy_rollbacks_total")).isEqualTo(1);
                assertThat(value(text, "pscluster_proxy_shards{state=\"gone\"}"))
                        .isEqualTo(1);
                assertThat(value(text, "pscluster_proxy_shards{state=\"live\"}"))
                        .isEqualTo(1);
            });
            assertThat(AdminCalls.status(cluster.proxyAddress()).getRollbacksTotal())
                    .as("the same count in status")
                    .isEqualTo(1);

            final HttpResponse<String> post = http.send(
                    HttpRequest.newBuilder(uri(endpoints.get("proxy")))
                            .POST(HttpRequest.BodyPublishers.noBody())
                            .build(),
                    HttpResponse.BodyHandlers.ofString());
            assertThat(post.statusCode()).isEqualTo(405);
        } finally {
            endpoints.values().forEach(MetricsEndpoint::close);
        }
    }

    private static URI uri(final MetricsEndpoint endpoint) {
        return URI.create("http://127.0.0.1:" + endpoint.port() + "/metrics");
    }

    private String scrape(final MetricsEndpoint endpoint) throws Exception {
        final HttpResponse<String> response =
                http.send(HttpRequest.newBuilder(uri(endpoint)).GET().build(), HttpResponse.BodyHandlers.ofString());
        assertThat(response.statusCode()).isEqualTo(200);
        assertThat(response.headers().firstValue("Content-Type"))
                .hasValueSatisfying(type -> assertThat(type).startsWith("text/plain; version=0.0.4"));
        return response.body();
    }

    /** The value of the sample {@code sample} (a name, with its labels if it has any) in a scrape. */
    private static double value(final String scrape, final String sample) {
        for (final String line : scrape.split("\n")) {
            if (line.startsWith(sample + " ")) {
                return Double.parseDouble(line.substring(sample.length() + 1).trim());
            }
        }
        throw new AssertionError("no sample " + sample + " in:\n" + scrape);
    }
}
