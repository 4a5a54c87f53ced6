package io.pscluster.checkpoint;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.TreeMap;

/**
 * The commit record of a checkpoint: its kind (a base, or a delta on earlier checkpoints), its tables, every data file
 * with its length, CRC32C and codec, and free-form properties. A checkpoint exists once its manifest has been renamed
 * into place (see {@link CheckpointStore}).
 *
 * <p>On disk a manifest is the JSON form of the {@code pscluster.v1.CheckpointManifest} protobuf message
 * ({@code checkpoint.proto}), readable with {@code cat} and any JSON tool; manifests of format 1 (PSCluster 0.1's
 * line-based text) are still read. See {@link ManifestJson} and {@link LegacyManifestReader}.
 *
 * <p>Immutable; the lists are copied, and the properties are copied into a key-sorted map so that
 * {@link #encode()} is deterministic. The constructor checks that table names are unique, that every file belongs to
 * a listed table, that file paths are unique, that every slot is below {@code slotCount}, and that a base names no
 * base or parent while a delta names both, below its own id.
 *
 * @param id the checkpoint id, at least 1.
 * @param createdMillis when the checkpoint was taken (it began, before it listed its tables), epoch milliseconds.
 * @param slotCount the cluster's slot count when the checkpoint was taken; every file slot is below it.
 * @param kind {@link Kind#BASE}: restores on its own; {@link Kind#DELTA}: on top of {@code baseId} and every
 *     checkpoint of its chain up to {@code parentId}.
 * @param baseId a delta's base checkpoint; 0 for a base.
 * @param parentId the checkpoint a delta applies on (its base or the previous delta); 0 for a base.
 * @param tables the tables, each with its schema as opaque bytes.
 * @param files every data file of the checkpoint.
 * @param properties anything else the caller wants to record (epoch, clock, config).
 */
