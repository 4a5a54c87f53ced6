package io.pscluster.server.table;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * An interrupt does not stop a writer: only close() does. A writer that ended on one (as an Agrona {@code AgentRunner}
 * ends its agent) would strand every push and control task of its partition.
 */
class PartitionWritersInterruptTest {
    private static final int PARTITIONS = 2;
    private static final long GENEROUS_SECONDS = 10;

    private final PartitionWriters writers = new PartitionWriters("interrupt", PARTITIONS, 16, List::of);

    @AfterEach
    void close() {
        writers.close();
    }

    @Test
    void shouldGoOnAfterATaskInterruptsItsOwnThread() throws Exception {
        // As code that catches an InterruptedException and re-asserts it does, on the writer's thread.
        writers.runOn(1, partition -> {
                    Thread.currentThread().interrupt();
                    return partition;
                })
                .get(GENEROUS_SECONDS, TimeUnit.SECONDS);
        awaitIdleCycles(1);

        assertPushesAndControlTasksRun();
        // The interrupt was cleared, not left for the next task to trip over.
        assertThat(writers.runOn(1, partition -> Thread.currentThread().isInterrupted())
                        .get(GENEROUS_SECONDS, TimeUnit.SECONDS))
                .isFalse();
    }

    @Test
    void shouldNotLeaveAnInterruptForTheNextTaskOfTheSameBatch() throws Exception {
        // The three tasks are queued while the writer is held in the first, so it drains the other two in one batch.
        final CountDownLatch held = new CountDownLatch(1);
        final CountDownLatch release = new CountDownLatch(1);
        final CompletableFuture<Object> holding = writers.runOn(0, partition -> {
            held.countDown();
            hold(release);
            return null;
        });
        assertThat(held.await(GENEROUS_SECONDS, TimeUnit.SECONDS)).isTrue();
        final CompletableFuture<Object> interrupting = writers.runOn(0, partition -> {
            Thread.currentThread().interrupt();
            return null;
        });
        final CompletableFuture<Boolean> next =
                writers.runOn(0, partition -> Thread.currentThread().isInterrupted());

        release.countDown();

        holding.get(GENEROUS_SECONDS, TimeUnit.SECONDS);
        interrupting.get(GENEROUS_SECONDS, TimeUnit.SECONDS);
        assertThat(next.get(GENEROUS_SECONDS, TimeUnit.SECONDS))
                .as("the next task saw the interrupt")
                .isFalse();
    }

    @Test
    void shouldFailTheTasksQueuedBehindAWriterThatCloseGaveUpOnOnceItComesOut() throws Exception {
        final PartitionWriters quick = new PartitionWriters(
                "stuck", 1, 16, List::of, PartitionWriters.IDLE_PARK_NS, TimeUnit.HOURS.toNanos(1), 200);
        final CountDownLatch held = new CountDownLatch(1);
        final CountDownLatch release = new CountDownLatch(1);
        final CompletableFuture<Object> stuck = quick.runOn(0, partition -> {
            held.countDown();
            hold(release);
            return null;
        });
        assertThat(held.await(GENEROUS_SECONDS, TimeUnit.SECONDS)).isTrue();
        final CompletableFuture<Integer> behind = quick.runOn(0, partition -> partition);

        assertThatThrownBy(quick::close).hasMessageContaining("stuck");
        release.countDown();

        stuck.get(GENEROUS_SECONDS, TimeUnit.SECONDS);
        // Neither run against closed writers nor left pending forever: failed.
        assertThatThrownBy(() -> behind.get(GENEROUS_SECONDS, TimeUnit.SECONDS))
                .isInstanceOf(ExecutionException.class)
                .hasMessageContaining("closed");
    }

    /** Holds a writer until {@code release}; nothing here interrupts a writer while it is held. */
    private static void hold(final CountDownLatch release) {
        try {
            release.await();
        } catch (InterruptedException e) {
            throw new IllegalStateException("a held writer was interrupted", e);
        }
    }

    @Test
    void shouldGoOnAfterItsThreadIsInterruptedWhileItSleeps() throws Exception {
        final Thread writer =
                writers.runOn(0, partition -> Thread.currentThread()).get(GENEROUS_SECONDS, TimeUnit.SECONDS);
        for (int i = 0; i < 100; i++) {
            writer.interrupt();
            LockSupport.parkNanos(TimeUnit.MICROSECONDS.toNanos(100));
        }
        awaitIdleCycles(0);

        assertThat(writer.isAlive()).isTrue();
        assertPushesAndControlTasksRun();
    }

    /**
     * Waits (boundedly) for the writer of {@code partition} to go to sleep: it has then been through the idle cycle
     * after the interrupt, where one would stop it. A writer that stopped is not found asleep; the asserts after this
     * then fail.
     */
    private void awaitIdleCycles(final int partition) {
        final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(GENEROUS_SECONDS);
        while (!writers.sleeping(partition) && System.nanoTime() < deadline) {
            LockSupport.parkNanos(TimeUnit.MILLISECONDS.toNanos(1));
        }
    }

    private void assertPushesAndControlTasksRun() throws Exception {
        final CountDownLatch ran = new CountDownLatch(PARTITIONS);
        assertThat(writers.offer(
                        partition -> {
                            writers.applied(0);
                            ran.countDown();
                        },
                        (1L << PARTITIONS) - 1))
                .isTrue();
        assertThat(ran.await(GENEROUS_SECONDS, TimeUnit.SECONDS))
                .as("both writers applied the push")
                .isTrue();
        assertThat(writers.runOnAll(partition -> partition).get(GENEROUS_SECONDS, TimeUnit.SECONDS))
                .containsExactly(0, 1);
        assertThat(writers.pending()).isZero();
    }
}
