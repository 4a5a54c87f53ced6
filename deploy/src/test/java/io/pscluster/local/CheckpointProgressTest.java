package io.pscluster.local;

import static io.pscluster.cli.PsctlRun.psctl;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.pscluster.cli.PsctlRun;
import io.pscluster.proto.v1.AdminServiceGrpc;
import io.pscluster.proto.v1.CheckpointNowRequest;
import io.pscluster.proto.v1.CheckpointProgressRequest;
import io.pscluster.proto.v1.CheckpointProgressResponse;
import io.pscluster.proto.v1.InjectFaultRequest;
import io.pscluster.proto.v1.OperationProgressRequest;
import io.pscluster.proto.v1.OperationProgressResponse;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.RestoreProgress;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.server.FaultPoints;
import io.pscluster.server.table.ShardSnapshot;
import io.pscluster.worker.PsClient;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;

/**
 * Checkpoints and restores have no fixed deadline but a stall timeout, and show their progress (real proxy, real
 * shards, real gRPC). The shards' snapshot batches are made small (128 rows) and the fault point
 * {@value FaultPoints#SLOW_CHECKPOINT} delays each by 20 ms, so a checkpoint of 40,000 rows per shard takes over six
 * seconds, three stall timeouts of 2 s, while moving every 20 ms; {@value FaultPoints#HOLD_WRITERS} stops a shard
 * before its cut, so that it never moves.
 */
@ExtendWith(FaultsAllowed.class)
class CheckpointProgressTest {
    private static final int ROWS = 80_000;
    private static final int DIM = 8;
    /** Short, yet well above what a poll takes on a loaded machine (a late poll counts as no progress). */
    private static final long STALL_MS = 2_000;
    /** For the tests that are not about stalls. */
    private static final long DEFAULT_STALL_MS = 120_000;

    private static final Pattern WRITING_LINE = Pattern.compile(
            "checkpoint \\d+: writing [0-9.]+ [KMG]?i?B of [0-9.]+ [KMG]?i?B \\(\\d+%\\), \\d+ of \\d+ rows.*shards cut 2/2");
    private static final Pattern DONE_LINE =
            Pattern.compile("checkpoint (\\d+): done ([0-9.]+ [KMG]?i?B) of \\2 \\(100%\\), (\\d+) of \\3 rows");

    @TempDir
    Path dir;

    private LocalCluster start(final long stallMs) throws Exception {
        return start(stallMs, 64 << 10);
    }

    /** A cluster of two shards with table "w"; part files of {@code partBytes} (0: the shards' default). */
    private LocalCluster start(final long stallMs, final long partBytes) throws Exception {
        final LocalCluster cluster = LocalCluster.builder()
                .shards(2)
                .checkpointRoot(dir.resolve("ckpt").toUri().toString())
                .checkpointCodec("none")
                .checkpointStallTimeoutMs(stallMs)
                .start();
        try (PsClient client = PsClient.connect(cluster.proxyAddress())) {
            client.createTable(TableSchema.newBuilder()
                    .setName("w")
                    .setKind(TableKind.DENSE)
                    .setDim(DIM)
                    .setRows(ROWS)
                    .setOptimizer(OptimizerSpec.newBuilder()
                            .setKind(OptimizerKind.SGD)
                            .setLearningRate(1f))
                    .build());
        }
        for (int i = 0; i < cluster.shardCount(); i++) {
            // 1024 floats: 128 rows of dim 8 per snapshot batch, so each shard's checkpoint is over 300 batches; part
            // files of 64 KiB (about 1,400 rows), so rows reach files all along, not in one part at the end.
            cluster.shard(i)
                    .shard()
                    .tuneCheckpoints(
                            new ShardSnapshot.Limits(
                                    1024, ShardSnapshot.Limits.defaults().savedBytes()),
                            partBytes);
        }
        return cluster;
    }

