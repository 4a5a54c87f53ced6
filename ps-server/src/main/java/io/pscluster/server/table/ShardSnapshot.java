package io.pscluster.server.table;

import java.util.List;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.BooleanSupplier;
import java.util.function.Consumer;
import java.util.function.IntPredicate;
import java.util.function.LongPredicate;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A point-in-time copy of a shard's tables, streamed to one consumer (the thread writing a checkpoint) in bounded
 * batches while the writers go on applying pushes.
 *
 * <p>The cut is one control task per partition, so in each partition it falls after the pushes queued before it.
 * From then on each writer, between batches of pushes, copies its next rows into a free batch (a few per partition,
 * reused) and hands it over; a record changed before the scan reached it is copied as it was at the cut (see
 * {@link PartitionStore#beginSnapshot}). Memory is bounded: the batches in flight, and the saved states of records
 * changed ahead of the scan, up to a partition's share of {@link Limits#savedBytes}; past that a writer stops taking pushes and
 * only scans until it is under again (the time it held pushes is reported).
 *
 * <p>At most one snapshot per shard at a time. {@link #close()} abandons a snapshot that is not done: each writer ends
 * its scan at its next duty cycle.
 */
public final class ShardSnapshot implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(ShardSnapshot.class);
    /**
     * Batches per partition: an idle writer fills them all ahead of the checkpoint thread, which then rarely waits for
     * one (a writer with nothing to do backs off for up to a millisecond before it sees a batch given back).
     */
    private static final int BATCHES_PER_PARTITION = 4;
    /** Records a writer looks at per step, so that a step costs about as much as a small push. */
    static final int STEP_RECORDS = 16_384;

    private static final long CLOSE_WAIT_NANOS = TimeUnit.SECONDS.toNanos(10);

    /**
     * @param batchFloats floats of records per batch (a batch holds whole rows; at least one).
     * @param savedBytes saved states the shard's partitions may hold (each its share) before a writer holds pushes
     *     back.
     */
    public record Limits(int batchFloats, long savedBytes) {
        /** Batches of 256 KiB, and a 16th of the heap for saved states. */
        public static Limits defaults() {
            return new Limits(1 << 16, Runtime.getRuntime().maxMemory() / 16);
        }
    }

    /**
     * Which rows a snapshot holds: as cut {@code cutEpoch} (writes after it are marked above it), only rows changed
     * since cut {@code sinceEpoch} plus the keys removed since (0: every row, no removals); removals logged at or
     * before {@code pruneEpoch} are forgotten (no later delta reaches back that far).
     */
    public record Epochs(int cutEpoch, int sinceEpoch, int pruneEpoch) {
        /** A full copy that keeps no epochs (tests). */
        static Epochs full() {
            return new Epochs(1, 0, 0);
        }

        boolean delta() {
            return sinceEpoch > 0;
        }
    }

    private final PartitionWriters writers;
    private final List<ParameterTable> tables;
    private final Epochs epochs;
    /** Set by a writer whose removal log cannot serve the delta asked for. */
    private volatile boolean deltaImpossible;

    private final LongPredicate[] wanted;
    private final Limits limits;
    private final PartitionScan[] scans;
    private final long savedBytesPerPartition;
    private final BlockingQueue<SnapshotBatch> ready = new LinkedBlockingQueue<>();
    private final AtomicInteger finished = new AtomicInteger();
    private final AtomicLong heldPushNanos = new AtomicLong();
    private final AtomicLong peakSavedBytes = new AtomicLong();
    private volatile boolean cancelled;
    /** The first failure of a writer's part, which fails the whole snapshot. */
    private final AtomicReference<Throwable> failure = new AtomicReference<>();

    private long cutMicros;

    private ShardSnapshot(
            final PartitionWriters writers,
            final List<ParameterTable> tables,
            final IntPredicate slots,
            final Limits limits,
            final Epochs epochs) {
        this.writers = writers;
        this.epochs = epochs;
        this.tables = List.copyOf(tables);
        this.limits = limits;
        this.wanted = new LongPredicate[this.tables.size()];
        int widest = 1;
        int narrowest = Integer.MAX_VALUE;
        for (int t = 0; t < wanted.length; t++) {
            final ParameterTable table = this.tables.get(t);
            wanted[t] = key -> slots.test(table.slotOf(key));
            widest = Math.max(widest, table.rowWidth());
            narrowest = Math.min(narrowest, table.rowWidth());
        }
        final int floats = Math.max(widest, limits.batchFloats());
        // As many rows of each table as batchFloats floats of records hold, with their keys.
        final int maxRows = floats / Math.min(narrowest, widest);
        final int bytes = (int) Math.min(Integer.MAX_VALUE - 8, 4L * floats + 8L * maxRows);
        this.scans = new PartitionScan[writers.partitionCount()];
        this.savedBytesPerPartition = Math.max(1, limits.savedBytes() / scans.length);
        for (int p = 0; p < scans.length; p++) {
            scans[p] = new PartitionScan(p, bytes);
        }
    }

    /**
     * Cuts {@code tables} (the rows of the slots {@code slots} accepts) after the pushes queued so far and starts
     * streaming them.
     *
     * @throws IllegalStateException if another snapshot of this shard is under way, or the writers are closed.
     */
    static ShardSnapshot begin(
            final PartitionWriters writers,
            final List<ParameterTable> tables,
            final IntPredicate slots,
            final Limits limits)
            throws InterruptedException {
        return begin(writers, tables, slots, limits, Runnable::run, Epochs.full());
    }

    /**
     * As {@link #begin(PartitionWriters, List, IntPredicate, Limits)}, the cut's control tasks queued by
     * {@code offering} (which runs what it is given once, e.g. when no push is half offered to the partitions), and
     * waited for afterwards.
     */
    public static ShardSnapshot begin(
            final PartitionWriters writers,
            final List<ParameterTable> tables,
            final IntPredicate slots,
            final Limits limits,
            final Consumer<Runnable> offering,
            final Epochs epochs)
            throws InterruptedException {
        final ShardSnapshot snapshot = new ShardSnapshot(writers, tables, slots, limits, epochs);
        writers.startSnapshot(snapshot);
        final long start = System.nanoTime();
        try {
            final AtomicReference<CompletableFuture<List<Object>>> cut = new AtomicReference<>();
            offering.accept(() -> cut.set(writers.runOnAll(partition -> {
                snapshot.scans[partition].cut();
                return null;
            })));
            ParameterTable.await(cut.get());
        } catch (InterruptedException | RuntimeException e) {
            snapshot.close();
            throw e;
        }
        snapshot.cutMicros = (System.nanoTime() - start) / 1000;
        return snapshot;
    }

    /**
     * Whether a partition could not serve the delta asked for: it dropped its removal log (too many removals since
     * the last cut), or a later checkpoint pruned what it knew of the writes or removals since. The snapshot holds
     * nothing useful then; close it and take a full one.
     */
    public boolean deltaImpossible() {
        return deltaImpossible;
    }

    /** The tables, in the order {@link SnapshotBatch#table()} indexes. */
    public List<ParameterTable> tables() {
        return tables;
    }

    /**
     * The next batch of rows, waiting up to {@code timeout}; null if none came. Give it back with {@link #release}
     * once written.
     */
    public SnapshotBatch poll(final long timeout, final TimeUnit unit) throws InterruptedException {
        return ready.poll(timeout, unit);
    }

    /** Returns a batch to the writer that filled it. */
    public void release(final SnapshotBatch batch) {
        for (int partition = 0; partition < scans.length; partition++) {
            if (scans[partition].owns(batch)) {
                scans[partition].free.offer(batch);
                // Its writer may be parked for want of a free batch: it fills this one now, not after a backoff.
                writers.wake(partition);
                return;
            }
        }
        throw new IllegalArgumentException("not a batch of this snapshot");
    }

    /**
     * True once every writer has handed over its last rows and they have all been polled.
     *
     * @throws IllegalStateException if a writer failed its part (the snapshot is incomplete), with that failure.
     */
    public boolean done() {
        final Throwable failed = failure.get();
        if (failed != null) {
            throw new IllegalStateException("a partition writer failed its part of the snapshot: " + failed, failed);
        }
        return finished.get() == scans.length && ready.isEmpty();
    }

    /**
     * How long the cut took, in microseconds: from offering it until every writer marked it (pushes wait only while it
     * is offered).
     */
    public long cutMicros() {
        return cutMicros;
    }

    /** How long writers held pushes back while saved states were over their limit, summed over partitions (ns). */
    public long heldPushNanos() {
        return heldPushNanos.get();
    }

    /** The most bytes of saved states one partition held at once. */
    public long peakSavedBytes() {
        return peakSavedBytes.get();
    }

    /**
     * The writer's duty for this snapshot (partition {@code partition}'s thread only): abandons the scan if the
     * snapshot was closed, else copies rows into free batches: another while the writer is {@code idle} (its queue
     * empty, asked before each batch, so that a push that comes waits for one step at most) or over its limit, else
     * one per cycle. Returns the work done.
     */
    int duty(final int partition, final BooleanSupplier idle) {
        return scans[partition].duty(idle);
    }

    /** Whether the writer of {@code partition} must only scan for now: its saved states are over the limit. */
    boolean holdsPushes(final int partition) {
        return scans[partition].overLimit();
    }

    /**
     * Abandons the snapshot if it is not done, and waits (bounded) for every writer to drop its saved states;
     * idempotent.
     */
    @Override
    public void close() {
        cancelled = true;
        final long deadline = System.nanoTime() + CLOSE_WAIT_NANOS;
        while (finished.get() < scans.length && System.nanoTime() - deadline < 0 && !writers.isClosing()) {
            // A writer ends its scan at its next duty cycle (at most a millisecond when idle).
            try {
                Thread.sleep(1);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                break;
            }
        }
        if (finished.get() < scans.length) {
            LOG.warn("{} partition writers did not end an abandoned snapshot in time", scans.length - finished.get());
        }
        writers.endSnapshot(this);
        ready.clear();
    }

    /** One partition's scan through the snapshot's tables in turn; its fields are the writer's own. */
    private final class PartitionScan {
        private final int partition;
        final BlockingQueue<SnapshotBatch> free = new ArrayBlockingQueue<>(BATCHES_PER_PARTITION);
        private final SnapshotBatch[] batches = new SnapshotBatch[BATCHES_PER_PARTITION];
        private volatile boolean cutDone;
        private boolean over;
        private long overSinceNanos;
        private int table;
        private boolean removals;
        private boolean ended;

        PartitionScan(final int partition, final int bytes) {
            this.partition = partition;
            for (int i = 0; i < batches.length; i++) {
                batches[i] = new SnapshotBatch(bytes);
                free.offer(batches[i]);
            }
        }

        boolean owns(final SnapshotBatch batch) {
            for (final SnapshotBatch mine : batches) {
                if (mine == batch) {
                    return true;
                }
            }
            return false;
        }

        void cut() {
            if (cancelled || tables.isEmpty()) {
                end();
                return;
            }
            int begun = 0;
            try {
                for (final ParameterTable t : tables) {
                    final PartitionStore store = t.partition(partition);
                    if (epochs.delta() && !store.changesKnownSince(epochs.sinceEpoch())) {
                        deltaImpossible = true;
                    }
                    store.beginSnapshot(epochs.cutEpoch(), epochs.sinceEpoch(), epochs.pruneEpoch());
                    begun++;
                }
            } catch (RuntimeException | Error e) {
                for (int t = 0; t < begun; t++) {
                    tables.get(t).partition(partition).endSnapshot();
                }
                fail(e);
                return;
            }
            cutDone = true;
        }

        /** Abandons this partition's part (its stores no longer keep anything aside) and fails the snapshot. */
        private void fail(final Throwable e) {
            failure.compareAndSet(null, e);
            LOG.error("partition {}: the snapshot failed; the checkpoint is abandoned", partition, e);
            for (int t = table; cutDone && t < tables.size(); t++) {
                tables.get(t).partition(partition).endSnapshot();
            }
            end();
        }

        int duty(final BooleanSupplier idle) {
            if (!cutDone || ended) {
                return 0;
            }
            if (cancelled) {
                for (int t = table; t < tables.size(); t++) {
                    tables.get(t).partition(partition).endSnapshot();
                }
                end();
                return 1;
            }
            int work = 0;
            SnapshotBatch batch;
            while ((batch = free.poll()) != null) {
                work++;
                final boolean complete;
                try {
                    complete = fill(batch);
                } catch (RuntimeException | Error e) {
                    free.offer(batch);
                    fail(e);
                    return work;
                }
                if (batch.rows() > 0) {
                    ready.offer(batch);
                } else {
                    free.offer(batch);
                }
                if (complete) {
                    end();
                    break;
                }
                if (!idle.getAsBoolean() && !overLimit()) {
                    break; // one batch per cycle while pushes wait, so that they keep flowing
                }
            }
            trackLimit();
            return work;
        }

        /**
         * Fills {@code batch} from the current table: its rows, then (for a delta) the keys it removed; true when the
         * last table is done.
         */
        private boolean fill(final SnapshotBatch batch) {
            final ParameterTable current = tables.get(table);
            final PartitionStore store = current.partition(partition);
            if (!removals) {
                batch.reset(table, current.rowWidth(), false);
                if (store.snapshotStep(wanted[table], batch, STEP_RECORDS)) {
                    removals = true;
                }
                return false;
            }
            batch.reset(table, 0, true);
            if (store.snapshotRemovalsStep(wanted[table], batch, STEP_RECORDS)) {
                store.endSnapshot();
                removals = false;
                table++;
            }
            return table == tables.size();
        }

        private void end() {
            ended = true;
            if (over) {
                heldPushNanos.addAndGet(System.nanoTime() - overSinceNanos);
                over = false;
            }
            finished.incrementAndGet();
        }

        boolean overLimit() {
            if (!cutDone || ended) {
                return false;
            }
            long held = 0;
            for (int t = table; t < tables.size(); t++) {
                held += tables.get(t).partition(partition).snapshotHeldBytes();
            }
            peakSavedBytes.accumulateAndGet(held, Math::max);
            return held > savedBytesPerPartition;
        }

        private void trackLimit() {
            if (ended) {
                return;
            }
            final boolean now = overLimit();
            if (now && !over) {
                overSinceNanos = System.nanoTime();
            } else if (!now && over) {
                heldPushNanos.addAndGet(System.nanoTime() - overSinceNanos);
            }
            over = now;
        }
    }
}
