package io.pscluster.checkpoint;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
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
        assertThat(decoded.totalUncompressedBytes()).isEqualTo(3000 + 0 + 9000);
    }

    @Test
    void shouldWriteJsonThatAPlainJsonParserReads() {
        String text = new String(oddManifest().encode(), StandardCharsets.UTF_8);

        // Gson knows nothing of protobuf: what it reads is what an operator's jq or Python would.
        JsonObject json = JsonParser.parseString(text).getAsJsonObject();
        assertThat(json.get("format_version").getAsInt()).isEqualTo(2);
        assertThat(json.get("id").getAsString()).isEqualTo("42");
        assertThat(json.get("created").getAsString()).isEqualTo("2024-04-05T19:34:38.901Z");
        assertThat(json.get("kind").getAsString()).isEqualTo("BASE");
        assertThat(json.get("base_id").getAsString()).isEqualTo("0");
        assertThat(json.getAsJsonObject("properties").get("epoch").getAsString())
                .isEqualTo("17");
        JsonObject file = json.getAsJsonArray("files").get(0).getAsJsonObject();
        assertThat(file.get("path").getAsString()).isEqualTo("shard-0/plain.rows");
        assertThat(file.get("length").getAsString()).isEqualTo("1000");
        assertThat(file.get("crc32c").getAsLong()).isEqualTo(0x89abcdefL);
        assertThat(file.get("codec").getAsString()).isEqualTo("ROW_CODEC_ZSTD");
        assertThat(file.getAsJsonArray("slots")).hasSize(8);
        assertThat(json.getAsJsonArray("tables")
                        .get(2)
                        .getAsJsonObject()
                        .get("name")
                        .getAsString())
                .isEqualTo("a/b\\c:d");
        assertThat(text).startsWith("{\n").endsWith("}\n").contains("\n  \"id\": \"42\",\n");
        // As cat shows it: no \\u003d for '=' and the like.
        assertThat(text).contains("\"slot-owners\": \"s0=0-2047;s1=2048-4095 <&'>\"");
        assertThat(json.getAsJsonObject("properties").get("escaped").getAsString())
                .isEqualTo("\\u003d stays a backslash, u, 003d");
    }

    @Test
    void shouldDecodeToTheSameManifestOrThrowNamingSourceWhenAnyByteIsFlipped() {
        Manifest manifest = oddManifest();
        byte[] encoded = manifest.encode();

        int rejected = 0;
        for (int i = 0; i < encoded.length; i++) {
            byte[] damaged = encoded.clone();
            damaged[i] ^= 0x01;
            try {
                // A flip in whitespace may leave valid JSON with the same content: that manifest is intact.
                assertThat(Manifest.decode(damaged, SOURCE))
                        .as("byte %d flipped", i)
                        .isEqualTo(manifest);
            } catch (CheckpointCorruptException e) {
                assertThat(e).hasMessageStartingWith(SOURCE + ": ");
                rejected++;
            }
        }
        assertThat(rejected).isGreaterThan(encoded.length * 9 / 10);
    }

    @Test
    void shouldThrowCorruptNamingTheChecksumWhenAValueIsEdited() {
        String text = new String(oddManifest().encode(), StandardCharsets.UTF_8);
        byte[] edited = text.replace("\"id\": \"42\"", "\"id\": \"43\"").getBytes(StandardCharsets.UTF_8);

        assertThatThrownBy(() -> Manifest.decode(edited, SOURCE))
                .isInstanceOf(CheckpointCorruptException.class)
                .hasMessageStartingWith(SOURCE + ": manifest_crc32c ")
                .hasMessageContaining("damaged or edited");
    }

    @Test
    void shouldDecodeAHandWrittenManifestWithoutChecksumOrDefaults() throws CheckpointCorruptException {
        String text = """
                {"format_version": 2, "id": "5", "created": "2026-01-02T03:04:05Z", "slot_count": 16,
                 "kind": "DELTA", "base_id": "2", "parent_id": "4",
                 "tables": [{"name": "t"}],
                 "files": [{"table": "t", "shard_id": "s0", "path": "s0/t.rows", "length": "100", "crc32c": 7,
                            "rows": "3", "slots": [1, 2], "codec": "ROW_CODEC_LZ4"}]}
                """;

        Manifest manifest = Manifest.decode(text.getBytes(StandardCharsets.UTF_8), SOURCE);

        assertThat(manifest.kind()).isEqualTo(Manifest.Kind.DELTA);
        assertThat(manifest.dependsOn()).containsExactly(2L, 4L);
        assertThat(manifest.createdMillis()).isEqualTo(1767323045000L);
        assertThat(manifest.files().get(0).file())
                .isEqualTo(new RowFileInfo("s0/t.rows", 100, 7, 3, new int[] {1, 2}, ChunkCodec.LZ4, 0));
    }

    @Test
    void shouldRefuseNewerFormatsUnknownFieldsAndMissingCodecs() {
        String base = "{\"format_version\": %d, \"id\": \"1\", \"created\": \"2026-01-02T03:04:05Z\","
                + " \"slot_count\": 16, \"kind\": \"BASE\"%s}";

        assertThatThrownBy(() -> decode(String.format(base, 3, "")))
                .isInstanceOf(CheckpointCorruptException.class)
                .hasMessage(SOURCE + ": manifest format_version 3 was written by a newer PSCluster; this one reads 2"
                        + " and 1");
        assertThatThrownBy(() -> decode(String.format(base, 2, ", \"delta_rows\": 5")))
                .isInstanceOf(CheckpointCorruptException.class)
                .hasMessageStartingWith(SOURCE + ": not a checkpoint manifest: ")
                .hasMessageContaining("delta_rows");
        assertThatThrownBy(() -> decode(String.format(
                        base,
                        2,
                        ", \"tables\": [{\"name\": \"t\"}], \"files\": [{\"table\": \"t\", \"path\": \"a.rows\"}]")))
                .isInstanceOf(CheckpointCorruptException.class)
                .hasMessage(SOURCE + ": file a.rows has codec ROW_CODEC_UNSPECIFIED, not one of NONE, ZSTD, LZ4");
        assertThatThrownBy(() -> decode(String.format(base, 2, "").replace("BASE", "CHECKPOINT_KIND_UNSPECIFIED")))
                .isInstanceOf(CheckpointCorruptException.class)
                .hasMessageContaining("neither BASE nor DELTA");
    }

    @Test
    void shouldThrowCorruptWhenTruncatedOrNotAManifest() {
        byte[] encoded = oddManifest().encode();
        byte[] truncated = Arrays.copyOf(encoded, encoded.length / 2);

        assertThatThrownBy(() -> Manifest.decode(truncated, SOURCE))
                .isInstanceOf(CheckpointCorruptException.class)
                .hasMessageStartingWith(SOURCE + ": not a checkpoint manifest: ");
        assertThatThrownBy(() -> Manifest.decode("PSRF\n".getBytes(StandardCharsets.US_ASCII), SOURCE))
                .isInstanceOf(CheckpointCorruptException.class)
                .hasMessageStartingWith(SOURCE + ": not a checkpoint manifest: ");
        assertThatThrownBy(() -> Manifest.decode(new byte[0], SOURCE))
                .isInstanceOf(CheckpointCorruptException.class)
                .hasMessageStartingWith(SOURCE);
        assertThatThrownBy(() -> Manifest.decode(new byte[] {'{', (byte) 0xff, '}'}, SOURCE))
                .isInstanceOf(CheckpointCorruptException.class)
                .hasMessage(SOURCE + ": not UTF-8 text, so not a manifest");
    }

    @Test
    void shouldReadTheFormatOneManifestThatVersion01Wrote() throws Exception {
        byte[] legacy = legacyManifest();

        Manifest manifest = Manifest.decode(legacy, SOURCE);

        assertThat(manifest.id()).isEqualTo(1);
        assertThat(manifest.createdMillis()).isEqualTo(1764000000000L);
        assertThat(manifest.slotCount()).isEqualTo(8);
        assertThat(manifest.kind()).isEqualTo(Manifest.Kind.BASE);
        assertThat(manifest.tables())
                .containsExactly(
                        new Manifest.TableEntry("emb", new byte[] {1, 2, 3}),
                        new Manifest.TableEntry("lr w", new byte[0]));
        assertThat(manifest.properties())
                .containsExactly(Map.entry("routing-epoch", "7"), Map.entry("slot-owners", "s0,s1"));
        assertThat(manifest.files()).hasSize(4);
        assertThat(manifest.files().get(1))
                .isEqualTo(new Manifest.FileEntry(
                        "lr w",
                        "s0",
                        new RowFileInfo(
                                "shard-s0/lr_20w.000000000001.rows", 300, 0xab3dbc3e, 12, new int[] {0, 2, 4, 6})));
        assertThat(manifest.files())
                .allSatisfy(entry -> assertThat(entry.file().codec()).isEqualTo(ChunkCodec.NONE));
        // Once read, it is written back in today's format and reads the same.
        assertThat(Manifest.decode(manifest.encode(), SOURCE)).isEqualTo(manifest);
    }

    @Test
    void shouldNameTheLineWhenAFormatOneManifestIsDamaged() throws Exception {
        String text = new String(legacyManifest(), StandardCharsets.US_ASCII);
        byte[] edited = text.replace("\nid 1\n", "\nid 2\n").getBytes(StandardCharsets.US_ASCII);
        byte[] truncated = text.substring(0, text.length() - 20).getBytes(StandardCharsets.US_ASCII);

        assertThatThrownBy(() -> Manifest.decode(edited, SOURCE))
                .isInstanceOf(CheckpointCorruptException.class)
                .hasMessageStartingWith(SOURCE + ": line 13: checksum mismatch");
        assertThatThrownBy(() -> Manifest.decode(truncated, SOURCE))
                .isInstanceOf(CheckpointCorruptException.class)
                .hasMessageStartingWith(SOURCE + ": ");
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

    private static Manifest decode(String json) throws CheckpointCorruptException {
        return Manifest.decode(json.getBytes(StandardCharsets.UTF_8), SOURCE);
    }

    /** The manifest PSCluster 0.1 wrote for the checkpoint under src/test/resources/legacy-v1. */
    static byte[] legacyManifest() throws IOException {
        try (InputStream in = ManifestTest.class.getResourceAsStream("/legacy-v1/ckpt-000000000001/_MANIFEST")) {
            return in.readAllBytes();
        }
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
        properties.put("slot-owners", "s0=0-2047;s1=2048-4095 <&'>");
        properties.put("escaped", "\\u003d stays a backslash, u, 003d");
        List<Manifest.FileEntry> files = List.of(
                new Manifest.FileEntry(
                        "plain",
                        "shard-0",
                        new RowFileInfo(
                                "shard-0/plain.rows",
                                1000,
                                0x89abcdef,
                                20,
                                new int[] {0, 1, 2, 3, 7, 100, 101, 16383},
                                ChunkCodec.ZSTD,
                                3000)),
                new Manifest.FileEntry("", "-", new RowFileInfo("a/_41.rows", 28, 0, 0, new int[0])),
                new Manifest.FileEntry(
                        "ünïcødé 表 \uD83D\uDE80",
                        "shard with space",
                        new RowFileInfo("shard-_20/x%20y.rows", 4000, -1, 70, new int[] {5}, ChunkCodec.LZ4, 9000)));
        return new Manifest(42, 1712345678901L, 16384, tables, files, properties);
    }
}
