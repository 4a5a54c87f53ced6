package io.pscluster.server.table;

import java.util.ArrayList;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;
import java.util.function.BooleanSupplier;
import java.util.function.Consumer;
import java.util.function.IntFunction;
import java.util.function.Supplier;
import org.agrona.concurrent.Agent;
import org.agrona.concurrent.IdleStrategy;
import org.agrona.concurrent.ManyToOneConcurrentArrayQueue;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The single writers of a shard: one {@link Agent} per partition, each draining its own
 * {@link ManyToOneConcurrentArrayQueue} of tasks, so that every table's rows in partition {@code p} are changed by
 * one thread only and readers need no locks. A slot belongs to partition {@code slot % partitionCount()}.
 *
 * <p>Pushes are bounded: {@link #offer} reserves one unit of capacity per partition a push touches, with a CAS, and
 * refuses the push whole when the shard's capacity is used up (backpressure rather than unbounded queues). It also
 * counts the heap bytes the queued pushes hold (their keys and gradients, which stay on the heap until applied) and
 * refuses a push that would take them past {@link #limitQueuedBytes} (a quarter of the heap by default), unless
 * nothing is queued, so that a push larger than the limit still goes, alone: a count alone let 1,024 pushes of 1 MiB
 * wait on a slow writer, and a shard's heap of 1 GiB run out. Control
 * tasks ({@link #runOnAll}) have their own budget and wait for room rather than being refused; they fail only once
 * the writers are closed. Tasks run in queue order per partition, so a control task runs after every push queued
 * before it.
 *
 * <p>TTL eviction is time-driven, not idle-driven: once {@link #EVICTION_INTERVAL_MS} has passed since a writer's
 * previous eviction pass began, each duty cycle drains up to a batch of tasks and then takes one bounded
 * {@link ParameterTable#evictStep} per table, until every table has finished its pass. A writer that is never idle
 * still evicts, and a pass over a large partition never holds up the pushes behind it for long.
 *
 * <p>Snapshots: while a {@link ShardSnapshot} is being taken, each duty cycle first gives it one bounded copy step
 * (see {@link ShardSnapshot}), or, while its queue is empty, as many as it has free batches for; while the rows that
 * partition keeps aside for it are over their limit, the writer only copies and leaves its queue (pushes and control
 * tasks) waiting.
 *
 * <p>Idle writers sleep until work comes: a writer whose queue is empty spins briefly, then parks, and whoever queues
 * a task for it unparks it (see {@link WriterIdle}). A sleeping writer costs no CPU, which on a machine of few cores
 * goes to the gRPC threads instead, and a push queued to it is applied as soon as the writer is scheduled, not after a
 * timed park runs out. It still wakes on its own for TTL eviction, and backs off to at most a millisecond's park while
 * a snapshot is streamed or the writers are closing, whose progress no task signals.
 *
 * <p>Closing: exactly one caller of {@link #close()} does the work; any other returns once it is done. Every control
 * task is either run or failed, never left behind (see {@link #runOnAll}).
 */
public final class PartitionWriters implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(PartitionWriters.class);
    private static final int CONTROL_HEADROOM = 64;
    /** Tasks {@link #runOn} may have queued on one partition at once: a budget of their own, apart from control's. */
    static final int BULK_PER_PARTITION = 4;

    private static final long EVICTION_INTERVAL_MS = 1_000;
    private static final int CLOSING_BIT = 1 << 30;
    /** How long close() waits for each writer thread to stop once its queue is applied. */
    private static final int STOP_WAIT_MS = 10_000;
    /** Tasks a writer drains per duty cycle, before its eviction step if a pass is under way. */
    private static final int DRAIN_BATCH = 256;
    /** The longest an idle writer sleeps before it looks again on its own, when tasks wake it. */
    static final long IDLE_PARK_NS = TimeUnit.MILLISECONDS.toNanos(10);

    /** Work for one partition's writer. */
    @FunctionalInterface
    public interface Task {
        void run(int partition);
    }

    private final PartitionAgent[] agents;
    private final WriterLoop[] loops;
    /** Push units reserved and not yet applied, with {@link #CLOSING_BIT}: setting the bit claims close(). */
    private final AtomicInteger reserved = new AtomicInteger();

    private final AtomicInteger controlReserved = new AtomicInteger();
    private final int capacity;
    /** Heap bytes of the pushes queued and not yet applied, as {@link #offer} counts them. */
    private final AtomicLong queuedBytes = new AtomicLong();

    private volatile long maxQueuedBytes = defaultQueuedBytesLimit();
    /** How long close() waits for the writers to stop; see {@link #STOP_WAIT_MS}. */
    private final int stopWaitMs;
    /** Guards control submission against the flip of {@link #closed}; see {@link #runOnAll}. */
    private final Object controlLock = new Object();
    /** Counted down when the closing caller is done, for any other caller of close() to wait on. */
    private final CountDownLatch closeDone = new CountDownLatch(1);
    /** Written under {@link #controlLock}; volatile for the fast paths that read it without the lock. */
    private volatile boolean closed;
    /** The snapshot being streamed, whose duty every writer takes each cycle; null when none. */
    private volatile ShardSnapshot snapshot;

    /**
     * @param capacity the most push parts queued and not yet applied, over all partitions.
     * @param tables the shard's tables, for TTL eviction.
     */
    public PartitionWriters(
            final String name,
            final int partitions,
            final int capacity,
            final Supplier<? extends Iterable<ParameterTable>> tables) {
        this(name, partitions, capacity, tables, IDLE_PARK_NS, PartitionAgent.EVICTION_INTERVAL_NS, STOP_WAIT_MS);
    }

    /**
     * As {@link #PartitionWriters(String, int, int, Supplier)}, with the longest an idle writer sleeps unwoken, the
     * interval of its eviction passes (tests make both long, to show that queuing a task is what wakes the writer)
     * and how long close() waits for the writers to stop before it gives up on them as stuck.
     */
    public PartitionWriters(
            final String name,
            final int partitions,
            final int capacity,
            final Supplier<? extends Iterable<ParameterTable>> tables,
            final long idleParkNanos,
            final long evictionIntervalNanos,
            final int stopWaitMs) {
        if (partitions < 1 || partitions > 64) {
            throw new IllegalArgumentException("partitions=" + partitions + " must be in 1..64");
        }
        if (capacity < partitions) {
            // A push may touch every partition and reserves one unit on each: less could never be accepted.
            throw new IllegalArgumentException(
                    "capacity=" + capacity + " must be >= partitions=" + partitions + " (a push may touch them all)");
        }
        this.capacity = capacity;
        this.stopWaitMs = stopWaitMs;
        this.agents = new PartitionAgent[partitions];
        this.loops = new WriterLoop[partitions];
        for (int p = 0; p < partitions; p++) {
            agents[p] = new PartitionAgent(
                    name + "-p" + p,
                    p,
                    capacity + CONTROL_HEADROOM + BULK_PER_PARTITION,
                    tables,
                    () -> snapshot,
                    evictionIntervalNanos,
                    () -> closed);
            loops[p] = new WriterLoop(agents[p], new WriterIdle(agents[p], this::isClosing, idleParkNanos));
            loops[p].thread.start();
        }
    }

    /** Makes {@code value} the snapshot the writers stream. */
    synchronized void startSnapshot(final ShardSnapshot value) {
        if (snapshot != null) {
            throw new IllegalStateException(
                    "a snapshot of this shard is already being taken (one checkpoint at a time)");
        }
        snapshot = value;
        // The writers stream it in their duty cycles: none may sleep through its start.
        for (final PartitionAgent agent : agents) {
            agent.wake();
        }
    }

    /** Stops streaming {@code value}, once it is done or abandoned. */
    synchronized void endSnapshot(final ShardSnapshot value) {
        if (snapshot == value) {
            snapshot = null;
        }
    }

    public int partitionCount() {
        return agents.length;
    }

    public int partitionOf(final int slot) {
        return slot % agents.length;
    }

    /**
     * Queues a push on the partitions in {@code partitionMask} (bit {@code p} set for partition {@code p}) if the
     * shard has room for all of them; otherwise queues nothing and returns false. The task must call
     * {@link #applied()} once per partition when it is done there.
     */
    boolean offer(final Task task, final long partitionMask) {
        return offer(task, partitionMask, null);
    }

    /**
     * As {@link #offer(Task, long)}; with {@code later} not null, the writers the push is queued to are not woken here
     * but by {@code later}'s {@link DeferredWakes#wakeNow()}, which the caller must reach (in a {@code finally}).
     */
    boolean offer(final Task task, final long partitionMask, final DeferredWakes later) {
        return offer(task, partitionMask, later, 0, false);
    }

    /**
     * As {@link #offer(Task, long, DeferredWakes)}, for a push that holds {@code bytes} of heap until it is applied:
     * when {@code bounded}, refused if they would take the queued pushes' bytes past {@link #limitQueuedBytes} while
     * any are queued; counted either way. Each partition's part gives its share back with {@link #applied(long)}.
     */
    boolean offer(
            final Task task,
            final long partitionMask,
            final DeferredWakes later,
            final long bytes,
            final boolean bounded) {
        long held;
        do {
            held = queuedBytes.get();
            if (bounded && held > 0 && held + bytes > maxQueuedBytes) {
                return false;
            }
        } while (!queuedBytes.compareAndSet(held, held + bytes));
        final int parts = Long.bitCount(partitionMask);
        int current;
        do {
            current = reserved.get();
            // The closing bit lives in the same word, so no reservation can succeed once close() has begun.
            if ((current & CLOSING_BIT) != 0 || current + parts > capacity) {
                queuedBytes.addAndGet(-bytes);
                return false;
            }
        } while (!reserved.compareAndSet(current, current + parts));
        for (int p = 0; p < agents.length; p++) {
            if ((partitionMask & (1L << p)) != 0) {
                if (later == null) {
                    agents[p].enqueue(task, "push");
                } else {
                    agents[p].enqueueUnwoken(task, "push");
                    later.partitions |= 1L << p;
                }
            }
        }
        return true;
    }

    /** Wake-ups that a push's handler owes, paid once it has answered; see {@link #deferredWakes()}. */
    public DeferredWakes deferredWakes() {
        return new DeferredWakes();
    }

    /**
     * The writers that a push handler queued to without waking them. Waking a sleeping writer is a system call that
     * took 3-7 us at the median here (8-14 us at the 90th percentile), and a push to two partitions made two before its
     * acknowledgement could be sent. Queued, the push is accepted; its handler answers first, then wakes the writers
     * while the answer travels. No wake-up is lost by the delay: the writer marks itself sleeping before it looks at
     * its queue a last time and {@link #wakeNow()} reads that mark after the queue took the task (see
     * {@link WriterIdle}). One thread uses an instance.
     */
    public final class DeferredWakes {
        private long partitions;

        private DeferredWakes() {}

        /** Wakes each writer queued to since the last call, if it sleeps. */
        public void wakeNow() {
            long pending = partitions;
            partitions = 0;
            while (pending != 0) {
                agents[Long.numberOfTrailingZeros(pending)].wake();
                pending &= pending - 1;
            }
        }
    }

    /** Unparks the writer of {@code partition} if it sleeps: something it waits for that no task signals is there. */
    void wake(final int partition) {
        agents[partition].wake();
    }

    /** Whether the writer of {@code partition} sleeps (or is about to), waiting to be woken; for tests. */
    boolean sleeping(final int partition) {
        return agents[partition].sleeping();
    }

    /** Releases one unit of push capacity (a push finished on one partition) and {@code bytes} of its heap. */
    void applied(final long bytes) {
        queuedBytes.addAndGet(-bytes);
        reserved.decrementAndGet();
    }

    /**
     * Sets the most heap bytes queued pushes may hold before more are refused (as when the queue is full): the shard's
     * {@code maxQueuedPushBytes}. Set before pushes come.
     */
    public void limitQueuedBytes(final long bytes) {
        if (bytes < 1) {
            throw new IllegalArgumentException("maxQueuedBytes=" + bytes + " must be > 0");
        }
        maxQueuedBytes = bytes;
    }

    /** The default of {@link #limitQueuedBytes}: a quarter of this JVM's heap. */
    public static long defaultQueuedBytesLimit() {
        return Runtime.getRuntime().maxMemory() / 4;
    }

    /** Heap bytes the queued pushes hold, as {@link #offer(Task, long, DeferredWakes, long, boolean)} counted them. */
    public long queuedBytes() {
        return queuedBytes.get();
    }

    /** True once {@link #close()} has begun: pushes are refused from then on. */
    public boolean isClosing() {
        return (reserved.get() & CLOSING_BIT) != 0;
    }

    /** Push parts queued and not yet applied. */
    public int pending() {
        return reserved.get() & ~CLOSING_BIT;
    }

    /**
     * Runs {@code work} on every partition's writer, after what is queued there, and completes with the results in
     * partition order. Waits for room rather than failing; completes exceptionally once the writers are closed.
     *
     * <p>Every task offered here is either run or failed. The queue's element store is a release (lazySet) store, so
     * "offer, then read {@code closed}" racing "write {@code closed}, then drain" can miss each other (store-load
     * reordering). Instead, the tasks are offered and {@link #closed} is flipped under {@link #controlLock}: if this
     * call takes the lock first, its offers happen-before close()'s drain (the lock's release and acquire), which
     * therefore sees and fails whatever the stopped writers did not run; if close() takes it first, this call sees
     * {@code closed} and queues nothing. Control tasks are rare, so the lock costs the push path nothing.
     */
    public <T> CompletableFuture<List<T>> runOnAll(final IntFunction<T> work) {
        // Control tasks have their own budget (the queues' headroom), so they never take room a push reserved.
        // Reserved outside the lock: the budget frees only as writers run control tasks, which close() may stop.
        if (closed || !reserveControl(agents.length)) {
            return CompletableFuture.failedFuture(closedException());
        }
        final List<CompletableFuture<T>> parts = new ArrayList<>(agents.length);
        synchronized (controlLock) {
            if (closed) {
                controlReserved.addAndGet(-agents.length);
                return CompletableFuture.failedFuture(closedException());
            }
            for (int p = 0; p < agents.length; p++) {
                final ControlTask<T> task = new ControlTask<>(work, controlReserved);
                parts.add(task.result);
                agents[p].enqueue(task, "control");
            }
        }
        return CompletableFuture.allOf(parts.toArray(CompletableFuture[]::new)).thenApply(done -> {
            final List<T> results = new ArrayList<>();
            parts.forEach(part -> results.add(part.join()));
            return results;
        });
    }

    /**
     * Runs {@code work} on the writer of {@code partition} alone, after what is queued there: for bulk work split by
     * partition beforehand (a restore's rows), where {@link #runOnAll} would make every writer look at every row. At
     * most {@link #BULK_PER_PARTITION} such tasks are queued per partition, a budget apart from the control tasks', so
     * bulk work never holds up a {@link #runOnAll}; past it this call waits for room. Closing fails or runs every task
     * as it does control tasks (see {@link #runOnAll}).
     */
    public <T> CompletableFuture<T> runOn(final int partition, final IntFunction<T> work) {
        final AtomicInteger budget = agents[partition].bulkReserved;
        if (closed || !reserve(budget, 1, BULK_PER_PARTITION)) {
            return CompletableFuture.failedFuture(closedException());
        }
        final ControlTask<T> task = new ControlTask<>(work, budget);
        synchronized (controlLock) {
            if (closed) {
                budget.decrementAndGet();
                return CompletableFuture.failedFuture(closedException());
            }
            agents[partition].enqueue(task, "bulk");
        }
        return task.result;
    }

    /**
     * Waits for {@code units} of control budget; false once the writers are closed. close() sets {@link #closed}
     * whatever happens (in a finally), so a waiter cannot outlive it.
     */
    private boolean reserveControl(final int units) {
        return reserve(controlReserved, units, CONTROL_HEADROOM);
    }

    /** Waits for {@code units} of {@code budget}, which holds at most {@code limit}; false once closed. */
    private boolean reserve(final AtomicInteger budget, final int units, final int limit) {
        while (true) {
            final int current = budget.get();
            if (current + units <= limit && budget.compareAndSet(current, current + units)) {
                return true;
            }
            if (closed) {
                return false;
            }
            LockSupport.parkNanos(TimeUnit.MICROSECONDS.toNanos(50));
        }
    }

    private static IllegalStateException closedException() {
        return new IllegalStateException("partition writers are closed");
    }

    /** A control or bulk task: completes its future with what it computed, and frees its unit of its budget. */
    private static final class ControlTask<T> implements Task {
        final CompletableFuture<T> result = new CompletableFuture<>();
        private final IntFunction<T> work;
        private final AtomicInteger budget;

        ControlTask(final IntFunction<T> work, final AtomicInteger budget) {
            this.work = work;
            this.budget = budget;
        }

        @Override
        public void run(final int partition) {
            try {
                result.complete(work.apply(partition));
            } catch (Throwable failure) {
                result.completeExceptionally(failure);
            } finally {
                budget.decrementAndGet();
            }
        }

        /** For a task taken off the queue by close() instead of a writer: it never runs. */
        void fail() {
            result.completeExceptionally(closedException());
            budget.decrementAndGet();
        }
    }

    /**
     * Refuses new pushes, applies what is queued, stops every writer, then fails any control task that arrived too
     * late to run (its caller is not left waiting). Setting the closing bit claims the work with a CAS: exactly one
     * caller does it, and any other caller returns only once it is done. Not to be called from a writer's task.
     */
    @Override
    public void close() {
        final int before = reserved.getAndUpdate(current -> current | CLOSING_BIT);
        if ((before & CLOSING_BIT) != 0) {
            awaitCloseDone();
            return;
        }
        // From here on idle writers park briefly, so that each notices its runner stopping soon.
        for (final PartitionAgent agent : agents) {
            agent.wake();
        }
        // A caller whose interrupt is set (a shutdown hook, a cancelled task) would have every writer's join fail at
        // once: each reported stuck and its late control tasks never failed. Close with it cleared; set it again after.
        boolean interrupted = Thread.interrupted();
        try {
            // Every push acknowledged so far holds a reservation until it is applied: wait for them all. An interrupt
            // meanwhile would make each park return at once: cleared, and set again at the end.
            final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (pending() > 0 && System.nanoTime() < deadline) {
                LockSupport.parkNanos(TimeUnit.MILLISECONDS.toNanos(1));
                interrupted |= Thread.interrupted();
            }
            if (pending() > 0) {
                LOG.warn("{} push parts were not applied within 30 s of close", pending());
            }
            // Once a writer's thread has ended (joined), this thread is the queue's only consumer and sees everything
            // the writer did. A writer stuck in a task (a bug) is given up on after a bounded wait, so that closing
            // never hangs; its queue is then left to it (one consumer only): when it comes out of the task, it fails
            // the control tasks still queued there itself (see WriterLoop#run).
            final List<String> stuck = new ArrayList<>();
            final boolean[] stopped = new boolean[agents.length];
            for (final WriterLoop loop : loops) {
                loop.running = false;
                loop.agent.wake();
            }
            // All were told to stop at once: one wait for all of them.
            final long stopDeadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(stopWaitMs);
            for (int p = 0; p < agents.length; p++) {
                final Thread thread = loops[p].thread;
                stopped[p] = joinUninterruptibly(thread, stopDeadline)
                        // It may end just after the wait: then it is stopped all the same, and its queue is ours.
                        || !loops[p].state.compareAndSet(WriterLoop.RUNNING, WriterLoop.ABANDONED)
                                && joinUninterruptibly(thread, System.nanoTime() + TimeUnit.SECONDS.toNanos(1));
                if (!stopped[p]) {
                    final String message = thread.getName() + " did not stop within " + stopWaitMs
                            + " ms; it is stuck in a task: " + java.util.Arrays.toString(thread.getStackTrace());
                    LOG.error("partition {} writer: {}", p, message);
                    stuck.add(message);
                }
            }
            markClosed();
            for (int p = 0; p < agents.length; p++) {
                if (stopped[p]) {
                    failLateControlTasks(agents[p].queue);
                }
            }
            if (!stuck.isEmpty()) {
                throw new IllegalStateException("partition writers closed with stuck writers: " + stuck);
            }
        } finally {
            // Again if something above threw: reserveControl() waiters must end and runOnAll must refuse.
            markClosed();
            closeDone.countDown();
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
        }
    }

    /**
     * Waits until {@code deadline} ({@link System#nanoTime()}) for {@code thread} to end, through interrupts
     * (re-asserted after); whether it did.
     */
    private static boolean joinUninterruptibly(final Thread thread, final long deadline) {
        boolean interrupted = false;
        try {
            while (thread.isAlive()) {
                final long left = deadline - System.nanoTime();
                if (left <= 0) {
                    return false;
                }
                try {
                    TimeUnit.NANOSECONDS.timedJoin(thread, left);
                } catch (InterruptedException e) {
                    interrupted = true;
                }
            }
            return true;
        } finally {
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
        }
    }

    private void markClosed() {
        synchronized (controlLock) {
            closed = true;
        }
    }

    /**
     * Empties a stopped writer's queue, failing the control tasks in it. No control task can be offered any more
     * (closed is set) and every one offered before is fully stored (the lock), so what remains is found. A push may
     * be left only after the 30 s timeout, and a null poll with a non-empty queue is such a push whose offer is
     * still storing its element: wait for it rather than stop before the tasks behind it.
     */
    private static void failLateControlTasks(final ManyToOneConcurrentArrayQueue<Task> queue) {
        while (!queue.isEmpty()) {
            final Task late = queue.poll();
            if (late instanceof ControlTask<?> control) {
                control.fail();
            } else if (late == null) {
                Thread.onSpinWait();
            }
        }
    }

    private void awaitCloseDone() {
        boolean interrupted = false;
        while (true) {
            try {
                closeDone.await();
                break;
            } catch (InterruptedException e) {
                // close() cannot throw it, and returning early would break its promise: keep waiting, re-assert later.
                interrupted = true;
            }
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
    }

    /**
     * One partition's writer: drains its queue in batches and, while an eviction pass is under way, takes one
     * bounded eviction step per table after each batch. A pass begins once {@link #EVICTION_INTERVAL_MS} has passed
     * since the previous one began, whether or not the queue is empty, and ends when every table has finished its
     * pass over this partition. Each step catches what it throws, so that one failed task or step fails alone and the
     * writer goes on ({@link WriterLoop} runs it).
     */
    static final class PartitionAgent implements Agent {
        static final long EVICTION_INTERVAL_NS = TimeUnit.MILLISECONDS.toNanos(EVICTION_INTERVAL_MS);

        final ManyToOneConcurrentArrayQueue<Task> queue;
        /** Bulk tasks ({@link PartitionWriters#runOn}) queued here and not yet run or failed. */
        final AtomicInteger bulkReserved = new AtomicInteger();

        private final String name;
        private final int partition;
        private final Supplier<? extends Iterable<ParameterTable>> tables;
        private final Supplier<ShardSnapshot> snapshot;
        private final Consumer<Task> runSafely = this::runSafely;
        /** Tables that finished the current pass, by identity; tables created meanwhile join the pass. */
        private final Set<ParameterTable> passDone = Collections.newSetFromMap(new IdentityHashMap<>());

        private final long evictionIntervalNs;
        private long passStartNs = System.nanoTime();
        private boolean passUnderWay;
        private long interruptsIgnored;
        private final BooleanSupplier closed;
        /** The writer's thread, once it runs; what {@link #wake} unparks. */
        private volatile Thread thread;
        /**
         * True from just before the writer checks its queue a last time and parks until it is awake again: whoever
         * queues a task reads it after the queue's CAS and unparks the writer (see {@link WriterIdle#idle()}).
         */
        private volatile boolean sleeping;

        /** @param closed whether the writers are closed: a writer still running then (given up on) runs no task. */
        PartitionAgent(
                final String name,
                final int partition,
                final int capacity,
                final Supplier<? extends Iterable<ParameterTable>> tables,
                final Supplier<ShardSnapshot> snapshot,
                final long evictionIntervalNs,
                final BooleanSupplier closed) {
            this.closed = closed;
            this.name = name;
            this.evictionIntervalNs = evictionIntervalNs;
            this.snapshot = snapshot;
            this.partition = partition;
            this.queue = new ManyToOneConcurrentArrayQueue<>(capacity);
            this.tables = tables;
        }

        @Override
        public void onStart() {
            thread = Thread.currentThread();
        }

        /**
         * Queues {@code task}, for which room was reserved from the {@code budget} budget, and wakes the writer if it
         * sleeps: every task reaches a writer through here, so none waits for a writer that is parked.
         */
        void enqueue(final Task task, final String budget) {
            enqueueUnwoken(task, budget);
            wake();
        }

        /** As {@link #enqueue}, leaving the writer to be woken by the caller ({@link DeferredWakes}). */
        void enqueueUnwoken(final Task task, final String budget) {
            if (!queue.offer(task)) {
                // Cannot happen: each queue holds capacity plus headroom and reservations bound what is queued.
                throw new IllegalStateException(
                        "partition " + partition + " queue full despite a " + budget + " reservation");
            }
        }

        /**
         * Unparks the writer if it sleeps or is about to; called after each task is queued to it. Returns whether it
         * did (whether it saw {@link #sleeping}).
         */
        boolean wake() {
            if (!sleeping) {
                return false;
            }
            final Thread writer = thread;
            if (writer != null) {
                LockSupport.unpark(writer);
            }
            return true;
        }

        /**
         * Marks the writer sleeping, then looks at its queue a last time: true if it is empty and the writer may
         * park (until {@link #wake}), false if a task came (the writer is marked awake again).
         */
        boolean prepareToSleep() {
            sleeping = true;
            if (queue.isEmpty()) {
                return true;
            }
            sleeping = false;
            return false;
        }

        void awake() {
            sleeping = false;
        }

        boolean sleeping() {
            return sleeping;
        }

        /**
         * The longest the writer may sleep unwoken now: until its next eviction pass is due, at most {@code longest};
         * 0 while it has something to do that no task signals (a snapshot to stream, a pass under way).
         */
        long sleepNanos(final long longest) {
            if (snapshot.get() != null || passUnderWay) {
                return 0;
            }
            final long untilPass = evictionIntervalNs - (System.nanoTime() - passStartNs);
            return Math.max(0, Math.min(longest, untilPass));
        }

        @Override
        public int doWork() {
            // One that came while the writer was idle or between cycles.
            clearInterrupt();
            int snapshotWork = 0;
            final ShardSnapshot streaming = snapshot.get();
            if (streaming != null) {
                try {
                    snapshotWork = streaming.duty(partition, queue::isEmpty);
                    if (streaming.holdsPushes(partition)) {
                        // Saved states are over their limit: only the scan frees them, so it goes first.
                        return snapshotWork;
                    }
                } catch (Throwable failure) {
                    LOG.error("partition {} writer: a snapshot step failed; the writer goes on", partition, failure);
                }
            }
            final int drained = queue.drain(runSafely, DRAIN_BATCH);
            // Steps count as work, so that an idle writer does not back off in the middle of a pass.
            return drained + evictionDuty() + snapshotWork;
        }

        /** Begins a pass when it is due, then takes one step on each table still in the pass; returns the steps. */
        private int evictionDuty() {
            if (!passUnderWay) {
                final long now = System.nanoTime();
                if (now - passStartNs < evictionIntervalNs) {
                    return 0;
                }
                passStartNs = now;
                passUnderWay = true;
            }
            int steps = 0;
            boolean allDone = true;
            try {
                for (final ParameterTable table : tables.get()) {
                    if (!passDone.contains(table)) {
                        steps++;
                        if (stepSafely(table)) {
                            passDone.add(table);
                        } else {
                            allDone = false;
                        }
                    }
                }
            } catch (Throwable failure) {
                // The table registry itself failed: end this pass, try again at the next interval.
                LOG.error(
                        "partition {} writer: listing tables for eviction failed; the writer goes on",
                        partition,
                        failure);
                allDone = true;
            }
            if (allDone) {
                passUnderWay = false;
                passDone.clear();
            }
            return steps;
        }

        /** One eviction step; a step that fails counts as the end of that table's pass (it is tried next interval). */
        private boolean stepSafely(final ParameterTable table) {
            try {
                return table.evictStep(partition);
            } catch (Throwable failure) {
                LOG.error(
                        "partition {} writer: an eviction step on table {} failed; the writer goes on",
                        partition,
                        table.name(),
                        failure);
                return true;
            }
        }

        private void runSafely(final Task task) {
            if (closed.getAsBoolean()) {
                // Only a writer close() gave up on as stuck runs on once the writers are closed (close() joins the
                // others first): what it still holds is failed, not run against a closed shard.
                if (task instanceof ControlTask<?> control) {
                    control.fail();
                }
                return;
            }
            try {
                task.run(partition);
            } catch (Throwable failure) {
                LOG.error("partition {} writer: a task failed; the writer goes on", partition, failure);
            }
            // Not left for the tasks after it (a wait of theirs would end at once).
            clearInterrupt();
        }

        /**
         * Clears an interrupt of the writer's thread and reports it, the first time and at each power of two so that
         * a stream of them cannot flood the log. Writers stop only when they are closed (see {@link WriterLoop}).
         */
        void clearInterrupt() {
            if (Thread.interrupted()) {
                interruptsIgnored++;
                if (Long.bitCount(interruptsIgnored) == 1) {
                    LOG.warn(
                            "{}: its thread was interrupted ({} times so far); writers stop only when they are"
                                    + " closed, so it cleared the interrupt and goes on",
                            name,
                            interruptsIgnored);
                }
            }
        }

        @Override
        public String roleName() {
            return name;
        }
    }

    /**
     * The thread of one partition's writer: duty cycles and idling until {@link #close()} ends it, and nothing else.
     * An interrupt does not stop it. Agrona's {@code AgentRunner} ends its agent on one, and a writer that ended would
     * strand its partition's pushes and control tasks until close gave up on them; but nothing here interrupts a writer
     * to stop it, so an interrupt comes from elsewhere (a task that re-asserts one it caught, a stray
     * {@code Thread.interrupt()}): it is cleared after each task and each cycle, reported, and the writer goes on. A
     * failure of the loop's own parts is reported and the loop goes on too.
     *
     * <p>{@link #state} settles who empties the queue once the writers are closed: close(), for a writer it saw end;
     * the writer itself, for one close gave up on as stuck that later came out of its task.
     */
    private final class WriterLoop implements Runnable {
        static final int RUNNING = 0;
        static final int EXITED = 1;
        static final int ABANDONED = 2;

        final PartitionAgent agent;
        final Thread thread;
        /** Cleared by close(), which then wakes the writer and joins its thread. */
        volatile boolean running = true;

        final AtomicInteger state = new AtomicInteger(RUNNING);
        private final IdleStrategy idle;

        WriterLoop(final PartitionAgent agent, final IdleStrategy idle) {
            this.agent = agent;
            this.idle = idle;
            this.thread = new Thread(this, agent.roleName());
            thread.setDaemon(true);
        }

        @Override
        public void run() {
            agent.onStart();
            try {
                while (running) {
                    try {
                        idle.idle(agent.doWork());
                    } catch (Throwable failure) {
                        // doWork catches what its steps throw; this is a failure of the loop's own parts (the idle
                        // strategy, the queue). Reported, then a pause, so that one every cycle does not spin.
                        LOG.error("{}: a duty cycle failed; the writer goes on", agent.roleName(), failure);
                        LockSupport.parkNanos(TimeUnit.MILLISECONDS.toNanos(1));
                    }
                }
            } finally {
                exit();
            }
        }

        private void exit() {
            if (running) {
                // Cannot happen short of an error thrown while reporting one; say so if anything can.
                LOG.error("{}: the writer ended while its writers were open", agent.roleName());
            }
            if (state.compareAndSet(RUNNING, EXITED)) {
                return;
            }
            // close() gave up on this writer as stuck and left its queue to it: once close has marked the writers
            // closed (no control task can be queued after that), fail what is still queued, as close does for the
            // others, so that no caller waits forever.
            while (!closed) {
                LockSupport.parkNanos(TimeUnit.MILLISECONDS.toNanos(1));
            }
            failLateControlTasks(agent.queue);
            LOG.warn(
                    "{}: came out of the task close() gave up on; failed the control tasks left in its queue",
                    agent.roleName());
        }
    }

    /**
     * How a writer waits for work: after work it spins a little (a push often follows a push), then sleeps in
     * {@link LockSupport#parkNanos} until a task is queued ({@link PartitionAgent#wake}), its next eviction pass is
     * due, or {@code longestPark} has passed. While there is progress that no task signals (a snapshot being streamed,
     * an eviction pass under way, the writers closing) it backs off from 1 us to 1 ms parks instead, as a timed
     * strategy would.
     *
     * <p>No wake-up is lost. The writer sets {@link PartitionAgent#sleeping} (a volatile write) and then reads the
     * queue's head and tail (volatile reads) before it parks; whoever queues a task advances the tail with a CAS and
     * then reads {@code sleeping} (as do {@link #startSnapshot} and {@link #close()} after their volatile writes, which
     * the writer reads after setting {@code sleeping}). Volatile accesses are totally ordered, so either the writer
     * sees the task and does not park, or the queuing thread sees {@code sleeping} and unparks it (an unpark before the
     * park makes the park return at once). {@code WriterWakeUpTest} in {@code stress/} checks this order.
     */
    static final class WriterIdle implements IdleStrategy {
        /** About 2 us here (a pause is ~90 ns): 100 cost each writer ~8 us of CPU per idle gap between rtt4k pushes. */
        private static final int SPINS = 20;

        private static final long MIN_BACKOFF_NS = 1_000;
        private static final long MAX_BACKOFF_NS = 1_000_000;

        private final PartitionAgent agent;
        private final BooleanSupplier closing;
        private final long longestPark;
        private int spins;
        private long backoffNs = MIN_BACKOFF_NS;
        /** The writer found a task queued after its last work and has done none since. */
        private boolean queuedButIdle;

        WriterIdle(final PartitionAgent agent, final BooleanSupplier closing, final long longestPark) {
            this.agent = agent;
            this.closing = closing;
            this.longestPark = longestPark;
        }

        @Override
        public void idle(final int workCount) {
            if (workCount > 0) {
                reset();
                return;
            }
            idle();
        }

        @Override
        public void idle() {
            if (spins < SPINS) {
                spins++;
                Thread.onSpinWait();
                return;
            }
            if (!agent.prepareToSleep()) {
                // A task came: run it at once. If the writer still finds nothing it can do with a task queued (its
                // pushes held while a snapshot's saved rows are over their limit, or a task whose element is not yet
                // stored), back off instead of spinning until the task can run.
                if (queuedButIdle) {
                    backOff();
                }
                queuedButIdle = true;
                return;
            }
            try {
                // Read after the writer is marked sleeping: a snapshot started or a close begun before this read is
                // seen here, and one after it finds the writer sleeping and unparks it (the same order as a task's).
                final long sleep = closing.getAsBoolean() ? 0 : agent.sleepNanos(longestPark);
                if (sleep > 0) {
                    LockSupport.parkNanos(sleep);
                } else {
                    backOff();
                }
            } finally {
                agent.awake();
            }
        }

        private void backOff() {
            LockSupport.parkNanos(backoffNs);
            backoffNs = Math.min(MAX_BACKOFF_NS, 2 * backoffNs);
        }

        @Override
        public void reset() {
            spins = 0;
            backoffNs = MIN_BACKOFF_NS;
            queuedButIdle = false;
        }

        @Override
        public String alias() {
            return "writer-idle";
        }
    }
}
