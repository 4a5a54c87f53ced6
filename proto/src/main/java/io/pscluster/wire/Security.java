package io.pscluster.wire;

import io.grpc.CallCredentials;
import io.grpc.ChannelCredentials;
import io.grpc.CompositeChannelCredentials;
import io.grpc.InsecureChannelCredentials;
import io.grpc.InsecureServerCredentials;
import io.grpc.Metadata;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerCredentials;
import io.grpc.ServerInterceptor;
import io.grpc.Status;
import io.grpc.TlsChannelCredentials;
import io.grpc.TlsServerCredentials;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.Set;
import java.util.concurrent.Executor;

/**
 * How a process's gRPC connections are secured, the same for every process of a cluster: TLS (mutual when a CA is
 * given to a server) and bearer tokens.
 *
 * <ul>
 *   <li><b>TLS.</b> A server with a certificate chain and its private key (PEM; the key unencrypted PKCS#8) serves TLS;
 *       given a CA as well, it requires every client to present a certificate that CA signed. A client trusts the CA
 *       it is given (else the JVM's default trust store) and, with a certificate and key of its own, presents them.
 *       Shards and the proxy are both servers and clients of each other, so one set of files serves both ends.
 *   <li><b>Tokens.</b> A process with a token sends it on every call ({@code authorization: Bearer <token>}); a
 *       server with a token refuses calls without it ({@code UNAUTHENTICATED}). A server may also accept a
 *       <em>worker token</em>, which allows only what a training job or a reader does ({@link #WORKER_METHODS}: push,
 *       pull, clocks, routing, tables' creation and listing, jobs); any other call with it is {@code
 *       PERMISSION_DENIED}, so a job's credentials cannot drop a table, restore a checkpoint or drain a shard. The gRPC
 *       health service needs no token (load balancers and probes).
 * </ul>
 *
 * <p>Without TLS a token travels in clear text: fine on a trusted network, not across one that is not.
 */
public final class Security {
    /** Plain text, no token: what a process uses unless told otherwise. */
    public static final Security NONE = new Security(null, null, null, "", "");

