package io.pscluster.testing;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.cert.Certificate;
import java.util.Base64;
import java.util.concurrent.TimeUnit;

/**
 * A self-signed certificate for {@code localhost} and {@code 127.0.0.1}, made by the JDK's {@code keytool} and written
 * as PEM: the chain, its unencrypted PKCS#8 key, and the same certificate as the CA to trust (a self-signed certificate
 * is its own CA). Two made apart trust neither the other.
 */
public record TestCertificates(Path cert, Path key) {
    private static final char[] PASSWORD = "changeit".toCharArray();

    /** The certificate as the CA a peer trusts. */
    public Path ca() {
        return cert;
    }

    /** Makes one in {@code dir} (which it creates) under {@code name}. */
    public static TestCertificates create(final Path dir, final String name)
            throws IOException, InterruptedException, GeneralSecurityException {
        Files.createDirectories(dir);
        final Path store = dir.resolve(name + ".p12");
        final Process keytool = new ProcessBuilder(
                        Path.of(System.getProperty("java.home"), "bin", "keytool")
                                .toString(),
                        "-genkeypair",
                        "-alias",
                        name,
                        "-keyalg",
                        "RSA",
                        "-keysize",
                        "2048",
                        "-dname",
                        "CN=localhost",
                        "-ext",
                        "SAN=dns:localhost,ip:127.0.0.1",
                        "-validity",
                        "2",
                        "-storetype",
                        "PKCS12",
                        "-keystore",
                        store.toString(),
                        "-storepass",
                        new String(PASSWORD),
                        "-keypass",
                        new String(PASSWORD))
                .redirectErrorStream(true)
                .start();
        final String output = new String(keytool.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        if (!keytool.waitFor(60, TimeUnit.SECONDS) || keytool.exitValue() != 0) {
            throw new IOException("keytool failed: " + output);
        }
        final KeyStore keys = KeyStore.getInstance("PKCS12");
        try (InputStream in = Files.newInputStream(store)) {
            keys.load(in, PASSWORD);
        }
        final PrivateKey key = (PrivateKey) keys.getKey(name, PASSWORD);
        final Certificate certificate = keys.getCertificate(name);
        final Path certFile = dir.resolve(name + ".crt.pem");
        final Path keyFile = dir.resolve(name + ".key.pem");
        Files.writeString(certFile, pem("CERTIFICATE", certificate.getEncoded()));
        Files.writeString(keyFile, pem("PRIVATE KEY", key.getEncoded()));
        return new TestCertificates(certFile, keyFile);
    }

    private static String pem(final String type, final byte[] der) {
        return "-----BEGIN " + type + "-----\n"
                + Base64.getMimeEncoder(64, "\n".getBytes(StandardCharsets.US_ASCII))
                        .encodeToString(der)
                + "\n-----END " + type + "-----\n";
    }
}
