package io.pscluster.export;

import com.google.protobuf.InvalidProtocolBufferException;
import io.pscluster.checkpoint.CheckpointCorruptException;
import io.pscluster.checkpoint.CheckpointInfo;
import io.pscluster.checkpoint.Manifest;
import io.pscluster.checkpoint.Progress;
import io.pscluster.checkpoint.RowFileReader;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.server.table.Optimizer;
import io.pscluster.wire.PsException;
import io.pscluster.wire.TableSchemas;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.Instant;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.function.Consumer;
import org.apache.hadoop.fs.FileSystem;

/**
 * Exports the parameter values of a checkpoint's tables as safetensors files, one {@code <table>.safetensors} per
 * table, from the checkpoint's files alone (no cluster), so that numpy, PyTorch or a serving system reads the model
 * without PSCluster.
 *
 * <ul>
 *   <li>A dense table becomes one tensor {@code values}, F32 {@code [rows, dim]}, row {@code k} at index {@code k}.
 *       Every row must be in the checkpoint exactly once: a missing row fails the export (never a silent zero).
 *   <li>A sparse table becomes {@code keys}, I64 {@code [n]}, and {@code values}, F32 {@code [n, dim]}: row {@code i}
 *       of {@code values} belongs to {@code keys[i]}. The order is the checkpoint's (its files in manifest order, in
 *       each file slot by slot), which follows the keys' hashes, not their values.
 *   <li>Only the first {@code dim} floats of each record are exported: a record holds the values, then the
 *       optimizer's slots, then its counters (see {@link Optimizer}).
 *   <li>{@code __metadata__}: {@code checkpoint_id}, {@code created} (ISO-8601), {@code table}, {@code kind}
 *       ({@code dense} / {@code sparse}), {@code dim}, {@code optimizer}.
 * </ul>
 *
 * <p>Memory stays bounded whatever the table's size: the tensors' shapes come from the schema (dense) or the
 * manifest's row counts (sparse), so each file's header is written first and rows are streamed to their places
 * (a dense row to its position; sparse keys and values to two sequential regions). The only state that grows is a
 * dense table's bitmap of rows seen, one bit per row. Files are written under temporary names and renamed only once
 * every table is complete, so a failed export leaves no file with a final name.
 *
 * <p>The caller verifies the checkpoint first; the reader checks each chunk it decodes as well. Each file of the
 * manifest is read as it is listed, so a table may have any number of files per shard, as long as no slot of a table
 * is in two of them.
 */
public final class SafetensorsExport {
    public static final String EXTENSION = ".safetensors";

    /** The longest file name written; longer ones are shortened with a hash of the table name. */
    private static final int MAX_FILE_NAME_BYTES = 200;

    private static final int SEQUENTIAL_BUFFER_BYTES = 1 << 20;

    /** What was written for one table. */
    public record Exported(String table, Path file, boolean dense, long rows, int dim, long bytes) {}

    /** One table to export: its schema, the width of its stored records, its files and the output. */
    private record Plan(TableSchema schema, int recordWidth, long rows, List<Manifest.FileEntry> files, Path target) {
        String table() {
            return schema.getName();
        }

        boolean dense() {
            return schema.getKind() == TableKind.DENSE;
        }
    }

    private final CheckpointInfo checkpoint;
    private final List<Plan> plans;
    private final Progress progress = new Progress("exporting");

    /** Rows counted into {@link #progress} at once while a file is read. */
    private static final int PROGRESS_ROWS = 4096;

    private SafetensorsExport(final CheckpointInfo checkpoint, final List<Plan> plans) {
        this.checkpoint = checkpoint;
        this.plans = plans;
        for (final Plan plan : plans) {
            for (final Manifest.FileEntry entry : plan.files()) {
                progress.addTotals(entry.file().rows(), entry.file().length());
            }
        }
    }

    /**
     * How far {@link #write} has come: rows of the checkpoint's files read and written out, and bytes of those files
     * (counted in proportion to the rows within a file), of the totals the manifest lists.
     */
    public Progress progress() {
        return progress;
    }

