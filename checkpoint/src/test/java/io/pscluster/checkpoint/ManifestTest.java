package io.pscluster.checkpoint;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;

class ManifestTest {
    private static final String SOURCE = "hdfs://nn/ps/ckpt-000000000042/_MANIFEST";
    private static final List<String> ODD_NAMES = List.of(
            "plain",
            "with space",
            "a/b\\c:d",
            "ünïcødé 表 \uD83D\uDE80",
            "",
            "-",
            "%41",
            "line\nbreak\ttab\r",
            "checksum 00000000");

    @Test
    void shouldRoundTripExactlyWhenNamesAreOddAndSchemasBinary() throws CheckpointCorruptException {
        Manifest manifest = oddManifest();

        byte[] encoded = manifest.encode();
        Manifest decoded = Manifest.decode(encoded, SOURCE);

        assertThat(decoded).isEqualTo(manifest);
        assertThat(decoded.tables().get(3).schema())
                .isEqualTo(manifest.tables().get(3).schema());
        assertThat(decoded.encode()).isEqualTo(encoded);
        assertThat(decoded.totalBytes()).isEqualTo(1000 + 28 + 4000);
        assertThat(decoded.totalRows()).isEqualTo(20 + 0 + 70);
    }

    @Test
    void shouldWriteReadableAsciiWhenEncoding() {
        String text = new String(oddManifest().encode(), StandardCharsets.US_ASCII);

        assertThat(text)
                .startsWith("pscluster-checkpoint-manifest 1\nid 42\ncreated-millis 1712345678901\nslot-count 16384\n")
                .contains("\ntable with%20space ")
                .contains("\nfile plain shard-0 shard-0/plain.rows 1000 89abcdef 20 0-3,7,100-101,16383\n")
                .containsPattern("\nchecksum [0-9a-f]{8}\n$");
        assertThat(text.chars()).allMatch(c -> c == '\n' || (c >= 0x20 && c < 0x7f));
    }

    @Test
    void shouldThrowCorruptNamingSourceWhenAnyByteIsFlipped() {
        byte[] encoded = oddManifest().encode();

        for (int i = 0; i < encoded.length; i++) {
            byte[] damaged = encoded.clone();
            damaged[i] ^= 0x01;
            int at = i;
            assertThatThrownBy(() -> Manifest.decode(damaged, SOURCE))
                    .as("byte %d flipped", at)
                    .isInstanceOf(CheckpointCorruptException.class)
                    .hasMessageStartingWith(SOURCE + ": line ");
        }
    }

    @Test
    void shouldNameTheLineWhenChecksumDoesNotMatch() {
        String text = new String(oddManifest().encode(), StandardCharsets.US_ASCII);
        byte[] damaged = text.replace("\nid 42\n", "\nid 43\n").getBytes(StandardCharsets.US_ASCII);
        int lastLine = (int) text.chars().filter(c -> c == '\n').count();

        assertThatThrownBy(() -> Manifest.decode(damaged, SOURCE))
                .isInstanceOf(CheckpointCorruptException.class)
                .hasMessageStartingWith(SOURCE + ": line " + lastLine + ": checksum mismatch");
    }

    @Test
    void shouldThrowCorruptWhenTruncatedOrNotAManifest() {
        byte[] encoded = oddManifest().encode();
        byte[] truncated = java.util.Arrays.copyOf(encoded, encoded.length - 18);

        assertThatThrownBy(() -> Manifest.decode(truncated, SOURCE))
                .isInstanceOf(CheckpointCorruptException.class)
                .hasMessageContaining("last line is not 'checksum <crc32c>'");
        assertThatThrownBy(() -> Manifest.decode("PSRF\n".getBytes(StandardCharsets.US_ASCII), SOURCE))
                .isInstanceOf(CheckpointCorruptException.class)
                .hasMessage(
                        SOURCE + ": line 1: not a checkpoint manifest (expected 'pscluster-checkpoint-manifest 1')");
        assertThatThrownBy(() -> Manifest.decode(new byte[0], SOURCE))
                .isInstanceOf(CheckpointCorruptException.class)
                .hasMessageStartingWith(SOURCE);
    }

    @Test
    void shouldRejectFileOfUnknownTableWhenConstructing() {
        RowFileInfo file = new RowFileInfo("x.rows", 28, 0, 0, new int[0]);

        assertThatThrownBy(() ->
                        new Manifest(1, 0, 16, List.of(), List.of(new Manifest.FileEntry("t", "s", file)), Map.of()))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("table 't', which is not listed");
    }

    @Test
    void shouldRoundTripWhenAFileHoldsThousandsOfScatteredSlots() throws CheckpointCorruptException {
        // Every other slot of 16384: 8192 ranges, ~45 KB on one line (a sparse table's rows leave such gaps).
        int[] slots = new int[8192];
        for (int i = 0; i < slots.length; i++) {
            slots[i] = 2 * i;
        }
        Manifest manifest = new Manifest(
                3,
                0,
                16384,
                List.of(new Manifest.TableEntry("t", new byte[] {1})),
                List.of(new Manifest.FileEntry("t", "s", new RowFileInfo("s/t.rows", 28, 0, slots.length, slots))),
                Map.of());

        Manifest decoded = Manifest.decode(manifest.encode(), SOURCE);

        assertThat(decoded.files().get(0).file().slots()).containsExactly(slots);
    }

    private static Manifest oddManifest() {
        Random random = new Random(7);
        List<Manifest.TableEntry> tables = ODD_NAMES.stream()
                .map(name -> {
                    byte[] schema = new byte[name.length() * 3];
                    random.nextBytes(schema);
                    return new Manifest.TableEntry(name, schema);
                })
                .toList();
        Map<String, String> properties = new LinkedHashMap<>();
        properties.put("epoch", "17");
        properties.put("", "empty key");
        properties.put("empty value", "");
        properties.put("k=v %", "ü\n-");
        List<Manifest.FileEntry> files = List.of(
                new Manifest.FileEntry(
                        "plain", "shard-0", new RowFileInfo("shard-0/plain.rows", 1000, 0x89abcdef, 20, new int[] {
                            0, 1, 2, 3, 7, 100, 101, 16383
                        })),
                new Manifest.FileEntry("", "-", new RowFileInfo("a/_41.rows", 28, 0, 0, new int[0])),
                new Manifest.FileEntry(
                        "ünïcødé 表 \uD83D\uDE80",
                        "shard with space",
                        new RowFileInfo("shard-_20/x%20y.rows", 4000, -1, 70, new int[] {5})));
        return new Manifest(42, 1712345678901L, 16384, tables, files, properties);
    }
}
