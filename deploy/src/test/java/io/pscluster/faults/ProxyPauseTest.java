package io.pscluster.faults;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.pscluster.local.AdminCalls;
import io.pscluster.local.CounterTable;
import io.pscluster.proto.v1.ListShardsResponse;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The proxy process stopped (SIGSTOP, as a long collection or a frozen VM would stop it) for longer than a lease and
 * its margin, then resumed: the shards' heartbeats were sent all along and waited in its sockets, so no shard is
 * declared gone for the proxy's own silence: no failover, no restore, no rollback of pushes acknowledged after the
 * last checkpoint. The shards, whose leases lapsed on their own clocks meanwhile, serve again once a heartbeat gets
 * through.
 */
@Tag("slow")
class ProxyPauseTest {
    private static final long LEASE_MS = 2_000;
    private static final long MARGIN_MS = 500;
    private static final int KEYS = 2_000;

    @TempDir
    Path dir;

    @Test
    void shouldNotFailShardsOverWhenTheProxyItselfWasPausedPastTheirLeases() throws Exception {
        try (ProcessCluster cluster = new ProcessCluster(dir, LEASE_MS, MARGIN_MS, 250)) {
            cluster.startProxy();
            cluster.startShard("s0");
            cluster.startShard("s1");
            await().atMost(Duration.ofSeconds(30)).until(cluster::allSlotsServed);
            try (PsClient client = PsClient.connect(cluster.proxyAddress())) {
                final PsTable table = client.createTable(CounterTable.schema("paused"));
                final long[] keys = new long[KEYS];
                for (int i = 0; i < KEYS; i++) {
                    keys[i] = (i + 1) * 0x9E3779B97F4A7C15L;
                }
                final float[] minusOne = new float[KEYS];
                Arrays.fill(minusOne, -1f);
                table.push(keys, minusOne);
                client.flush();
                AdminCalls.checkpointNow(cluster.proxyAddress());
                // Acknowledged after the checkpoint: a failover would restore without it.
                table.push(keys, minusOne);
                client.flush();
                final ListShardsResponse before = cluster.status();

                cluster.pause("proxy");
                // The fault itself: the proxy stays stopped for two leases and margins.
                Thread.sleep(2 * (LEASE_MS + MARGIN_MS));
                cluster.resume("proxy");

                await().atMost(Duration.ofSeconds(30))
                        .until(() -> cluster.log("proxy").contains("the lease check ran"));
                // A lease and margin of the proxy's own time later, with heartbeats read again, nothing was lost.
                await().pollDelay(Duration.ofMillis(LEASE_MS + MARGIN_MS))
                        .atMost(Duration.ofSeconds(30))
                        .until(cluster::allSlotsServed);
                assertThat(cluster.log("proxy")).doesNotContain("missed its lease");
                final ListShardsResponse after = cluster.status();
                assertThat(after.getRollbacksTotal()).isEqualTo(before.getRollbacksTotal());
                assertThat(idsOf(after)).isEqualTo(idsOf(before));
                assertThat(after.getShardsList())
                        .allSatisfy(shard -> assertThat(shard.getSlotsOwned()).isPositive());
                final float[] values = table.pull(keys);
                for (int i = 0; i < KEYS; i++) {
                    assertThat(values[i])
                            .as("key %d: both pushes, none rolled back", keys[i])
                            .isEqualTo(2f);
                }
                table.push(keys, minusOne);
                client.flush();
                assertThat(table.pull(new long[] {keys[0]})[0]).isEqualTo(3f);
            } catch (AssertionError | RuntimeException e) {
                throw new AssertionError(e.getMessage() + "\n" + cluster.logs(), e);
            }
        }
    }

    private static List<String> idsOf(final ListShardsResponse status) {
        return status.getShardsList().stream()
                .map(shard -> shard.getShard().getShardId())
                .sorted()
                .toList();
    }
}
