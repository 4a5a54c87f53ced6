package io.pscluster.server;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.server.table.ParameterTable;
import java.util.HashSet;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * Holds every writer of a {@link Shard} inside a control task until released, so that the shard acknowledges pushes
 * without applying them. The shard does not expose its writers: the control task is a snapshot of a table of its own
 * ({@value #TABLE}, one row per partition) whose slot filter, run by each writer, waits. The shard must own every
 * slot when {@link #block} is called. Close it in {@code @AfterEach} (before the shard), so that a failing test
 * leaves no writer blocked.
 */
final class BlockedWriters implements AutoCloseable {
    static final String TABLE = "writer-blocker";
    private static final long TIMEOUT_SECONDS = 10;

    private final CountDownLatch release = new CountDownLatch(1);
    private CompletableFuture<Void> stuck;

    private BlockedWriters() {}

    /** Blocks the {@code partitions} writers of {@code shard}; returns once every one of them is blocked. */
    static BlockedWriters block(final Shard shard, final int partitions) throws Exception {
        shard.createTable(TableSchema.newBuilder()
                .setName(TABLE)
                .setKind(TableKind.SPARSE)
                .setDim(1)
                .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(1f))
                .build());
        final ParameterTable table = shard.table(TABLE);
        final long[] keys = new long[partitions];
        final Set<Integer> found = new HashSet<>();
        for (long key = 0; found.size() < partitions; key++) {
            if (found.add(table.slotOf(key) % partitions)) {
                keys[found.size() - 1] = key;
            }
        }
        shard.push(TABLE, 1, 0, 0, keys, new float[partitions]);
        shard.awaitQuiescent();

        final BlockedWriters blocked = new BlockedWriters();
        final Set<Integer> entered = ConcurrentHashMap.newKeySet();
        final CountDownLatch allEntered = new CountDownLatch(partitions);
        blocked.stuck = CompletableFuture.runAsync(
                () -> {
                    try {
                        table.snapshot(slot -> {
                            if (entered.add(slot % partitions)) {
                                allEntered.countDown();
                            }
                            awaitUninterruptibly(blocked.release);
                            return false;
                        });
                    } catch (InterruptedException e) {
                        throw new IllegalStateException(e);
                    }
                },
                task -> {
                    final Thread thread = new Thread(task, "writer-blocker");
                    thread.setDaemon(true);
                    thread.start();
                });
        assertThat(allEntered.await(TIMEOUT_SECONDS, TimeUnit.SECONDS))
                .as("every writer blocked")
                .isTrue();
        return blocked;
    }

    /** Lets the writers go on and waits until they have left the blocking task. */
    void release() throws Exception {
        release.countDown();
        stuck.get(TIMEOUT_SECONDS, TimeUnit.SECONDS);
    }

    @Override
    public void close() {
        release.countDown();
    }

    private static void awaitUninterruptibly(final CountDownLatch latch) {
        boolean interrupted = false;
        while (true) {
            try {
                latch.await();
                break;
            } catch (InterruptedException e) {
                interrupted = true;
            }
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
    }
}
