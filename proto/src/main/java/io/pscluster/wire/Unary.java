package io.pscluster.wire;

import io.grpc.stub.StreamObserver;

/** Completes a unary call with its value, or with the status {@link PsException#toStatus} maps its failure to. */
public final class Unary {
    /** A call body; it may fail with any exception. */
    @FunctionalInterface
    public interface Body<T> {
        T call() throws Exception;
    }

    private Unary() {}

    public static <T> void respond(final StreamObserver<T> response, final Body<T> body) {
        final T value;
        try {
            value = body.call();
        } catch (Exception failure) {
            response.onError(PsException.toStatus(failure));
            return;
        } catch (Error error) {
            // The caller gets an answer rather than waiting for its deadline (or forever, without one); the error
            // goes on up to the executor's thread, which logs it.
            try {
                response.onError(io.grpc.Status.INTERNAL
                        .withDescription("the server failed while answering: " + error)
                        .asRuntimeException());
            } catch (RuntimeException | Error ignored) {
                error.addSuppressed(ignored);
            }
            throw error;
        }
        response.onNext(value);
        response.onCompleted();
    }
}