    @Test
    void shouldCommitACheckpointLongerThanTheStallTimeoutWhileItMovesAndPrintItsProgress() throws Exception {
        try (LocalCluster cluster = start(STALL_MS)) {
            for (int i = 0; i < 2; i++) {
                AdminCalls.onShard(cluster, i, admin -> admin.injectFault(fault(FaultPoints.SLOW_CHECKPOINT, true)));
            }
            final long startNanos = System.nanoTime();
            final PsctlRun run = psctl("checkpoint", "now", "--proxy", cluster.proxyAddress());
            final long tookMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - startNanos);

            assertThat(run.exit())
                    .as("stdout %s, stderr %s", run.out(), run.err())
                    .isZero();
            assertThat(tookMs).as("the checkpoint outlasted the stall timeout").isGreaterThan(2 * STALL_MS);
            assertThat(run.err()
                            .lines()
                            .filter(line -> WRITING_LINE.matcher(line).find()))
                    .as("progress lines while writing:%n%s", run.err())
                    .hasSizeGreaterThanOrEqualTo(2);
            assertThat(run.err()).contains("MiB/s").contains("ETA");
            final var done = run.err()
                    .lines()
                    .map(DONE_LINE::matcher)
                    .filter(java.util.regex.Matcher::find)
                    .findFirst();
            assertThat(done).as("final line in:%n%s", run.err()).isPresent();
            final long id = Long.parseLong(done.get().group(1));
            assertThat(Long.parseLong(done.get().group(3))).isEqualTo(ROWS);

            long rows = 0;
            for (int i = 0; i < 2; i++) {
                final CheckpointProgressResponse shard = AdminCalls.onShard(
                        cluster,
                        i,
                        admin -> admin.checkpointProgress(CheckpointProgressRequest.newBuilder()
                                .setCheckpointId(id)
                                .build()));
                assertThat(shard.getKnown()).isTrue();
                assertThat(shard.getCutMarked()).isTrue();
                assertThat(shard.getDone()).isTrue();
                assertThat(shard.getPhase()).isEqualTo("done");
                assertThat(shard.getRowsTotal()).isPositive();
                assertThat(shard.getRowsWritten()).isEqualTo(shard.getRowsTotal());
                assertThat(shard.getRowsCopied()).isEqualTo(shard.getRowsTotal());
                assertThat(shard.getBytesWritten())
                        .isEqualTo(shard.getBytesTotal())
                        .isEqualTo(shard.getRowsTotal() * (8 + 4 * DIM));
                rows += shard.getRowsWritten();
            }
            assertThat(rows).isEqualTo(ROWS);
            assertThat(AdminCalls.checkpoints(cluster.proxyAddress()).get(0).getId())
                    .isEqualTo(id);
        }
    }

    @Test
    void shouldFailACheckpointNamingTheShardWhoseProgressStopped() throws Exception {
        try (LocalCluster cluster = start(STALL_MS)) {
            final String stuck = cluster.shard(1).shardId();
            // Its writers stop behind what they queued: the cut never runs, so nothing moves on that shard.
            AdminCalls.onShard(cluster, 1, admin -> admin.injectFault(fault(FaultPoints.HOLD_WRITERS, true)));
            final long startNanos = System.nanoTime();
            try {
                assertThatThrownBy(() -> admin(
                                cluster, 60, stub -> stub.checkpointNow(CheckpointNowRequest.getDefaultInstance())))
                        .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                            assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.DEADLINE_EXCEEDED);
                            assertThat(e.getStatus().getDescription())
                                    .contains("shard " + stuck + " at "
                                            + cluster.shard(1).address())
                                    .contains("made no progress for")
                                    .contains("stall timeout " + STALL_MS + " ms")
                                    .contains("phase 'cut'");
                        });
                final long tookMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - startNanos);
                assertThat(tookMs).isBetween(STALL_MS, 15_000L);
                final OperationProgressResponse operation = admin(
                        cluster, 10, stub -> stub.operationProgress(OperationProgressRequest.getDefaultInstance()));
                assertThat(operation.getFailed()).isTrue();
                assertThat(operation.getError()).contains(stuck);
                assertThat(operation.getShardsCut()).as("the other shard cut").isEqualTo(1);
                final CheckpointProgressRequest asked = CheckpointProgressRequest.newBuilder()
                        .setCheckpointId(operation.getCheckpointId())
                        .build();
                final CheckpointProgressResponse held =
                        AdminCalls.onShard(cluster, 1, admin -> admin.checkpointProgress(asked));
                assertThat(held.getKnown()).isTrue();
                assertThat(held.getCutMarked())
                        .as("no cut while its writers are held")
                        .isFalse();
                assertThat(held.getPhase()).isEqualTo("cut");
                assertThat(AdminCalls.onShard(cluster, 0, admin -> admin.checkpointProgress(asked))
                                .getCutMarked())
                        .isTrue();
            } finally {
                AdminCalls.onShard(cluster, 1, admin -> admin.injectFault(fault(FaultPoints.HOLD_WRITERS, false)));
            }
            // Released, the shard cuts (and writes the abandoned checkpoint), and the next checkpoint commits.
            final long abandoned = admin(
                            cluster, 10, stub -> stub.operationProgress(OperationProgressRequest.getDefaultInstance()))
                    .getCheckpointId();
            await().atMost(Duration.ofSeconds(30))
                    .until(() -> AdminCalls.onShard(
                                    cluster,
                                    1,
                                    admin -> admin.checkpointProgress(CheckpointProgressRequest.newBuilder()
                                            .setCheckpointId(abandoned)
                                            .build()))
                            .getCutMarked());
            await().atMost(Duration.ofSeconds(30))
                    .ignoreExceptions()
                    .until(() -> AdminCalls.checkpointNow(cluster.proxyAddress()) > 0);
        }
    }

    @Test
    void shouldFailACheckpointAtOnceWhenAShardDiesDuringIt() throws Exception {
        try (LocalCluster cluster = start(60_000)) {
            for (int i = 0; i < 2; i++) {
                AdminCalls.onShard(cluster, i, admin -> admin.injectFault(fault(FaultPoints.SLOW_CHECKPOINT, true)));
            }
            final String dying = cluster.shard(1).shardId();
            final CompletableFuture<Void> checkpoint = CompletableFuture.runAsync(
                    () -> admin(cluster, 120, stub -> stub.checkpointNow(CheckpointNowRequest.getDefaultInstance())));
            await().atMost(Duration.ofSeconds(30)).until(() -> {
                final OperationProgressResponse operation = admin(
                        cluster, 10, stub -> stub.operationProgress(OperationProgressRequest.getDefaultInstance()));
                return operation.getShardProgressCount() == 2
                        && operation.getShardProgress(1).getRowsDone() > 0;
            });
            final long startNanos = System.nanoTime();
            cluster.crashShard(1);
            assertThatThrownBy(() -> checkpoint.get(20, TimeUnit.SECONDS))
                    .hasCauseInstanceOf(StatusRuntimeException.class)
                    .cause()
                    .hasMessageContaining("shard " + dying);
            assertThat(TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - startNanos))
                    .as("failed long before the stall timeout of 60 s")
                    .isLessThan(15_000);
        }
    }

    @Test
    void shouldCountARestoreToItsTotalsAndPrintIt() throws Exception {
        try (LocalCluster cluster = start(DEFAULT_STALL_MS)) {
            final long id = AdminCalls.checkpointNow(cluster.proxyAddress());
            final PsctlRun run = psctl("checkpoint", "restore", "--proxy", cluster.proxyAddress(), "--id", "" + id);
            assertThat(run.exit()).as("stderr %s", run.err()).isZero();
            assertThat(run.err())
                    .containsPattern("restore " + id + ": done [0-9.]+ [KMG]?i?B of [0-9.]+ [KMG]?i?B \\(100%\\)");
            long rows = 0;
            for (int i = 0; i < 2; i++) {
                final CheckpointProgressResponse shard = AdminCalls.onShard(
                        cluster,
                        i,
                        admin -> admin.checkpointProgress(CheckpointProgressRequest.newBuilder()
                                .setCheckpointId(id)
                                .build()));
                final RestoreProgress restore = shard.getRestores(shard.getRestoresCount() - 1);
                assertThat(restore.getCheckpointId()).isEqualTo(id);
                assertThat(restore.getDone()).isTrue();
                assertThat(restore.getRowsDone()).isPositive().isEqualTo(restore.getRowsTotal());
                assertThat(restore.getBytesDone()).isPositive().isEqualTo(restore.getBytesTotal());
                rows += restore.getRowsDone();
            }
            assertThat(rows).isEqualTo(ROWS);

            final PsctlRun quiet = psctl("checkpoint", "restore", "--proxy", cluster.proxyAddress(), "--quiet");
            assertThat(quiet.exit()).isZero();
            assertThat(quiet.err()).isEmpty();
        }
    }

    @Test
    void shouldPrintProgressOfAnOfflineVerifyAndExport() throws Exception {
        final long id;
        // One part file per shard: the export refuses a table whose slot is in two part files.
        try (LocalCluster cluster = start(DEFAULT_STALL_MS, 0)) {
            id = AdminCalls.checkpointNow(cluster.proxyAddress());
        }
        final String root = dir.resolve("ckpt").toUri().toString();
        final PsctlRun verify = psctl("checkpoint", "verify", "--checkpoint-dir", root, "--id", "" + id);
        assertThat(verify.exit())
                .as("stdout %s, stderr %s", verify.out(), verify.err())
                .isZero();
        assertThat(verify.err())
                .containsPattern("verify checkpoint " + id + ": done ([0-9.]+ [KMG]?i?B) of \\1 \\(100%\\), " + ROWS
                        + " of " + ROWS + " rows");

        final PsctlRun export = psctl(
                "checkpoint", "export", "--checkpoint-dir", root, "--id", "" + id, "--out", "" + dir.resolve("model"));
        assertThat(export.exit())
                .as("stdout %s, stderr %s", export.out(), export.err())
                .isZero();
        assertThat(export.err())
                .containsPattern("export checkpoint " + id + ": done ([0-9.]+ [KMG]?i?B) of \\1 \\(100%\\), " + ROWS
                        + " of " + ROWS + " rows");

        final PsctlRun quiet = psctl("checkpoint", "verify", "--checkpoint-dir", root, "--quiet");
        assertThat(quiet.exit()).isZero();
        assertThat(quiet.err()).isEmpty();
    }

    private static InjectFaultRequest fault(final String point, final boolean enabled) {
        return InjectFaultRequest.newBuilder()
                .setPoint(point)
                .setEnabled(enabled)
                .build();
    }

    private static <T> T admin(
            final LocalCluster cluster,
            final long deadlineSeconds,
            final Function<AdminServiceGrpc.AdminServiceBlockingStub, T> call) {
        final ManagedChannel channel = ManagedChannelBuilder.forTarget(cluster.proxyAddress())
                .usePlaintext()
                .build();
        try {
            return call.apply(
                    AdminServiceGrpc.newBlockingStub(channel).withDeadlineAfter(deadlineSeconds, TimeUnit.SECONDS));
        } finally {
            channel.shutdownNow();
        }
    }
}
