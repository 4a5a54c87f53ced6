package io.pscluster.faults;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import com.google.protobuf.ByteString;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.StatusRuntimeException;
import io.pscluster.local.AdminCalls;
import io.pscluster.proto.v1.PushRequest;
import io.pscluster.proto.v1.RollbackEvent;
import io.pscluster.proto.v1.RoutingTable;
import io.pscluster.proto.v1.ShardServiceGrpc;
import io.pscluster.wire.PsException;
import io.pscluster.wire.Slots;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A shard cut off from the proxy (its heartbeats dropped at a fault-injection point) while a stale worker keeps
 * pushing to it with the routing it cached: the shard must stop accepting writes before the proxy gives its slots to
 * another shard (one writer per slot, judged on each side's own clock), the stale worker must be refused with the
 * retryable wrong-owner answer, and an SDK client with the old routing must follow to the new owner.
 */
@Tag("slow")
class PartitionedShardTest {
    @TempDir
    Path dir;

    @Test
    void shouldStopAcceptingWritesBeforeTheProxyReassignsWhenCutOffFromTheProxy() throws Exception {
        try (ProcessCluster cluster = new ProcessCluster(dir, 3_000, 500, 300)) {
            cluster.startProxy();
            cluster.startShard("s0");
            cluster.startShard("s1");
            await().atMost(Duration.ofSeconds(30)).until(cluster::allSlotsServed);
            final String cutOff = cluster.shardId("s0");
            try (CounterLoad counters = new CounterLoad(cluster.proxyAddress(), "counter");
                    // No background refresh: this client keeps the routing from before the partition until refused.
                    PsClient stale = PsClient.connect(new PsClient.Context()
                            .proxyAddress(cluster.proxyAddress())
                            .routingRefreshMs(3_600_000))) {
                AdminCalls.checkpointNow(cluster.proxyAddress());
                final RoutingTable routing = AdminCalls.routing(cluster.proxyAddress());
                final long key = keyOwnedBy(routing, cutOff, "counter");
                final PsTable staleTable = stale.table("counter");
                final long staleEpoch = stale.routingEpoch();

                final ManagedChannel channel = ManagedChannelBuilder.forTarget(cluster.shardAddress("s0"))
                        .usePlaintext()
                        .build();
                final AtomicBoolean pushing = new AtomicBoolean(true);
                final AtomicLong lastAcceptedMillis = new AtomicLong();
                final AtomicLong firstRefusedMillis = new AtomicLong();
                final AtomicReference<StatusRuntimeException> firstRefusal = new AtomicReference<>();
                final Thread staleWorker = new Thread(() -> {
                    final ShardServiceGrpc.ShardServiceBlockingStub shard = ShardServiceGrpc.newBlockingStub(channel);
                    while (pushing.get()) {
                        try {
                            shard.withDeadlineAfter(5, TimeUnit.SECONDS).push(push(routing.getEpoch(), key));
                            lastAcceptedMillis.set(System.currentTimeMillis());
                        } catch (StatusRuntimeException refused) {
                            if (firstRefusal.compareAndSet(null, refused)) {
                                firstRefusedMillis.set(System.currentTimeMillis());
                            }
                        }
                    }
                });
                staleWorker.start();
                try {
                    await().atMost(Duration.ofSeconds(10)).until(() -> lastAcceptedMillis.get() > 0);
                    cluster.injectFault("s0", "drop-heartbeats", true, 0);
                    final RollbackEvent move = await().atMost(Duration.ofSeconds(60))
                            .until(
                                    () -> cluster.status().getRollbacksList().stream()
                                            .filter(event ->
                                                    event.getFromShard().equals(cutOff))
                                            .findFirst()
                                            .orElse(null),
                                    event -> event != null);
                    // Keep the stale worker going a while after the move: it must still be refused.
                    final long movedAt = move.getAtMillis();
                    await().atMost(Duration.ofSeconds(10)).until(() -> System.currentTimeMillis() > movedAt + 1_000);
                    pushing.set(false);
                    staleWorker.join(10_000);

                    assertThat(firstRefusal.get())
                            .as("the cut-off shard never refused")
                            .isNotNull();
                    assertThat(PsException.rejectOf(firstRefusal.get()))
                            .as(firstRefusal.get().toString())
                            .isEqualTo(PsException.Reject.WRONG_OWNER);
                    assertThat(lastAcceptedMillis.get())
                            .as("last write accepted by the cut-off shard vs the proxy's reassignment")
                            .isLessThan(movedAt);
                    assertThat(firstRefusedMillis.get()).isLessThan(movedAt);

                    // An SDK client with the routing from before the move is refused, refreshes and follows.
                    staleTable.push(new long[] {key}, new float[] {-1f});
                    assertThat(stale.routingEpoch()).isGreaterThan(staleEpoch);
                    // The new owner restored the key from the checkpoint taken before any push (0), and the one push
                    // since is the SDK's: the cut-off shard's acknowledged writes were rolled back, and reported.
                    await().atMost(Duration.ofSeconds(10))
                            .untilAsserted(() -> assertThat(staleTable.pull(new long[] {key}))
                                    .containsExactly(1f));
                    assertThat(move.getLossless()).isFalse();
                } finally {
                    pushing.set(false);
                    staleWorker.join(10_000);
                    channel.shutdownNow();
                }
                cluster.injectFault("s0", "drop-heartbeats", false, 0);
                await().atMost(Duration.ofSeconds(30)).until(cluster::allSlotsServed);
                assertThat(counters.client().routingEpoch()).isPositive();
            }
        }
    }

    static long keyOwnedBy(final RoutingTable routing, final String shardId, final String table) {
        final long hash = Slots.tableHash(table);
        for (int i = 0; i < CounterLoad.KEYS; i++) {
            final long key = CounterLoad.key(i);
            final int owner = routing.getSlotOwner(Slots.slotOf(hash, key));
            if (owner >= 0 && routing.getShards(owner).getShardId().equals(shardId)) {
                return key;
            }
        }
        throw new AssertionError("no counter key is owned by " + shardId);
    }

    private static PushRequest push(final long epoch, final long key) {
        final ByteBuffer keys =
                ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(0, key);
        final ByteBuffer gradient =
                ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN).putFloat(0, -1f);
        return PushRequest.newBuilder()
                .setTable("counter")
                .setRoutingEpoch(epoch)
                .setKeys(ByteString.copyFrom(keys.array()))
                .setGradients(ByteString.copyFrom(gradient.array()))
                .build();
    }
}
