package io.pscluster.faults;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.pscluster.local.AdminCalls;
import io.pscluster.local.CounterTable;
import io.pscluster.local.FaultsAllowed;
import io.pscluster.local.LocalCluster;
import io.pscluster.proto.v1.RebalanceResponse;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;

/**
 * Large calls, which the SDK sends in slot order (a copy sorted by slot, its answers scattered back to the caller's
 * places), back to back from before slots move to an added shard until after: requests that meet the move are refused
 * by the old owners and re-split under the new routing, by positions of the sorted copy. Every push adds a weight of
 * its own (1 to 4) to each key, once per repeat, so a key's value must end at the acknowledged pushes times that, and
 * a pull must answer each place with its own key's value.
 */
@ExtendWith(FaultsAllowed.class)
class LargeCallRebalanceTest {
    /** Above the SDK's threshold for slot order (262,144 keys). */
    private static final int DISTINCT = 300_000;
    /** Keys pushed twice in every call: their rows must get both. */
    private static final int REPEATED = 5_000;

    @TempDir
    Path dir;

    @Test
    void shouldApplyEveryLargePushOnceAndAnswerEveryPlaceWhileSlotsMove() throws Exception {
        final SplittableRandom random = new SplittableRandom(71);
        final long[] distinct = random.longs(DISTINCT).distinct().toArray();
        assertThat(distinct).hasSize(DISTINCT);
        final long[] keys = new long[DISTINCT + REPEATED];
        System.arraycopy(distinct, 0, keys, 0, DISTINCT);
        for (int i = 0; i < REPEATED; i++) {
            keys[DISTINCT + i] = distinct[i];
        }
        shuffle(keys, random);
        final float[] gradients = new float[keys.length];
        for (int i = 0; i < keys.length; i++) {
            gradients[i] = -weight(keys[i]);
        }

        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(2)
                        .checkpointRoot(dir.resolve("checkpoints").toUri().toString())
                        .leaseMs(3_000)
                        .leaseMarginMs(500)
                        .heartbeatIntervalMs(300)
                        .start();
                PsClient client = PsClient.connect(new PsClient.Context()
                        .proxyAddress(cluster.proxyAddress())
                        .deadlineMs(120_000))) {
            final PsTable table = client.createTable(CounterTable.schema("large"));
            final AtomicLong acknowledged = new AtomicLong();
            final AtomicLong started = new AtomicLong();
            final List<Throwable> failures = new CopyOnWriteArrayList<>();
            final List<String> badPulls = new CopyOnWriteArrayList<>();
            final AtomicBoolean running = new AtomicBoolean(true);
            final Thread pusher = new Thread(
                    () -> {
                        while (running.get()) {
                            started.incrementAndGet();
                            try {
                                table.push(keys, gradients);
                                acknowledged.incrementAndGet();
                            } catch (RuntimeException e) {
                                failures.add(e);
                                return;
                            }
                        }
                    },
                    "large-pusher");
            // Pulls during the move: each place holds its own key's sum (its weight times the count of pushes, twice
            // for a repeated key), of at most the pushes started by the pull's end. Not at least those acknowledged
            // before it: in async mode an acknowledged push may still be queued on a shard's writer.
            final Thread puller = new Thread(
                    () -> {
                        while (running.get() && badPulls.isEmpty()) {
                            final float[] values;
                            try {
                                values = table.pull(keys);
                            } catch (RuntimeException e) {
                                failures.add(e);
                                return;
                            }
                            final long high = started.get();
                            badPulls.addAll(outOfRange(keys, values, 0, high, 10));
                        }
                    },
                    "large-puller");
            pusher.start();
            puller.start();
            await().atMost(Duration.ofSeconds(60)).until(() -> acknowledged.get() >= 2 || !failures.isEmpty());

            final int added = cluster.addShard();
            final RebalanceResponse done = AdminCalls.rebalance(cluster.proxyAddress(), false);
            assertThat(done.getMovesList()).isNotEmpty();
            await().atMost(Duration.ofSeconds(60)).untilAsserted(() -> {
                assertThat(AdminCalls.status(cluster.proxyAddress()).getPendingRestoresCount())
                        .isZero();
                assertThat(cluster.shard(added).shard().ownedSlots().cardinality())
                        .isPositive();
            });
            final long afterMove = acknowledged.get();
            await().atMost(Duration.ofSeconds(60))
                    .until(() -> acknowledged.get() >= afterMove + 2 || !failures.isEmpty());
            running.set(false);
            pusher.join(120_000);
            puller.join(120_000);

            assertThat(failures).as("calls that failed").isEmpty();
            assertThat(badPulls).as("pulls during the move").isEmpty();
            assertThat(cluster.shard(added).shard().table("large").rowCount())
                    .as("the added shard holds moved rows")
                    .isPositive();
            final long pushes = acknowledged.get();
            assertThat(started.get()).isEqualTo(pushes);
            await().atMost(Duration.ofSeconds(30))
                    .untilAsserted(() -> assertThat(outOfRange(keys, table.pull(keys), pushes, pushes, 10))
                            .isEmpty());
        }
    }

    /** What each push adds to a key's value: 1 to 4, so that a place answered with another key's value shows. */
    private static float weight(final long key) {
        return 1 + (key & 3);
    }

    /**
     * Places whose value is not their key's sum of {@code low .. high} pushes: its weight times the count, twice that
     * for a repeated key.
     */
    private static List<String> outOfRange(
            final long[] keys, final float[] values, final long low, final long high, final int most) {
        final java.util.Map<Long, Integer> repeats = new java.util.HashMap<>();
        for (final long key : keys) {
            repeats.merge(key, 1, Integer::sum);
        }
        final List<String> wrong = new ArrayList<>();
        for (int i = 0; i < keys.length && wrong.size() < most; i++) {
            final float step = weight(keys[i]) * repeats.get(keys[i]);
            final float pushes = values[i] / step;
            if (pushes != Math.rint(pushes) || pushes < low || pushes > high) {
                wrong.add("place " + i + ", key " + keys[i] + " (adding " + step + " a push): " + values[i]
                        + ", expected " + low * step + ".." + high * step + " in steps of " + step);
            }
        }
        return wrong;
    }

    private static void shuffle(final long[] keys, final SplittableRandom random) {
        for (int i = keys.length - 1; i > 0; i--) {
            final int j = random.nextInt(i + 1);
            final long swap = keys[i];
            keys[i] = keys[j];
            keys[j] = swap;
        }
    }
}
