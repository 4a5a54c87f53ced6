package io.pscluster.local;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.pscluster.server.Shard;
import io.pscluster.wire.Slots;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.net.URI;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.BitSet;
import java.util.stream.LongStream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * A push its shard accepted and applied, whose answer the client never got, retried at the shard its slots moved to
 * (a drain's hand-over, or a crash after a checkpoint that holds the push): on a real cluster (proxy and two shards
 * on loopback) it is applied once. The attempts carry one (client, sequence), as the SDK's do; the new owner knows it
 * from the checkpoint its rows came from. A part of a request re-split after a routing change keeps the request's
 * sequence: when the first shard applied such a part alone, a retry of it is a repeat at the new owner (the checkpoint
 * kept the slots it was accepted for), while its sibling, applied nowhere yet, is applied there. A push with another
 * sequence is applied as usual.
 */
class RetriedPushAfterTakeoverTest {
    private static final String TABLE = "counter";

    private static final Shard.JobTag NO_JOB = Shard.JobTag.NONE;

    @TempDir
    Path dir;

    /** A proxy and two shards on loopback, checkpoints under {@link #dir}, all kept. */
    private LocalCluster startCluster() throws Exception {
        return LocalCluster.builder()
                .shards(2)
                .checkpointRoot(dir.resolve("checkpoints").toUri().toString())
                .keepCheckpoints(0)
                .start();
    }

    /**
     * Pushes {@code keys} (client 42, sequence 7) to the first shard between two checkpoints, crashes it, and has the
     * second shard, now owning every slot, load {@code fromBefore}'s rows from the first checkpoint and the others' from
     * the second (as a fallback past a damaged newer checkpoint leaves them).
     */
    private Shard pushBetweenTwoCheckpointsAndRestoreFromBoth(
            final LocalCluster cluster, final long[] keys, final BitSet fromBefore) throws Exception {
        final URI root = dir.resolve("checkpoints").toUri();
        final Shard first = cluster.shard(0).shard();
        final long before = AdminCalls.checkpointNow(cluster.proxyAddress());
        assertThat(first.push(TABLE, first.routingEpoch(), 42, 7, keys, minusOnes(keys))
                        .duplicate())
                .isFalse();
        final long after = AdminCalls.checkpointNow(cluster.proxyAddress());
        cluster.crashShard(0);
        cluster.awaitHealthy(60_000);
        final Shard second = cluster.shard(1).shard();
        second.restoreOrder(root, before, fromBefore);
        final BitSet others = new BitSet();
        others.set(0, Slots.SLOT_COUNT);
        others.andNot(fromBefore);
        second.restoreOrder(root, after, others);
        return second;
    }

    /** The first {@code count} keys from 0 up whose slots in the table are among {@code slots}. */
    private static long[] keysIn(final BitSet slots, final int count) {
        final long hash = Slots.tableHash(TABLE);
        return LongStream.range(0, 1_000_000)
                .filter(key -> slots.get(Slots.slotOf(hash, key)))
                .limit(count)
                .toArray();
    }

    private static float[] minusOnes(final long[] keys) {
        final float[] gradients = new float[keys.length];
        Arrays.fill(gradients, -1f);
        return gradients;
    }