    /**
     * Plans the export of {@code tables} (empty: every table) of {@code checkpoint} into {@code outDir}; writes
     * nothing.
     *
     * @throws IllegalArgumentException naming a table the checkpoint does not hold, or an output file that exists.
     * @throws CheckpointCorruptException if a table's schema does not decode, or a slot is in two files of a table.
     * @throws IOException if the checkpoint is a delta (its rows are only the changes).
     */
    public static SafetensorsExport plan(final CheckpointInfo checkpoint, final List<String> tables, final Path outDir)
            throws IOException {
        final Manifest manifest = checkpoint.manifest();
        if (manifest.kind() != Manifest.Kind.BASE) {
            throw new IOException("checkpoint " + checkpoint.id() + " is a delta on checkpoint " + manifest.parentId()
                    + " (base " + manifest.baseId() + "): it holds only changed rows; export a base checkpoint");
        }
        final Map<String, Manifest.TableEntry> byName = new LinkedHashMap<>();
        manifest.tables().forEach(entry -> byName.put(entry.name(), entry));
        final List<String> chosen = tables.isEmpty() ? List.copyOf(byName.keySet()) : tables;
        final List<Plan> plans = new ArrayList<>();
        final Map<String, String> fileNames = new LinkedHashMap<>();
        for (final String name : chosen) {
            final Manifest.TableEntry entry = byName.get(name);
            if (entry == null) {
                throw new IllegalArgumentException("checkpoint " + checkpoint.id() + " has no table '" + name
                        + "'; its tables: " + byName.keySet());
            }
            final String fileName = fileName(name);
            final String other = fileNames.put(fileName, name);
            if (other != null) {
                throw new IllegalArgumentException("table '" + name + "' is named twice");
            }
            final Path target = outDir.resolve(fileName);
            if (Files.exists(target)) {
                throw new IllegalArgumentException(
                        target + " exists; the export never replaces a file (move it away, or choose another --out)");
            }
            final TableSchema schema = schema(checkpoint, entry);
            final Optimizer optimizer = Optimizer.of(schema.getOptimizer());
            final int recordWidth = schema.getDim() * (1 + optimizer.slotCount()) + optimizer.counterCount();
            final List<Manifest.FileEntry> files = manifest.filesOf(name);
            final BitSet slots = new BitSet(manifest.slotCount());
            final Map<Integer, String> slotFile = new LinkedHashMap<>();
            long rows = 0;
            for (final Manifest.FileEntry file : files) {
                for (final int slot : file.file().slots()) {
                    if (slots.get(slot)) {
                        throw new CheckpointCorruptException("checkpoint " + checkpoint.id() + ": slot " + slot
                                + " of table '" + name + "' is in two files, " + slotFile.get(slot) + " and "
                                + file.file().path());
                    }
                    slots.set(slot);
                    slotFile.put(slot, file.file().path());
                }
                rows += file.file().rows();
            }
            plans.add(new Plan(
                    schema, recordWidth, schema.getKind() == TableKind.DENSE ? schema.getRows() : rows, files, target));
        }
        return new SafetensorsExport(checkpoint, plans);
    }

    /** The tables this export writes, in order. */
    public List<String> tables() {
        return plans.stream().map(Plan::table).toList();
    }

    /**
     * Writes every planned table, then renames the files into place; on any failure deletes what it wrote.
     *
     * @param done called once per table when its rows are all written (before the renames).
     * @throws CheckpointCorruptException if a row file is damaged, a record has the wrong width, or a dense table has
     *     a row missing, twice, or out of range.
     */
    public List<Exported> write(final FileSystem fs, final Consumer<Exported> done) throws IOException {
        final List<SafetensorsFile> files = new ArrayList<>();
        final List<Exported> exported = new ArrayList<>();
        try {
            for (final Plan plan : plans) {
                final SafetensorsFile file = SafetensorsFile.create(plan.target(), metadata(plan), tensors(plan));
                files.add(file);
                final long rows = plan.dense() ? writeDense(fs, plan, file) : writeSparse(fs, plan, file);
                final Exported one = new Exported(
                        plan.table(),
                        plan.target(),
                        plan.dense(),
                        rows,
                        plan.schema().getDim(),
                        file.length());
                exported.add(one);
                done.accept(one);
            }
            for (final SafetensorsFile file : files) {
                file.commit();
            }
            return exported;
        } finally {
            for (final SafetensorsFile file : files) {
                file.close();
            }
        }
    }

