package io.pscluster.wire;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** What {@link Security#fromFiles} refuses, naming the option or file, before any process serves with it. */
class SecurityTest {
    @TempDir
    Path dir;

    @Test
    void shouldRefuseAKeyWithoutItsCertificateAndAFileThatIsNotThere() throws Exception {
        final Path key = Files.writeString(dir.resolve("key.pem"), "x");
        assertThatThrownBy(() -> Security.fromFiles(null, key, null, null, null))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("--tls-cert and --tls-key go together");
        assertThatThrownBy(() -> Security.fromFiles(null, null, dir.resolve("missing-ca.pem"), null, null))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("missing-ca.pem: no such file, or not readable");
    }

    @Test
    void shouldRefuseTokensThatAreEmptyMalformedOrTheSameForBothRoles() throws Exception {
        final Path empty = Files.writeString(dir.resolve("empty"), " \n");
        final Path spaced = Files.writeString(dir.resolve("spaced"), "two words");
        final Path token = Files.writeString(dir.resolve("token"), "s3cret\n");
        final Path same = Files.writeString(dir.resolve("same"), "s3cret");
        assertThatThrownBy(() -> Security.fromFiles(null, null, null, empty, null))
                .hasMessageContaining("--token-file=" + empty + " is empty");
        assertThatThrownBy(() -> Security.fromFiles(null, null, null, spaced, null))
                .hasMessageContaining("printable ASCII without spaces (character 3 is not)");
        assertThatThrownBy(() -> Security.fromFiles(null, null, null, token, same))
                .hasMessageContaining("holds the same token as --token-file");
        assertThatThrownBy(() -> Security.fromFiles(null, null, null, null, token))
                .hasMessageContaining("--worker-token-file needs --token-file");
    }

    @Test
    void shouldNameAKeyOrCertificateFileItCannotUseAndSayHowToConvertAKey() throws Exception {
        final Path garbage = Files.writeString(dir.resolve("garbage.pem"), "not a certificate");
        final Path key = Files.writeString(
                dir.resolve("key.pem"), "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
        assertThatThrownBy(() -> Security.fromFiles(garbage, key, null, null, null))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("--tls-cert=" + garbage);
        assertThatThrownBy(() -> Security.fromFiles(null, null, garbage, null, null))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("--tls-ca=" + garbage);
        assertThatThrownBy(() -> Security.fromFiles(null, null, dir, null, null))
                .as("a directory (an empty variable read as the working directory) is no file")
                .hasMessageContaining("no such file, or not readable");
    }

    @Test
    void shouldBePlainWithoutTlsOrTokens() {
        assertThat(Security.NONE.tls()).isFalse();
        assertThat(Security.NONE.tokens()).isFalse();
    }
}
