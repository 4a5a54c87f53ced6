package io.pscluster.server.table;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import java.lang.management.GarbageCollectorMXBean;
import java.lang.management.ManagementFactory;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * A push's new rows get their off-heap room when the push is admitted, before it is acknowledged: a push acknowledged
 * while earlier ones are still queued is never short of memory when its writer applies it (its rows used to be dropped
 * then, after the client saw success). Runs a table in a budget of a few chunks of its own.
 */
class OffHeapAdmissionTest {
    /** SGD dim 2: 24-byte records, 4,096 to a chunk. */
    private static final int CHUNK_RECORDS = 4096;

    private static final long CHUNK_BYTES = CHUNK_RECORDS * 24L;
    private static final int CHUNKS = 8;
    private static final int KEYS_PER_PUSH = 3_000;

    private final TableFixture fixture = new TableFixture(2);
    private final CountDownLatch release = new CountDownLatch(1);
    private final OffHeapBudget memory = new OffHeapBudget(CHUNKS * CHUNK_BYTES);

    @AfterEach
    void closeWriters() {
        release.countDown();
        fixture.close();
    }

    private ParameterTable table(final long maxRowsPerShard) {
        final ParameterTable table = fixture.create(
                TableSchema.newBuilder()
                        .setName("sparse")
                        .setKind(TableKind.SPARSE)
                        .setDim(2)
                        .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(1f))
                        .setMaxRowsPerShard(maxRowsPerShard)
                        .build(),
                memory);
        assertThat(table.recordBytes()).isEqualTo(24);
        return table;
    }

    private static long[] newKeys(final int push) {
        final long[] keys = new long[KEYS_PER_PUSH];
        for (int i = 0; i < keys.length; i++) {
            keys[i] = 1_000_000L * (push + 1) + i;
        }
        return keys;
    }

    private static float[] ones(final int keys) {
        final float[] gradients = new float[2 * keys];
        Arrays.fill(gradients, 1f);
        return gradients;
    }

    /** Admits and queues a push of {@code keys}, as the shard does. */
    private static void admit(final ParameterTable table, final long[] keys) {
        final int[] slots = table.slotsOf(keys);
        final ParameterTable.RowPromise promise = table.promiseNewRows(keys, slots);
        assertThat(promise).as("no cap refusal").isNotNull();
        assertThat(table.offerPush(keys, slots, ones(keys.length), promise, null))
                .as("queued")
                .isTrue();
    }

    private static ParameterTable.OffHeapFull refusal(final ParameterTable table, final long[] keys) {
        return catchThrowableOfType(ParameterTable.OffHeapFull.class, () -> admit(table, keys));
    }

    @Test
    void shouldRefuseAtAdmissionThePushThatHasNoRoomSoThatEveryAcknowledgedRowIsCreated() throws Exception {
        checkEveryAcknowledgedRowIsCreated(table(0));
    }

    /** A capped table counts its new rows exactly (a lookup per key) and claims those. */
    @Test
    void shouldClaimTheExactNewRowsOfACappedTable() throws Exception {
        checkEveryAcknowledgedRowIsCreated(table(1_000_000));
    }

    private void checkEveryAcknowledgedRowIsCreated(final ParameterTable table) throws Exception {
        fixture.blockEveryWriter(release);
        final List<long[]> acknowledged = new ArrayList<>();
        ParameterTable.OffHeapFull refused = null;
        long[] refusedKeys = null;
        for (int push = 0; push < 2 * CHUNKS * CHUNK_RECORDS / KEYS_PER_PUSH && refused == null; push++) {
            final long[] keys = newKeys(push);
            refused = refusal(table, keys);
            if (refused == null) {
                acknowledged.add(keys);
            } else {
                refusedKeys = keys;
            }
        }
        assertThat(refused).as("a push past %d chunks of memory", CHUNKS).isNotNull();
        assertThat(refused.getMessage()).contains("'sparse'", "off-heap", KEYS_PER_PUSH + " new rows");
        assertThat(refused.retryable())
                .as("to retry while queued pushes hold claims they may not use")
                .isTrue();
        assertThat(acknowledged.size() * KEYS_PER_PUSH)
                .as("rows acknowledged")
                .isGreaterThan((CHUNKS - 2) * CHUNK_RECORDS);

        release.countDown();
        table.awaitApplied();
        assertThat(table.droppedRows()).as("acknowledged rows dropped").isZero();
        for (final long[] keys : acknowledged) {
            assertThat(table.countAbsent(keys, table.slotsOf(keys))).isZero();
        }
        assertThat(table.pull(new long[] {acknowledged.get(acknowledged.size() - 1)[0]}))
                .containsExactly(-1f, -1f);
        assertThat(memory.anyAhead())
                .as("claims left over once every push is applied")
                .isFalse();

        // Nothing queued now: the refusal is final, and the refused push's keys have no row.
        final ParameterTable.OffHeapFull again = refusal(table, refusedKeys);
        assertThat(again).as("the refused push once the queue is applied").isNotNull();
        assertThat(again.retryable()).isFalse();
        assertThat(table.countAbsent(refusedKeys, table.slotsOf(refusedKeys))).isEqualTo(KEYS_PER_PUSH);

        // A push of rows that exist needs no room, however full memory is.
        admit(table, acknowledged.get(0));
        table.awaitApplied();
        assertThat(table.pull(new long[] {acknowledged.get(0)[0]})).containsExactly(-2f, -2f);

        // Removed rows give their records back: the refused push fits in them (twice its rows are freed, about half
        // in each partition), without a chunk more.
        final long before = memory.available();
        table.removeKeys(acknowledged.get(0), KEYS_PER_PUSH);
        table.removeKeys(acknowledged.get(1), KEYS_PER_PUSH);
        admit(table, refusedKeys);
        table.awaitApplied();
        assertThat(table.countAbsent(refusedKeys, table.slotsOf(refusedKeys))).isZero();
        assertThat(table.droppedRows()).isZero();
        assertThat(memory.available()).as("off-heap bytes left").isEqualTo(before);
        assertThat(memory.anyAhead()).isFalse();
    }

    /**
     * A table without a cap claims a record for every key of a push (no lookup) while memory is plentiful: the writers
     * give back what the push did not create, here all of it, since every row exists.
     */
    @Test
    void shouldGiveBackTheRecordsAPushClaimedAndDidNotCreate() throws Exception {
        final ParameterTable table = table(0);
        final long[] keys = newKeys(0);
        admit(table, keys);
        table.awaitApplied();
        final long available = memory.available();

        for (int round = 0; round < 2 * CHUNKS; round++) {
            admit(table, keys);
        }
        table.awaitApplied();
        assertThat(table.pull(new long[] {keys[0]})).containsExactly(-17f, -17f);
        assertThat(memory.available()).as("off-heap bytes left").isEqualTo(available);
        assertThat(memory.anyAhead()).isFalse();
    }

    /**
     * A push refused while the claims of queued pushes fill the budget runs no collection on the handler's thread: a
     * collection gives back only the chunks of dropped tables, never bytes that are merely claimed, and used to cost a
     * full GC and up to a quarter of a second of waiting on a gRPC thread.
     */
    @Test
    void shouldRefuseWithoutACollectionWhenClaimsOfQueuedPushesFillMemory() throws Exception {
        final ParameterTable table = table(0);
        fixture.blockEveryWriter(release);
        ParameterTable.OffHeapFull refused = null;
        long fullCollections = 0;
        for (int push = 0; push < 2 * CHUNKS * CHUNK_RECORDS / KEYS_PER_PUSH && refused == null; push++) {
            final long[] keys = newKeys(push);
            final long before = fullCollections();
            refused = refusal(table, keys);
            fullCollections += fullCollections() - before;
        }
        assertThat(refused).as("a push past %d chunks of claims", CHUNKS).isNotNull();
        assertThat(refused.retryable()).isTrue();
        assertThat(fullCollections).as("full collections while admitting").isZero();
    }

    /** Collections of the old generation (System.gc() is one); young collections come and go with allocation. */
    private static long fullCollections() {
        long count = 0;
        for (final GarbageCollectorMXBean gc : ManagementFactory.getGarbageCollectorMXBeans()) {
            final String name = gc.getName();
            if (!name.contains("Copy") && !name.contains("Young") && !name.contains("Scavenge")) {
                count += gc.getCollectionCount();
            }
        }
        return count;
    }

    /** A push that is not queued (the writers' queues are full) gives its claims back. */
    @Test
    void shouldGiveBackTheClaimsOfAPushThatWasNotQueued() {
        final ParameterTable table = table(0);
        final long available = memory.available();
        final long[] keys = newKeys(0);
        final ParameterTable.RowPromise promise = table.promiseNewRows(keys, table.slotsOf(keys));
        assertThat(memory.available()).as("claimed").isLessThan(available);
        table.release(promise);
        assertThat(memory.available()).isEqualTo(available);
        assertThat(memory.anyAhead()).isFalse();
    }
}
