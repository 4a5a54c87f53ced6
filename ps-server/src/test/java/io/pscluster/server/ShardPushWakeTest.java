package io.pscluster.server;

import static org.assertj.core.api.Assertions.assertThat;

import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.InsecureServerCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Server;
import io.pscluster.proto.v1.PushRequest;
import io.pscluster.proto.v1.PushResponse;
import io.pscluster.proto.v1.ShardServiceGrpc;
import io.pscluster.server.table.PartitionWriters;
import io.pscluster.wire.LittleEndian;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * A push's handler answers before it wakes the writers the push was queued to ({@code PartitionWriters.DeferredWakes}).
 * Here the writers would sleep for an hour unwoken, so a push over real gRPC is applied within the test's time only if
 * the handler pays the wakes it deferred.
 */
class ShardPushWakeTest {
    private static final String TABLE = CounterCheckpoints.TABLE;
    private static final int PARTITIONS = 2;
    private static final long HOUR = TimeUnit.HOURS.toNanos(1);
    private static final long GENEROUS_SECONDS = 30;

    private Shard shard;
    private ExecutorService handlers;
    private Server server;
    private ManagedChannel channel;

    @BeforeEach
    void start() throws Exception {
        shard = new Shard(
                "s",
                1 << 20,
                new Configuration(),
                tables -> new PartitionWriters("ps-writer", PARTITIONS, 1024, tables, HOUR, HOUR, 10_000));
        TestRouting.serve(shard, TestRouting.allSlotsTo("s", 1));
        // SGD with lr 1 from zeros, dim 1.
        shard.createTable(CounterCheckpoints.SCHEMA);
        handlers = Executors.newFixedThreadPool(2);
        server = Grpc.newServerBuilderForPort(0, InsecureServerCredentials.create())
                .executor(handlers)
                .addService(new ShardDataService(shard, () -> {}, new FaultPoints(), handlers).definition())
                .build()
                .start();
        channel = Grpc.newChannelBuilderForAddress("localhost", server.getPort(), InsecureChannelCredentials.create())
                .build();
    }

    @AfterEach
    void stop() throws InterruptedException {
        channel.shutdownNow().awaitTermination(10, TimeUnit.SECONDS);
        server.shutdownNow().awaitTermination(10, TimeUnit.SECONDS);
        handlers.shutdownNow();
        shard.close();
    }

    @Test
    void shouldApplyEveryAcknowledgedPushWithoutTheWritersWakingOnTheirOwn() {
        final ShardServiceGrpc.ShardServiceBlockingStub stub = ShardServiceGrpc.newBlockingStub(channel);
        final long[] keys = keysInBothPartitions();
        for (int push = 1; push <= 5; push++) {
            final PushResponse answer = stub.withDeadlineAfter(GENEROUS_SECONDS, TimeUnit.SECONDS)
                    .push(PushRequest.newBuilder()
                            .setTable(TABLE)
                            .setRoutingEpoch(1)
                            .setKeys(LittleEndian.encodeLongs(keys))
                            .setGradients(LittleEndian.encodeFloats(new float[] {1f, 1f}))
                            .build());
            assertThat(answer.getAccepted()).isEqualTo(keys.length);

            // SGD with lr 1 from zeros: after n pushes of gradient 1 each row holds -n, in both partitions.
            final float expected = -push;
            final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(GENEROUS_SECONDS);
            float[] values = pulled(keys);
            while ((values[0] != expected || values[1] != expected) && System.nanoTime() < deadline) {
                LockSupport.parkNanos(TimeUnit.MILLISECONDS.toNanos(1));
                values = pulled(keys);
            }
            assertThat(values)
                    .as("push %d applied in both partitions (writers that would sleep an hour were woken)", push)
                    .containsExactly(expected, expected);
        }
    }

    private float[] pulled(final long[] keys) {
        final ByteBuffer bytes = ByteBuffer.wrap(shard.pull(TABLE, 1, keys)).order(ByteOrder.LITTLE_ENDIAN);
        final float[] values = new float[keys.length];
        bytes.asFloatBuffer().get(values);
        return values;
    }

    /** Two keys, one in each writer partition, so that a push is queued to both writers. */
    private long[] keysInBothPartitions() {
        final long first = 0;
        long second = 1;
        while (shard.table(TABLE).slotOf(second) % PARTITIONS
                == shard.table(TABLE).slotOf(first) % PARTITIONS) {
            second++;
        }
        return new long[] {first, second};
    }
}
