package io.pscluster.local;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.pscluster.cli.PsctlRun;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.ProxyDataServiceGrpc;
import io.pscluster.proto.v1.ProxyPullRequest;
import io.pscluster.proto.v1.ProxyPullResponse;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.server.FaultPoints;
import io.pscluster.wire.LittleEndian;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;

/**
 * Pulls through the proxy (thin clients) on a real cluster: the rows are the shards' rows; the read cache serves rows
 * no older than the caller accepts, and never rows of a branch a failover left (a crashed shard's slots restored
 * from an older checkpoint), nor defaults while slots are being restored; bad input gets a precise status.
 */
@ExtendWith(FaultsAllowed.class)
class ProxyPullTest {
    private static final String TABLE = "emb";
    private static final int DIM = 4;
    private static final long HOUR_MS = TimeUnit.HOURS.toMillis(1);

    @TempDir
    Path dir;

    private ManagedChannel channel;

    @AfterEach
    void closeChannel() {
        if (channel != null) {
            channel.shutdownNow();
        }
    }

    private LocalCluster start() throws Exception {
        final LocalCluster cluster = LocalCluster.builder()
                .shards(2)
                .checkpointRoot(dir.resolve("checkpoints").toUri().toString())
                .leaseMs(2_000)
                .leaseMarginMs(500)
                .heartbeatIntervalMs(200)
                .start();
        channel = ManagedChannelBuilder.forTarget(cluster.proxyAddress())
                .usePlaintext()
                .maxInboundMessageSize(64 << 20)
                .build();
        return cluster;
    }

    private ProxyPullResponse proxyPull(final long[] keys, final long maxStalenessMs) {
        return ProxyDataServiceGrpc.newBlockingStub(channel)
                .withDeadlineAfter(60, TimeUnit.SECONDS)
                .pull(ProxyPullRequest.newBuilder()
                        .setTable(TABLE)
                        .setKeys(LittleEndian.encodeLongs(keys))
                        .setMaxStalenessMillis(maxStalenessMs)
                        .build());
    }

    private static float[] values(final ProxyPullResponse response) {
        return LittleEndian.decodeFloats(response.getValues(), "values");
    }

    private static PsTable createTable(final PsClient client) {
        return client.createTable(TableSchema.newBuilder()
                .setName(TABLE)
                .setKind(TableKind.SPARSE)
                .setDim(DIM)
                .setOptimizer(
                        OptimizerSpec.newBuilder().setKind(OptimizerKind.SGD).setLearningRate(1f))
                .build());
    }

    private static long[] randomKeys(final int count) {
        return new SplittableRandom(11)
                .longs(count * 2L)
                .distinct()
                .limit(count)
                .toArray();
    }

    private static void pushOnes(final PsTable table, final long[] keys) {
        final float[] gradients = new float[keys.length * DIM];
        Arrays.fill(gradients, -1f);
        table.push(keys, gradients);
    }

    @Test
    void shouldServeTheShardsRowsAndCachedOnesOnlyWithinTheStalenessTheCallerAccepts() throws Exception {
        try (LocalCluster cluster = start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable table = createTable(client);
            final long[] keys = randomKeys(2_000);
            pushOnes(table, keys);
            client.flush();

            final ProxyPullResponse first = proxyPull(keys, HOUR_MS);
            assertThat(first.getDim()).isEqualTo(DIM);
            assertThat(first.getCachedRows()).isZero();
            assertThat(values(first)).containsExactly(table.pull(keys));
            final ProxyPullResponse second = proxyPull(keys, HOUR_MS);
            assertThat(second.getCachedRows()).isEqualTo(keys.length);
            assertThat(values(second)).containsExactly(values(first));

            pushOnes(table, keys);
            client.flush();
            assertThat(proxyPull(keys, HOUR_MS).getCachedRows())
                    .as("pushes do not pass the proxy: a caller accepting an hour gets the cached rows")
                    .isEqualTo(keys.length);
            final ProxyPullResponse fresh = proxyPull(keys, 0);
            assertThat(fresh.getCachedRows()).isZero();
            assertThat(values(fresh)).containsExactly(table.pull(keys));
            assertThat(values(proxyPull(keys, HOUR_MS)))
                    .as("the fresh read replaced the cached rows")
                    .containsExactly(values(fresh));
        }
    }

