package io.pscluster.server.table;

import java.util.ArrayDeque;

/**
 * Loads rows, as a row file stores them, into one table for a restore: the reading thread copies each run of a
 * slot's rows into the batch of the slot's partition, and a full batch goes to that partition's writer alone
 * ({@link PartitionWriters#runOn}), which puts its rows in ({@link PartitionStore#putRows}) while the reading thread
 * reads and decodes on. So no writer looks at another partition's rows, and reading overlaps applying.
 *
 * <p>Memory is bounded: {@value #BATCHES_PER_PARTITION} batches per partition of at most {@link #batchBytes} each,
 * allocated on first use; when all of a partition's batches are filled or in flight, the reading thread waits for its
 * oldest. A partition's rows are put in the order they were added, and each of its batches is queued behind what was
 * queued there before (a control task queued later, such as clearing slots, runs after them).
 *
 * <p>One reading thread per loader. A writer's failure (a row refused: memory, the partition's row limit) comes back
 * from a later {@link #add} or from {@link #finish}; the rows before it are in. After a failure or an interrupt the
 * loader is abandoned: batches still in flight are never reused, so a writer still copying one is harmless.
 */
public final class RowLoader {
    static final int BATCHES_PER_PARTITION = 3;
    /** The most bytes one batch holds (fewer with many partitions, so that all of them stay near 12 MiB). */
    private static final int MAX_BATCH_BYTES = 256 << 10;

    private static final long TOTAL_BYTES = 12L << 20;

    private final ParameterTable table;
    private final PartitionStore[] partitions;
    private final PartitionWriters writers;
    private final int rowBytes;
    private final int batchRows;
    private final Lane[] lanes;

    RowLoader(final ParameterTable table, final PartitionStore[] partitions, final PartitionWriters writers) {
        this.table = table;
        this.partitions = partitions;
        this.writers = writers;
        this.rowBytes = 8 + 4 * table.rowWidth();
        this.batchRows = Math.max(1, batchBytes(partitions.length) / rowBytes);
        this.lanes = new Lane[partitions.length];
        for (int p = 0; p < lanes.length; p++) {
            lanes[p] = new Lane(p);
        }
    }

    /** Bytes per batch for {@code partitionCount} partitions. */
    static int batchBytes(final int partitionCount) {
        return (int) Math.min(MAX_BATCH_BYTES, TOTAL_BYTES / ((long) BATCHES_PER_PARTITION * partitionCount));
    }

    /**
     * Adds {@code count} rows of {@code slot} from {@code rows[offset..]}, each {@code 8 + 4 * rowWidth()} bytes: the
     * key, then the record's floats (values, optimizer slots, counter bits), little-endian, as {@code
     * RowFileReader.readRuns} gives them. The bytes are copied before this returns.
     *
     * @throws RuntimeException what a writer threw for rows added before (the first failure).
     */
    public void add(final int slot, final byte[] rows, final int offset, final int count) throws InterruptedException {
        final Lane lane = lanes[writers.partitionOf(slot)];
        int from = offset;
        int left = count;
        while (left > 0) {
            final Batch batch = lane.filling();
            final int n = Math.min(left, batchRows - batch.count);
            System.arraycopy(rows, from, batch.rows, batch.count * rowBytes, n * rowBytes);
            batch.count += n;
            from += n * rowBytes;
            left -= n;
            if (batch.count == batchRows) {
                lane.send();
            }
        }
    }

    /**
     * Sends what is left and waits until every row added is in the table.
     *
     * @throws RuntimeException the first failure of a writer.
     */
    public void finish() throws InterruptedException {
        for (final Lane lane : lanes) {
            if (lane.filling != null && lane.filling.count > 0) {
                lane.send();
            }
        }
        for (final Lane lane : lanes) {
            while (!lane.inFlight.isEmpty()) {
                ParameterTable.await(lane.inFlight.remove().done);
            }
        }
    }

    /** One partition's batches: the one being filled, those in flight (oldest first) and free ones. */
    private final class Lane {
        private final int partition;
        private final ArrayDeque<Batch> inFlight = new ArrayDeque<>();
        private Batch filling;
        private int allocated;

        Lane(final int partition) {
            this.partition = partition;
        }

        /** The batch being filled: a new one while fewer than the limit exist, else the oldest in flight, once done. */
        Batch filling() throws InterruptedException {
            if (filling == null) {
                if (allocated < BATCHES_PER_PARTITION) {
                    allocated++;
                    filling = new Batch(new byte[batchRows * rowBytes]);
                } else {
                    final Batch oldest = inFlight.remove();
                    ParameterTable.await(oldest.done);
                    oldest.count = 0;
                    filling = oldest;
                }
            }
            return filling;
        }

        void send() {
            final Batch batch = filling;
            filling = null;
            final PartitionStore store = partitions[partition];
            batch.done = writers.runOn(partition, p -> {
                store.putRows(batch.rows, batch.count, table.touchNow());
                return null;
            });
            inFlight.add(batch);
        }
    }

    /** Rows for one partition's writer; its count is read by the writer only after the task is queued. */
    private static final class Batch {
        final byte[] rows;
        int count;
        java.util.concurrent.CompletableFuture<Void> done;

        Batch(final byte[] rows) {
            this.rows = rows;
        }
    }
}