    private long writeDense(final FileSystem fs, final Plan plan, final SafetensorsFile file) throws IOException {
        final int dim = plan.schema().getDim();
        final long rows = plan.rows();
        final long valuesStart = file.start(0);
        final long rowBytes = 4L * dim;
        final long[] seen = new long[(int) ((rows + 63) >>> 6)];
        final ByteBuffer row = ByteBuffer.allocate((int) rowBytes).order(ByteOrder.LITTLE_ENDIAN);
        final long[] read = {0};
        stream(fs, plan, (key, record) -> {
            if (key < 0 || key >= rows) {
                throw corrupt(plan, "holds key " + key + ", outside the dense table's rows 0.." + (rows - 1));
            }
            final int word = (int) (key >>> 6);
            final long bit = 1L << key;
            if ((seen[word] & bit) != 0) {
                throw corrupt(plan, "holds row " + key + " twice");
            }
            seen[word] |= bit;
            row.clear();
            for (int i = 0; i < dim; i++) {
                row.putFloat(record[i]);
            }
            row.flip();
            file.write(row, valuesStart + key * rowBytes);
            read[0]++;
        });
        if (read[0] != rows) {
            final List<Long> missing = new ArrayList<>();
            for (long key = 0; key < rows && missing.size() < 10; key++) {
                if ((seen[(int) (key >>> 6)] & (1L << key)) == 0) {
                    missing.add(key);
                }
            }
            throw corrupt(
                    plan,
                    "lacks " + (rows - read[0]) + " of the dense table's " + rows + " rows (the first: " + missing
                            + "); a missing row is never exported as zeros");
        }
        return rows;
    }

    private long writeSparse(final FileSystem fs, final Plan plan, final SafetensorsFile file) throws IOException {
        final int dim = plan.schema().getDim();
        final Region keys = new Region(file, file.start(0), 8);
        final Region values = new Region(file, file.start(1), 4L * dim);
        final long[] read = {0};
        stream(fs, plan, (key, record) -> {
            if (read[0] == plan.rows()) {
                throw corrupt(plan, "holds more rows than the manifest's " + plan.rows());
            }
            keys.buffer().putLong(key);
            keys.rowDone();
            final ByteBuffer out = values.buffer();
            for (int i = 0; i < dim; i++) {
                out.putFloat(record[i]);
            }
            values.rowDone();
            read[0]++;
        });
        if (read[0] != plan.rows()) {
            throw corrupt(plan, "holds " + read[0] + " rows, the manifest says " + plan.rows());
        }
        keys.flush();
        values.flush();
        return read[0];
    }

    /** A region of the file written front to back through a buffer of whole rows. */
    private static final class Region {
        private final SafetensorsFile file;
        private final ByteBuffer buffer;
        private long position;

        Region(final SafetensorsFile file, final long start, final long rowBytes) {
            this.file = file;
            this.position = start;
            final long rows = Math.max(1, SEQUENTIAL_BUFFER_BYTES / rowBytes);
            this.buffer = ByteBuffer.allocate((int) (rows * rowBytes)).order(ByteOrder.LITTLE_ENDIAN);
        }

        /** The buffer, with room for one more row. */
        ByteBuffer buffer() {
            return buffer;
        }

        void rowDone() throws IOException {
            if (!buffer.hasRemaining()) {
                flush();
            }
        }

        void flush() throws IOException {
            buffer.flip();
            final int bytes = buffer.remaining();
            file.write(buffer, position);
            position += bytes;
            buffer.clear();
        }
    }

    private interface RowSink {
        void accept(long key, float[] record) throws IOException;
    }

    /** Reads every row of the table's files, in manifest order, checking each record's width. */
    private void stream(final FileSystem fs, final Plan plan, final RowSink sink) throws IOException {
        for (final Manifest.FileEntry entry : plan.files()) {
            final long[] rows = {0, 0}; // read, counted
            final long length = entry.file().length();
            final long fileRows = Math.max(1, entry.file().rows());
            try {
                RowFileReader.read(fs, checkpoint.dir(), entry.file(), slot -> true, (slot, key, record) -> {
                    if (++rows[0] - rows[1] == PROGRESS_ROWS) {
                        progress.addRows(PROGRESS_ROWS);
                        progress.addBytes(share(length, rows[0], fileRows) - share(length, rows[1], fileRows));
                        rows[1] = rows[0];
                    }
                    if (record.length != plan.recordWidth()) {
                        throw new UncheckedIOException(corrupt(
                                plan,
                                "file " + entry.file().path() + " has records of " + record.length + " floats; the"
                                        + " schema (dim " + plan.schema().getDim() + ", "
                                        + optimizerName(plan.schema()) + ") says " + plan.recordWidth()));
                    }
                    try {
                        sink.accept(key, record);
                    } catch (IOException e) {
                        throw new UncheckedIOException(e);
                    }
                });
            } catch (UncheckedIOException e) {
                throw e.getCause();
            }
            progress.addRows(rows[0] - rows[1]);
            progress.addBytes(length - share(length, rows[1], fileRows));
        }
    }

