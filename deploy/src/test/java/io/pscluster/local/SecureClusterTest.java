package io.pscluster.local;

import static io.pscluster.cli.PsctlRun.psctl;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.grpc.Grpc;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.health.v1.HealthCheckRequest;
import io.grpc.health.v1.HealthCheckResponse;
import io.grpc.health.v1.HealthGrpc;
import io.pscluster.cli.PsctlRun;
import io.pscluster.proto.v1.InjectFaultRequest;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.ShardAdminServiceGrpc;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.testing.TestCertificates;
import io.pscluster.wire.Security;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.assertj.core.api.ThrowableAssert.ThrowingCallable;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A cluster with mutual TLS and tokens (proxy and shards over real gRPC, certificates made by keytool): a job's client
 * with the cluster's CA, a certificate it signed and the worker token trains; without the token, with another one,
 * without TLS or with a certificate the cluster did not sign it is refused, precisely; the worker token cannot do what
 * only the cluster's token may; probes need no token; psctl takes the same files.
 */
class SecureClusterTest {
    @TempDir
    static Path dir;

    private static TestCertificates node;
    private static TestCertificates stranger;
    private static Path clusterToken;
    private static Path workerToken;
    private static LocalCluster cluster;

    @BeforeAll
    static void startCluster() throws Exception {
        node = TestCertificates.create(dir.resolve("certs"), "node");
        stranger = TestCertificates.create(dir.resolve("certs"), "stranger");
        clusterToken = Files.writeString(dir.resolve("cluster.token"), "cluster-secret-7f3a\n");
        workerToken = Files.writeString(dir.resolve("worker.token"), "worker-secret-91c2\n");
        cluster = LocalCluster.builder()
                .shards(2)
                .checkpointRoot(dir.resolve("checkpoints").toUri().toString())
                .security(Security.fromFiles(node.cert(), node.key(), node.ca(), clusterToken, workerToken))
                .start();
    }

    @AfterAll
    static void stopCluster() throws Exception {
        if (cluster != null) {
            cluster.close();
        }
    }

    private static PsClient.Context client(final Security security) {
        return new PsClient.Context()
                .proxyAddress(cluster.proxyAddress())
                .deadlineMs(5_000)
                .security(security);
    }

    private static Security worker() {
        return Security.fromFiles(node.cert(), node.key(), node.ca(), workerToken, null);
    }

    private static TableSchema sparse(final String name) {
        return TableSchema.newBuilder()
                .setName(name)
                .setKind(TableKind.SPARSE)
                .setDim(2)
                .setOptimizer(
                        OptimizerSpec.newBuilder().setKind(OptimizerKind.SGD).setLearningRate(0.5f))
                .build();
    }

    private static void assertRefused(final ThrowingCallable call, final Status.Code code, final String message) {
        assertThatThrownBy(call).satisfies(e -> {
            final Status status = Status.fromThrowable(e);
            assertThat(status.getCode()).as(e.toString()).isEqualTo(code);
            assertThat(status.getDescription()).as(e.toString()).contains(message);
        });
    }

    @Test
    void shouldTrainWithTheWorkerTokenOverMutualTls() {
        try (PsClient client = PsClient.connect(client(worker()))) {
            final PsTable table = client.createTable(sparse("secure"));
            final long[] keys = {3, 17, 1_000_003};
            table.push(keys, new float[] {1, 2, 3, 4, 5, 6});
            client.flush();

            assertThat(table.pull(keys)).containsExactly(-0.5f, -1f, -1.5f, -2f, -2.5f, -3f);
        }
    }

    @Test
    void shouldRefuseWhatOnlyTheClusterTokenMayDoWithTheWorkerToken() throws Exception {
        try (PsClient client = PsClient.connect(client(worker()))) {
            client.createTable(sparse("kept"));

            assertRefused(
                    () -> client.dropTable("kept"),
                    Status.Code.PERMISSION_DENIED,
                    "pscluster.v1.ProxyService/DropTable: the worker token may push, pull");
            assertThat(client.table("kept")).as("still there").isNotNull();
        }
        final ManagedChannel shard = Grpc.newChannelBuilder(cluster.shard(0).address(), worker().channelCredentials())
                .build();
        try {
            assertRefused(
                    () -> ShardAdminServiceGrpc.newBlockingStub(shard)
                            .withDeadlineAfter(5, TimeUnit.SECONDS)
                            .injectFault(InjectFaultRequest.newBuilder()
                                    .setPoint("drop-heartbeats")
                                    .build()),
                    Status.Code.PERMISSION_DENIED,
                    "pscluster.v1.ShardAdminService/InjectFault");
        } finally {
            shard.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
        }
    }

