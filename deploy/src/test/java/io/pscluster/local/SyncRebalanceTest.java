package io.pscluster.local;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.pscluster.proto.v1.JobSpec;
import io.pscluster.proto.v1.RebalanceResponse;
import io.pscluster.proto.v1.UpdateMode;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A rebalance while a SYNC job runs: the giving shards hold the gradients of the clock under way for slots that would
 * move, so the rebalance waits for a moment when none is held for them (fencing, lifting and trying again) and then
 * moves them; every worker reads, at every clock, every key moved by exactly the clocks before (nothing held was
 * lost, nothing applied twice).
 */
class SyncRebalanceTest {
    private static final int WORKERS = 2;
    private static final int CLOCKS = 60;
    private static final int KEYS = 512;
    private static final int PARTS = 4;

    @TempDir
    Path dir;

    private static long[] keys() {
        final long[] keys = new long[KEYS];
        for (int i = 0; i < KEYS; i++) {
            keys[i] = i * 7_919L + 3;
        }
        return keys;
    }

    @Test
    void shouldMoveSlotsBetweenClocksOfASyncJobLosingNoGradient() throws Exception {
        try (LocalCluster cluster = LocalCluster.builder()
                .shards(2)
                .checkpointRoot(dir.resolve("checkpoints").toUri().toString())
                .start()) {
            final AtomicLong clock = new AtomicLong();
            final List<String> wrong = java.util.Collections.synchronizedList(new ArrayList<>());
            final ExecutorService threads = Executors.newFixedThreadPool(WORKERS);
            final List<Future<?>> workers = new ArrayList<>();
            for (int w = 0; w < WORKERS; w++) {
                workers.add(threads.submit(() -> {
                    try (PsClient client = PsClient.connect(new PsClient.Context()
                            .proxyAddress(cluster.proxyAddress())
                            .deadlineMs(60_000)
                            .job(JobSpec.newBuilder()
                                    .setJobId("sync-rebalance")
                                    .setMode(UpdateMode.SYNC)
                                    .setExpectedWorkers(WORKERS)
                                    .build()))) {
                        final PsTable table = client.createTable(CounterTable.schema("sync_rebalance"));
                        final float[] minusOnes = new float[KEYS];
                        Arrays.fill(minusOnes, -1f);
                        float perClock = Float.NaN;
                        for (int c = 0; c < CLOCKS; c++) {
                            final float[] values = table.pull(keys());
                            if (c == 1) {
                                perClock = values[0];
                            }
                            for (int i = 0; i < KEYS; i++) {
                                if (c > 0 && values[i] != c * perClock) {
                                    wrong.add("worker " + client.workerId() + " at clock " + c + ": key " + keys()[i]
                                            + " is " + values[i] + ", expected " + c * perClock);
                                    break;
                                }
                            }
                            // In parts, a few ms apart: a fence most often finds a clock's gradients half pushed.
                            for (int part = 0; part < PARTS; part++) {
                                table.push(
                                        Arrays.copyOfRange(keys(), part * KEYS / PARTS, (part + 1) * KEYS / PARTS),
                                        Arrays.copyOf(minusOnes, KEYS / PARTS));
                                TimeUnit.MILLISECONDS.sleep(5);
                            }
                            client.clock();
                            clock.accumulateAndGet(c + 1, Math::max);
                        }
                    }
                    return null;
                }));
            }
            await().atMost(Duration.ofSeconds(60)).until(() -> clock.get() >= 5);
            final int added = cluster.addShard();
            final RebalanceResponse moved = AdminCalls.rebalance(cluster.proxyAddress(), false);
            final long clockAtMove = clock.get();
            for (final Future<?> worker : workers) {
                worker.get(180, TimeUnit.SECONDS);
            }
            threads.shutdownNow();

            assertThat(moved.getMovesCount()).isPositive();
            assertThat(clockAtMove).as("the move came before the job's end").isLessThan(CLOCKS);
            assertThat(cluster.shard(added).shard().ownedSlots().cardinality()).isBetween(1365, 1366);
            assertThat(wrong).isEmpty();
            assertThat(AdminCalls.status(cluster.proxyAddress()).getRollbacksTotal())
                    .isZero();
        }
    }
}
