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

    private final int rowWidth;
    private final int rowBytes;
    /** Rows as a row file stores them (key, then the record's float bits, little-endian), in arrival order. */
    private final byte[] buffer;

    private final int[] slots;
    private final int[] order;
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
        this.capacity = (int) Math.max(1, Math.min((Integer.MAX_VALUE - 8) / rowBytes, bufferBytes / perRow));
        this.buffer = new byte[capacity * rowBytes];
        this.slots = new int[capacity];
        this.order = new int[capacity];
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
            // As many rows as fit, copied as they are; their slots from their keys.
            final int n = Math.min(batch.rows() - row, capacity - rows);
            System.arraycopy(source, row * rowBytes, buffer, rows * rowBytes, n * rowBytes);
            for (int i = 0; i < n; i++) {
                slots[rows + i] = table.slotOf(batch.key(row + i));
            }
            rows += n;
            row += n;
        }
    }

    /** Writes what is buffered and returns every part written (none for a table without rows here). */
    List<CheckpointFile> finish() throws IOException {
        if (rows > 0) {
            writePart();
        }
        return files;
    }

    private void writePart() throws IOException {
        java.util.Arrays.fill(slotStarts, 0);
        for (int i = 0; i < rows; i++) {
            slotStarts[slots[i] + 1]++;
        }
        for (int slot = 0; slot < Slots.SLOT_COUNT; slot++) {
            slotStarts[slot + 1] += slotStarts[slot];
        }
        for (int i = 0; i < rows; i++) {
            order[slotStarts[slots[i]]++] = i;
        }
        // slotStarts[s] now holds the end of slot s; rows of slot s are order[end(s-1) .. end(s)).
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
                    writer.writeStoredRow(buffer, order[next] * rowBytes);
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