    @Test
    void shouldRefuseACallWithoutTheTokenOrWithAnotherOne() throws Exception {
        assertRefused(
                () -> PsClient.connect(client(Security.fromFiles(node.cert(), node.key(), node.ca(), null, null)))
                        .close(),
                Status.Code.UNAUTHENTICATED,
                "this cluster requires a token and the call carried none");
        final Path other = Files.writeString(dir.resolve("other.token"), "not-this-one");
        assertRefused(
                () -> PsClient.connect(client(Security.fromFiles(node.cert(), node.key(), node.ca(), other, null)))
                        .close(),
                Status.Code.UNAUTHENTICATED,
                "the call's token is not one this cluster accepts");
    }

    @Test
    void shouldRefuseAClientWithoutTlsOrWithACertificateTheClusterDidNotSign() {
        for (final Security security : new Security[] {
            Security.fromFiles(null, null, null, workerToken, null),
            Security.fromFiles(stranger.cert(), stranger.key(), node.ca(), workerToken, null),
            Security.fromFiles(null, null, node.ca(), workerToken, null)
        }) {
            assertThatThrownBy(() -> PsClient.connect(client(security)).close())
                    .satisfies(e -> assertThat(Status.fromThrowable(e).getCode())
                            .as(e.toString())
                            .isEqualTo(Status.Code.UNAVAILABLE));
        }
    }

    @Test
    void shouldAnswerHealthChecksWithoutAToken() throws Exception {
        final ManagedChannel proxy = Grpc.newChannelBuilder(
                        cluster.proxyAddress(),
                        Security.fromFiles(node.cert(), node.key(), node.ca(), null, null)
                                .channelCredentials())
                .build();
        try {
            assertThat(HealthGrpc.newBlockingStub(proxy)
                            .withDeadlineAfter(5, TimeUnit.SECONDS)
                            .check(HealthCheckRequest.getDefaultInstance())
                            .getStatus())
                    .isEqualTo(HealthCheckResponse.ServingStatus.SERVING);
        } finally {
            proxy.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
        }
    }

    @Test
    void shouldLetPsctlInWithTheClusterFilesAndNotWithoutTheToken() {
        final String[] tls = {
            "--tls-cert",
            node.cert().toString(),
            "--tls-key",
            node.key().toString(),
            "--tls-ca",
            node.ca().toString()
        };
        final PsctlRun status = psctl(concat(
                new String[] {"status", "--proxy", cluster.proxyAddress(), "--token-file", clusterToken.toString()},
                tls));
        assertThat(status.exit()).as(status.text()).isZero();
        assertThat(status.out()).contains(cluster.shard(0).shardId());

        final PsctlRun noToken = psctl(concat(new String[] {"status", "--proxy", cluster.proxyAddress()}, tls));
        assertThat(noToken.exit()).as(noToken.text()).isNotZero();
        assertThat(noToken.text()).contains("UNAUTHENTICATED");

        final PsctlRun worker = psctl(concat(
                new String[] {"status", "--proxy", cluster.proxyAddress(), "--token-file", workerToken.toString()},
                tls));
        assertThat(worker.exit()).as(worker.text()).isNotZero();
        assertThat(worker.text()).contains("PERMISSION_DENIED");
    }

    /** Tokens without TLS (a trusted network): they are sent and checked all the same. */
    @Test
    void shouldCheckTokensWithoutTls() throws Exception {
        try (LocalCluster plain = LocalCluster.builder()
                .shards(1)
                .checkpointRoot(dir.resolve("plain-checkpoints").toUri().toString())
                .security(Security.fromFiles(null, null, null, clusterToken, workerToken))
                .start()) {
            try (PsClient client = PsClient.connect(new PsClient.Context()
                    .proxyAddress(plain.proxyAddress())
                    .security(Security.fromFiles(null, null, null, workerToken, null)))) {
                final PsTable table = client.createTable(sparse("plain"));
                table.push(new long[] {5}, new float[] {2, 4});
                client.flush();
                assertThat(table.pull(new long[] {5})).containsExactly(-1f, -2f);
            }
            assertRefused(
                    () -> PsClient.connect(new PsClient.Context()
                                    .proxyAddress(plain.proxyAddress())
                                    .deadlineMs(5_000))
                            .close(),
                    Status.Code.UNAUTHENTICATED,
                    "this cluster requires a token");
        }
    }

    private static String[] concat(final String[] a, final String[] b) {
        final String[] all = java.util.Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, all, a.length, b.length);
        return all;
    }
}
