package io.pscluster.export;

import com.google.protobuf.InvalidProtocolBufferException;
import io.pscluster.checkpoint.CheckpointCorruptException;
import io.pscluster.checkpoint.CheckpointInfo;
import io.pscluster.checkpoint.Manifest;
import io.pscluster.checkpoint.Progress;
import io.pscluster.checkpoint.RowFileInfo;
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
import java.util.Arrays;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.function.Consumer;
import java.util.function.IntPredicate;
import org.apache.hadoop.fs.FileSystem;

/**
 * Exports the parameter values of a checkpoint's tables as safetensors files, one {@code <table>.safetensors} per
 * table, from the checkpoint's files alone (no cluster), so that numpy, PyTorch or a serving system reads the model
 * without PSCluster.
 *
 * <ul>
 *   <li>A dense table becomes one tensor {@code values}, F32 {@code [rows, dim]}, row {@code k} at index {@code k}.
 *       Every row must be in the checkpoint: a missing row fails the export (never a silent zero).
 *   <li>A sparse table becomes {@code keys}, I64 {@code [n]}, and {@code values}, F32 {@code [n, dim]}: row {@code i}
 *       of {@code values} belongs to {@code keys[i]}. The order is by slot (the keys' hashes), then by key within a
 *       slot, so the same model gives the same tensors whichever checkpoints it was read from.
 *   <li>Only the first {@code dim} floats of each record are exported: a record holds the values, then the
 *       optimizer's slots, then its counters (see {@link Optimizer}).
 *   <li>{@code __metadata__}: {@code checkpoint_id}, {@code created} (ISO-8601), {@code table}, {@code kind}
 *       ({@code dense} / {@code sparse}), {@code dim}, {@code optimizer}.
 * </ul>
 *
 * <p>A delta is exported as the model at that checkpoint: its chain (the base, then each delta up to it, as
 * {@link io.pscluster.checkpoint.CheckpointStore#chain} gives it) is applied as a restore applies it, per link first
 * the keys it removed, then its rows, so a key written in a later link wins and a removed key is absent unless written
 * again later.
 *
 * <p>Memory is bounded whatever the table's size. A dense table's rows are streamed to their positions, the links in
 * order (a later write of a row overwrites the earlier one); the state that grows is two bits per row (present, and
 * seen in the current link). A sparse table is merged one group of slots at a time: every row file is sorted by slot,
 * so each file is read for the group's slots only, the group's rows are merged in a {@link MergedRows} and written out
 * in order. Groups are cut from the files' indexes so that the rows they hold (summed over the chain, an upper bound
 * of the group's keys) stay within {@code groupBytes} (a quarter of the heap); a group is at least one slot, so the
 * heap must hold one slot's rows (a 4096th of the table when its keys spread over the slots by hash). The header
 * comes first and gives {@code n}: a base's manifest says it, while a chain's sparse tables are merged twice (keys
 * only, to count what is left, then to write). Files are written under temporary names and renamed only once every
 * table is complete, so a failed export leaves no file with a final name.
 *
 * <p>The caller verifies the whole chain first; the reader checks each chunk it decodes as well. A table may have
 * any number of files per shard and link, their slots overlapping (a shard writes a part per buffer of rows).
 */
public final class SafetensorsExport {
    public static final String EXTENSION = ".safetensors";

    /** The longest file name written; longer ones are shortened with a hash of the table name. */
    private static final int MAX_FILE_NAME_BYTES = 200;

    private static final int SEQUENTIAL_BUFFER_BYTES = 1 << 20;

    /** What was written for one table. */
    public record Exported(String table, Path file, boolean dense, long rows, int dim, long bytes) {}

    /** One table to export: its schema, the width of its stored records and the output. */
    /**
     * The export cannot be done as asked, though the options are well formed and the checkpoint is intact: a table the
     * checkpoint does not hold, or a dense table too large to export here. Not damage, not a bad option.
     */
    public static final class Refused extends IOException {
        Refused(final String message) {
            super(message);
        }
    }

    /** Most words a {@code long[]} holds on common JVMs (a few are kept for the array's header). */
    private static final long MAX_ARRAY_WORDS = Integer.MAX_VALUE - 8;

