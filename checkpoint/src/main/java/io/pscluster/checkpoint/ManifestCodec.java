package io.pscluster.checkpoint;

import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.zip.CRC32C;

/**
 * The manifest's text format, version 1: printable ASCII lines ending in {@code \n}, fields separated by one space.
 *
 * <pre>
 * pscluster-checkpoint-manifest 1
 * id 7
 * created-millis 1712345678901
 * slot-count 16384
 * table &lt;name&gt; &lt;schema&gt;
 * property &lt;key&gt; &lt;value&gt;
 * file &lt;table&gt; &lt;shard&gt; &lt;path&gt; &lt;length&gt; &lt;crc32c&gt; &lt;rows&gt; &lt;slots&gt;
 * checksum &lt;crc32c&gt;
 * </pre>
 *
 * <p>The first four lines come in this order; {@code table}, {@code property} and {@code file} lines follow in any
 * order (the encoder writes them in that order, tables and files in list order, properties sorted by key). The last
 * line is the CRC32C of every byte before it.
 *
 * <p>Strings are percent-encoded UTF-8: every byte outside {@code !..~} (space, control characters, anything
 * non-ASCII) and every {@code %} becomes {@code %XX}, so a field never contains a space or a line break and plain
 * names such as {@code shard-0/emb.rows} stay readable. The empty string is written as {@code -} and the string
 * {@code -} as {@code %2D}. Schemas are standard base64 ({@code -} when empty). A CRC32C is 8 lowercase hex
 * digits. Slots are ascending ranges, e.g. {@code 0-5,9,12-15}, or {@code -} for none.
 */
final class ManifestCodec {
    private static final java.util.regex.Pattern SLOT_RANGE = java.util.regex.Pattern.compile("\\d{1,10}(-\\d{1,10})?");

    static final String MAGIC = "pscluster-checkpoint-manifest";
    static final int VERSION = 1;
    private static final String EMPTY = "-";
    private static final char[] HEX = "0123456789ABCDEF".toCharArray();

    private ManifestCodec() {}

    static byte[] encode(Manifest manifest) {
        StringBuilder text = new StringBuilder(256 + 128 * manifest.files().size());
        text.append(MAGIC).append(' ').append(VERSION).append('\n');
        text.append("id ").append(manifest.id()).append('\n');
        text.append("created-millis ").append(manifest.createdMillis()).append('\n');
        text.append("slot-count ").append(manifest.slotCount()).append('\n');
        for (Manifest.TableEntry table : manifest.tables()) {
            text.append("table ").append(encodeString(table.name(), "table name"));
            text.append(' ').append(encodeBytes(table.schema())).append('\n');
        }
        for (Map.Entry<String, String> property : manifest.properties().entrySet()) {
            text.append("property ").append(encodeString(property.getKey(), "property key"));
            text.append(' ')
                    .append(encodeString(property.getValue(), "property value"))
                    .append('\n');
        }
        for (Manifest.FileEntry entry : manifest.files()) {
            RowFileInfo file = entry.file();
            text.append("file ").append(encodeString(entry.table(), "table name"));
            text.append(' ').append(encodeString(entry.shardId(), "shard id"));
            text.append(' ').append(encodeString(file.path(), "path"));
            text.append(' ').append(file.length());
            text.append(' ').append(hex32(file.crc32c()));
            text.append(' ').append(file.rows());
            text.append(' ').append(encodeSlots(file.slots())).append('\n');
        }
        byte[] body = text.toString().getBytes(StandardCharsets.US_ASCII);
        CRC32C crc = new CRC32C();
        crc.update(body);
        byte[] checksumLine = ("checksum " + hex32((int) crc.getValue()) + "\n").getBytes(StandardCharsets.US_ASCII);
        ByteArrayOutputStream out = new ByteArrayOutputStream(body.length + checksumLine.length);
        out.writeBytes(body);
        out.writeBytes(checksumLine);
        return out.toByteArray();
    }

    static Manifest decode(byte[] bytes, String source) throws CheckpointCorruptException {
        if (bytes.length == 0) {
            throw new CheckpointCorruptException(source + ": line 1: empty manifest");
        }
        int line = 1;
        for (int i = 0; i < bytes.length; i++) {
            int b = bytes[i] & 0xff;
            if (b == '\n') {
                line++;
            } else if (b < 0x20 || b > 0x7e) {
                throw new CheckpointCorruptException(String.format(
                        "%s: line %d: byte 0x%02x at offset %d is not printable ASCII", source, line, b, i));
            }
        }
        if (bytes[bytes.length - 1] != '\n') {
            throw new CheckpointCorruptException(source + ": line " + line + ": no final newline (truncated?)");
        }
        String[] lines = new String(bytes, 0, bytes.length - 1, StandardCharsets.US_ASCII).split("\n", -1);
        checkHeader(lines[0], source);

        int lastLine = lines.length;
        String checksumLine = lines[lastLine - 1];
        if (lastLine < 2 || !checksumLine.matches("checksum [0-9a-f]{8}")) {
            throw new CheckpointCorruptException(
                    source + ": line " + lastLine + ": last line is not 'checksum <crc32c>' (truncated?)");
        }
        int bodyLength = bytes.length - checksumLine.length() - 1;
        CRC32C crc = new CRC32C();
        crc.update(bytes, 0, bodyLength);
        String computed = hex32((int) crc.getValue());
        String recorded = checksumLine.substring("checksum ".length());
        if (!computed.equals(recorded)) {
            throw new CheckpointCorruptException(source + ": line " + lastLine + ": checksum mismatch: recorded "
                    + recorded + ", computed " + computed);
        }
        return new Parser(lines, source).parse();
    }

