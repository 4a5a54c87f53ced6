package io.pscluster.server.table;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.locks.LockSupport;
import java.util.function.IntFunction;
import java.util.function.Supplier;
import org.agrona.concurrent.Agent;
import org.agrona.concurrent.AgentRunner;
import org.agrona.concurrent.BackoffIdleStrategy;
import org.agrona.concurrent.ManyToOneConcurrentArrayQueue;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The single writers of a shard: one {@link Agent} per partition, each draining its own
 * {@link ManyToOneConcurrentArrayQueue} of tasks, so that every table's rows in partition {@code p} are changed by
 * one thread only and readers need no locks. A slot belongs to partition {@code slot % partitionCount()}.
 *
 * <p>Pushes are bounded: {@link #offer} reserves one unit of capacity per partition a push touches, with a CAS, and
 * refuses the push whole when the shard's capacity is used up (backpressure rather than unbounded queues). Control
 * tasks ({@link #runOnAll}) have their own budget and wait for room rather than being refused; they fail only once
 * the writers are closed. Tasks run in queue order per partition, so a control task runs after every push queued
 * before it.
 */
public final class PartitionWriters implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(PartitionWriters.class);
    private static final int CONTROL_HEADROOM = 64;
    private static final long EVICTION_INTERVAL_MS = 1_000;
    private static final int CLOSING_BIT = 1 << 30;

    /** Work for one partition's writer. */
    @FunctionalInterface
    public interface Task {
        void run(int partition);
    }

    private final PartitionAgent[] agents;
    private final List<AgentRunner> runners = new ArrayList<>();
    private final AtomicInteger reserved = new AtomicInteger();
    private final AtomicInteger controlReserved = new AtomicInteger();
    private final int capacity;
    private volatile boolean closing;
    private volatile boolean closed;

    /**
     * @param capacity the most push parts queued and not yet applied, over all partitions.
     * @param tables the shard's tables, for TTL eviction when a writer is idle.
     */
    public PartitionWriters(
            final String name,
            final int partitions,
            final int capacity,
            final Supplier<? extends Iterable<ParameterTable>> tables) {
        if (partitions < 1 || partitions > 64) {
            throw new IllegalArgumentException("partitions=" + partitions + " must be in 1..64");
        }
        if (capacity < partitions) {
            // A push may touch every partition and reserves one unit on each: less could never be accepted.
            throw new IllegalArgumentException(
                    "capacity=" + capacity + " must be >= partitions=" + partitions + " (a push may touch them all)");
        }
        this.capacity = capacity;
        this.agents = new PartitionAgent[partitions];
        for (int p = 0; p < partitions; p++) {
            agents[p] = new PartitionAgent(name + "-p" + p, p, capacity + CONTROL_HEADROOM, tables);
            // Idle writers back off to a 1 ms park: two cores are shared with the gRPC threads.
            final AgentRunner runner =
                    new AgentRunner(new BackoffIdleStrategy(10, 20, 1_000, 1_000_000), this::onError, null, agents[p]);
            runners.add(runner);
            AgentRunner.startOnThread(runner, runnable -> {
                final Thread thread = new Thread(runnable);
                thread.setDaemon(true);
                return thread;
            });
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
        final int parts = Long.bitCount(partitionMask);
        int current;
        do {
            current = reserved.get();
            // The closing bit lives in the same word, so no reservation can succeed once close() has begun.
            if ((current & CLOSING_BIT) != 0 || current + parts > capacity) {
                return false;
            }
        } while (!reserved.compareAndSet(current, current + parts));
        for (int p = 0; p < agents.length; p++) {
            if ((partitionMask & (1L << p)) != 0 && !agents[p].queue.offer(task)) {
                // Cannot happen: each queue holds capacity plus headroom and reservations bound what is queued.
                throw new IllegalStateException("partition " + p + " queue full despite a reservation");
            }
        }
        return true;
    }

    /** Releases one unit of push capacity (a push finished on one partition). */
    void applied() {
        reserved.decrementAndGet();
    }

    /** True once {@link #close()} has begun: pushes are refused from then on. */
    public boolean isClosing() {
        return closing;
    }

    /** Push parts queued and not yet applied. */
    public int pending() {
        return reserved.get() & ~CLOSING_BIT;
    }

    /**
     * Runs {@code work} on every partition's writer, after what is queued there, and completes with the results in
     * partition order. Waits for room rather than failing; completes exceptionally once the writers are closed.
     */
    public <T> CompletableFuture<List<T>> runOnAll(final IntFunction<T> work) {
        final List<CompletableFuture<T>> parts = new ArrayList<>();
        if (closed) {
            return CompletableFuture.failedFuture(new IllegalStateException("partition writers are closed"));
        }
        // Control tasks have their own budget (the queues' headroom), so they never take room a push reserved.
        if (!reserveControl(agents.length)) {
            return CompletableFuture.failedFuture(new IllegalStateException("partition writers are closed"));
        }
        for (int p = 0; p < agents.length; p++) {
            final ControlTask<T> task = new ControlTask<>(work);
            parts.add(task.result);
            if (!agents[p].queue.offer(task)) {
                throw new IllegalStateException("partition " + p + " queue full despite a control reservation");
            }
            if (closed) {
                // The writers may have stopped before taking it: nobody else will complete it.
                task.fail();
            }
        }
        return CompletableFuture.allOf(parts.toArray(CompletableFuture[]::new)).thenApply(done -> {
            final List<T> results = new ArrayList<>();
            parts.forEach(part -> results.add(part.join()));
            return results;
        });
    }

    /** Waits for {@code units} of control budget; false if the writers closed meanwhile. */
    private boolean reserveControl(final int units) {
        while (true) {
            final int current = controlReserved.get();
            if (current + units <= CONTROL_HEADROOM && controlReserved.compareAndSet(current, current + units)) {
                return true;
            }
            if (closed) {
                return false;
            }
            LockSupport.parkNanos(TimeUnit.MICROSECONDS.toNanos(50));
        }
    }

    /** A control task: completes its future with what it computed, and frees its unit of control budget. */
    private final class ControlTask<T> implements Task {
        final CompletableFuture<T> result = new CompletableFuture<>();
        private final IntFunction<T> work;

        ControlTask(final IntFunction<T> work) {
            this.work = work;
        }

        @Override
        public void run(final int partition) {
            try {
                result.complete(work.apply(partition));
            } catch (Throwable failure) {
                result.completeExceptionally(failure);
            } finally {
                controlReserved.decrementAndGet();
            }
        }

        void fail() {
            result.completeExceptionally(new IllegalStateException("partition writers are closed"));
        }
    }

    private void onError(final Throwable failure) {
        LOG.error("partition writer duty cycle failed", failure);
    }

    /**
     * Refuses new pushes, applies what is queued, stops every writer, then fails any control task that arrived too
     * late to run (its caller is not left waiting).
     */
    @Override
    public void close() {
        if (closing) {
            return;
        }
        closing = true;
        reserved.getAndUpdate(current -> current | CLOSING_BIT);
        // Every push acknowledged so far holds a reservation until it is applied: wait for them all.
        final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (pending() > 0 && System.nanoTime() < deadline) {
            LockSupport.parkNanos(TimeUnit.MILLISECONDS.toNanos(1));
        }
        if (pending() > 0) {
            LOG.warn("{} push parts were not applied within 30 s of close", pending());
        }
        runners.forEach(AgentRunner::close);
        closed = true;
        for (final PartitionAgent agent : agents) {
            Task late;
            while ((late = agent.queue.poll()) != null) {
                if (late instanceof ControlTask<?> control) {
                    control.fail();
                }
            }
        }
    }

    /** One partition's writer: drains its queue; when idle, evicts rows past their table's TTL once a second. */
    private static final class PartitionAgent implements Agent {
        final ManyToOneConcurrentArrayQueue<Task> queue;
        private final String name;
        private final int partition;
        private final Supplier<? extends Iterable<ParameterTable>> tables;
        private long lastEvictionMs = System.currentTimeMillis();

        PartitionAgent(
                final String name,
                final int partition,
                final int capacity,
                final Supplier<? extends Iterable<ParameterTable>> tables) {
            this.name = name;
            this.partition = partition;
            this.queue = new ManyToOneConcurrentArrayQueue<>(capacity);
            this.tables = tables;
        }

        @Override
        public int doWork() {
            // Nothing may escape: Agrona ends an agent whose duty cycle throws an Error, and a dead writer would
            // strand its partition's pushes and control tasks.
            final int drained = queue.drain(this::runSafely, 256);
            if (drained == 0) {
                final long now = System.currentTimeMillis();
                if (now - lastEvictionMs >= EVICTION_INTERVAL_MS) {
                    lastEvictionMs = now;
                    for (final ParameterTable table : tables.get()) {
                        runSafely(partition -> table.evictExpired(partition));
                    }
                }
            }
            return drained;
        }

        private void runSafely(final Task task) {
            try {
                task.run(partition);
            } catch (Throwable failure) {
                LOG.error("partition {} writer: a task failed; the writer goes on", partition, failure);
            }
        }

        @Override
        public String roleName() {
            return name;
        }
    }
}