    /**
     * The cache holds rows pushed after the latest checkpoint; a shard crashes and its slots come back from that
     * checkpoint: a pull accepting any age, made as soon as the failover is reported (the slots may still be being
     * restored), gets the restored rows, never the cached ones of the branch the failover left, nor initial values.
     */
    @Test
    void shouldNeverServeCachedRowsOfABranchAFailoverLeft() throws Exception {
        try (LocalCluster cluster = start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable table = createTable(client);
            final long[] keys = randomKeys(2_000);
            pushOnes(table, keys);
            client.flush();
            AdminCalls.checkpointNow(cluster.proxyAddress());
            final float[] checkpointed = table.pull(keys);
            pushOnes(table, keys);
            client.flush();
            final float[] cached = values(proxyPull(keys, HOUR_MS));
            assertThat(values(proxyPull(keys, HOUR_MS))).containsExactly(cached);

            cluster.crashShard(0);
            // Until its lease lapses the crashed shard's rows are the model as far as anyone can tell (a pull from it
            // just before the crash read them too); once its slots are handed on, they are a branch the cluster left.
            org.awaitility.Awaitility.await()
                    .atMost(java.time.Duration.ofSeconds(60))
                    .until(() -> AdminCalls.status(cluster.proxyAddress()).getRollbacksTotal() > 0);
            final float[] afterCrash = values(proxyPull(keys, HOUR_MS));

            cluster.awaitHealthy(60_000);
            final float[] served = table.pull(keys);
            assertThat(afterCrash)
                    .as("the rows the shards serve after the failover")
                    .containsExactly(served);
            int restored = 0;
            for (int i = 0; i < keys.length; i++) {
                final float[] row = Arrays.copyOfRange(afterCrash, i * DIM, (i + 1) * DIM);
                if (Arrays.equals(row, Arrays.copyOfRange(checkpointed, i * DIM, (i + 1) * DIM))) {
                    restored++;
                } else {
                    assertThat(row).isEqualTo(Arrays.copyOfRange(cached, i * DIM, (i + 1) * DIM));
                }
            }
            assertThat(restored)
                    .as("rows of the crashed shard's slots rolled back")
                    .isBetween(1, keys.length - 1);
        }
    }

    /**
     * An operator's restore that one shard failed leaves the model a mix the shards may still change: the cache keeps
     * and serves no row until a restore into every shard ends well.
     */
    @Test
    void shouldServeNoCachedRowWhileAnOperatorsRestoreIsUnfinished() throws Exception {
        try (LocalCluster cluster = start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable table = createTable(client);
            final long[] keys = randomKeys(2_000);
            pushOnes(table, keys);
            client.flush();
            final long checkpoint = AdminCalls.checkpointNow(cluster.proxyAddress());
            pushOnes(table, keys);
            client.flush();
            AdminCalls.injectFault(cluster, 1, FaultPoints.FAIL_RESTORE, true, 1);

            assertThat(catchThrowableOfType(
                            StatusRuntimeException.class, () -> AdminCalls.restore(cluster.proxyAddress(), checkpoint)))
                    .as("shard 1 fails the restore")
                    .isNotNull();
            assertThat(AdminCalls.status(cluster.proxyAddress()).getUnfinishedRestoreId())
                    .isEqualTo(checkpoint);

            proxyPull(keys, HOUR_MS);
            final ProxyPullResponse again = proxyPull(keys, HOUR_MS);
            assertThat(again.getCachedRows())
                    .as("no row cached while unfinished")
                    .isZero();
            assertThat(values(again)).containsExactly(table.pull(keys));

            AdminCalls.restore(cluster.proxyAddress(), checkpoint);
            proxyPull(keys, HOUR_MS);
            assertThat(proxyPull(keys, HOUR_MS).getCachedRows())
                    .as("cached again once a restore into every shard ended well")
                    .isEqualTo(keys.length);
        }
    }

