package io.pscluster.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.pscluster.proto.v1.RestoreDirective;
import io.pscluster.proto.v1.RestoreReport;
import io.pscluster.wire.Slots;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Optional;
import java.util.stream.IntStream;
import java.util.stream.LongStream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A drain's order to this shard (its giver keeps the rows) finds its checkpoint damaged; the proxy hands the slots back
 * to the draining shard, which drains again, and the proxy gives the same slots to this shard with a new order, all
 * before this shard follows an answer in between (the heartbeat answer that took the slots away was lost: a deadline, a
 * reset). The first order is superseded: it must not keep the slots refused (nor every checkpoint failing) after the
 * second is done. Found by a hostile review.
 */
class SupersededRestoreOrderTest {
    private static final Duration GENEROUS = Duration.ofSeconds(30);
    private static final long[] KEYS = LongStream.range(0, 200).toArray();

    @TempDir
    Path directory;

    private FakeProxy proxy;
    private CounterCheckpoints checkpoints;
    private ShardServer server;

    @BeforeEach
    void startProxy() throws Exception {
        proxy = new FakeProxy().start();
        checkpoints = new CounterCheckpoints(directory);
        proxy.checkpointRoot = checkpoints.root().toString();
    }

    @AfterEach
    void stopAll() throws Exception {
        if (server != null) {
            server.close();
        }
        checkpoints.close();
        proxy.close();
    }

    private RestoreDirective drainOrder(final long orderId, final long checkpointId) {
        return RestoreDirective.newBuilder()
                .setCheckpointRoot(checkpoints.root().toString())
                .setCheckpointId(checkpointId)
                .addAllSlots(IntStream.range(0, Slots.SLOT_COUNT).boxed().toList())
                .setOrderId(orderId)
                .setFromShard("drained")
                .setGiverKeepsRows(true)
                .setReason("shard drained drained")
                .build();
    }

    private Optional<RestoreReport> report(final long orderId, final boolean done, final boolean damaged) {
        return proxy.heartbeats.stream()
                .flatMap(beat -> beat.getRestoresList().stream())
                .filter(r -> r.getOrderId() == orderId && r.getDone() == done && (!damaged || r.getDamaged()))
                .findFirst();
    }

    private static float[] floats(final byte[] values) {
        final float[] out = new float[values.length / 4];
        ByteBuffer.wrap(values).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(out);
        return out;
    }

    /** Order 5 (checkpoint 1, damaged) reported damaged, then replaced by order 6 (checkpoint 2), reported done. */
    private void handedBackAndOverAgainUnheard() throws Exception {
        checkpoints.countAndCommit(KEYS, 1); // the first hand-over's checkpoint, damaged below
        checkpoints.countAndCommit(KEYS, 2); // the second hand-over's checkpoint
        checkpoints.flipAByte(1);
        proxy.routing = id -> TestRouting.allSlotsTo(id, 3);
        proxy.orders.add(drainOrder(5, 1));
        server = ShardServer.start(new ShardServer.Context()
                .proxyAddress(proxy.address())
                .port(0)
                .partitions(2)
                .drainOnClose(false)
                .faults(new FaultPoints(true)));
        await().atMost(GENEROUS).until(() -> report(5, false, true).isPresent());

        // The proxy handed the slots back (order 5 gone), the drained shard took them back and handed them over again
        // through checkpoint 2: this shard's next answer that it follows brings order 6 for the same slots.
        proxy.routing = id -> TestRouting.allSlotsTo(id, 5);
        proxy.orders.set(0, drainOrder(6, 2));
        await().atMost(GENEROUS).until(() -> report(6, true, false).isPresent());
        // FakeProxy drops order 6 once reported done, as the proxy does; the drained shard then drops its kept rows.
    }

    @Test
    void shouldServeSlotsHandedOverAgainAfterAHandBackItNeverHeardOf() throws Exception {
        handedBackAndOverAgainUnheard();
        await().atMost(Duration.ofSeconds(10))
                .pollDelay(Duration.ofSeconds(2))
                .untilAsserted(() -> assertThat(server.shard().restoringSlotCount())
                        .as(
                                "slots restored from checkpoint 2 and acknowledged must serve; still reporting: %s",
                                proxy.lastHeartbeat().getRestoresList())
                        .isZero());
        assertThat(floats(server.shard().pull(CounterCheckpoints.TABLE, 5, KEYS)))
                .containsOnly(2f);
    }

    /** The proxy's next checkpoint asks this shard for every slot it owns: it must be able to write them. */
    @Test
    void shouldWriteTheNextCheckpointAfterTheSlotsWereHandedOverAgain() throws Exception {
        handedBackAndOverAgainUnheard();
        final int beats = proxy.heartbeats.size();
        await().atMost(GENEROUS).until(() -> proxy.heartbeats.size() > beats + 3);

        server.shard().writeCheckpoint(checkpoints.root(), 3);
    }
}
