package io.pscluster.faults;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.pscluster.checkpoint.CheckpointInfo;
import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.PausePoints;
import io.pscluster.local.AdminCalls;
import io.pscluster.local.LocalCluster;
import io.pscluster.proto.v1.InjectFaultRequest;
import io.pscluster.server.FaultPoints;
import io.pscluster.server.ShardServer;
import io.pscluster.testing.TestTables;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.concurrent.CompletableFuture;
import java.util.stream.LongStream;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A shard loses its slots (its lease lapses: heartbeats dropped) while a checkpoint's files are being written: the
 * other shard restores them from the previous checkpoint and goes on, so what the lost shard holds of them is a branch
 * the cluster has left. The checkpoint must not commit with its files (found by a hostile review: a shard stopped by
 * SIGSTOP and resumed put its stale rows into the next checkpoint, and a later failover restored them). The next
 * checkpoint commits.
 */
class CheckpointSlotsMovedTest {
    private static final int KEYS = 4_000;

    @TempDir
    Path dir;

    @BeforeAll
    static void faultsOn() {
        System.setProperty("pscluster.faults", "true");
    }

    @AfterAll
    static void faultsOff() {
        System.clearProperty("pscluster.faults");
        PausePoints.disarm(PausePoints.MID_ROW_FILE);
    }