    private static void checkHeader(String header, String source) throws CheckpointCorruptException {
        if (header.equals(MAGIC + " " + VERSION)) {
            return;
        }
        if (header.startsWith(MAGIC + " ")) {
            throw new CheckpointCorruptException(source + ": line 1: unsupported manifest version '"
                    + header.substring(MAGIC.length() + 1) + "', this reader supports " + VERSION);
        }
        throw new CheckpointCorruptException(
                source + ": line 1: not a checkpoint manifest (expected '" + MAGIC + " " + VERSION + "')");
    }

    /** Parses the lines between the header and the checksum, remembering the line number for errors. */
    private static final class Parser {
        private final String[] lines;
        private final String source;
        private int lineNumber;

        Parser(String[] lines, String source) {
            this.lines = lines;
            this.source = source;
        }

        Manifest parse() throws CheckpointCorruptException {
            int bodyEnd = lines.length - 1;
            if (bodyEnd < 4) {
                lineNumber = bodyEnd + 1;
                throw error("expected id, created-millis and slot-count lines");
            }
            long id = parseLong(header(1, "id"), "id");
            long createdMillis = parseLong(header(2, "created-millis"), "created-millis");
            long slotCount = parseLong(header(3, "slot-count"), "slot-count");
            if (slotCount < 1 || slotCount > Integer.MAX_VALUE) {
                throw error("slot-count " + slotCount + " out of range");
            }
            List<Manifest.TableEntry> tables = new ArrayList<>();
            Map<String, String> properties = new LinkedHashMap<>();
            List<Manifest.FileEntry> files = new ArrayList<>();
            for (int i = 4; i < bodyEnd; i++) {
                lineNumber = i + 1;
                String[] fields = lines[i].split(" ", -1);
                switch (fields[0]) {
                    case "table" -> {
                        expectFields(fields, 3);
                        tables.add(new Manifest.TableEntry(decodeString(fields[1]), decodeBytes(fields[2])));
                    }
                    case "property" -> {
                        expectFields(fields, 3);
                        String key = decodeString(fields[1]);
                        if (properties.put(key, decodeString(fields[2])) != null) {
                            throw error("property '" + key + "' appears twice");
                        }
                    }
                    case "file" -> {
                        expectFields(fields, 8);
                        files.add(parseFile(fields, (int) slotCount));
                    }
                    default -> throw error("unknown line type '" + fields[0] + "'");
                }
            }
            lineNumber = 0;
            try {
                return new Manifest(id, createdMillis, (int) slotCount, tables, files, properties);
            } catch (IllegalArgumentException e) {
                throw new CheckpointCorruptException(source + ": invalid manifest: " + e.getMessage(), e);
            }
        }

        private String header(int index, String keyword) throws CheckpointCorruptException {
            lineNumber = index + 1;
            String[] fields = lines[index].split(" ", -1);
            if (!fields[0].equals(keyword)) {
                throw error("expected '" + keyword + "', found '" + fields[0] + "'");
            }
            expectFields(fields, 2);
            return fields[1];
        }

        private Manifest.FileEntry parseFile(String[] fields, int slotCount) throws CheckpointCorruptException {
            String table = decodeString(fields[1]);
            String shard = decodeString(fields[2]);
            String path = decodeString(fields[3]);
            long length = parseLong(fields[4], "length");
            if (!fields[5].matches("[0-9a-f]{8}")) {
                throw error("crc32c '" + fields[5] + "' is not 8 lowercase hex digits");
            }
            int crc32c = Integer.parseUnsignedInt(fields[5], 16);
            long rows = parseLong(fields[6], "rows");
            int[] slots = decodeSlots(fields[7], slotCount);
            try {
                return new Manifest.FileEntry(table, shard, new RowFileInfo(path, length, crc32c, rows, slots));
            } catch (IllegalArgumentException e) {
                throw error(e.getMessage());
            }
        }

        private void expectFields(String[] fields, int count) throws CheckpointCorruptException {
            if (fields.length != count) {
                throw error("'" + fields[0] + "' line has " + fields.length + " fields, expected " + count);
            }
        }

