package io.pscluster.server;

import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.Closing;
import io.pscluster.checkpoint.Progress;
import io.pscluster.checkpoint.RowFileInfo;
import io.pscluster.checkpoint.RowFileWriter;
import io.pscluster.proto.v1.CheckpointFile;
import io.pscluster.server.table.ParameterTable;
import io.pscluster.server.table.SnapshotBatch;
import io.pscluster.wire.Slots;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.Executor;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;

/**
 * One table's rows of a checkpoint (or, for a delta, the keys it removed: rows of width 0), written as part files of
 * bounded size. Rows arrive in the writers' order
 * (record ids, not slots); a row file holds its slots in ascending order, so rows are gathered in a buffer of at most
 * {@code bufferBytes}, ordered by slot (a counting sort) and written as one part when it is full. Heap use is the
 * buffer, whatever the number of rows.
 *
 * <p>The buffer is allocated as rows come, in segments of at most {@link #SEGMENT_BYTES} of rows (and their slot and
 * order arrays), the first starting at {@link #FIRST_SEGMENT_ROWS} rows and doubling, not whole up front: a table of a
 * few rows costs tens of KiB, where each table's whole buffer (up to 64 MiB) was allocated at every checkpoint (with a
 * 4 GiB heap, 537 MB for 8 small tables). No array is larger than a segment: the JVM zeroes a new array in one stretch,
 * during which the allocating thread cannot reach a safepoint, so every other thread that reaches one waits for it.
 */
final class CheckpointParts {
    private final FileSystem fs;
    private final Path dir;
    private final String shardId;
    private final ParameterTable table;
    private final long checkpointId;
    private final RowFileWriter.Options options;
    private final boolean removedKeys;
    /** Where the part files' chunks are written to their streams (see {@link RowFileWriter}). */
    private final Executor output;

    /** The most bytes of rows in one segment of the buffer (see the class comment). */
    static final int SEGMENT_BYTES = 4 << 20;
    /** Rows the first segment starts with; it doubles as rows come, up to a whole segment. */
    static final int FIRST_SEGMENT_ROWS = 1024;

    private final int rowWidth;
    private final int rowBytes;
    /**
     * Rows per segment, a power of two: row {@code r} is row {@code r & segmentMask} of segment {@code r >>>
     * segmentShift}.
     */
    private final int segmentShift;

    private final int segmentMask;
    /**
     * Rows as a row file stores them (key, then the record's float bits, little-endian), in arrival order, by segment;
     * the segments allocated so far, kept for the next part.
     */
    private byte[][] segments = new byte[0][];
    /** The slot of each row, by segment as {@link #segments}. */
    private int[][] slotSegments = new int[0][];
    /** Row numbers in slot order, for the part being written: entry {@code p} by segment as {@link #segments}. */
    private int[][] orderSegments = new int[0][];

    private final int[] slotStarts = new int[Slots.SLOT_COUNT + 1];
    private final List<CheckpointFile> files = new ArrayList<>();
    private final int capacity;
    private int rows;
    /** Counts rows (and their uncompressed bytes) as they go into part files, slot by slot; null: none. */
    private Progress progress;

    CheckpointParts(
            final FileSystem fs,
            final Path dir,
            final String shardId,
            final ParameterTable table,
            final long checkpointId,
            final RowFileWriter.Options options,
            final long bufferBytes,
            final boolean removedKeys,
            final Executor output) {
        this.fs = fs;
        this.dir = dir;
        this.shardId = shardId;
        this.table = table;
        this.checkpointId = checkpointId;
        this.options = options;
        this.removedKeys = removedKeys;
        this.output = output;
        this.rowWidth = removedKeys ? 0 : table.rowWidth();
        this.rowBytes = 8 + 4 * rowWidth;
        final long perRow = rowBytes + 4 + 4; // the row, its slot, its place in slot order
        this.capacity = (int) Math.max(1, Math.min(Integer.MAX_VALUE - 8, bufferBytes / perRow));
        final int perSegment = Integer.highestOneBit(Math.max(1, SEGMENT_BYTES / rowBytes));
        this.segmentShift = Integer.numberOfTrailingZeros(perSegment);
        this.segmentMask = perSegment - 1;
    }

    /** Counts the rows written from now on into {@code value}. */
    CheckpointParts countInto(final Progress value) {
        progress = value;
        return this;
    }