    /** The header that carries a token. */
    static final Metadata.Key<String> AUTHORIZATION =
            Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);

    private static final String BEARER = "Bearer ";

    /** Full names of the methods a worker token allows. */
    public static final Set<String> WORKER_METHODS = Set.of(
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

    private static final String HEALTH_SERVICE = "grpc.health.v1.Health";

    private final Path certChain;
    private final Path privateKey;
    private final Path trustedCa;
    private final String token;
    private final String workerToken;

    private Security(
            final Path certChain,
            final Path privateKey,
            final Path trustedCa,
            final String token,
            final String workerToken) {
        this.certChain = certChain;
        this.privateKey = privateKey;
        this.trustedCa = trustedCa;
        this.token = token;
        this.workerToken = workerToken;
    }

    /**
     * Security from files, each null when not given: a certificate chain and its private key (both or neither), a CA
     * (a server: the one client certificates must be signed by; a client: the one to trust), the file holding this
     * process's token, and (servers) the file holding the worker token it also accepts.
     *
     * @throws IllegalArgumentException naming the file or the pair that is wrong: a key without its certificate, a file
     *     that cannot be read, an empty token, the same token for both roles.
     */
    public static Security fromFiles(
            final Path certChain,
            final Path privateKey,
            final Path trustedCa,
            final Path tokenFile,
            final Path workerTokenFile) {
        if ((certChain == null) != (privateKey == null)) {
            throw new IllegalArgumentException("--tls-cert and --tls-key go together: give both (the certificate"
                    + " chain and its private key, PEM) or neither");
        }
        for (final Path file : new Path[] {certChain, privateKey, trustedCa}) {
            if (file != null && (!Files.isRegularFile(file) || !Files.isReadable(file))) {
                throw new IllegalArgumentException(file + ": no such file, or not readable");
            }
        }
        if (certChain != null) {
            checkCertificates("--tls-cert", certChain);
            checkPrivateKey(privateKey);
        }
        if (trustedCa != null) {
            checkCertificates("--tls-ca", trustedCa);
        }
        final String token = tokenFile == null ? "" : readToken("--token-file", tokenFile);
        final String workerToken = workerTokenFile == null ? "" : readToken("--worker-token-file", workerTokenFile);
        if (!workerToken.isEmpty() && token.isEmpty()) {
            throw new IllegalArgumentException("--worker-token-file needs --token-file: the worker token is the"
                    + " lesser of two, and the cluster's own calls need the full one");
        }
        if (!workerToken.isEmpty() && workerToken.equals(token)) {
            throw new IllegalArgumentException("--worker-token-file holds the same token as --token-file: a worker"
                    + " token must differ, or it would have every right");
        }
        return new Security(certChain, privateKey, trustedCa, token, workerToken);
    }

    /** Refuses a file that holds no PEM certificate that parses, naming it: gRPC's own error names no file. */
    private static void checkCertificates(final String option, final Path file) {
        try (java.io.InputStream in = Files.newInputStream(file)) {
            if (java.security.cert.CertificateFactory.getInstance("X.509")
                    .generateCertificates(in)
                    .isEmpty()) {
                throw new IllegalArgumentException(option + "=" + file + " holds no certificate (PEM expected)");
            }
        } catch (IOException | java.security.cert.CertificateException e) {
            throw new IllegalArgumentException(
                    option + "=" + file + " is not a PEM certificate that parses: " + e.getMessage());
        }
    }

    /**
     * Refuses a key gRPC cannot use, naming the file and how to convert it: it takes an unencrypted PKCS#8 PEM key
     * ({@code BEGIN PRIVATE KEY}) only.
     */
    private static void checkPrivateKey(final Path file) {
        final String text;
        try {
            text = Files.readString(file, StandardCharsets.US_ASCII);
        } catch (IOException e) {
            throw new IllegalArgumentException("--tls-key=" + file + ": cannot read it: " + e.getMessage());
        }
        if (text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")) {
            throw new IllegalArgumentException("--tls-key=" + file + " is encrypted; give it unencrypted (openssl pkcs8"
                    + " -topk8 -nocrypt -in KEY -out KEY.pk8.pem) and protect the file instead");
        }
        if (text.contains("-----BEGIN RSA PRIVATE KEY-----") || text.contains("-----BEGIN EC PRIVATE KEY-----")) {
            throw new IllegalArgumentException("--tls-key=" + file + " is a PKCS#1/SEC1 key; convert it to PKCS#8"
                    + " (openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8.pem)");
        }
        if (!text.contains("-----BEGIN PRIVATE KEY-----")) {
            throw new IllegalArgumentException(
                    "--tls-key=" + file + " holds no PEM private key (-----BEGIN PRIVATE KEY-----)");
        }
    }

    private static String readToken(final String option, final Path file) {
        final String token;
        try {
            token = Files.readString(file, StandardCharsets.UTF_8).strip();
        } catch (IOException e) {
            throw new IllegalArgumentException(option + "=" + file + ": cannot read it: " + e.getMessage());
        }
        if (token.isEmpty()) {
            throw new IllegalArgumentException(option + "=" + file + " is empty: it must hold the token");
        }
        for (int i = 0; i < token.length(); i++) {
            final char c = token.charAt(i);
            if (c < 0x21 || c > 0x7e) {
                throw new IllegalArgumentException(option + "=" + file
                        + ": a token is printable ASCII without spaces (character " + i + " is not)");
            }
        }
        return token;
    }

    /** Whether this process serves, or connects with, TLS. */
    public boolean tls() {
        return certChain != null || trustedCa != null;
    }

    /** Whether this process's servers require a token. */
    public boolean tokens() {
        return !token.isEmpty();
    }

    /** What a server listens with: TLS when it has a certificate, requiring client certificates when it has a CA. */
    public ServerCredentials serverCredentials() {
        if (certChain == null) {
            if (trustedCa != null) {
                throw new IllegalArgumentException("--tls-ca on a server needs --tls-cert and --tls-key: it serves"
                        + " TLS with them and requires client certificates signed by the CA");
            }
            return InsecureServerCredentials.create();
        }
        try {
            final TlsServerCredentials.Builder tls =
                    TlsServerCredentials.newBuilder().keyManager(certChain.toFile(), privateKey.toFile());
            if (trustedCa != null) {
                tls.trustManager(trustedCa.toFile()).clientAuth(TlsServerCredentials.ClientAuth.REQUIRE);
            }
            return tls.build();
        } catch (IOException e) {
            throw unreadable(e);
        }
    }

    /** What a channel connects with: TLS when there is a CA or a certificate, and this process's token on each call. */
    public ChannelCredentials channelCredentials() {
        ChannelCredentials channel = InsecureChannelCredentials.create();
        if (tls()) {
            final TlsChannelCredentials.Builder tls = TlsChannelCredentials.newBuilder();
            try {
                if (trustedCa != null) {
                    tls.trustManager(trustedCa.toFile());
                }
                if (certChain != null) {
                    tls.keyManager(certChain.toFile(), privateKey.toFile());
                }
            } catch (IOException e) {
                throw unreadable(e);
            }
            channel = tls.build();
        }
        return token.isEmpty() ? channel : CompositeChannelCredentials.create(channel, new BearerToken(token));
    }

    /** The TLS files checked when this was made could not be read again (removed or made unreadable since). */
    private IllegalArgumentException unreadable(final IOException e) {
        return new IllegalArgumentException(
                "cannot read the TLS files (" + certChain + ", " + privateKey + ", " + trustedCa + "): "
                        + e.getMessage(),
                e);
    }

    /**
     * The check a server runs on every call: nothing when this process has no token; else the token is required, the
     * worker token allowing only {@link #WORKER_METHODS}. The health service is open.
     */
    public ServerInterceptor tokenCheck() {
        return new TokenCheck(token, workerToken);
    }

    /** Sends a token with every call. */
    private static final class BearerToken extends CallCredentials {
        private final Metadata headers = new Metadata();

        BearerToken(final String token) {
            headers.put(AUTHORIZATION, BEARER + token);
        }

        @Override
        public void applyRequestMetadata(
                final RequestInfo requestInfo, final Executor appExecutor, final MetadataApplier applier) {
            applier.apply(headers);
        }
    }

    private static final class TokenCheck implements ServerInterceptor {
        /** No token configured: every call passes. */
        private final boolean open;

        private final byte[] token;
        private final byte[] workerToken;

        TokenCheck(final String token, final String workerToken) {
            this.open = token.isEmpty();
            this.token = (BEARER + token).getBytes(StandardCharsets.US_ASCII);
            this.workerToken =
                    workerToken.isEmpty() ? null : (BEARER + workerToken).getBytes(StandardCharsets.US_ASCII);
        }

        @Override
        public <Q, A> ServerCall.Listener<Q> interceptCall(
                final ServerCall<Q, A> call, final Metadata headers, final ServerCallHandler<Q, A> next) {
            if (open || HEALTH_SERVICE.equals(call.getMethodDescriptor().getServiceName())) {
                return next.startCall(call, headers);
            }
            final String method = call.getMethodDescriptor().getFullMethodName();
            final Iterable<String> all = headers.getAll(AUTHORIZATION);
            final java.util.Iterator<String> sentHeaders = all == null ? null : all.iterator();
            final String sent = sentHeaders == null ? null : sentHeaders.next();
            if (sentHeaders != null && sentHeaders.hasNext()) {
                return refuse(
                        call,
                        Status.UNAUTHENTICATED.withDescription(
                                method + ": the call carried more than one authorization header"));
            }
            if (sent == null) {
                return refuse(
                        call,
                        Status.UNAUTHENTICATED.withDescription(method + ": this cluster requires a token and the call"
                                + " carried none (psctl --token-file, or the SDK's PsClient.Context.security)"));
            }
            // The scheme is case-insensitive (RFC 7235); the token is not.
            final byte[] given = sent.regionMatches(true, 0, BEARER, 0, BEARER.length())
                    ? (BEARER + sent.substring(BEARER.length())).getBytes(StandardCharsets.US_ASCII)
                    : sent.getBytes(StandardCharsets.US_ASCII);
            if (MessageDigest.isEqual(given, token)) {
                return next.startCall(call, headers);
            }
            if (workerToken != null && MessageDigest.isEqual(given, workerToken)) {
                if (WORKER_METHODS.contains(method)) {
                    return next.startCall(call, headers);
                }
                return refuse(
                        call,
                        Status.PERMISSION_DENIED.withDescription(method + ": the worker token may push, pull, create"
                                + " and list tables and run jobs; this call needs the cluster's token"));
            }
            return refuse(
                    call,
                    Status.UNAUTHENTICATED.withDescription(
                            method + ": the call's token is not one this cluster accepts"));
        }

        private static <Q, A> ServerCall.Listener<Q> refuse(final ServerCall<Q, A> call, final Status status) {
            call.close(status, new Metadata());
            return new ServerCall.Listener<>() {};
        }
    }
}
