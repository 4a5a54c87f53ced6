package io.pscluster.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

import io.grpc.Status;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.server.table.ParameterTable;
import io.pscluster.wire.PsException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * A push with a (client id, sequence) is applied at most once: a repeat is answered as a duplicate, two copies at
 * once are accepted once, and a refused push is not remembered. A counter table shows every double or lost apply: each
 * push adds exactly 1 to its keys (SGD, lr 1, gradient -1).
 */
class ShardPushDedupeTest {
    private static final String TABLE = "counter";
    private static final int PARTITIONS = 2;
    private static final long CLIENT = 0x5eed_cafeL;

    private Shard shard;
    private BlockedWriters blocked;

    @AfterEach
    void releaseAndClose() {
        if (blocked != null) {
            blocked.close();
        }
        if (shard != null) {
            shard.close();
        }
    }

    private ParameterTable counter(final int applyCapacity) throws InterruptedException {
        shard = new Shard("s", 1 << 20, PARTITIONS, applyCapacity, new Configuration());
        TestRouting.serve(shard, TestRouting.allSlotsTo("s", 1));
        shard.createTable(TableSchema.newBuilder()
                .setName(TABLE)
                .setKind(TableKind.SPARSE)
                .setDim(1)
                .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(1f))
                .build());
        return shard.table(TABLE);
    }

    private static float[] minusOnes(final int keys) {
        final float[] gradients = new float[keys];
        java.util.Arrays.fill(gradients, -1f);
        return gradients;
    }

    @Test
    void shouldApplyThePushOnceWhenTheSameClientAndSequenceArriveTwice() throws InterruptedException {
        final ParameterTable table = counter(1024);
        final long[] keys = {1, 2, 3};

        final Shard.PushResult first = shard.push(TABLE, 1, CLIENT, 41, keys, minusOnes(3));
        final Shard.PushResult again = shard.push(TABLE, 1, CLIENT, 41, keys, minusOnes(3));
        shard.awaitQuiescent();

        assertThat(first).isEqualTo(new Shard.PushResult(3, false));
        assertThat(again).isEqualTo(new Shard.PushResult(3, true));
        assertThat(table.pull(keys)).as("counters after one push sent twice").containsOnly(1f);
    }

    @Test
    void shouldApplyEachPushWhenTheSequenceOrTheClientDiffers() throws InterruptedException {
        final ParameterTable table = counter(1024);
        final long[] keys = {7};

        shard.push(TABLE, 1, CLIENT, 1, keys, minusOnes(1));
        shard.push(TABLE, 1, CLIENT, 2, keys, minusOnes(1));
        shard.push(TABLE, 1, CLIENT + 1, 1, keys, minusOnes(1));
        // Client id 0: no deduplication at all.
        shard.push(TABLE, 1, 0, 1, keys, minusOnes(1));
        shard.push(TABLE, 1, 0, 1, keys, minusOnes(1));
        shard.awaitQuiescent();

        assertThat(table.pull(keys)).containsOnly(5f);
    }

    @Test
    void shouldAcceptOneCopyWhenTwoCopiesOfAPushArriveAtOnce() throws Exception {
        final ParameterTable table = counter(1024);
        final long[] keys = {11, 12};
        final int rounds = 300;
        final ExecutorService senders = Executors.newFixedThreadPool(2);
        try {
            int fresh = 0;
            for (int round = 0; round < rounds; round++) {
                final long sequence = 1_000 + round;
                final CyclicBarrier together = new CyclicBarrier(2);
                final List<CompletableFuture<Shard.PushResult>> copies = new ArrayList<>();
                for (int copy = 0; copy < 2; copy++) {
                    copies.add(CompletableFuture.supplyAsync(
                            () -> {
                                try {
                                    together.await(10, TimeUnit.SECONDS);
                                } catch (Exception e) {
                                    throw new IllegalStateException(e);
                                }
                                return shard.push(TABLE, 1, CLIENT, sequence, keys, minusOnes(2));
                            },
                            senders));
                }
                for (final CompletableFuture<Shard.PushResult> copy : copies) {
                    if (!copy.get(10, TimeUnit.SECONDS).duplicate()) {
                        fresh++;
                    }
                }
            }
            shard.awaitQuiescent();

            assertThat(fresh).as("copies answered as not duplicate").isEqualTo(rounds);
            assertThat(table.pull(keys))
                    .as("counters after %d pushes each sent twice at once", rounds)
                    .containsOnly((float) rounds);
        } finally {
            senders.shutdownNow();
        }
    }

    @Test
    void shouldApplyARetryWhenTheFirstSendWasRefusedForBackpressure() throws Exception {
        // Capacity 2: one push to both partitions fills it while the writers are blocked.
        final ParameterTable table = counter(PARTITIONS);
        final long[] keys = keysInBothPartitions(table);
        blocked = BlockedWriters.block(shard, PARTITIONS);
        assertThat(shard.push(TABLE, 1, CLIENT, 1, keys, minusOnes(2)).duplicate())
                .isFalse();

        final PsException refused =
                catchThrowableOfType(PsException.class, () -> shard.push(TABLE, 1, CLIENT, 2, keys, minusOnes(2)));
        assertThat(refused).as("second push with the writers full").isNotNull();
        assertThat(PsException.rejectOf(PsException.toStatus(refused))).isEqualTo(PsException.Reject.BACKPRESSURE);
        blocked.release();
        shard.awaitQuiescent();

        final Shard.PushResult retry = shard.push(TABLE, 1, CLIENT, 2, keys, minusOnes(2));
        shard.awaitQuiescent();

        assertThat(retry.duplicate()).as("the retry of a refused push is new").isFalse();
        assertThat(table.pull(keys)).as("both pushes applied once").containsOnly(2f);
    }

    /**
     * A client idle while more other clients pushed than the shard keeps windows for: its window is evicted, and its
     * retry of a push accepted before is refused as possibly applied, not applied a second time.
     */
    @Test
    void shouldNotApplyARetryAgainAfterTheClientsWindowMadeRoomForOtherClients() throws InterruptedException {
        final ParameterTable table = counter(1024);
        final long[] keys = {5};
        shard.push(TABLE, 1, CLIENT, 17, keys, minusOnes(1));
        for (long other = 1; other <= PushSequenceWindows.DEFAULT_CLIENTS; other++) {
            shard.push(TABLE, 1, CLIENT + other, 1, new long[] {6}, minusOnes(1));
            if (other % 512 == 0) {
                shard.awaitQuiescent();
            }
        }

        final PsException retried =
                catchThrowableOfType(PsException.class, () -> shard.push(TABLE, 1, CLIENT, 17, keys, minusOnes(1)));
        final Shard.PushResult next = shard.push(TABLE, 1, CLIENT, 18, keys, minusOnes(1));
        shard.awaitQuiescent();

        assertThat(retried).as("the retry of sequence 17").isNotNull();
        assertThat(retried.code()).isEqualTo(Status.Code.FAILED_PRECONDITION);
        assertThat(retried.getMessage()).contains("sequence 17", "may have been applied");
        assertThat(retried.outcomeUnknown())
                .as("the caller hears it may have been applied")
                .isTrue();
        assertThat(next.duplicate()).as("the client's next push").isFalse();
        assertThat(table.pull(keys)).as("17 once, 18 once").containsOnly(2f);
    }

    @Test
    void shouldNotRememberAPushWhenValidationRefusedIt() throws InterruptedException {
        final ParameterTable table = counter(1024);
        final long[] keys = {3};

        final PsException refused = catchThrowableOfType(
                PsException.class, () -> shard.push(TABLE, 1, CLIENT, 9, keys, new float[] {Float.NaN}));
        final Shard.PushResult retry = shard.push(TABLE, 1, CLIENT, 9, keys, minusOnes(1));
        shard.awaitQuiescent();

        assertThat(refused).isNotNull();
        assertThat(retry.duplicate()).isFalse();
        assertThat(table.pull(keys)).containsOnly(1f);
    }

    @Test
    void shouldApplyASiblingPartOfARequestWhoseSequenceThisShardAcceptedOnlyForOtherSlots() throws Exception {
        // A request re-split after a routing change: its parts share its sequence and hold disjoint slots. Part one
        // was applied here (its answer may have been lost); part two, refused where it went, is re-routed here.
        final ParameterTable table = counter(1024);
        final long[] slotA = keysOfOneSlot(table, 2);
        final long[] slotB = keysOfOneSlot(table, 2, slotA);
        final long[] slotC = keysOfOneSlot(table, 1, slotA, slotB);
        final long sequence = 77;

        final Shard.PushResult partOne = partialPush(sequence, slotA);
        final Shard.PushResult partTwo = partialPush(sequence, slotB);
        shard.awaitQuiescent();

        assertThat(partOne.duplicate()).isFalse();
        assertThat(partTwo.duplicate())
                .as("a sibling part for other slots is not a repeat")
                .isFalse();
        assertThat(table.pull(slotB)).as("counters of the sibling part's keys").containsOnly(1f);

        // Retries of either part are repeats; a request holding both parts' slots and one more applies the new slot's
        // keys only.
        assertThat(partialPush(sequence, slotA).duplicate()).isTrue();
        assertThat(partialPush(sequence, slotB).duplicate()).isTrue();
        final long[] all = {slotA[0], slotB[0], slotC[0], slotA[1], slotB[1]};
        assertThat(shard.push(TABLE, 1, CLIENT, sequence, all, minusOnes(all.length))
                        .duplicate())
                .isFalse();
        assertThat(shard.push(TABLE, 1, CLIENT, sequence, all, minusOnes(all.length))
                        .duplicate())
                .isTrue();
        shard.awaitQuiescent();

        assertThat(table.pull(all))
                .as("every key applied exactly once, whatever carried it")
                .containsOnly(1f);
    }

    @Test
    void shouldStillTreatAPartOfARequestAcceptedWholeAsARepeat() throws InterruptedException {
        final ParameterTable table = counter(1024);
        final long[] slotA = keysOfOneSlot(table, 2);
        final long[] slotB = keysOfOneSlot(table, 2, slotA);
        final long[] whole = {slotA[0], slotA[1], slotB[0], slotB[1]};

        assertThat(shard.push(TABLE, 1, CLIENT, 5, whole, minusOnes(whole.length))
                        .duplicate())
                .isFalse();
        assertThat(partialPush(5, slotB).duplicate()).isTrue();
        shard.awaitQuiescent();

        assertThat(table.pull(whole)).containsOnly(1f);
    }

    private Shard.PushResult partialPush(final long sequence, final long[] keys) {
        return shard.push(TABLE, 1, CLIENT, sequence, true, keys, minusOnes(keys.length), Shard.JobTag.NONE, null);
    }

    /** {@code count} keys that share one slot, another than the slots of {@code others}' first keys. */
    private static long[] keysOfOneSlot(final ParameterTable table, final int count, final long[]... others) {
        long first = 0;
        while (inSlotOf(table, first, others)) {
            first++;
        }
        final long[] keys = new long[count];
        keys[0] = first;
        long next = first + 1;
        for (int i = 1; i < count; next++) {
            if (table.slotOf(next) == table.slotOf(first)) {
                keys[i++] = next;
            }
        }
        return keys;
    }

    private static boolean inSlotOf(final ParameterTable table, final long key, final long[]... others) {
        for (final long[] other : others) {
            if (table.slotOf(other[0]) == table.slotOf(key)) {
                return true;
            }
        }
        return false;
    }

    private static long[] keysInBothPartitions(final ParameterTable table) {
        final long first = 0;
        long second = 1;
        while (table.slotOf(second) % PARTITIONS == table.slotOf(first) % PARTITIONS) {
            second++;
        }
        return new long[] {first, second};
    }
}
