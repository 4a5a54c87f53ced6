package io.pscluster.server.table;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * Idle writers sleep until work comes. Here they would sleep for an hour on their own (and their eviction passes are
 * an hour apart), so every task below runs only because queuing it woke the writer it went to.
 */
class PartitionWritersWakeTest {
    private static final int PARTITIONS = 2;
    private static final long HOUR = TimeUnit.HOURS.toNanos(1);
    private static final long GENEROUS_SECONDS = 10;

    private final PartitionWriters writers = new PartitionWriters("wake", PARTITIONS, 16, List::of, HOUR, HOUR, 10_000);

    @AfterEach
    void close() {
        writers.close();
    }

    /** Waits until every writer has marked itself sleeping (it parks right after). */
    private void awaitEveryWriterSleeping() {
        final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(GENEROUS_SECONDS);
        for (int p = 0; p < PARTITIONS; p++) {
            while (!writers.sleeping(p)) {
                assertThat(System.nanoTime() - deadline)
                        .as("writer %d went to sleep", p)
                        .isNegative();
                LockSupport.parkNanos(TimeUnit.MILLISECONDS.toNanos(1));
            }
        }
    }

    @Test
    void shouldApplyAPushQueuedToSleepingWritersAndLetThemSleepAgain() throws InterruptedException {
        for (int round = 0; round < 3; round++) {
            awaitEveryWriterSleeping();
            final CountDownLatch ran = new CountDownLatch(PARTITIONS);
            final boolean queued = writers.offer(
                    partition -> {
                        writers.applied(0);
                        ran.countDown();
                    },
                    (1L << PARTITIONS) - 1);

            assertThat(queued).isTrue();
            assertThat(ran.await(GENEROUS_SECONDS, TimeUnit.SECONDS))
                    .as("round %d: both sleeping writers ran the push", round)
                    .isTrue();
        }
        assertThat(writers.pending()).isZero();
    }

    @Test
    void shouldApplyAPushWhoseWakesWereDeferredOnceTheyArePaid() throws InterruptedException {
        for (int round = 0; round < 3; round++) {
            awaitEveryWriterSleeping();
            final CountDownLatch ran = new CountDownLatch(PARTITIONS);
            final PartitionWriters.DeferredWakes wakes = writers.deferredWakes();
            final boolean queued = writers.offer(
                    partition -> {
                        writers.applied(0);
                        ran.countDown();
                    },
                    (1L << PARTITIONS) - 1,
                    wakes);

            assertThat(queued).isTrue();
            wakes.wakeNow();
            assertThat(ran.await(GENEROUS_SECONDS, TimeUnit.SECONDS))
                    .as("round %d: both sleeping writers ran the push once its wakes were paid", round)
                    .isTrue();
            // Paid once: a second call has nobody left to wake.
            wakes.wakeNow();
        }
        assertThat(writers.pending()).isZero();
    }

    @Test
    void shouldRunControlAndBulkTasksQueuedToSleepingWriters() throws Exception {
        awaitEveryWriterSleeping();
        assertThat(writers.runOnAll(partition -> partition).get(GENEROUS_SECONDS, TimeUnit.SECONDS))
                .containsExactly(0, 1);

        awaitEveryWriterSleeping();
        assertThat(writers.runOn(1, partition -> 10 + partition).get(GENEROUS_SECONDS, TimeUnit.SECONDS))
                .isEqualTo(11);
    }

    @Test
    void shouldCloseSleepingWritersWithoutWaitingForThemToWakeOnTheirOwn() {
        awaitEveryWriterSleeping();

        // A writer left asleep would not stop within close()'s wait, and close() would throw naming it stuck.
        writers.close();

        assertThat(writers.isClosing()).isTrue();
    }
}
