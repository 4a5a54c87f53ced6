package io.pscluster.proxy;

import io.grpc.ChannelCredentials;
import io.grpc.Grpc;
import io.grpc.ManagedChannel;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;

/** One channel per shard address, opened on first use and kept for the proxy's life. */
final class ShardChannels implements AutoCloseable {
    private final Map<String, ManagedChannel> channels = new ConcurrentHashMap<>();
    private final ChannelCredentials credentials;

    ShardChannels(final ChannelCredentials credentials) {
        this.credentials = credentials;
    }

    ManagedChannel channel(final String address) {
        return channels.computeIfAbsent(
                address,
                target -> Grpc.newChannelBuilder(target, credentials)
                        .maxInboundMessageSize(64 << 20)
                        .build());
    }

    @Override
    public void close() throws InterruptedException {
        for (final ManagedChannel channel : channels.values()) {
            channel.shutdown();
        }
        for (final ManagedChannel channel : channels.values()) {
            if (!channel.awaitTermination(5, TimeUnit.SECONDS)) {
                channel.shutdownNow();
            }
        }
    }
}
