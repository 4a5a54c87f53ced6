package io.pscluster.checkpoint;

import com.google.protobuf.ByteString;
import com.google.protobuf.CodedOutputStream;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.util.JsonFormat;
import com.google.protobuf.util.Timestamps;
import io.pscluster.proto.checkpoint.CheckpointKind;
import io.pscluster.proto.checkpoint.CheckpointManifest;
import io.pscluster.proto.checkpoint.RowCodec;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.zip.CRC32C;

/**
 * A {@link Manifest} as JSON: the protobuf JSON mapping of {@code pscluster.v1.CheckpointManifest}, field names as in
 * the {@code .proto}, every field printed (defaults included, so a base says {@code "base_id": "0"}), map keys
 * sorted, ending in a newline. 64-bit integers are JSON strings, as the mapping has it.
 *
 * <p>Reading is strict: an unknown field or a {@code format_version} other than {@value #FORMAT_VERSION} is refused,
 * because a reader that skipped what a newer writer added (say, that a checkpoint is a delta) would restore the wrong
 * model. {@code manifest_crc32c} protects the content against damage and stray edits; a manifest written by hand may
 * leave it 0 to skip that check.
 */
final class ManifestJson {
    static final int FORMAT_VERSION = 2;

    private static final JsonFormat.Printer PRINTER = JsonFormat.printer()
            .preservingProtoFieldNames()
            .alwaysPrintFieldsWithNoPresence()
            .sortingMapKeys();
    private static final JsonFormat.Parser PARSER = JsonFormat.parser();

    private ManifestJson() {}

    static byte[] encode(Manifest manifest) {
        CheckpointManifest.Builder message = toMessage(manifest);
        message.setManifestCrc32C(crcOf(message.build()));
        try {
            return (readable(PRINTER.print(message)) + "\n").getBytes(StandardCharsets.UTF_8);
        } catch (InvalidProtocolBufferException e) {
            // Only a message with an Any of an unregistered type fails to print: ours has none.
            throw new IllegalStateException("cannot print manifest " + manifest.id() + " as JSON", e);
        }
    }

    /**
     * The printer's JSON with the HTML-safe escapes of {@code = < > & '} (Gson's default: {@code \\u003d} and so on)
     * turned back into the characters, which JSON allows as they are, so that {@code slot-owners} reads
     * {@code s0=0-2047} under {@code cat}. Escape sequences are stepped over whole, so an escaped backslash followed by
     * {@code u003d} stays as it is.
     */
    static String readable(String json) {
        StringBuilder out = new StringBuilder(json.length());
        for (int i = 0; i < json.length(); i++) {
            char c = json.charAt(i);
            if (c != '\\' || i + 1 >= json.length()) {
                out.append(c);
                continue;
            }
            if (json.charAt(i + 1) == 'u' && i + 5 < json.length()) {
                String code = json.substring(i + 2, i + 6);
                int plain = "003d003c003e00260027".indexOf(code);
                if (plain >= 0 && plain % 4 == 0) {
                    out.append((char) Integer.parseInt(code, 16));
                    i += 5;
                    continue;
                }
            }
            out.append(c).append(json.charAt(i + 1));
            i++;
        }
        return out.toString();
    }

