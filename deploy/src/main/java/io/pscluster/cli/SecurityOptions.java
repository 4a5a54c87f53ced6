package io.pscluster.cli;

import io.grpc.ManagedChannel;
import io.pscluster.wire.Security;
import java.nio.file.Path;
import picocli.CommandLine.Option;

/**
 * TLS and the token for a command's gRPC calls (and a server's listening side), each from an option or, when it is not
 * given, from its environment variable ({@code PSCLUSTER_TLS_CERT}, {@code PSCLUSTER_TLS_KEY}, {@code
 * PSCLUSTER_TLS_CA}, {@code PSCLUSTER_TOKEN_FILE}), so that an operator sets them once for every psctl call. See
 * {@link Security}.
 */
final class SecurityOptions {
    @Option(
            names = "--tls-cert",
            paramLabel = "FILE",
            defaultValue = "${env:PSCLUSTER_TLS_CERT}",
            description = "This process's certificate chain (PEM): a server serves TLS with it, a client presents it"
                    + " where the cluster requires client certificates. With --tls-key. Env: PSCLUSTER_TLS_CERT.")
    Path cert;

    @Option(
            names = "--tls-key",
            paramLabel = "FILE",
            defaultValue = "${env:PSCLUSTER_TLS_KEY}",
            description = "The private key of --tls-cert (PEM, unencrypted PKCS#8). Env: PSCLUSTER_TLS_KEY.")
    Path key;

    @Option(
            names = "--tls-ca",
            paramLabel = "FILE",
            defaultValue = "${env:PSCLUSTER_TLS_CA}",
            description = "The CA (PEM) a client trusts for the cluster's certificates (with it, calls use TLS); a"
                    + " server with it requires client certificates it signed. Env: PSCLUSTER_TLS_CA.")
    Path ca;

    @Option(
            names = "--token-file",
            paramLabel = "FILE",
            defaultValue = "${env:PSCLUSTER_TOKEN_FILE}",
            description = "A file holding the token sent with every call; a server with it refuses calls without it"
                    + " (UNAUTHENTICATED). Env: PSCLUSTER_TOKEN_FILE.")
    Path tokenFile;

    /** As the options say, for a client. */
    Security security() {
        return security(null);
    }

    /** As the options say, a server also accepting the worker token in {@code workerTokenFile} (null: none). */
    Security security(final Path workerTokenFile) {
        return Security.fromFiles(given(cert), given(key), given(ca), given(tokenFile), given(workerTokenFile));
    }

    /** Null for an option not given, also when its variable is set to nothing ({@code PSCLUSTER_TLS_CA=}). */
    static Path given(final Path option) {
        return option == null || option.toString().isBlank() ? null : option;
    }

    /** A channel to {@code address} secured as the options say. */
    ManagedChannel channel(final String address) {
        return Cli.channel(address, security());
    }
}
