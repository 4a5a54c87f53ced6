package io.pscluster.server.table;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.List;
import java.util.concurrent.CountDownLatch;
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
                            writers.applied();
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
