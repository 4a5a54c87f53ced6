package io.pscluster.bench;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.grpc.CallOptions;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.ClientCalls;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

class RawGrpcServerTest {
    private static RawGrpcServer server;
    private static ManagedChannel channel;

    @BeforeAll
    static void start() throws Exception {
        server = RawGrpcServer.start();
        channel = RawGrpcTarget.channel(server.address());
    }

    @AfterAll
    static void stop() throws Exception {
        channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
        server.close();
    }

    @Test
    void shouldCarryTheSameBytesAsAPullWhenPullingThroughTheBaseline() {
        final RawGrpcTarget target = new RawGrpcTarget(channel, 3, 10_000);
        final long[] keys = KeySets.block(7, 1000);

        target.push(keys, KeySets.gradients(keys.length * 3)).join();
        final float[] values = target.pull(keys).join();

        assertThat(values).hasSize(3000).containsOnly(0f);
    }

    @Test
    void shouldRejectWithInvalidArgumentWhenTheRequestHasNoReplyLength() {
        assertThatThrownBy(() -> ClientCalls.blockingUnaryCall(
                        channel,
                        RawExchange.METHOD,
                        CallOptions.DEFAULT.withDeadlineAfter(10, TimeUnit.SECONDS),
                        new byte[2]))
                .isInstanceOfSatisfying(
                        StatusRuntimeException.class,
                        e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.INVALID_ARGUMENT));
    }
}
