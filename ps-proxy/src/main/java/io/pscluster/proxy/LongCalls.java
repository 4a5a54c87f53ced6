package io.pscluster.proxy;

import io.grpc.Status;
import io.grpc.stub.StreamObserver;
import io.pscluster.wire.Unary;
import java.util.concurrent.Executor;
import java.util.concurrent.RejectedExecutionException;

/**
 * Runs the handlers that wait on shards or storage (create and drop table, checkpoint, restore, drain) on their own
 * pool, so that they never hold the threads heartbeats and registrations run on: a checkpoint may take minutes, a
 * lease lapses in seconds. The caller's gRPC context (its deadline, its cancellation) goes along with the work.
 */
final class LongCalls {
    private final Executor executor;

    LongCalls(final Executor executor) {
        this.executor = executor;
    }

    <T> void respond(final StreamObserver<T> out, final Unary.Body<T> body) {
        final Runnable work = io.grpc.Context.current().wrap(() -> Unary.respond(out, body));
        try {
            executor.execute(work);
        } catch (RejectedExecutionException e) {
            out.onError(Status.UNAVAILABLE
                    .withDescription("the proxy is shutting down")
                    .asRuntimeException());
        }
    }
}