    @ParameterizedTest(name = "drained: {0}")
    @ValueSource(booleans = {true, false})
    void shouldApplyOnceAPushRetriedAtTheNewOwnerOfItsSlots(final boolean drained) throws Exception {
        try (LocalCluster cluster = startCluster();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable table = client.createTable(CounterTable.schema(TABLE));
            final Shard first = cluster.shard(0).shard();
            final BitSet firstSlots = first.ownedSlots();
            final long hash = Slots.tableHash(TABLE);
            final long[] keys = keysIn(firstSlots, 500);
            final float[] minusOnes = new float[keys.length];
            Arrays.fill(minusOnes, -1f);
            // A request re-split after a routing change: one part applied by the first shard, its sibling (keys of
            // other slots of the first shard's, and of the other shard's) not yet applied anywhere; both keep the
            // request's sequence.
            // Parts hold whole slots: the part has the keys of even slots, its sibling those of odd ones.
            final long[] partKeys = Arrays.stream(keys)
                    .filter(key -> Slots.slotOf(hash, key) % 2 == 0)
                    .toArray();
            final long[] restOfKeys = Arrays.stream(keys)
                    .filter(key -> Slots.slotOf(hash, key) % 2 != 0)
                    .toArray();
            final long[] otherShardKeys = LongStream.range(0, 1_000_000)
                    .filter(key -> !firstSlots.get(Slots.slotOf(hash, key)))
                    .limit(100)
                    .toArray();
            final long[] siblingKeys = LongStream.concat(Arrays.stream(restOfKeys), Arrays.stream(otherShardKeys))
                    .toArray();

            // The first attempt: accepted (and applied) by the owner; its answer was lost on the way.
            assertThat(first.push(TABLE, first.routingEpoch(), 42, 7, keys, minusOnes)
                            .duplicate())
                    .isFalse();
            assertThat(first.push(TABLE, first.routingEpoch(), 42, 9, true, partKeys, minusOnes(partKeys), NO_JOB, null)
                            .duplicate())
                    .isFalse();
            if (drained) {
                cluster.stopShard(0);
            } else {
                AdminCalls.checkpointNow(cluster.proxyAddress());
                cluster.crashShard(0);
            }
            cluster.awaitHealthy(60_000);
            final Shard second = cluster.shard(1).shard();
            assertThat(second.ownedSlots().cardinality()).isEqualTo(Slots.SLOT_COUNT);

            assertThat(second.push(TABLE, second.routingEpoch(), 42, 7, keys, minusOnes)
                            .duplicate())
                    .as("the retry at the new owner")
                    .isTrue();
            assertThat(table.pull(restOfKeys)).containsOnly(1f);
            assertThat(table.pull(partKeys)).as("the whole push and the part").containsOnly(2f);
            assertThat(second.push(
                                    TABLE,
                                    second.routingEpoch(),
                                    42,
                                    9,
                                    true,
                                    partKeys,
                                    minusOnes(partKeys),
                                    NO_JOB,
                                    null)
                            .duplicate())
                    .as("the retry of the part at the new owner: its checkpoint kept the part's slots")
                    .isTrue();
            assertThat(second.push(
                                    TABLE,
                                    second.routingEpoch(),
                                    42,
                                    9,
                                    true,
                                    siblingKeys,
                                    minusOnes(siblingKeys),
                                    NO_JOB,
                                    null)
                            .duplicate())
                    .as("the sibling of a part the first shard applied alone")
                    .isFalse();
            second.flush().get(30, java.util.concurrent.TimeUnit.SECONDS);
            assertThat(table.pull(restOfKeys))
                    .as("the whole push and the sibling")
                    .containsOnly(2f);
            assertThat(table.pull(otherShardKeys))
                    .as("the sibling, applied once")
                    .containsOnly(1f);
            assertThat(second.push(TABLE, second.routingEpoch(), 42, 8, keys, minusOnes)
                            .duplicate())
                    .as("another push of the same client")
                    .isFalse();
            second.flush().get(30, java.util.concurrent.TimeUnit.SECONDS);
            assertThat(table.pull(keys)).containsOnly(3f);
        }
    }
    /**
     * A part of a re-split request applied by the first shard, its sibling re-routed to that shard once it took the
     * sibling's slots over (a drain) and applied there, its answer lost; a checkpoint; that shard crashes and a new one
     * takes every slot from the checkpoint. The sibling's retry there is a repeat: the part accepted after the takeover
     * is in the checkpoint's capture with its slots, although its sequence was first accepted before.
     */
    @Test
    void shouldTakeForARepeatASiblingPartRetriedAtTheOwnerAfterTheOneThatAppliedIt() throws Exception {
        try (LocalCluster cluster = startCluster();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable table = client.createTable(CounterTable.schema(TABLE));
            final Shard first = cluster.shard(0).shard();
            final long[] partKeys = keysIn(first.ownedSlots(), 3);
            final long[] siblingKeys = keysIn(cluster.shard(1).shard().ownedSlots(), 3);
            final long[] wholeKeys = {siblingKeys[2]};
            final long[] sibling = Arrays.copyOf(siblingKeys, 2);
            assertThat(first.push(TABLE, first.routingEpoch(), 42, 9, true, partKeys, minusOnes(partKeys), NO_JOB, null)
                            .duplicate())
                    .isFalse();
            cluster.stopShard(1);
            cluster.awaitHealthy(60_000);
            assertThat(first.ownedSlots().cardinality()).isEqualTo(Slots.SLOT_COUNT);

            assertThat(first.push(TABLE, first.routingEpoch(), 42, 9, true, sibling, minusOnes(sibling), NO_JOB, null)
                            .duplicate())
                    .as("the sibling, re-routed")
                    .isFalse();
            assertThat(first.push(TABLE, first.routingEpoch(), 42, 10, wholeKeys, minusOnes(wholeKeys))
                            .duplicate())
                    .isFalse();
            first.flush().get(30, java.util.concurrent.TimeUnit.SECONDS);
            // The proxy refuses checkpoints until it has heard that the drain's restore ended.
            await().atMost(Duration.ofSeconds(60)).ignoreExceptions().until(() -> {
                AdminCalls.checkpointNow(cluster.proxyAddress());
                return true;
            });
            final int heirIndex = cluster.addShard();
            cluster.crashShard(0);
            cluster.awaitHealthy(90_000);
            final Shard heir = cluster.shard(heirIndex).shard();
            assertThat(heir.ownedSlots().cardinality()).isEqualTo(Slots.SLOT_COUNT);

            assertThat(heir.push(TABLE, heir.routingEpoch(), 42, 10, wholeKeys, minusOnes(wholeKeys))
                            .duplicate())
                    .as("the whole push's retry")
                    .isTrue();
            assertThat(heir.push(TABLE, heir.routingEpoch(), 42, 9, true, sibling, minusOnes(sibling), NO_JOB, null)
                            .duplicate())
                    .as("the sibling's retry")
                    .isTrue();
            heir.flush().get(30, java.util.concurrent.TimeUnit.SECONDS);
            assertThat(table.pull(partKeys)).containsOnly(1f);
            assertThat(table.pull(siblingKeys)).containsOnly(1f);
        }
    }

