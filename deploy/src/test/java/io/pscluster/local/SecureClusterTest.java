package io.pscluster.local;

import static io.pscluster.cli.PsctlRun.psctl;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.grpc.CallOptions;
import io.grpc.ClientInterceptors;
import io.grpc.Grpc;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.Server;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import io.grpc.ServiceDescriptor;
import io.grpc.Status;
import io.grpc.health.v1.HealthCheckRequest;
import io.grpc.health.v1.HealthCheckResponse;
import io.grpc.health.v1.HealthGrpc;
import io.grpc.stub.ClientCalls;
import io.grpc.stub.MetadataUtils;
import io.pscluster.cli.PsctlRun;
import io.pscluster.proto.v1.AdminServiceGrpc;
import io.pscluster.proto.v1.InjectFaultRequest;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.ProxyDataServiceGrpc;
import io.pscluster.proto.v1.ProxyServiceGrpc;
import io.pscluster.proto.v1.ShardAdminServiceGrpc;
import io.pscluster.proto.v1.ShardServiceGrpc;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.server.ShardServer;
import io.pscluster.testing.TestCertificates;
import io.pscluster.wire.Security;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Queue;
import java.util.Set;
import java.util.concurrent.ConcurrentLinkedQueue;
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
    /** A job's certificate: signed by the cluster's CA, for clients only, naming no host. */
    private static TestCertificates job;
    /** Signed by another CA. */
    private static TestCertificates stranger;

    private static Path clusterToken;
    private static Path workerToken;
    private static LocalCluster cluster;

    @BeforeAll
    static void startCluster() throws Exception {
        final TestCertificates ca = TestCertificates.authority(dir.resolve("certs"), "cluster-ca");
        node = ca.issue("node", true);
        job = ca.issue("job", false);
        stranger = TestCertificates.authority(dir.resolve("certs"), "other-ca").issue("stranger", true);
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
        return Security.fromFiles(job.cert(), job.key(), job.ca(), workerToken, null);
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
                () -> PsClient.connect(client(Security.fromFiles(job.cert(), job.key(), job.ca(), null, null)))
                        .close(),
                Status.Code.UNAUTHENTICATED,
                "this cluster requires a token and the call carried none");
        final Path other = Files.writeString(dir.resolve("other.token"), "not-this-one");
        assertRefused(
                () -> PsClient.connect(client(Security.fromFiles(job.cert(), job.key(), job.ca(), other, null)))
                        .close(),
                Status.Code.UNAUTHENTICATED,
                "the call's token is not one this cluster accepts");
    }

    /**
     * Every server (the proxy and each shard, called directly) refuses a client without TLS, one without a certificate
     * and one whose certificate another CA signed, whatever token it has.
     */
    @Test
    void shouldRefuseAClientWithoutTlsOrWithACertificateTheClusterDidNotSignAtEveryServer() throws Exception {
        final Security[] outsiders = {
            Security.fromFiles(null, null, null, clusterToken, null),
            Security.fromFiles(stranger.cert(), stranger.key(), node.ca(), clusterToken, null),
            Security.fromFiles(null, null, node.ca(), clusterToken, null)
        };
        for (final String server : List.of(
                cluster.proxyAddress(),
                cluster.shard(0).address(),
                cluster.shard(1).address())) {
            final String method = server.equals(cluster.proxyAddress())
                    ? "pscluster.v1.AdminService/ListShards"
                    : "pscluster.v1.ShardService/DescribeTable";
            for (final Security outsider : outsiders) {
                assertThat(call(server, outsider, method).getCode())
                        .as(server + " " + method)
                        .isEqualTo(Status.Code.UNAVAILABLE);
            }
        }
        assertThatThrownBy(() -> PsClient.connect(client(outsiders[1])).close())
                .satisfies(e -> assertThat(Status.fromThrowable(e).getCode())
                        .as(e.toString())
                        .isEqualTo(Status.Code.UNAVAILABLE));
        assertThatThrownBy(() -> PsClient.connect(
                                client(Security.fromFiles(job.cert(), job.key(), stranger.ca(), workerToken, null)))
                        .close())
                .as("an SDK error says why the handshake failed, not only 'io exception'")
                .satisfies(e -> assertThat(Status.fromThrowable(e).getDescription())
                        .contains(", because: ")
                        .containsIgnoringCase("certification path"));
    }

    /**
     * Every method of every service, called directly on the proxy and a shard: without a token UNAUTHENTICATED, and
     * with the worker token PERMISSION_DENIED unless it is one of the methods a job needs (the list pinned here, so that
     * a method added to Security.WORKER_METHODS by mistake fails this test).
     */
    @Test
    void shouldRefuseEveryMethodWithoutTheTokenAndWithTheWorkerTokenAllButAJobsOwn() throws Exception {
        final Set<String> jobMethods = Set.of(
                "pscluster.v1.ShardService/Push",
                "pscluster.v1.ShardService/Pull",
                "pscluster.v1.ShardService/Clock",
                "pscluster.v1.ShardService/Flush",
                "pscluster.v1.ShardService/DescribeTable",
                "pscluster.v1.ProxyService/GetRoutingTable",
                "pscluster.v1.ProxyService/CreateTable",
                "pscluster.v1.ProxyService/ListTables",
                "pscluster.v1.ProxyService/RegisterJob",
                "pscluster.v1.ProxyService/JoinJob",
                "pscluster.v1.ProxyService/RenewWorker",
                "pscluster.v1.ProxyService/LeaveJob",
                "pscluster.v1.ProxyService/AttachTable",
                "pscluster.v1.ProxyService/AwaitPause",
                "pscluster.v1.ProxyService/Paused",
                "pscluster.v1.ProxyDataService/Pull");
        final Map<String, List<ServiceDescriptor>> servers = Map.of(
                cluster.proxyAddress(),
                List.of(
                        ProxyServiceGrpc.getServiceDescriptor(),
                        AdminServiceGrpc.getServiceDescriptor(),
                        ProxyDataServiceGrpc.getServiceDescriptor()),
                cluster.shard(0).address(),
                List.of(ShardServiceGrpc.getServiceDescriptor(), ShardAdminServiceGrpc.getServiceDescriptor()));
        final Security noToken = Security.fromFiles(job.cert(), job.key(), job.ca(), null, null);
        int methods = 0;
        for (final Map.Entry<String, List<ServiceDescriptor>> server : servers.entrySet()) {
            for (final ServiceDescriptor service : server.getValue()) {
                for (final MethodDescriptor<?, ?> method : service.getMethods()) {
                    final String name = method.getFullMethodName();
                    methods++;
                    assertThat(call(server.getKey(), noToken, name).getCode())
                            .as(name + " without a token")
                            .isEqualTo(Status.Code.UNAUTHENTICATED);
                    if (!jobMethods.contains(name)) {
                        assertThat(call(server.getKey(), worker(), name).getCode())
                                .as(name + " with the worker token")
                                .isEqualTo(Status.Code.PERMISSION_DENIED);
                    }
                }
            }
        }
        assertThat(methods).as("methods swept").isGreaterThan(30);
    }

    /**
     * A job's certificate is for clients: a shard led to an impostor that serves with a job's certificate and key (its
     * name spoofed) refuses the handshake, so the cluster's token never reaches it.
     */
    @Test
    void shouldNotSendTheClusterTokenToAServerWithAJobsCertificate() throws Exception {
        final Queue<String> seen = new ConcurrentLinkedQueue<>();
        final Metadata.Key<String> authorization = Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);
        final Server impostor = Grpc.newServerBuilderForPort(
                        0,
                        Security.fromFiles(job.cert(), job.key(), null, null, null)
                                .serverCredentials())
                .addService(new ProxyServiceGrpc.ProxyServiceImplBase() {})
                .intercept(new ServerInterceptor() {
                    @Override
                    public <Q, A> ServerCall.Listener<Q> interceptCall(
                            final ServerCall<Q, A> call, final Metadata headers, final ServerCallHandler<Q, A> next) {
                        seen.add(String.valueOf(headers.get(authorization)));
                        return next.startCall(call, headers);
                    }
                })
                .build()
                .start();
        try {
            assertThatThrownBy(() -> ShardServer.start(new ShardServer.Context()
                            .proxyAddress("localhost:" + impostor.getPort())
                            .port(0)
                            .registerTimeoutMs(2_000)
                            .drainOnClose(false)
                            .security(
                                    Security.fromFiles(node.cert(), node.key(), node.ca(), clusterToken, workerToken))))
                    .isNotNull();
            assertThat(seen).as("headers the impostor received").isEmpty();
        } finally {
            impostor.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
        }
    }

    /**
     * What a process refuses to start with, naming the file: a key gRPC cannot use (PKCS#1, encrypted: with how to
     * convert it), and a CA on a server without a certificate of its own.
     */
    @Test
    void shouldRefuseKeysItCannotUseAndACaWithoutACertificateNamingTheFile() throws Exception {
        final Path pkcs1 = Files.writeString(
                dir.resolve("rsa.key.pem"), "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n");
        final Path encrypted = Files.writeString(
                dir.resolve("enc.key.pem"),
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n");
        assertThatThrownBy(() -> Security.fromFiles(node.cert(), pkcs1, null, null, null))
                .hasMessageContaining("--tls-key=" + pkcs1 + " is a PKCS#1/SEC1 key")
                .hasMessageContaining("openssl pkcs8 -topk8 -nocrypt");
        assertThatThrownBy(() -> Security.fromFiles(node.cert(), encrypted, null, null, null))
                .hasMessageContaining("--tls-key=" + encrypted + " is encrypted");
        assertThatThrownBy(() -> Security.fromFiles(node.cert(), node.cert(), null, null, null))
                .hasMessageContaining("holds no PEM private key");
        final Security caOnly = Security.fromFiles(null, null, job.ca(), null, null);
        assertThat(caOnly.tls()).as("a client trusting a CA connects with TLS").isTrue();
        assertThatThrownBy(caOnly::serverCredentials).hasMessageContaining("--tls-ca on a server needs --tls-cert");

        final PsctlRun psctl = psctl(
                "status",
                "--proxy",
                cluster.proxyAddress(),
                "--tls-cert",
                node.cert().toString(),
                "--tls-key",
                pkcs1.toString());
        assertThat(psctl.exit()).as(psctl.text()).isNotZero();
        assertThat(psctl.err()).contains("--tls-key=" + pkcs1);
    }

    /** The bearer scheme in any case (RFC 7235) is taken; two authorization headers are refused, whatever they hold. */
    @Test
    void shouldTakeTheSchemeInAnyCaseAndRefuseTwoAuthorizationHeaders() throws Exception {
        final Security noToken = Security.fromFiles(job.cert(), job.key(), job.ca(), null, null);
        final Metadata.Key<String> authorization = Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);
        final Metadata lower = new Metadata();
        lower.put(authorization, "bearer " + Files.readString(workerToken).strip());
        assertThat(call(cluster.proxyAddress(), noToken, "pscluster.v1.ProxyService/GetRoutingTable", lower)
                        .getCode())
                .isEqualTo(Status.Code.OK);
        final Metadata two = new Metadata();
        two.put(authorization, "Bearer " + Files.readString(workerToken).strip());
        two.put(authorization, "Bearer " + Files.readString(clusterToken).strip());
        final Status twice = call(cluster.proxyAddress(), noToken, "pscluster.v1.AdminService/ListShards", two);
        assertThat(twice.getCode()).isEqualTo(Status.Code.UNAUTHENTICATED);
        assertThat(twice.getDescription()).contains("more than one authorization header");
    }

    /**
     * A shard whose certificate does not name the host it advertises (--host) does not start, naming both: clients
     * would fail every call to it (the proxy's table creation, every push and pull), each with an obscure TLS error.
     */
    @Test
    void shouldNotStartAShardWhoseCertificateDoesNotNameItsHost() {
        assertThatThrownBy(() -> ShardServer.start(new ShardServer.Context()
                                .proxyAddress(cluster.proxyAddress())
                                .host("127.0.0.2")
                                .port(0)
                                .registerTimeoutMs(5_000)
                                .drainOnClose(false)
                                .security(Security.fromFiles(
                                        node.cert(), node.key(), node.ca(), clusterToken, workerToken)))
                        .close())
                .isInstanceOf(IllegalStateException.class)
                .hasMessageContaining("cannot be reached over TLS at 127.0.0.2:")
                .hasMessageContaining("--host=127.0.0.2")
                .hasMessageContaining("its certificate must name that host");
        final PsctlRun status = psctl(
                "status",
                "--proxy",
                cluster.proxyAddress(),
                "--token-file",
                clusterToken.toString(),
                "--tls-cert",
                job.cert().toString(),
                "--tls-key",
                job.key().toString(),
                "--tls-ca",
                job.ca().toString());
        assertThat(status.exit()).as(status.text()).isZero();
        assertThat(status.out()).as("it did not register").doesNotContain("127.0.0.2");
    }

    /** One unary call of {@code method} with an empty request to {@code server}; the status it ends with. */
    private static Status call(final String server, final Security security, final String method) throws Exception {
        return call(server, security, method, new Metadata());
    }

    /** As above, with {@code headers} added to the call. */
    private static Status call(
            final String server, final Security security, final String method, final Metadata headers)
            throws Exception {
        final ManagedChannel channel =
                Grpc.newChannelBuilder(server, security.channelCredentials()).build();
        try {
            ClientCalls.blockingUnaryCall(
                    ClientInterceptors.intercept(channel, MetadataUtils.newAttachHeadersInterceptor(headers)),
                    MethodDescriptor.<byte[], byte[]>newBuilder()
                            .setType(MethodDescriptor.MethodType.UNARY)
                            .setFullMethodName(method)
                            .setRequestMarshaller(BYTES)
                            .setResponseMarshaller(BYTES)
                            .build(),
                    CallOptions.DEFAULT.withDeadlineAfter(5, TimeUnit.SECONDS),
                    new byte[0]);
            return Status.OK;
        } catch (RuntimeException e) {
            return Status.fromThrowable(e);
        } finally {
            channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
        }
    }

    private static final MethodDescriptor.Marshaller<byte[]> BYTES = new MethodDescriptor.Marshaller<>() {
        @Override
        public InputStream stream(final byte[] value) {
            return new ByteArrayInputStream(value);
        }

        @Override
        public byte[] parse(final InputStream stream) {
            try {
                return stream.readAllBytes();
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
    };

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
            job.cert().toString(),
            "--tls-key",
            job.key().toString(),
            "--tls-ca",
            job.ca().toString()
        };
        final PsctlRun status = psctl(concat(
                new String[] {"status", "--proxy", cluster.proxyAddress(), "--token-file", clusterToken.toString()},
                tls));
        assertThat(status.exit()).as(status.text()).isZero();
        assertThat(status.out()).contains(cluster.shard(0).shardId());

        final PsctlRun noToken = psctl(concat(new String[] {"status", "--proxy", cluster.proxyAddress()}, tls));
        assertThat(noToken.exit()).as(noToken.text()).isNotZero();
        assertThat(noToken.text()).contains("UNAUTHENTICATED");

        final PsctlRun untrusted = psctl(
                "status",
                "--proxy",
                cluster.proxyAddress(),
                "--token-file",
                clusterToken.toString(),
                "--tls-ca",
                stranger.ca().toString());
        assertThat(untrusted.exit()).as(untrusted.text()).isNotZero();
        assertThat(untrusted.err())
                .as("the TLS failure's reason, not only 'io exception'")
                .contains("UNAVAILABLE")
                .contains(", because: ")
                .containsIgnoringCase("certification path");

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
            // An option given as nothing (as a variable set to nothing, PSCLUSTER_TLS_CA=, is) counts as not given.
            final PsctlRun status = psctl(
                    "status",
                    "--proxy",
                    plain.proxyAddress(),
                    "--token-file",
                    clusterToken.toString(),
                    "--tls-ca",
                    "",
                    "--tls-cert",
                    "",
                    "--tls-key",
                    "");
            assertThat(status.exit()).as(status.text()).isZero();
        }
    }

    private static String[] concat(final String[] a, final String[] b) {
        final String[] all = java.util.Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, all, a.length, b.length);
        return all;
    }
}