    /** Adds a batch's rows, writing a part whenever the buffer fills. */
    void add(final SnapshotBatch batch) throws IOException {
        final byte[] source = batch.bytes();
        for (int row = 0; row < batch.rows(); ) {
            if (rows == capacity) {
                writePart();
            }
            final int segment = rows >>> segmentShift;
            final int at = rows & segmentMask;
            if (segment == segments.length) {
                addSegment();
            } else if (at == slotSegments[segment].length) {
                growSegment(segment);
            }
            // As many rows as fit in the segment, copied as they are; their slots from their keys.
            final int n = Math.min(batch.rows() - row, slotSegments[segment].length - at);
            System.arraycopy(source, row * rowBytes, segments[segment], at * rowBytes, n * rowBytes);
            final int[] slots = slotSegments[segment];
            for (int i = 0; i < n; i++) {
                slots[at + i] = table.slotOf(batch.key(row + i));
            }
            rows += n;
            row += n;
        }
    }

    /**
     * One more segment: the first of {@link #FIRST_SEGMENT_ROWS} (a table of few rows costs little), each later one
     * whole.
     */
    private void addSegment() {
        final int segment = segments.length;
        segments = Arrays.copyOf(segments, segment + 1);
        slotSegments = Arrays.copyOf(slotSegments, segment + 1);
        orderSegments = Arrays.copyOf(orderSegments, segment + 1);
        final int full = fullRows(segment);
        final int segmentRows = segment == 0 ? Math.min(FIRST_SEGMENT_ROWS, full) : full;
        segments[segment] = new byte[segmentRows * rowBytes];
        slotSegments[segment] = new int[segmentRows];
        orderSegments[segment] = new int[segmentRows];
    }

    /** Doubles a segment that is not yet whole (the first), keeping its rows and their slots. */
    private void growSegment(final int segment) {
        final int segmentRows = Math.min(2 * slotSegments[segment].length, fullRows(segment));
        segments[segment] = Arrays.copyOf(segments[segment], segmentRows * rowBytes);
        slotSegments[segment] = Arrays.copyOf(slotSegments[segment], segmentRows);
        // Written afresh for each part: nothing to keep.
        orderSegments[segment] = new int[segmentRows];
    }

    /** Rows a whole segment {@code segment} holds: a segment's worth, or what the buffer may still hold. */
    private int fullRows(final int segment) {
        return Math.min(segmentMask + 1, capacity - (segment << segmentShift));
    }

    /** Writes what is buffered and returns every part written (none for a table without rows here). */
    List<CheckpointFile> finish() throws IOException {
        if (rows > 0) {
            writePart();
        }
        return files;
    }

    private void writePart() throws IOException {
        Arrays.fill(slotStarts, 0);
        for (int i = 0; i < rows; i++) {
            slotStarts[slotSegments[i >>> segmentShift][i & segmentMask] + 1]++;
        }
        for (int slot = 0; slot < Slots.SLOT_COUNT; slot++) {
            slotStarts[slot + 1] += slotStarts[slot];
        }
        for (int i = 0; i < rows; i++) {
            final int at = slotStarts[slotSegments[i >>> segmentShift][i & segmentMask]]++;
            orderSegments[at >>> segmentShift][at & segmentMask] = i;
        }
        // slotStarts[s] now holds the end of slot s; rows of slot s are at entries end(s-1) .. end(s) of orderSegments.
        final String relative = removedKeys
                ? CheckpointStore.removedKeysFileName(shardId, table.name(), checkpointId, files.size())
                : CheckpointStore.fileName(shardId, table.name(), checkpointId, files.size());
        final RowFileInfo info;
        final RowFileWriter writer = RowFileWriter.create(fs, dir, relative, rowWidth, options, output);
        try {
            int next = 0;
            for (int slot = 0; slot < Slots.SLOT_COUNT; slot++) {
                final int end = slotStarts[slot];
                if (end == next) {
                    continue;
                }
                writer.beginSlot(slot);
                final int first = next;
                for (; next < end; next++) {
                    final int row = orderSegments[next >>> segmentShift][next & segmentMask];
                    writer.writeStoredRow(segments[row >>> segmentShift], (row & segmentMask) * rowBytes);
                }
                if (progress != null) {
                    progress.addRows(end - first);
                    progress.addBytes((end - first) * (8L + 4L * rowWidth));
                }
            }
            info = writer.finish();
        } catch (IOException | RuntimeException | Error e) {
            Closing.closeAfter(e, writer);
            throw e;
        }
        writer.close();
        final CheckpointFile.Builder file = CheckpointFile.newBuilder()
                .setPath(info.path())
                .setTable(table.name())
                .setLength(info.length())
                .setCrc32C(info.crc32c())
                .setRows(info.rows())
                .setCodec(info.codec().toProto())
                .setUncompressedBytes(info.uncompressedBytes())
                .setRemovedKeys(removedKeys);
        for (final int slot : info.slots()) {
            file.addSlots(slot);
        }
        files.add(file.build());
        rows = 0;
    }
}