    @Test
    void shouldRefuseBadInputWithAPreciseStatus() throws Exception {
        try (LocalCluster cluster = start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            createTable(client);
            final var stub = ProxyDataServiceGrpc.newBlockingStub(channel).withDeadlineAfter(10, TimeUnit.SECONDS);

            final StatusRuntimeException unknown = catchThrowableOfType(
                    StatusRuntimeException.class,
                    () -> stub.pull(ProxyPullRequest.newBuilder()
                            .setTable("nope")
                            .setKeys(LittleEndian.encodeLongs(new long[] {1}))
                            .build()));
            assertThat(unknown.getStatus().getCode()).isEqualTo(Status.Code.NOT_FOUND);
            assertThat(unknown.getStatus().getDescription()).contains("'nope'");
            final StatusRuntimeException ragged = catchThrowableOfType(
                    StatusRuntimeException.class,
                    () -> stub.pull(ProxyPullRequest.newBuilder()
                            .setTable(TABLE)
                            .setKeys(com.google.protobuf.ByteString.copyFrom(new byte[7]))
                            .build()));
            assertThat(ragged.getStatus().getCode()).isEqualTo(Status.Code.INVALID_ARGUMENT);
            assertThat(ragged.getStatus().getDescription()).contains("keys");
            final StatusRuntimeException negative = catchThrowableOfType(
                    StatusRuntimeException.class,
                    () -> stub.pull(ProxyPullRequest.newBuilder()
                            .setTable(TABLE)
                            .setKeys(LittleEndian.encodeLongs(new long[] {1}))
                            .setMaxStalenessMillis(-1)
                            .build()));
            assertThat(negative.getStatus().getCode()).isEqualTo(Status.Code.INVALID_ARGUMENT);
            assertThat(negative.getStatus().getDescription()).contains("max_staleness_millis=-1");
            // An answer larger than a pull through the proxy may build is refused before anything is allocated (a
            // hostile review ran the proxy out of heap with a few such pulls, and its shards' leases lapsed).
            client.createTable(TableSchema.newBuilder()
                    .setName("wide")
                    .setKind(TableKind.SPARSE)
                    .setDim(1024)
                    .setOptimizer(OptimizerSpec.newBuilder()
                            .setKind(OptimizerKind.SGD)
                            .setLearningRate(1f))
                    .build());
            final StatusRuntimeException tooLarge = catchThrowableOfType(
                    StatusRuntimeException.class,
                    () -> stub.pull(ProxyPullRequest.newBuilder()
                            .setTable("wide")
                            .setKeys(LittleEndian.encodeLongs(randomKeys(8_193)))
                            .build()));
            assertThat(tooLarge.getStatus().getCode()).isEqualTo(Status.Code.INVALID_ARGUMENT);
            assertThat(tooLarge.getStatus().getDescription()).contains("32 MiB", "split it");
            final long[] many = randomKeys(600_000);
            assertThat(proxyPull(many, 0).getValues().size())
                    .as("600,000 keys: a request of 4.8 MB, above gRPC's default 4 MiB")
                    .isEqualTo(many.length * 4 * DIM);
            assertThat(proxyPull(new long[] {1}, 0).getValues().size())
                    .as("the proxy serves on")
                    .isEqualTo(4 * DIM);
        }
    }

    @Test
    void shouldPrintRowsThroughPsctlPull() throws Exception {
        try (LocalCluster cluster = start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable table = createTable(client);
            final long[] keys = {3, 17};
            pushOnes(table, keys);
            client.flush();
            final float[] expected = table.pull(keys);

            final PsctlRun run =
                    PsctlRun.psctl("pull", "--proxy", cluster.proxyAddress(), "--table", TABLE, "--keys", "3,17");
            final PsctlRun cached = PsctlRun.psctl(
                    "pull",
                    "--proxy",
                    cluster.proxyAddress(),
                    "--table",
                    TABLE,
                    "--keys",
                    "3,17",
                    "--max-staleness-ms",
                    "60000");
            final PsctlRun missing =
                    PsctlRun.psctl("pull", "--proxy", cluster.proxyAddress(), "--table", "nope", "--keys", "1");

            assertThat(run.exit()).as(run.text()).isZero();
            assertThat(run.out().lines())
                    .containsExactly(
                            "3 " + expected[0] + " " + expected[1] + " " + expected[2] + " " + expected[3],
                            "17 " + expected[4] + " " + expected[5] + " " + expected[6] + " " + expected[7]);
            assertThat(cached.out()).isEqualTo(run.out());
            assertThat(cached.err()).contains("2 of 2 rows from the proxy's read cache");
            assertThat(missing.exit()).isEqualTo(1);
            assertThat(missing.err()).contains("NOT_FOUND", "'nope'");
        }
    }
}