    private record Plan(TableSchema schema, int recordWidth, Path target) {
        String table() {
            return schema.getName();
        }

        boolean dense() {
            return schema.getKind() == TableKind.DENSE;
        }

        int dim() {
            return schema.getDim();
        }
    }

    /** Slots {@code [from, to)} of a sparse table, merged together; {@code rows}: what their files hold, summed. */
    private record SlotGroup(int from, int to, long rows) {
        boolean holdsAny(final RowFileInfo file) {
            for (final int slot : file.slots()) {
                if (slot >= from && slot < to) {
                    return true;
                }
            }
            return false;
        }
    }

    /** The checkpoints to apply, oldest first: the base, then each delta up to the exported one. */
    private final List<CheckpointInfo> chain;

    private final CheckpointInfo checkpoint;
    private final List<Plan> plans;
    private final Progress progress = new Progress("exporting");

    /** Rows counted into {@link #progress} at once while a file is read. */
    private static final int PROGRESS_ROWS = 4096;

    /** Rows read so far of each file (by directory and path), over all its reads: see {@link #share}. */
    private final Map<String, Long> rowsRead = new HashMap<>();

    private final long groupBytes;

    private SafetensorsExport(final List<CheckpointInfo> chain, final List<Plan> plans, final long groupBytes) {
        this.chain = List.copyOf(chain);
        this.checkpoint = chain.get(chain.size() - 1);
        this.plans = plans;
        this.groupBytes = groupBytes;
        for (final CheckpointInfo link : this.chain) {
            for (final Manifest.FileEntry entry : link.manifest().files()) {
                for (final Plan plan : plans) {
                    if (plan.table().equals(entry.table())) {
                        final int reads = readsOf(plan);
                        progress.addTotals(
                                reads * entry.file().rows(),
                                reads * entry.file().length());
                    }
                }
            }
        }
    }

    /**
     * How many times {@link #write} reads each file of {@code plan}'s table: a sparse table of a delta chain twice (its
     * rows are counted before its header is written), any other once.
     */
    private int readsOf(final Plan plan) {
        return !plan.dense() && chain.size() > 1 ? 2 : 1;
    }

    /**
     * How far {@link #write} has come: rows of the checkpoint's files read and written out, and bytes of those files
     * (counted in proportion to the rows within a file), of the totals the manifests list (counted twice for a sparse
     * table of a delta chain, which is read twice).
     */
    public Progress progress() {
        return progress;
    }

    /**
     * Plans the export of {@code tables} (empty: every table) of the last checkpoint of {@code chain} into
     * {@code outDir}; writes nothing. Sparse tables are merged in groups of slots of at most a quarter of the heap.
     *
     * @param chain what restores the checkpoint, oldest first ({@link io.pscluster.checkpoint.CheckpointStore#chain}):
     *     the checkpoint alone for a base.
     * @throws IllegalArgumentException naming a table named twice, or an output file that exists.
     * @throws Refused naming a table the checkpoint does not hold, or a dense table whose two bits per row (see
     *     {@link #denseWords}) do not fit in half of this JVM's heap.
     * @throws CheckpointCorruptException if a table's schema does not decode, the chain does not start at a base and
     *     lead to the checkpoint, or a checkpoint of the chain lacks a table.
     */
    public static SafetensorsExport plan(final List<CheckpointInfo> chain, final List<String> tables, final Path outDir)
            throws IOException {
        return plan(chain, tables, outDir, Runtime.getRuntime().maxMemory() / 4);
    }