    /** The bytes of a file of {@code length} that {@code rows} of its {@code fileRows} stand for. */
    private static long share(final long length, final long rows, final long fileRows) {
        return Math.min(length, (long) ((double) length * rows / fileRows));
    }

    private CheckpointCorruptException corrupt(final Plan plan, final String what) {
        return new CheckpointCorruptException(
                "checkpoint " + checkpoint.id() + ", table '" + plan.table() + "': the checkpoint " + what);
    }

    private Map<String, String> metadata(final Plan plan) {
        final Map<String, String> metadata = new LinkedHashMap<>();
        metadata.put("checkpoint_id", Long.toString(checkpoint.id()));
        metadata.put(
                "created",
                Instant.ofEpochMilli(checkpoint.manifest().createdMillis()).toString());
        metadata.put("table", plan.table());
        metadata.put("kind", plan.dense() ? "dense" : "sparse");
        metadata.put("dim", Integer.toString(plan.schema().getDim()));
        metadata.put("optimizer", optimizerName(plan.schema()));
        return metadata;
    }

    private static List<SafetensorsFile.Tensor> tensors(final Plan plan) {
        final int dim = plan.schema().getDim();
        final SafetensorsFile.Tensor values =
                new SafetensorsFile.Tensor("values", "F32", new long[] {plan.rows(), dim});
        if (plan.dense()) {
            return List.of(values);
        }
        // Keys first: their 8-byte elements stay 8-byte aligned in the buffer.
        return List.of(new SafetensorsFile.Tensor("keys", "I64", new long[] {plan.rows()}), values);
    }

    private static String optimizerName(final TableSchema schema) {
        return schema.getOptimizer().getKind().name().toLowerCase(Locale.ROOT);
    }

    private static TableSchema schema(final CheckpointInfo checkpoint, final Manifest.TableEntry entry)
            throws CheckpointCorruptException {
        try {
            final TableSchema schema = TableSchemas.normalize(TableSchema.parseFrom(entry.schema()));
            if (!schema.getName().equals(entry.name())) {
                throw new CheckpointCorruptException("checkpoint " + checkpoint.id() + ": table '" + entry.name()
                        + "' has the schema of table '" + schema.getName() + "'");
            }
            return schema;
        } catch (InvalidProtocolBufferException | PsException e) {
            throw new CheckpointCorruptException(
                    "checkpoint " + checkpoint.id() + ": the schema of table '" + entry.name() + "' is unreadable: "
                            + e.getMessage(),
                    e);
        }
    }

    /**
     * {@code <table>.safetensors}: the name as it is when it is a plain file name (letters, digits, {@code . _ -}, not
     * starting with a dot), otherwise with every other byte of its UTF-8 written {@code %XX}, so that two tables
     * never share a file. A name too long for a filesystem keeps its first bytes and a hash of the whole.
     */
    public static String fileName(final String table) {
        final StringBuilder name = new StringBuilder();
        final byte[] utf8 = table.getBytes(StandardCharsets.UTF_8);
        for (int i = 0; i < utf8.length; i++) {
            final int b = utf8[i] & 0xff;
            final boolean plain = (b >= 'a' && b <= 'z')
                    || (b >= 'A' && b <= 'Z')
                    || (b >= '0' && b <= '9')
                    || b == '_'
                    || b == '-'
                    || (b == '.' && i > 0);
            if (plain) {
                name.append((char) b);
            } else {
                name.append('%').append(String.format("%02X", b));
            }
        }
        if (name.length() > MAX_FILE_NAME_BYTES) {
            try {
                final byte[] digest = MessageDigest.getInstance("SHA-256").digest(utf8);
                name.setLength(MAX_FILE_NAME_BYTES - 34);
                name.append("--").append(HexFormat.of().formatHex(digest, 0, 16));
            } catch (NoSuchAlgorithmException e) {
                throw new IllegalStateException("SHA-256 is required on every JVM", e);
            }
        }
        return name + EXTENSION;
    }
}
