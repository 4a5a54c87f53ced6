package io.pscluster.bench;

import io.grpc.Grpc;
import io.grpc.InsecureServerCredentials;
import io.grpc.Server;
import io.grpc.ServerServiceDefinition;
import io.grpc.Status;
import io.grpc.stub.ServerCalls;
import io.grpc.stub.StreamObserver;
import java.io.IOException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;

/**
 * The baseline's server: {@link RawExchange} on a plain gRPC server built the way a shard's is (ShardServer): the
 * default Netty transport, handlers on a fixed pool of 8 threads rather than the event loop, 256 MiB inbound
 * messages. Its handler does the least any server must: take the request's bytes and return a fresh reply of the
 * asked size.
 */
final class RawGrpcServer implements AutoCloseable {
    /** ShardServer.Context's default handler pool. */
    static final int HANDLER_THREADS = 8;

    /** ShardServer's and PsClient's maxInboundMessageSize. */
    static final int MAX_MESSAGE_BYTES = 256 << 20;

    private final ExecutorService executor;
    private final Server server;

    private RawGrpcServer(final ExecutorService executor, final Server server) {
        this.executor = executor;
        this.server = server;
    }

    /** Starts on a free port of every interface, as a shard does. */
    static RawGrpcServer start() throws IOException {
        final ExecutorService executor =
                Executors.newFixedThreadPool(HANDLER_THREADS, BenchHarness.daemonThreads("raw-grpc-handler"));
        final ServerServiceDefinition service = ServerServiceDefinition.builder(RawExchange.SERVICE)
                .addMethod(RawExchange.METHOD, ServerCalls.asyncUnaryCall(RawGrpcServer::exchange))
                .build();
        try {
            final Server server = Grpc.newServerBuilderForPort(0, InsecureServerCredentials.create())
                    .executor(executor)
                    .maxInboundMessageSize(MAX_MESSAGE_BYTES)
                    .addService(service)
                    .build()
                    .start();
            return new RawGrpcServer(executor, server);
        } catch (IOException | RuntimeException e) {
            executor.shutdownNow();
            throw e;
        }
    }

    String address() {
        return "127.0.0.1:" + server.getPort();
    }

    private static void exchange(final byte[] request, final StreamObserver<byte[]> response) {
        final int replyBytes = RawExchange.replyBytes(request);
        if (replyBytes < 0 || replyBytes > MAX_MESSAGE_BYTES) {
            response.onError(Status.INVALID_ARGUMENT
                    .withDescription("request of " + request.length + " bytes asks for " + replyBytes
                            + " reply bytes; it must start with a little-endian int32 in 0.." + MAX_MESSAGE_BYTES)
                    .asRuntimeException());
            return;
        }
        response.onNext(new byte[replyBytes]);
        response.onCompleted();
    }

    @Override
    public void close() throws InterruptedException {
        server.shutdown();
        if (!server.awaitTermination(5, TimeUnit.SECONDS)) {
            server.shutdownNow();
            server.awaitTermination(5, TimeUnit.SECONDS);
        }
        executor.shutdownNow();
    }
}
