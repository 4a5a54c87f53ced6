package io.pscluster.checkpoint;

import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Base64;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.zip.CRC32C;

/**
 * Reads manifests of format 1, the line-based text PSCluster 0.1 wrote, so that its checkpoints still load (they are
 * never written again):
 *
 * <pre>
 * pscluster-checkpoint-manifest 1
 * id 7
 * created-millis 1712345678901
 * slot-count 16384
 * table &lt;name&gt; &lt;schema, base64 or -&gt;
 * property &lt;key&gt; &lt;value&gt;
 * file &lt;table&gt; &lt;shard&gt; &lt;path&gt; &lt;length&gt; &lt;crc32c, 8 hex&gt; &lt;rows&gt; &lt;slots: 0-5,9 or -&gt;
 * checksum &lt;crc32c of every byte before this line&gt;
 * </pre>
 *
 * Strings are percent-encoded UTF-8 ({@code -} is the empty string). Every checkpoint of format 1 is a base whose
 * files are row files of version 1 (stored plainly).
 */
final class LegacyManifestReader {
    private static final String HEADER = "pscluster-checkpoint-manifest ";

    private LegacyManifestReader() {}

    /** Whether the bytes start like a format-1 manifest (any version number: the decoder names a wrong one). */
    static boolean isLegacy(byte[] bytes) {
        byte[] header = HEADER.getBytes(StandardCharsets.US_ASCII);
        return bytes.length >= header.length && Arrays.equals(bytes, 0, header.length, header, 0, header.length);
    }

    static Manifest decode(byte[] bytes, String source) throws CheckpointCorruptException {
        String text = new String(bytes, StandardCharsets.ISO_8859_1);
        if (!text.endsWith("\n")) {
            throw new CheckpointCorruptException(source + ": no final newline (truncated?)");
        }
        String[] lines = text.substring(0, text.length() - 1).split("\n", -1);
        if (!lines[0].equals(HEADER + "1")) {
            throw new CheckpointCorruptException(
                    source + ": line 1: unsupported manifest version '" + lines[0].substring(HEADER.length()) + "'");
        }
        String last = lines[lines.length - 1];
        if (lines.length < 5 || !last.matches("checksum [0-9a-f]{8}")) {
            throw new CheckpointCorruptException(source + ": last line is not 'checksum <crc32c>' (truncated?)");
        }
        CRC32C crc = new CRC32C();
        crc.update(bytes, 0, bytes.length - last.length() - 1);
        String computed = String.format("%08x", (int) crc.getValue());
        if (!last.endsWith(computed)) {
            throw new CheckpointCorruptException(source + ": line " + lines.length + ": checksum mismatch: recorded "
                    + last.substring(9) + ", computed " + computed);
        }
        int lineNumber = 0;
        try {
            long id = Long.parseLong(field(lines, 1, "id"));
            long createdMillis = Long.parseLong(field(lines, 2, "created-millis"));
            int slotCount = Integer.parseInt(field(lines, 3, "slot-count"));
            List<Manifest.TableEntry> tables = new ArrayList<>();
            List<Manifest.FileEntry> files = new ArrayList<>();
            Map<String, String> properties = new HashMap<>();
            for (lineNumber = 5; lineNumber < lines.length; lineNumber++) {
                String[] f = lines[lineNumber - 1].split(" ", -1);
                switch (f[0] + "/" + f.length) {
                    case "table/3" ->
                        tables.add(new Manifest.TableEntry(
                                string(f[1]),
                                f[2].equals("-")
                                        ? new byte[0]
                                        : Base64.getDecoder().decode(f[2])));
                    case "property/3" -> {
                        if (properties.put(string(f[1]), string(f[2])) != null) {
                            throw new IllegalArgumentException("property '" + string(f[1]) + "' appears twice");
                        }
                    }
                    case "file/8" ->
                        files.add(new Manifest.FileEntry(
                                string(f[1]),
                                string(f[2]),
                                new RowFileInfo(
                                        string(f[3]),
                                        Long.parseLong(f[4]),
                                        Integer.parseUnsignedInt(f[5], 16),
                                        Long.parseLong(f[6]),
                                        slots(f[7], slotCount))));
                    default -> throw new IllegalArgumentException("unexpected line '" + abbreviate(f[0]) + "'");
                }
            }
            lineNumber = 0;
            return new Manifest(id, createdMillis, slotCount, tables, files, properties);
        } catch (IllegalArgumentException | CharacterCodingException e) {
            throw new CheckpointCorruptException(
                    source + (lineNumber > 0 ? ": line " + lineNumber : "") + ": " + e.getMessage(), e);
        }
    }

    private static String field(String[] lines, int index, String keyword) {
        String[] f = lines[index].split(" ", -1);
        if (f.length != 2 || !f[0].equals(keyword)) {
            throw new IllegalArgumentException("line " + (index + 1) + ": expected '" + keyword + " <value>'");
        }
        return f[1];
    }

    /** Percent-decoding; {@code -} is the empty string. */
    private static String string(String token) throws CharacterCodingException {
        if (token.equals("-")) {
            return "";
        }
        ByteArrayOutputStream utf8 = new ByteArrayOutputStream(token.length());
        for (int i = 0; i < token.length(); i++) {
            char c = token.charAt(i);
            if (c != '%') {
                utf8.write(c);
                continue;
            }
            int high = i + 2 < token.length() ? Character.digit(token.charAt(i + 1), 16) : -1;
            int low = i + 2 < token.length() ? Character.digit(token.charAt(i + 2), 16) : -1;
            if (high < 0 || low < 0) {
                throw new IllegalArgumentException("bad percent escape in '" + abbreviate(token) + "'");
            }
            utf8.write(high << 4 | low);
            i += 2;
        }
        return StandardCharsets.UTF_8
                .newDecoder()
                .onMalformedInput(CodingErrorAction.REPORT)
                .onUnmappableCharacter(CodingErrorAction.REPORT)
                .decode(ByteBuffer.wrap(utf8.toByteArray()))
                .toString();
    }

    /** Ascending ranges such as {@code 0-5,9}; {@code -} for none. Ranges are checked before they are expanded. */
    private static int[] slots(String token, int slotCount) {
        if (token.equals("-")) {
            return new int[0];
        }
        int[] slots = new int[16];
        int count = 0;
        long previous = -1;
        for (String range : token.split(",", -1)) {
            int dash = range.indexOf('-');
            long first = Long.parseLong(dash < 0 ? range : range.substring(0, dash));
            long last = dash < 0 ? first : Long.parseLong(range.substring(dash + 1));
            if (first <= previous || last < first || last >= slotCount) {
                throw new IllegalArgumentException(
                        "slot range '" + abbreviate(range) + "' is not ascending within [0, " + slotCount + ")");
            }
            for (long slot = first; slot <= last; slot++) {
                if (count == slots.length) {
                    slots = Arrays.copyOf(slots, count * 2);
                }
                slots[count++] = (int) slot;
            }
            previous = last;
        }
        return Arrays.copyOf(slots, count);
    }

    private static String abbreviate(String text) {
        return text.length() <= 80 ? text : text.substring(0, 80) + "...";
    }
}
