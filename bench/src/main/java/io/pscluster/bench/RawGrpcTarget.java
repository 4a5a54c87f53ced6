package io.pscluster.bench;

import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.stub.ClientCalls;
import io.grpc.stub.StreamObserver;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

/**
 * The baseline side: the same bytes as the SDK's requests, over {@link RawExchange}. A push encodes keys (int64) and
 * gradients (float32) little-endian into one array and expects 4 bytes back; a pull sends the keys and decodes
 * {@code 4 * dim} bytes per key into floats. Encoding and decoding are the least any client has to do with arrays,
 * so the baseline does them too.
 */
final class RawGrpcTarget implements PushPullTarget {
    private static final int PUSH_REPLY_BYTES = Integer.BYTES;

    private final Channel channel;
    private final int dim;
    private final long deadlineMs;

    RawGrpcTarget(final Channel channel, final int dim, final long deadlineMs) {
        this.channel = channel;
        this.dim = dim;
        this.deadlineMs = deadlineMs;
    }

    /** A channel built like the SDK's channel to a shard (PsClient): default executor, 256 MiB inbound. */
    static ManagedChannel channel(final String address) {
        return Grpc.newChannelBuilder(address, InsecureChannelCredentials.create())
                .maxInboundMessageSize(RawGrpcServer.MAX_MESSAGE_BYTES)
                .build();
    }

    @Override
    public String side() {
        return "baseline";
    }

    @Override
    public int dim() {
        return dim;
    }

    @Override
    public CompletableFuture<Void> push(final long[] keys, final float[] gradients) {
        return push(keys, gradients, 0, keys.length);
    }

    /** Pushes keys {@code [from, to)} and their gradient rows, encoded straight from the caller's arrays. */
    CompletableFuture<Void> push(final long[] keys, final float[] gradients, final int from, final int to) {
        final int count = to - from;
        final ByteBuffer request = RawExchange.request(count * (Long.BYTES + dim * Float.BYTES), PUSH_REPLY_BYTES);
        request.asLongBuffer().put(keys, from, count);
        request.position(request.position() + count * Long.BYTES);
        request.asFloatBuffer().put(gradients, from * dim, count * dim);
        return call(request.array()).thenApply(reply -> null);
    }

    @Override
    public CompletableFuture<float[]> pull(final long[] keys) {
        final float[] values = new float[keys.length * dim];
        return pull(keys, 0, keys.length, values).thenApply(done -> values);
    }

    /** Pulls keys {@code [from, to)} into their rows of {@code values}. */
    CompletableFuture<Void> pull(final long[] keys, final int from, final int to, final float[] values) {
        final int count = to - from;
        final ByteBuffer request = RawExchange.request(count * Long.BYTES, count * dim * Float.BYTES);
        request.asLongBuffer().put(keys, from, count);
        return call(request.array())
                .thenAccept(reply -> ByteBuffer.wrap(reply)
                        .order(ByteOrder.LITTLE_ENDIAN)
                        .asFloatBuffer()
                        .get(values, from * dim, count * dim));
    }

    @Override
    public void awaitApplied() {
        // The baseline applies nothing.
    }

    private CompletableFuture<byte[]> call(final byte[] request) {
        final CompletableFuture<byte[]> reply = new CompletableFuture<>();
        ClientCalls.asyncUnaryCall(
                channel.newCall(
                        RawExchange.METHOD, CallOptions.DEFAULT.withDeadlineAfter(deadlineMs, TimeUnit.MILLISECONDS)),
                request,
                new StreamObserver<>() {
                    @Override
                    public void onNext(final byte[] value) {
                        reply.complete(value);
                    }

                    @Override
                    public void onError(final Throwable failure) {
                        reply.completeExceptionally(failure);
                    }

                    @Override
                    public void onCompleted() {}
                });
        return reply;
    }
}