public record Manifest(
        long id,
        long createdMillis,
        int slotCount,
        Kind kind,
        long baseId,
        long parentId,
        List<TableEntry> tables,
        List<FileEntry> files,
        Map<String, String> properties) {
    /**
     * The prefix of the properties (then a shard id) that hold the push sequences each shard had accepted at the cut:
     * base64 of a {@code pscluster.v1.PushWindows}. A shard restoring from the checkpoint adopts them, so that a push
     * retried at it after its answer was lost, whose effect the checkpoint holds, is not applied again.
     */
    public static final String PUSH_WINDOWS_PROPERTY = "push-windows/";

    /** Whether a checkpoint restores on its own. */
    public enum Kind {
        BASE,
        DELTA;

        /** {@code base} or {@code delta}, as {@code psctl checkpoint list} shows it. */
        @Override
        public String toString() {
            return name().toLowerCase(java.util.Locale.ROOT);
        }
    }

    public Manifest {
        if (id < 1) {
            throw new IllegalArgumentException("id=" + id + " must be >= 1");
        }
        if (slotCount < 1) {
            throw new IllegalArgumentException("slotCount=" + slotCount + " must be >= 1");
        }
        Objects.requireNonNull(kind, "kind");
        if (kind == Kind.BASE && (baseId != 0 || parentId != 0)) {
            throw new IllegalArgumentException(
                    "a base names no base or parent, but baseId=" + baseId + ", parentId=" + parentId);
        }
        if (kind == Kind.DELTA && !(baseId >= 1 && baseId <= parentId && parentId < id)) {
            throw new IllegalArgumentException("delta " + id + " needs 1 <= baseId <= parentId < id, but baseId="
                    + baseId + ", parentId=" + parentId);
        }
        tables = List.copyOf(tables);
        files = List.copyOf(files);
        properties = Collections.unmodifiableMap(new TreeMap<>(properties));
        Set<String> tableNames = new HashSet<>();
        for (TableEntry table : tables) {
            if (!tableNames.add(table.name())) {
                throw new IllegalArgumentException("table '" + table.name() + "' is listed twice");
            }
        }
        Set<String> paths = new HashSet<>();
        for (FileEntry entry : files) {
            if (!tableNames.contains(entry.table())) {
                throw new IllegalArgumentException("file " + entry.file().path() + " belongs to table '" + entry.table()
                        + "', which is not listed");
            }
            if (!paths.add(entry.file().path())) {
                throw new IllegalArgumentException("file " + entry.file().path() + " is listed twice");
            }
            int[] slots = entry.file().slots();
            if (slots.length > 0 && slots[slots.length - 1] >= slotCount) {
                throw new IllegalArgumentException("file " + entry.file().path() + " has slot "
                        + slots[slots.length - 1] + ", but slotCount=" + slotCount);
            }
        }
        for (Map.Entry<String, String> property : properties.entrySet()) {
            Objects.requireNonNull(property.getValue(), () -> "value of property " + property.getKey());
        }
    }

    /** A base checkpoint: holds every row and restores on its own. */
    public Manifest(
            long id,
            long createdMillis,
            int slotCount,
            List<TableEntry> tables,
            List<FileEntry> files,
            Map<String, String> properties) {
        this(id, createdMillis, slotCount, Kind.BASE, 0, 0, tables, files, properties);
    }

    /** Encodes the manifest as JSON (the protobuf JSON mapping of {@code CheckpointManifest}), UTF-8. */
    public byte[] encode() {
        return ManifestJson.encode(this);
    }

    /**
     * Decodes a manifest: JSON as {@link #encode()} writes it, or format 1 (PSCluster 0.1's text).
     *
     * @param source where the bytes came from, for error messages (a path).
     * @throws CheckpointCorruptException if the bytes are not a valid manifest; the message names {@code source}
     *     and what is wrong.
     */
    public static Manifest decode(byte[] bytes, String source) throws CheckpointCorruptException {
        if (LegacyManifestReader.isLegacy(bytes)) {
            return LegacyManifestReader.decode(bytes, source);
        }
        return ManifestJson.decode(bytes, source);
    }

    /** The checkpoints this one needs to restore (its base and parent), empty for a base. */
    public List<Long> dependsOn() {
        return kind == Kind.BASE ? List.of() : baseId == parentId ? List.of(baseId) : List.of(baseId, parentId);
    }

    /** The sum of all uncompressed row bytes; 0 when a file does not record it (format 1). */
    public long totalUncompressedBytes() {
        long total = 0;
        for (FileEntry entry : files) {
            total += entry.file().uncompressedBytes();
        }
        return total;
    }

    /** The sum of all file lengths. */
    public long totalBytes() {
        long total = 0;
        for (FileEntry entry : files) {
            total += entry.file().length();
        }
        return total;
    }

    /** The sum of the row counts of every file of rows (removed keys left out). */
    public long totalRows() {
        long total = 0;
        for (FileEntry entry : files) {
            if (!entry.removedKeys()) {
                total += entry.file().rows();
            }
        }
        return total;
    }

    /** The files of one table, in manifest order. */
    public List<FileEntry> filesOf(String table) {
        List<FileEntry> result = new ArrayList<>();
        for (FileEntry entry : files) {
            if (entry.table().equals(table)) {
                result.add(entry);
            }
        }
        return result;
    }

    /**
     * A table and its schema. The schema array is copied in and out; {@code equals} compares contents.
     *
     * @param name the table name; any string.
     * @param schema the caller's serialized table schema, opaque to this module.
     */
    public record TableEntry(String name, byte[] schema) {
        public TableEntry {
            Objects.requireNonNull(name, "name");
            schema = schema.clone();
        }

        @Override
        public byte[] schema() {
            return schema.clone();
        }

        @Override
        public boolean equals(Object o) {
            return o instanceof TableEntry other && name.equals(other.name) && Arrays.equals(schema, other.schema);
        }

        @Override
        public int hashCode() {
            return 31 * name.hashCode() + Arrays.hashCode(schema);
        }

        @Override
        public String toString() {
            return "TableEntry[name=" + name + ", schema=" + schema.length + " bytes]";
        }
    }

    /**
     * One data file: which table and shard wrote it, and what the writer returned.
     *
     * @param table the table name, one of the manifest's tables.
     * @param shardId the id of the shard that wrote the file; any string.
     * @param file the file's path, length, CRC32C, rows and slots.
     * @param removedKeys true for a delta's file of keys removed since its parent (row width 0).
     */
    public record FileEntry(String table, String shardId, RowFileInfo file, boolean removedKeys) {
        public FileEntry {
            Objects.requireNonNull(table, "table");
            Objects.requireNonNull(shardId, "shardId");
            Objects.requireNonNull(file, "file");
        }

        /** A file of rows. */
        public FileEntry(String table, String shardId, RowFileInfo file) {
            this(table, shardId, file, false);
        }
    }
}