    /** As {@link #plan(List, List, Path)}, a sparse table merged in groups of slots whose rows take about {@code groupBytes}. */
    static SafetensorsExport plan(
            final List<CheckpointInfo> chain, final List<String> tables, final Path outDir, final long groupBytes)
            throws IOException {
        if (chain.isEmpty()) {
            throw new IllegalArgumentException("an empty chain");
        }
        final CheckpointInfo checkpoint = chain.get(chain.size() - 1);
        checkChain(chain);
        final Manifest manifest = checkpoint.manifest();
        final Map<String, Manifest.TableEntry> byName = new LinkedHashMap<>();
        manifest.tables().forEach(entry -> byName.put(entry.name(), entry));
        final List<String> chosen = tables.isEmpty() ? List.copyOf(byName.keySet()) : tables;
        final List<Plan> plans = new ArrayList<>();
        final Map<String, String> fileNames = new LinkedHashMap<>();
        for (final String name : chosen) {
            final Manifest.TableEntry entry = byName.get(name);
            if (entry == null) {
                throw new Refused("checkpoint " + checkpoint.id() + " has no table '" + name + "'; its tables: "
                        + byName.keySet());
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
            for (final CheckpointInfo link : chain) {
                if (link.manifest().tables().stream()
                        .noneMatch(table -> table.name().equals(name))) {
                    throw new CheckpointCorruptException("checkpoint " + checkpoint.id() + " (a delta) holds table '"
                            + name + "', which checkpoint " + link.id() + " of its chain does not");
                }
            }
            final TableSchema schema = schema(checkpoint, entry);
            if (schema.getKind() == TableKind.DENSE) {
                checkDenseFits(name, schema.getRows(), Runtime.getRuntime().maxMemory());
            }
            final Optimizer optimizer = Optimizer.of(schema.getOptimizer());
            final int recordWidth = schema.getDim() * (1 + optimizer.slotCount()) + optimizer.counterCount();
            plans.add(new Plan(schema, recordWidth, target));
        }
        return new SafetensorsExport(chain, plans, groupBytes);
    }

    /** The words of one of a dense table's two bitmaps (a bit per row: present, written by the current link). */
    private static long denseWords(final long rows) {
        return rows / 64 + (rows % 64 == 0 ? 0 : 1);
    }

    /**
     * Refuses a dense table whose two bitmaps would not fit in a Java array or in half of {@code heapBytes}: found
     * before anything is written, rather than as an array allocation that fails with a bare negative size.
     */
    static void checkDenseFits(final String table, final long rows, final long heapBytes) throws Refused {
        final long words = denseWords(rows);
        final long bitmapBytes = 2 * 8 * words;
        if (words > MAX_ARRAY_WORDS || bitmapBytes > heapBytes / 2) {
            throw new Refused("table '" + table + "' is dense with " + rows + " rows: its export keeps two bits per"
                    + " row in memory, " + bitmapBytes + " bytes, "
                    + (words > MAX_ARRAY_WORDS
                            ? "more than a Java array holds (at most " + MAX_ARRAY_WORDS * 64 + " rows)"
                            : "more than half of this JVM's heap of " + heapBytes
                                    + " bytes (raise -Xmx in PSCTL_JAVA_OPTS)"));
        }
    }

    /** The chain starts at a base and each delta is on the previous checkpoint, with that base. */
    private static void checkChain(final List<CheckpointInfo> chain) throws CheckpointCorruptException {
        final CheckpointInfo base = chain.get(0);
        final CheckpointInfo last = chain.get(chain.size() - 1);
        if (base.manifest().kind() != Manifest.Kind.BASE) {
            throw new CheckpointCorruptException(
                    "checkpoint " + last.id() + ": its chain starts at checkpoint " + base.id() + ", not a base");
        }
        for (int i = 1; i < chain.size(); i++) {
            final Manifest delta = chain.get(i).manifest();
            if (delta.kind() != Manifest.Kind.DELTA
                    || delta.parentId() != chain.get(i - 1).id()
                    || delta.baseId() != base.id()) {
                throw new CheckpointCorruptException("checkpoint " + last.id() + ": checkpoint "
                        + chain.get(i).id()
                        + " of its chain is not a delta on checkpoint "
                        + chain.get(i - 1).id() + " with base "
                        + base.id());
            }
        }
    }

    /** The tables this export writes, in order. */
    public List<String> tables() {
        return plans.stream().map(Plan::table).toList();
    }

    /** The checkpoints read, oldest first: the base, then each delta up to the exported checkpoint. */
    public List<Long> chainIds() {
        return chain.stream().map(CheckpointInfo::id).toList();
    }

    /**
     * Writes every planned table, then renames the files into place; on any failure deletes what it wrote.
     *
     * @param done called once per table when its rows are all written (before the renames).
     * @throws CheckpointCorruptException if a row file is damaged, a record has the wrong width, a checkpoint holds a
     *     key twice, or a dense table has a row missing or out of range.
     */
    public List<Exported> write(final FileSystem fs, final Consumer<Exported> done) throws IOException {
        final List<SafetensorsFile> files = new ArrayList<>();
        final List<Exported> exported = new ArrayList<>();
        try {
            for (final Plan plan : plans) {
                final Exported one = plan.dense() ? writeDense(fs, plan, files) : writeSparse(fs, plan, files);
                exported.add(one);
                done.accept(one);
            }
            commitAll(files);
            return exported;
        } finally {
            for (final SafetensorsFile file : files) {
                file.close();
            }
        }
    }

    /**
     * Renames every file into place; when one fails (its target appeared meanwhile: another export into the same
     * directory), takes back those already renamed, so that a failed export leaves nothing under a final name.
     */
    private static void commitAll(final List<SafetensorsFile> files) throws IOException {
        final List<SafetensorsFile> committed = new ArrayList<>();
        try {
            for (final SafetensorsFile file : files) {
                file.commit();
                committed.add(file);
            }
        } catch (IOException | RuntimeException e) {
            for (final SafetensorsFile file : committed) {
                try {
                    file.withdraw();
                } catch (IOException undo) {
                    e.addSuppressed(undo);
                }
            }
            throw e;
        }
    }

    private Exported writeDense(final FileSystem fs, final Plan plan, final List<SafetensorsFile> files)
            throws IOException {
        final int dim = plan.dim();
        final long rows = plan.schema().getRows();
        final SafetensorsFile file = SafetensorsFile.create(plan.target(), metadata(plan), tensors(plan, rows));
        files.add(file);
        final long valuesStart = file.start(0);
        final long rowBytes = 4L * dim;
        // checkDenseFits (in plan) made sure this fits in an int and in the heap.
        final int words = Math.toIntExact(denseWords(rows));
        final long[] present = new long[words];
        final long[] inLink = new long[words];
        final ByteBuffer row = ByteBuffer.allocate((int) rowBytes).order(ByteOrder.LITTLE_ENDIAN);
        for (final CheckpointInfo link : chain) {
            Arrays.fill(inLink, 0);
            for (final Manifest.FileEntry entry : removedFiles(link, plan)) {
                stream(fs, link, entry, plan, slot -> true, (slot, key, record) -> {
                    checkDenseKey(link, plan, key, rows);
                    present[(int) (key >>> 6)] &= ~(1L << key);
                });
            }
            for (final Manifest.FileEntry entry : rowFiles(link, plan)) {
                stream(fs, link, entry, plan, slot -> true, (slot, key, record) -> {
                    checkDenseKey(link, plan, key, rows);
                    final int word = (int) (key >>> 6);
                    final long bit = 1L << key;
                    if ((inLink[word] & bit) != 0) {
                        throw corrupt(link, plan, "holds row " + key + " twice");
                    }
                    inLink[word] |= bit;
                    present[word] |= bit;
                    row.clear();
                    for (int i = 0; i < dim; i++) {
                        row.putFloat(record[i]);
                    }
                    row.flip();
                    file.write(row, valuesStart + key * rowBytes);
                });
            }
        }
        long count = 0;
        for (final long word : present) {
            count += Long.bitCount(word);
        }
        if (count != rows) {
            final List<Long> missing = new ArrayList<>();
            for (long key = 0; key < rows && missing.size() < 10; key++) {
                if ((present[(int) (key >>> 6)] & (1L << key)) == 0) {
                    missing.add(key);
                }
            }
            throw corrupt(
                    checkpoint,
                    plan,
                    "lacks " + (rows - count) + " of the dense table's " + rows + " rows (the first: " + missing
                            + "); a missing row is never exported as zeros");
        }
        return new Exported(plan.table(), plan.target(), true, rows, dim, file.length());
    }

    private void checkDenseKey(final CheckpointInfo link, final Plan plan, final long key, final long rows)
            throws CheckpointCorruptException {
        if (key < 0 || key >= rows) {
            throw corrupt(link, plan, "holds key " + key + ", outside the dense table's rows 0.." + (rows - 1));
        }
    }

    private Exported writeSparse(final FileSystem fs, final Plan plan, final List<SafetensorsFile> files)
            throws IOException {
        final int dim = plan.dim();
        final List<SlotGroup> groups = slotGroups(fs, plan);
        final int capacity = (int) Math.min(
                Integer.MAX_VALUE - 8,
                groups.stream().mapToLong(SlotGroup::rows).max().orElse(0));
        long rows;
        if (chain.size() == 1) {
            rows = 0;
            for (final Manifest.FileEntry entry : rowFiles(checkpoint, plan)) {
                rows += entry.file().rows();
            }
        } else {
            // The header (with the number of rows) comes first: count what the chain leaves, keys only.
            final MergedRows keys = new MergedRows(capacity, dim, false);
            rows = 0;
            for (final SlotGroup group : groups) {
                merge(fs, plan, group, keys);
                rows += keys.size();
            }
        }
        final SafetensorsFile file = SafetensorsFile.create(plan.target(), metadata(plan), tensors(plan, rows));
        files.add(file);
        final Region keys = new Region(file, file.start(0), 8);
        final Region values = new Region(file, file.start(1), 4L * dim);
        final MergedRows merged = new MergedRows(capacity, dim, true);
        final long expected = rows;
        final String counted = chain.size() == 1 ? "its manifest lists" : "counted from its chain before";
        final long[] written = {0};
        for (final SlotGroup group : groups) {
            merge(fs, plan, group, merged);
            if (written[0] + merged.size() > expected) {
                throw corrupt(checkpoint, plan, "holds more rows than the " + expected + " " + counted);
            }
            merged.forEachSorted(group.from(), group.to(), (key, floats, offset) -> {
                keys.buffer().putLong(key);
                keys.rowDone();
                final ByteBuffer out = values.buffer();
                for (int i = 0; i < dim; i++) {
                    out.putFloat(floats[offset + i]);
                }
                values.rowDone();
                written[0]++;
            });
        }
        if (written[0] != expected) {
            throw corrupt(checkpoint, plan, "holds " + written[0] + " rows, not the " + expected + " " + counted);
        }
        keys.flush();
        values.flush();
        return new Exported(plan.table(), plan.target(), false, expected, dim, file.length());
    }

    /**
     * Cuts the slots into groups whose rows (over every link's row files, from their indexes) fit in
     * {@link #groupBytes}; a slot whose rows alone do not is a group of its own.
     */
    private List<SlotGroup> slotGroups(final FileSystem fs, final Plan plan) throws IOException {
        int slotCount = 0;
        for (final CheckpointInfo link : chain) {
            slotCount = Math.max(slotCount, link.manifest().slotCount());
        }
        final long[] slotRows = new long[slotCount];
        for (final CheckpointInfo link : chain) {
            for (final Manifest.FileEntry entry : rowFiles(link, plan)) {
                final int[] slots = entry.file().slots();
                final long[] rows = RowFileReader.slotRows(fs, link.dir(), entry.file());
                for (int i = 0; i < slots.length; i++) {
                    slotRows[slots[i]] += rows[i];
                }
            }
        }
        final long maxRows = Math.max(1, groupBytes / MergedRows.bytesPerRow(plan.dim()));
        final List<SlotGroup> groups = new ArrayList<>();
        int from = 0;
        long rows = 0;
        for (int slot = 0; slot < slotCount; slot++) {
            if (rows > 0 && rows + slotRows[slot] > maxRows) {
                groups.add(new SlotGroup(from, slot, rows));
                from = slot;
                rows = 0;
            }
            rows += slotRows[slot];
        }
        groups.add(new SlotGroup(from, slotCount, rows));
        return groups;
    }

    /** Applies the chain to the group's slots: per link, the keys it removed, then its rows. */
    private void merge(final FileSystem fs, final Plan plan, final SlotGroup group, final MergedRows into)
            throws IOException {
        into.clear();
        final IntPredicate inGroup = slot -> slot >= group.from() && slot < group.to();
        for (int l = 0; l < chain.size(); l++) {
            final CheckpointInfo link = chain.get(l);
            final int linkIndex = l;
            for (final Manifest.FileEntry entry : removedFiles(link, plan)) {
                if (group.holdsAny(entry.file())) {
                    stream(fs, link, entry, plan, inGroup, (slot, key, record) -> into.remove(key));
                }
            }
            for (final Manifest.FileEntry entry : rowFiles(link, plan)) {
                if (group.holdsAny(entry.file())) {
                    stream(fs, link, entry, plan, inGroup, (slot, key, record) -> {
                        if (!into.put(slot, key, record, linkIndex)) {
                            throw corrupt(
                                    link,
                                    plan,
                                    "holds key " + key + " twice (again in "
                                            + entry.file().path() + ")");
                        }
                    });
                }
            }
        }
    }

    private static List<Manifest.FileEntry> rowFiles(final CheckpointInfo link, final Plan plan) {
        return link.manifest().filesOf(plan.table()).stream()
                .filter(entry -> !entry.removedKeys())
                .toList();
    }

    private static List<Manifest.FileEntry> removedFiles(final CheckpointInfo link, final Plan plan) {
        return link.manifest().filesOf(plan.table()).stream()
                .filter(Manifest.FileEntry::removedKeys)
                .toList();
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
        void accept(int slot, long key, float[] record) throws IOException;
    }

    /**
     * Reads the rows of {@code want}ed slots of one file of {@code link}, checking each record's width (a file of
     * removed keys has none).
     */
    private void stream(
            final FileSystem fs,
            final CheckpointInfo link,
            final Manifest.FileEntry entry,
            final Plan plan,
            final IntPredicate want,
            final RowSink sink)
            throws IOException {
        final int width = entry.removedKeys() ? 0 : plan.recordWidth();
        final String name = link.dir() + "/" + entry.file().path();
        // Rows read of the file, over its reads before this one and in this one; those counted into the progress.
        final long before = rowsRead.getOrDefault(name, 0L);
        final long[] rows = {before, before};
        final long length = entry.file().length();
        final long fileRows = Math.max(1, entry.file().rows());
        try {
            RowFileReader.read(fs, link.dir(), entry.file(), want, (slot, key, record) -> {
                if (++rows[0] - rows[1] == PROGRESS_ROWS) {
                    progress.addRows(PROGRESS_ROWS);
                    progress.addBytes(share(length, rows[0], fileRows) - share(length, rows[1], fileRows));
                    rows[1] = rows[0];
                }
                if (record.length != width) {
                    throw new UncheckedIOException(corrupt(
                            link,
                            plan,
                            "file " + entry.file().path() + " has records of " + record.length + " floats; the"
                                    + (entry.removedKeys()
                                            ? " keys removed have none"
                                            : " schema (dim " + plan.dim() + ", " + optimizerName(plan.schema())
                                                    + ") says " + width)));
                }
                try {
                    sink.accept(slot, key, record);
                } catch (IOException e) {
                    throw new UncheckedIOException(e);
                }
            });
        } catch (UncheckedIOException e) {
            throw e.getCause();
        }
        progress.addRows(rows[0] - rows[1]);
        progress.addBytes(share(length, rows[0], fileRows) - share(length, rows[1], fileRows));
        rowsRead.put(name, rows[0]);
    }

    /**
     * The bytes of a file of {@code length} that {@code rows} read of its {@code fileRows} stand for, over every read of
     * it: exactly {@code k * length} after {@code k} whole reads, however the rows were split between reads.
     */
    private static long share(final long length, final long rows, final long fileRows) {
        return length / fileRows * rows + length % fileRows * rows / fileRows;
    }

    /** Damage found in {@code link} of the chain, named from the exported checkpoint. */
    private CheckpointCorruptException corrupt(final CheckpointInfo link, final Plan plan, final String what) {
        return new CheckpointCorruptException("checkpoint " + checkpoint.id() + ", table '" + plan.table() + "': "
                + (link.id() == checkpoint.id() ? "the checkpoint " : "checkpoint " + link.id() + " of its chain ")
                + what);
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

    private static List<SafetensorsFile.Tensor> tensors(final Plan plan, final long rows) {
        final SafetensorsFile.Tensor values =
                new SafetensorsFile.Tensor("values", "F32", new long[] {rows, plan.dim()});
        if (plan.dense()) {
            return List.of(values);
        }
        // Keys first: their 8-byte elements stay 8-byte aligned in the buffer.
        return List.of(new SafetensorsFile.Tensor("keys", "I64", new long[] {rows}), values);
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
