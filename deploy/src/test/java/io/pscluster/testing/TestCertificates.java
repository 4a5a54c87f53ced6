package io.pscluster.testing;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * Certificates for tests, made by the JDK's {@code keytool} and written as PEM: a CA ({@link #authority}), and the
 * certificates it issues ({@link #issue}): a node's, naming {@code localhost} and {@code 127.0.0.1}, for TLS servers and
 * clients alike, or a job's, for clients only and naming no host. Each has its chain (the certificate, then the CA's),
 * its unencrypted PKCS#8 key, and the CA's certificate to trust.
 */
public record TestCertificates(Path cert, Path key, Path ca, Path keyStore, String alias) {
    private static final String PASSWORD = "changeit";

    /** A CA of its own, {@code name}, in {@code dir}. */
    public static TestCertificates authority(final Path dir, final String name)
            throws IOException, InterruptedException, GeneralSecurityException {
        Files.createDirectories(dir);
        final Path store = keyPair(dir, name, "-ext", "bc:c");
        final Path cert = dir.resolve(name + ".crt.pem");
        keytool(
                "-exportcert",
                "-rfc",
                "-alias",
                name,
                "-keystore",
                store.toString(),
                "-storepass",
                PASSWORD,
                "-file",
                cert.toString());
        return new TestCertificates(cert, writeKey(store, name, dir), cert, store, name);
    }

    /**
     * A certificate this CA signs, {@code name}: a node's ({@code node} true: server and client use, for {@code
     * localhost} and {@code 127.0.0.1}) or a job's (client use only, no host).
     */
    public TestCertificates issue(final String name, final boolean node)
            throws IOException, InterruptedException, GeneralSecurityException {
        final Path dir = keyStore.getParent();
        final Path store = keyPair(dir, name);
        final Path request = dir.resolve(name + ".csr");
        keytool(
                "-certreq",
                "-alias",
                name,
                "-keystore",
                store.toString(),
                "-storepass",
                PASSWORD,
                "-file",
                request.toString());
        final Path signed = dir.resolve(name + ".signed.pem");
        final List<String> gencert = new ArrayList<>(List.of(
                "-gencert",
                "-rfc",
                "-alias",
                alias,
                "-keystore",
                keyStore.toString(),
                "-storepass",
                PASSWORD,
                "-infile",
                request.toString(),
                "-outfile",
                signed.toString(),
                "-validity",
                "2"));
        if (node) {
            gencert.addAll(List.of("-ext", "SAN=dns:localhost,ip:127.0.0.1", "-ext", "EKU=serverAuth,clientAuth"));
        } else {
            gencert.addAll(List.of("-ext", "EKU=clientAuth"));
        }
        keytool(gencert.toArray(String[]::new));
        final Path chain = dir.resolve(name + ".crt.pem");
        Files.writeString(chain, Files.readString(signed) + Files.readString(ca));
        return new TestCertificates(chain, writeKey(store, name, dir), ca, store, name);
    }

    /** A key pair and its self-signed certificate, {@code name}, in a new store in {@code dir}; {@code extra} options. */
    private static Path keyPair(final Path dir, final String name, final String... extra)
            throws IOException, InterruptedException {
        final Path store = dir.resolve(name + ".p12");
        final List<String> args = new ArrayList<>(List.of(
                "-genkeypair",
                "-alias",
                name,
                "-keyalg",
                "RSA",
                "-keysize",
                "2048",
                "-dname",
                "CN=" + name,
                "-validity",
                "2",
                "-storetype",
                "PKCS12",
                "-keystore",
                store.toString(),
                "-storepass",
                PASSWORD,
                "-keypass",
                PASSWORD));
        args.addAll(List.of(extra));
        keytool(args.toArray(String[]::new));
        return store;
    }

    private static Path writeKey(final Path store, final String name, final Path dir)
            throws IOException, GeneralSecurityException {
        final KeyStore keys = KeyStore.getInstance("PKCS12");
        try (InputStream in = Files.newInputStream(store)) {
            keys.load(in, PASSWORD.toCharArray());
        }
        final PrivateKey key = (PrivateKey) keys.getKey(name, PASSWORD.toCharArray());
        final Path file = dir.resolve(name + ".key.pem");
        Files.writeString(
                file,
                "-----BEGIN PRIVATE KEY-----\n"
                        + Base64.getMimeEncoder(64, "\n".getBytes(StandardCharsets.US_ASCII))
                                .encodeToString(key.getEncoded())
                        + "\n-----END PRIVATE KEY-----\n");
        return file;
    }

    private static void keytool(final String... args) throws IOException, InterruptedException {
        final List<String> command = new ArrayList<>();
        command.add(Path.of(System.getProperty("java.home"), "bin", "keytool").toString());
        command.addAll(List.of(args));
        final Process keytool =
                new ProcessBuilder(command).redirectErrorStream(true).start();
        final String output = new String(keytool.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        if (!keytool.waitFor(60, TimeUnit.SECONDS) || keytool.exitValue() != 0) {
            throw new IOException("keytool " + String.join(" ", args) + " failed: " + output);
        }
    }
}