        private long parseLong(String text, String what) throws CheckpointCorruptException {
            try {
                return Long.parseLong(text);
            } catch (NumberFormatException e) {
                throw error(what + " '" + text + "' is not a number");
            }
        }

        private String decodeString(String token) throws CheckpointCorruptException {
            if (token.equals(EMPTY)) {
                return "";
            }
            if (token.isEmpty()) {
                throw error("empty field (two spaces in a row?)");
            }
            ByteBuffer utf8 = ByteBuffer.allocate(token.length());
            for (int i = 0; i < token.length(); i++) {
                char c = token.charAt(i);
                if (c == ' ') {
                    throw error("unescaped space in '" + token + "'");
                }
                if (c != '%') {
                    utf8.put((byte) c);
                    continue;
                }
                int high = i + 2 < token.length() ? Character.digit(token.charAt(i + 1), 16) : -1;
                int low = i + 2 < token.length() ? Character.digit(token.charAt(i + 2), 16) : -1;
                if (high < 0 || low < 0) {
                    throw error("bad percent escape at index " + i + " of '" + token + "'");
                }
                utf8.put((byte) (high << 4 | low));
                i += 2;
            }
            utf8.flip();
            try {
                return StandardCharsets.UTF_8
                        .newDecoder()
                        .onMalformedInput(CodingErrorAction.REPORT)
                        .onUnmappableCharacter(CodingErrorAction.REPORT)
                        .decode(utf8)
                        .toString();
            } catch (CharacterCodingException e) {
                throw error("'" + token + "' is not percent-encoded UTF-8");
            }
        }

        private byte[] decodeBytes(String token) throws CheckpointCorruptException {
            if (token.equals(EMPTY)) {
                return new byte[0];
            }
            try {
                return Base64.getDecoder().decode(token);
            } catch (IllegalArgumentException e) {
                throw error("bad base64 '" + token + "': " + e.getMessage());
            }
        }

        private static String abbreviate(String text) {
            return text.length() <= 80 ? text : text.substring(0, 80) + "... (" + text.length() + " chars)";
        }

        private int[] decodeSlots(String token, int slotCount) throws CheckpointCorruptException {
            if (token.equals(EMPTY)) {
                return new int[0];
            }
            int[] slots = new int[16];
            int count = 0;
            long previous = -1;
            // One range at a time: a pattern over the whole list recurses once per range in java.util.regex and
            // overflows the stack on the long lists that sparse slots give (thousands of ranges).
            for (String range : token.split(",", -1)) {
                if (!SLOT_RANGE.matcher(range).matches()) {
                    throw error("bad slot list '" + abbreviate(token) + "': range '" + abbreviate(range) + "'");
                }
                int dash = range.indexOf('-');
                long first = parseLong(dash < 0 ? range : range.substring(0, dash), "slot");
                long last = dash < 0 ? first : parseLong(range.substring(dash + 1), "slot");
                // Checked before expanding, so a damaged range cannot allocate beyond slotCount.
                if (first <= previous || last < first || last >= slotCount) {
                    throw error("slot range '" + range + "' is not ascending within [0, " + slotCount + ")");
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

        private CheckpointCorruptException error(String what) {
            return new CheckpointCorruptException(source + ": line " + lineNumber + ": " + what);
        }
    }

    static String encodeString(String value, String what) {
        if (value.isEmpty()) {
            return EMPTY;
        }
        ByteBuffer utf8;
        try {
            utf8 = StandardCharsets.UTF_8
                    .newEncoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .encode(CharBuffer.wrap(value));
        } catch (CharacterCodingException e) {
            // A lone surrogate has no UTF-8 form; writing '?' instead would break the exact round trip.
            throw new IllegalArgumentException(what + " '" + value + "' is not valid UTF-16 (lone surrogate?)", e);
        }
        StringBuilder out = new StringBuilder(utf8.remaining() + 8);
        while (utf8.hasRemaining()) {
            int b = utf8.get() & 0xff;
            if (b <= 0x20 || b >= 0x7f || b == '%') {
                out.append('%').append(HEX[b >>> 4]).append(HEX[b & 0xf]);
            } else {
                out.append((char) b);
            }
        }
        return out.length() == 1 && out.charAt(0) == '-' ? "%2D" : out.toString();
    }

    private static String encodeBytes(byte[] bytes) {
        return bytes.length == 0 ? EMPTY : Base64.getEncoder().encodeToString(bytes);
    }

    static String encodeSlots(int[] slots) {
        if (slots.length == 0) {
            return EMPTY;
        }
        StringBuilder out = new StringBuilder();
        int start = 0;
        while (start < slots.length) {
            int end = start;
            while (end + 1 < slots.length && slots[end + 1] == slots[end] + 1) {
                end++;
            }
            if (out.length() > 0) {
                out.append(',');
            }
            out.append(slots[start]);
            if (end > start) {
                out.append('-').append(slots[end]);
            }
            start = end + 1;
        }
        return out.toString();
    }

    private static String hex32(int value) {
        return String.format("%08x", value);
    }
}