    static Manifest decode(byte[] bytes, String source) throws CheckpointCorruptException {
        String text;
        try {
            text = StandardCharsets.UTF_8
                    .newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(bytes))
                    .toString();
        } catch (CharacterCodingException e) {
            throw new CheckpointCorruptException(source + ": not UTF-8 text, so not a manifest", e);
        }
        CheckpointManifest.Builder builder = CheckpointManifest.newBuilder();
        try {
            PARSER.merge(text, builder);
        } catch (InvalidProtocolBufferException | RuntimeException e) {
            throw new CheckpointCorruptException(source + ": not a checkpoint manifest: " + e.getMessage(), e);
        }
        CheckpointManifest message = builder.build();
        if (message.getFormatVersion() != FORMAT_VERSION) {
            throw new CheckpointCorruptException(source + ": manifest format_version " + message.getFormatVersion()
                    + (message.getFormatVersion() > FORMAT_VERSION
                            ? " was written by a newer PSCluster; this one reads " + FORMAT_VERSION + " and 1"
                            : " is not one this reader knows (" + FORMAT_VERSION + ", or 1 as text)"));
        }
        if (message.getManifestCrc32C() != 0) {
            int computed = crcOf(message.toBuilder().clearManifestCrc32C().build());
            if (computed != message.getManifestCrc32C()) {
                throw new CheckpointCorruptException(String.format(
                        "%s: manifest_crc32c %d does not match its content (%d): damaged or edited",
                        source, Integer.toUnsignedLong(message.getManifestCrc32C()), Integer.toUnsignedLong(computed)));
            }
        }
        try {
            return fromMessage(message, source);
        } catch (IllegalArgumentException e) {
            throw new CheckpointCorruptException(source + ": invalid manifest: " + e.getMessage(), e);
        }
    }

    static CheckpointManifest.Builder toMessage(Manifest manifest) {
        CheckpointManifest.Builder message = CheckpointManifest.newBuilder()
                .setFormatVersion(FORMAT_VERSION)
                .setId(manifest.id())
                .setCreated(Timestamps.fromMillis(manifest.createdMillis()))
                .setSlotCount(manifest.slotCount())
                .setKind(manifest.kind() == Manifest.Kind.BASE ? CheckpointKind.BASE : CheckpointKind.DELTA)
                .setBaseId(manifest.baseId())
                .setParentId(manifest.parentId())
                .putAllProperties(manifest.properties());
        for (Manifest.TableEntry table : manifest.tables()) {
            message.addTables(CheckpointManifest.Table.newBuilder()
                    .setName(table.name())
                    .setSchema(ByteString.copyFrom(table.schema())));
        }
        for (Manifest.FileEntry entry : manifest.files()) {
            RowFileInfo file = entry.file();
            CheckpointManifest.File.Builder out = CheckpointManifest.File.newBuilder()
                    .setTable(entry.table())
                    .setShardId(entry.shardId())
                    .setPath(file.path())
                    .setLength(file.length())
                    .setCrc32C(file.crc32c())
                    .setRows(file.rows())
                    .setCodec(file.codec().toProto())
                    .setUncompressedBytes(file.uncompressedBytes())
                    .setRemovedKeys(entry.removedKeys());
            for (int slot : file.slots()) {
                out.addSlots(slot);
            }
            message.addFiles(out);
        }
        return message;
    }

    private static Manifest fromMessage(CheckpointManifest message, String source) throws CheckpointCorruptException {
        if (message.getSlotCount() < 1) {
            throw new CheckpointCorruptException(
                    source + ": slot_count " + Integer.toUnsignedLong(message.getSlotCount()) + " out of range");
        }
        Manifest.Kind kind = switch (message.getKind()) {
            case BASE -> Manifest.Kind.BASE;
            case DELTA -> Manifest.Kind.DELTA;
            default ->
                throw new CheckpointCorruptException(
                        source + ": kind " + message.getKind() + " is neither BASE nor DELTA");
        };
        List<Manifest.TableEntry> tables = new ArrayList<>();
        for (CheckpointManifest.Table table : message.getTablesList()) {
            tables.add(
                    new Manifest.TableEntry(table.getName(), table.getSchema().toByteArray()));
        }
        List<Manifest.FileEntry> files = new ArrayList<>();
        for (CheckpointManifest.File file : message.getFilesList()) {
            int[] slots = new int[file.getSlotsCount()];
            for (int i = 0; i < slots.length; i++) {
                slots[i] = file.getSlots(i);
            }
            ChunkCodec codec = fromProto(file.getCodec(), file.getPath(), source);
            files.add(new Manifest.FileEntry(
                    file.getTable(),
                    file.getShardId(),
                    new RowFileInfo(
                            file.getPath(),
                            file.getLength(),
                            file.getCrc32C(),
                            file.getRows(),
                            slots,
                            codec,
                            file.getUncompressedBytes()),
                    file.getRemovedKeys()));
        }
        long created;
        try {
            created = Timestamps.toMillis(Timestamps.checkValid(message.getCreated()));
        } catch (IllegalArgumentException e) {
            throw new CheckpointCorruptException(source + ": created " + message.getCreated() + " is not a time", e);
        }
        return new Manifest(
                message.getId(),
                created,
                message.getSlotCount(),
                kind,
                message.getBaseId(),
                message.getParentId(),
                tables,
                files,
                message.getPropertiesMap());
    }

    private static ChunkCodec fromProto(RowCodec codec, String path, String source) throws CheckpointCorruptException {
        Optional<ChunkCodec> known = ChunkCodec.fromProto(codec);
        if (known.isEmpty()) {
            throw new CheckpointCorruptException(
                    source + ": file " + path + " has codec " + codec + ", not one of NONE, ZSTD, LZ4");
        }
        return known.get();
    }

    /** CRC32C of the message's deterministic binary encoding (map entries sorted by key). */
    private static int crcOf(CheckpointManifest message) {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream(message.getSerializedSize());
        try {
            CodedOutputStream out = CodedOutputStream.newInstance(bytes);
            out.useDeterministicSerialization();
            message.writeTo(out);
            out.flush();
        } catch (IOException e) {
            throw new UncheckedIOException("writing to memory cannot fail", e);
        }
        CRC32C crc = new CRC32C();
        crc.update(bytes.toByteArray());
        return (int) crc.getValue();
    }
}
