package io.pscluster.server.table;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.catchThrowable;

import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.wire.TableSchemas;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * The writers as readers and pushers see them: a writer that is stuck holds up neither reads nor the queueing of
 * pushes (only their application), and the queues are bounded.
 */
class PartitionWritersTest {
    private static final int PARTITIONS = 2;
    private static final Duration GENEROUS = Duration.ofSeconds(10);

    private final TableFixture fixture = new TableFixture(PARTITIONS, 8);
    // Released in @AfterEach too, so that a failing test leaves no writer blocked (close() drains the queues).
    private final CountDownLatch release = new CountDownLatch(1);

    @AfterEach
    void releaseAndClose() {
        release.countDown();
        fixture.close();
    }

    /** SGD with lr 1 from zeros: a row holds minus the sum of its gradients. */
    private static TableSchema schema() {
        return TableSchema.newBuilder()
                .setName("writers")
                .setKind(TableKind.SPARSE)
                .setDim(4)
                .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(1f))
                .build();
    }

    /** Keys of which at least one lives in each partition. */
    private static long[] keysInEveryPartition(final ParameterTable table) {
        final long[] keys = new long[8];
        for (int i = 0; i < keys.length; i++) {
            keys[i] = 31L * i;
        }
        final long partitions = Arrays.stream(table.slotsOf(keys))
                .map(slot -> slot % PARTITIONS)
                .distinct()
                .count();
        assertThat(partitions).as("partitions the keys fall in").isEqualTo(PARTITIONS);
        return keys;
    }

    private static float[] filled(final int length, final float value) {
        final float[] values = new float[length];
        Arrays.fill(values, value);
        return values;
    }

    /** Blocks every writer on {@link #release} and returns once all of them are blocked. */
    private CompletableFuture<List<Object>> blockEveryWriter() throws InterruptedException {
        final CountDownLatch blocked = new CountDownLatch(PARTITIONS);
        final CompletableFuture<List<Object>> stuck = fixture.writers().runOnAll(partition -> {
            blocked.countDown();
            try {
                release.await();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            return null;
        });
        assertThat(blocked.await(GENEROUS.toSeconds(), TimeUnit.SECONDS))
                .as("every writer blocked")
                .isTrue();
        return stuck;
    }

    @Test
    void shouldServePullsAndQueuePushesWhenEveryWriterIsBlocked() throws Exception {
        final ParameterTable table = fixture.create(schema());
        final long[] keys = keysInEveryPartition(table);
        final int[] slots = table.slotsOf(keys);
        table.push(keys, filled(keys.length * 4, -1f));
        final CompletableFuture<List<Object>> stuck = blockEveryWriter();

        // A push is accepted while the writers are stuck; it is queued, not applied.
        assertThat(table.offerPush(keys, slots, filled(keys.length * 4, -2f))).isTrue();
        assertThat(fixture.writers().pending()).isEqualTo(PARTITIONS);

        // Pulls from another thread complete meanwhile and still read the rows as they were.
        final float[] during =
                CompletableFuture.supplyAsync(() -> table.pull(keys)).get(GENEROUS.toSeconds(), TimeUnit.SECONDS);
        assertThat(during).containsOnly(1f);
        final byte[] bytes = new byte[keys.length * 4 * 4];
        CompletableFuture.runAsync(() -> table.pull(keys, slots, bytes)).get(GENEROUS.toSeconds(), TimeUnit.SECONDS);
        assertThat(ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).getFloat(bytes.length - 4))
                .isEqualTo(1f);
        assertThat(stuck).as("writers still blocked").isNotDone();

        release.countDown();
        stuck.get(GENEROUS.toSeconds(), TimeUnit.SECONDS);
        table.awaitApplied();

        assertThat(table.pull(keys)).containsOnly(3f);
        assertThat(fixture.writers().pending()).isZero();
    }

    @Test
    void shouldRefusePushesBeyondTheCapacityAndAcceptThemAgainWhenTheWritersCatchUp() throws Exception {
        final ParameterTable table = fixture.create(schema());
        final long[] keys = keysInEveryPartition(table);
        final int[] slots = table.slotsOf(keys);
        final CompletableFuture<List<Object>> stuck = blockEveryWriter();

        // Capacity 8 units; a push to both partitions takes 2.
        for (int i = 0; i < 4; i++) {
            assertThat(table.offerPush(keys, slots, filled(keys.length * 4, -1f)))
                    .as("push %d", i)
                    .isTrue();
        }
        assertThat(table.offerPush(keys, slots, filled(keys.length * 4, -1f)))
                .as("push past the capacity")
                .isFalse();
        assertThat(fixture.writers().pending()).isEqualTo(8);

        release.countDown();
        stuck.get(GENEROUS.toSeconds(), TimeUnit.SECONDS);
        table.awaitApplied();

        assertThat(fixture.writers().pending()).isZero();
        assertThat(table.offerPush(keys, slots, filled(keys.length * 4, -1f))).isTrue();
        table.awaitApplied();
        // Four accepted pushes and the one after: the refused push changed nothing.
        assertThat(table.pull(keys)).containsOnly(5f);
    }

    @Test
    void shouldRefuseRequestsPushesPastTheQueuedBytesButOneAloneAndGiveTheBytesBackAsTheyAreApplied() throws Exception {
        final ParameterTable table = fixture.create(schema());
        final long[] keys = keysInEveryPartition(table);
        final int[] slots = table.slotsOf(keys);
        // Each key holds its key, slot, place and 4 floats while queued: 8 keys x 32 bytes a push.
        final long pushBytes = keys.length * (8L + 4 + 4 + 4 * 4);
        fixture.writers().limitQueuedBytes(2 * pushBytes + pushBytes / 2);
        final CompletableFuture<List<Object>> stuck = blockEveryWriter();

        assertThat(request(table, keys, slots)).isTrue();
        assertThat(request(table, keys, slots)).isTrue();
        assertThat(fixture.writers().queuedBytes()).isEqualTo(2 * pushBytes);
        assertThat(request(table, keys, slots))
                .as("a push past the queued bytes, with room in the queue")
                .isFalse();
        assertThat(fixture.writers().pending()).isEqualTo(2 * PARTITIONS);
        assertThat(fixture.writers().queuedBytes()).isEqualTo(2 * pushBytes);
        // A SYNC clock's sum (the in-process offer) is held anyway while it waits: counted, never refused for bytes.
        assertThat(table.offerPush(keys, slots, filled(keys.length * 4, -1f))).isTrue();
        assertThat(fixture.writers().queuedBytes()).isEqualTo(3 * pushBytes);

        release.countDown();
        stuck.get(GENEROUS.toSeconds(), TimeUnit.SECONDS);
        table.awaitApplied();
        assertThat(fixture.writers().queuedBytes())
                .as("every part gave its bytes back")
                .isZero();

        // With nothing queued, a push larger than the limit goes (alone): none could otherwise ever be applied.
        fixture.writers().limitQueuedBytes(pushBytes / 2);
        assertThat(request(table, keys, slots)).isTrue();
        table.awaitApplied();
        assertThat(fixture.writers().queuedBytes()).isZero();
        // Two accepted pushes, the clock's and the lone large one: the refused push changed nothing.
        assertThat(table.pull(keys)).containsOnly(4f);
    }

    /** A push as a request's handler offers it: bounded by the queued bytes. */
    private static boolean request(final ParameterTable table, final long[] keys, final int[] slots) {
        return table.offerPush(keys, slots, filled(keys.length * 4, -1f), ParameterTable.RowPromise.NONE, null);
    }

    @Test
    void shouldRunControlTasksAfterThePushesQueuedBeforeThem() throws Exception {
        final ParameterTable table = fixture.create(schema());
        final long[] keys = keysInEveryPartition(table);
        final int[] slots = table.slotsOf(keys);
        final CompletableFuture<List<Object>> stuck = blockEveryWriter();
        assertThat(table.offerPush(keys, slots, filled(keys.length * 4, -1f))).isTrue();

        final CompletableFuture<List<SlotSnapshot>> snapshot = CompletableFuture.supplyAsync(() -> {
            try {
                return table.snapshot(slot -> true);
            } catch (InterruptedException e) {
                throw new IllegalStateException(e);
            }
        });
        release.countDown();
        stuck.get(GENEROUS.toSeconds(), TimeUnit.SECONDS);

        final List<SlotSnapshot> copied = snapshot.get(GENEROUS.toSeconds(), TimeUnit.SECONDS);
        assertThat(copied.stream().mapToInt(SlotSnapshot::rows).sum()).isEqualTo(keys.length);
        for (final SlotSnapshot slot : copied) {
            assertThat(slot.records()).containsOnly(1f);
        }
    }

    @Test
    void shouldAcceptAPushToEveryPartitionWhenTheWritersAreIdleAndTheCapacityIsSmall() throws InterruptedException {
        final PartitionWriters writers;
        try {
            writers = new PartitionWriters("small", PARTITIONS, 1, List::of);
        } catch (IllegalArgumentException refused) {
            // Refusing the configuration is a fix too.
            assertThat(refused).hasMessageContaining("capacity");
            return;
        }
        try (writers) {
            final ParameterTable table = new ParameterTable(TableSchemas.normalize(schema()), writers);
            final long[] keys = keysInEveryPartition(table);
            final int[] slots = table.slotsOf(keys);
            assertThat(writers.pending()).isZero();

            assertThat(table.offerPush(keys, slots, filled(keys.length * 4, -1f)))
                    .as("push to %d partitions with capacity 1 on idle writers", PARTITIONS)
                    .isTrue();
        }
    }

    @Test
    void shouldQueueOrRefuseAPushWholeWhenControlTasksFillTheQueues() throws Exception {
        final ParameterTable table = fixture.create(schema());
        final long[] keys = keysInEveryPartition(table);
        final int[] slots = table.slotsOf(keys);
        final CompletableFuture<List<Object>> stuck = blockEveryWriter();
        // Capacity 8: each queue holds 128 tasks (the running, blocking task is out of it). 128 control tasks
        // per queue would fill them; control tasks wait for their own budget instead, so they are queued from
        // another thread, which blocks until the writers run again.
        final List<CompletableFuture<List<Object>>> waits = new java.util.concurrent.CopyOnWriteArrayList<>();
        final CompletableFuture<Void> queuing = CompletableFuture.runAsync(() -> {
            for (int i = 0; i < 128; i++) {
                waits.add(fixture.writers().runOnAll(partition -> null));
            }
        });

        final Throwable offered = catchThrowable(() -> table.offerPush(keys, slots, filled(keys.length * 4, -1f)));

        release.countDown();
        stuck.get(GENEROUS.toSeconds(), TimeUnit.SECONDS);
        queuing.get(GENEROUS.toSeconds(), TimeUnit.SECONDS);
        for (final CompletableFuture<List<Object>> wait : waits) {
            wait.get(GENEROUS.toSeconds(), TimeUnit.SECONDS);
        }
        table.awaitApplied();
        assertThat(offered).as("offer with the queues full of control tasks").isNull();
        assertThat(fixture.writers().pending())
                .as("reserved capacity after the writers caught up")
                .isZero();
    }

    @Test
    void shouldCloseFromAThreadWhoseInterruptIsSetAndKeepTheInterrupt() {
        // A shutdown hook or a cancelled task may close the shard with its interrupt set.
        Thread.currentThread().interrupt();
        try {
            fixture.close();
        } finally {
            assertThat(Thread.interrupted()).as("the caller's interrupt, kept").isTrue();
        }

        final CompletableFuture<List<Integer>> late = fixture.writers().runOnAll(partition -> partition);
        assertThatThrownBy(() -> late.get(GENEROUS.toSeconds(), TimeUnit.SECONDS))
                .isInstanceOf(ExecutionException.class);
    }

    @Test
    void shouldFailControlTasksWhenTheWritersAreClosed() {
        fixture.close();

        final CompletableFuture<List<Integer>> late = fixture.writers().runOnAll(partition -> partition);

        // Expected: completed exceptionally (ExecutionException), not left pending (TimeoutException).
        assertThatThrownBy(() -> late.get(GENEROUS.toSeconds(), TimeUnit.SECONDS))
                .isInstanceOf(ExecutionException.class);
    }
}