    @Test
    void shouldNotCommitACheckpointWhoseSlotsChangedOwnerWhileItsFilesWereWritten() throws Exception {
        final String root = dir.resolve("ckpt").toUri().toString();
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(2)
                        .checkpointRoot(root)
                        .checkpointCodec("none")
                        .leaseMs(1_000)
                        .leaseMarginMs(300)
                        .heartbeatIntervalMs(200)
                        .start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final long first = checkpointBetweenTwoPushes(cluster, client);

            // The next checkpoint's files are being written (one of them stopped mid-file) when shard 0's slots move.
            PausePoints.arm(PausePoints.MID_ROW_FILE);
            final CompletableFuture<Long> second =
                    CompletableFuture.supplyAsync(() -> AdminCalls.checkpointNow(cluster.proxyAddress()));
            await().atMost(Duration.ofSeconds(30)).until(() -> !PausePoints.armed(PausePoints.MID_ROW_FILE));
            dropHeartbeats(cluster, true);
            await().atMost(Duration.ofSeconds(30))
                    .untilAsserted(() -> assertThat(
                                    AdminCalls.status(cluster.proxyAddress()).getRollbacksList())
                            .anySatisfy(
                                    event -> assertThat(event.getCheckpointId()).isEqualTo(first)));
            PausePoints.disarm(PausePoints.MID_ROW_FILE);

            final Throwable refused = second.handle((id, e) -> e).get();
            assertThat(refused)
                    .as("the checkpoint begun before shard 0's slots moved")
                    .hasRootCauseInstanceOf(StatusRuntimeException.class);
            final Status status = ((StatusRuntimeException) rootCause(refused)).getStatus();
            assertThat(status.getCode()).isEqualTo(Status.Code.FAILED_PRECONDITION);
            assertThat(status.getDescription()).contains("changed owner");
            final CheckpointStore store = new CheckpointStore(java.net.URI.create(root), new Configuration());
            assertThat(store.list().stream().map(CheckpointInfo::id).toList())
                    .as("committed checkpoints")
                    .containsExactly(first);

            dropHeartbeats(cluster, false);
            cluster.awaitHealthy(60_000);
            // Refused while the proxy has not heard yet that the restore is done; then it commits.
            final long third = await().atMost(Duration.ofSeconds(60))
                    .ignoreExceptionsMatching(e -> e instanceof StatusRuntimeException refusal
                            && refusal.getStatus().getCode() == Status.Code.FAILED_PRECONDITION
                            && String.valueOf(refusal.getStatus().getDescription())
                                    .contains("still being restored"))
                    .until(() -> AdminCalls.checkpointNow(cluster.proxyAddress()), id -> id > first);
            assertThat(third).isGreaterThan(first);
        }
    }

    /**
     * The same with a shard that restarts under its id (as systemd restarts a crashed one) after it wrote its files:
     * its slots stay its own, at the same generation, but are restored from the previous checkpoint, so its files hold
     * what the crash undid (found by the review of the first fix, which compared owners and generations only).
     */
    @Test
    void shouldNotCommitACheckpointWhoseSlotsWereRestoredWhileItsFilesWereWritten() throws Exception {
        final String root = dir.resolve("ckpt-restart").toUri().toString();
        ShardServer restarted = null;
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(2)
                        .checkpointRoot(root)
                        .checkpointCodec("none")
                        .leaseMs(10_000)
                        .heartbeatIntervalMs(200)
                        .start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final long first = checkpointBetweenTwoPushes(cluster, client);

            PausePoints.arm(PausePoints.MID_ROW_FILE);
            final CompletableFuture<Long> second =
                    CompletableFuture.supplyAsync(() -> AdminCalls.checkpointNow(cluster.proxyAddress()));
            // One shard is held mid-file; the other finishes its files.
            final String written = await().atMost(Duration.ofSeconds(30))
                    .until(
                            () -> AdminCalls.operationProgress(cluster.proxyAddress()).getShardProgressList().stream()
                                    .filter(shard -> shard.getPhase().equals("done") || shard.getDone())
                                    .map(shard -> shard.getShardId())
                                    .findFirst()
                                    .orElse(null),
                            java.util.Objects::nonNull);
            final int index = cluster.shard(0).shardId().equals(written) ? 0 : 1;
            final int port = cluster.shard(index).port();
            cluster.crashShard(index);
            restarted = ShardServer.start(new ShardServer.Context()
                    .proxyAddress(cluster.proxyAddress())
                    .shardId(written)
                    .port(port));
            await().atMost(Duration.ofSeconds(30))
                    .untilAsserted(() -> assertThat(
                                    AdminCalls.status(cluster.proxyAddress()).getRollbacksList())
                            .anySatisfy(
                                    event -> assertThat(event.getCheckpointId()).isEqualTo(first)));
            PausePoints.disarm(PausePoints.MID_ROW_FILE);

            final Throwable refused = second.handle((id, e) -> e).get();
            assertThat(refused)
                    .as("the checkpoint begun before shard %s restarted without its rows", written)
                    .hasRootCauseInstanceOf(StatusRuntimeException.class);
            final Status status = ((StatusRuntimeException) rootCause(refused)).getStatus();
            assertThat(status.getCode()).isEqualTo(Status.Code.FAILED_PRECONDITION);
            assertThat(status.getDescription()).contains("restore order");
            final CheckpointStore store = new CheckpointStore(java.net.URI.create(root), new Configuration());
            assertThat(store.list().stream().map(CheckpointInfo::id).toList())
                    .as("committed checkpoints")
                    .containsExactly(first);
        } finally {
            PausePoints.disarm(PausePoints.MID_ROW_FILE);
            if (restarted != null) {
                restarted.crash();
            }
        }
    }

    /** Every key of a new table pushed once, a checkpoint taken (its id returned), every key pushed again. */
    private static long checkpointBetweenTwoPushes(final LocalCluster cluster, final PsClient client) {
        final PsTable table = client.createTable(TestTables.counting("t", 1));
        final long[] keys = LongStream.rangeClosed(1, KEYS)
                .map(k -> k * 0x9E3779B97F4A7C15L)
                .toArray();
        final float[] minusOne = new float[KEYS];
        Arrays.fill(minusOne, -1f);
        table.push(keys, minusOne);
        client.flush();
        final long first = AdminCalls.checkpointNow(cluster.proxyAddress());
        table.push(keys, minusOne);
        client.flush();
        return first;
    }

    private static void dropHeartbeats(final LocalCluster cluster, final boolean on) {
        AdminCalls.onShard(
                cluster,
                0,
                admin -> admin.injectFault(InjectFaultRequest.newBuilder()
                        .setPoint(FaultPoints.DROP_HEARTBEATS)
                        .setEnabled(on)
                        .build()));
    }

    private static Throwable rootCause(final Throwable e) {
        Throwable cause = e;
        while (cause.getCause() != null) {
            cause = cause.getCause();
        }
        return cause;
    }
}