    /**
     * A push retried at a shard holding some of its slots' rows from a checkpoint that holds the push and the others'
     * from one from before it (a fallback): the keys of the latter are applied, those of the former are not.
     */
    @Test
    void shouldApplyARetryOnlyToTheSlotsWhoseRowsCameFromACheckpointBeforeThePush() throws Exception {
        try (LocalCluster cluster = startCluster();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable table = client.createTable(CounterTable.schema(TABLE));
            final Shard first = cluster.shard(0).shard();
            final long hash = Slots.tableHash(TABLE);
            final long[] keys = keysIn(first.ownedSlots(), 40);
            final long[] olderKeys = Arrays.copyOf(keys, 20);
            final BitSet older = new BitSet();
            for (final long key : olderKeys) {
                older.set(Slots.slotOf(hash, key));
            }
            final long[] newerKeys = Arrays.stream(keys)
                    .filter(key -> !older.get(Slots.slotOf(hash, key)))
                    .toArray();
            assertThat(newerKeys).isNotEmpty();
            final Shard second = pushBetweenTwoCheckpointsAndRestoreFromBoth(cluster, keys, older);
            assertThat(table.pull(olderKeys)).containsOnly(0f);
            assertThat(table.pull(newerKeys)).containsOnly(1f);

            assertThat(second.push(TABLE, second.routingEpoch(), 42, 7, keys, minusOnes(keys))
                            .duplicate())
                    .isFalse();
            second.flush().get(30, java.util.concurrent.TimeUnit.SECONDS);
            assertThat(table.pull(olderKeys)).as("rows from before the push").containsOnly(1f);
            assertThat(table.pull(newerKeys)).as("rows that held it").containsOnly(1f);
            assertThat(second.push(TABLE, second.routingEpoch(), 42, 7, keys, minusOnes(keys))
                            .duplicate())
                    .isTrue();
        }
    }

    /**
     * A shard holding a push's slots with rows of a checkpoint from before the push (as a fallback past a damaged newer
     * one leaves them), and other slots from the newer checkpoint that captured the push's sequence: a retry of the push
     * is applied, since the rows it would be a repeat in are not the ones here.
     */
    @Test
    void shouldApplyARetryWhoseSlotsHoldRowsOfACheckpointFromBeforeThePush() throws Exception {
        try (LocalCluster cluster = startCluster();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable table = client.createTable(CounterTable.schema(TABLE));
            final Shard first = cluster.shard(0).shard();
            final long hash = Slots.tableHash(TABLE);
            final long[] keys = keysIn(first.ownedSlots(), 50);
            final BitSet pushed = new BitSet();
            for (final long key : keys) {
                pushed.set(Slots.slotOf(hash, key));
            }
            final Shard second = pushBetweenTwoCheckpointsAndRestoreFromBoth(cluster, keys, pushed);
            assertThat(table.pull(keys)).containsOnly(0f);

            assertThat(second.push(TABLE, second.routingEpoch(), 42, 7, keys, minusOnes(keys))
                            .duplicate())
                    .isFalse();
            second.flush().get(30, java.util.concurrent.TimeUnit.SECONDS);
            assertThat(table.pull(keys)).containsOnly(1f);
        }
    }
}
