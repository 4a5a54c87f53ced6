package io.pscluster.wire;

import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;

/**
 * A domain error with the gRPC status it maps to. Thrown anywhere below a service method and turned into a
 * status by {@link #toStatus(Throwable)}, the one mapper every service uses, so the status a caller sees is part of
 * the API rather than an accident of where the error was raised.
 *
 * <p>Rejections that guarantee nothing was applied ({@link Reject#WRONG_OWNER}, {@link Reject#RESTORING},
 * {@link Reject#BACKPRESSURE}) carry a {@link #REJECT_KEY} trailer so that a client can retry them safely.
 */
public final class PsException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    /** Trailer naming why a request was refused before anything was applied. */
    public static final Metadata.Key<String> REJECT_KEY =
            Metadata.Key.of("ps-reject", Metadata.ASCII_STRING_MARSHALLER);

    /** Trailer carrying the refusing shard's routing epoch. */
    public static final Metadata.Key<String> EPOCH_KEY = Metadata.Key.of("ps-epoch", Metadata.ASCII_STRING_MARSHALLER);

    /** Why a request was refused untouched. */
    public enum Reject {
        /** The shard does not own a slot of the request under its routing epoch. */
        WRONG_OWNER("wrong-owner"),
        /** The shard owns the slot but is still loading it from a checkpoint. */
        RESTORING("restoring"),
        /** The shard's writers have no room for the request now (backpressure); it may be sent again later. */
        BACKPRESSURE("backpressure"),
        /** The shard does not yet know the job (or the worker) the request comes from; it is asking the proxy. */
        JOB_PENDING("job-pending");

        private final String wireName;

        Reject(final String wireName) {
            this.wireName = wireName;
        }

        public String wireName() {
            return wireName;
        }
    }

    /**
     * Trailer of a push's failure whose outcome is unknown: the push may have been applied (and for an SDK's timed-out
     * call, may be still), so pushing its gradients again may apply them twice. Its value is {@link #OUTCOME_UNKNOWN}.
     */
    public static final Metadata.Key<String> OUTCOME_KEY =
            Metadata.Key.of("ps-outcome", Metadata.ASCII_STRING_MARSHALLER);

    public static final String OUTCOME_UNKNOWN = "unknown";

    private final Status.Code code;
    private final Reject reject;
    private final long epoch;
    private final boolean outcomeUnknown;

    private PsException(final Status.Code code, final String message, final Reject reject, final long epoch) {
        this(code, message, reject, epoch, false);
    }

    private PsException(
            final Status.Code code,
            final String message,
            final Reject reject,
            final long epoch,
            final boolean outcomeUnknown) {
        super(message, null, false, false);
        this.code = code;
        this.reject = reject;
        this.epoch = epoch;
        this.outcomeUnknown = outcomeUnknown;
    }

    /**
     * A push refused because the shard cannot tell whether it applied it before (its sequence is older than what the
     * shard remembers): FAILED_PRECONDITION with the {@link #OUTCOME_KEY} trailer, so that the caller hears the push
     * may have been applied rather than that nothing was.
     */
    public static PsException mayHaveBeenApplied(final String message) {
        return new PsException(Status.Code.FAILED_PRECONDITION, message, null, 0, true);
    }

    /** Whether this failure leaves it unknown whether the push was applied ({@link #mayHaveBeenApplied}). */
    public boolean outcomeUnknown() {
        return outcomeUnknown;
    }

    public static PsException invalidArgument(final String message) {
        return new PsException(Status.Code.INVALID_ARGUMENT, message, null, 0);
    }

    public static PsException notFound(final String message) {
        return new PsException(Status.Code.NOT_FOUND, message, null, 0);
    }

    public static PsException alreadyExists(final String message) {
        return new PsException(Status.Code.ALREADY_EXISTS, message, null, 0);
    }

    public static PsException failedPrecondition(final String message) {
        return new PsException(Status.Code.FAILED_PRECONDITION, message, null, 0);
    }

    public static PsException resourceExhausted(final String message) {
        return new PsException(Status.Code.RESOURCE_EXHAUSTED, message, null, 0);
    }

    public static PsException unavailable(final String message) {
        return new PsException(Status.Code.UNAVAILABLE, message, null, 0);
    }

    /** Stored data (a checkpoint) is damaged. */
    public static PsException dataLoss(final String message) {
        return new PsException(Status.Code.DATA_LOSS, message, null, 0);
    }

    /** The shard does not own a slot the request touches; {@code epoch} is the shard's routing epoch. */
    public static PsException wrongOwner(final String message, final long epoch) {
        return new PsException(Status.Code.FAILED_PRECONDITION, message, Reject.WRONG_OWNER, epoch);
    }

    /** The shard's writers are full: nothing was queued, and the request may be retried after a backoff. */
    public static PsException backpressure(final String message) {
        return new PsException(Status.Code.RESOURCE_EXHAUSTED, message, Reject.BACKPRESSURE, 0);
    }

    /** The shard owns the slot but has not finished restoring it. */
    public static PsException restoring(final String message, final long epoch) {
        return new PsException(Status.Code.UNAVAILABLE, message, Reject.RESTORING, epoch);
    }

    /** The shard has not yet heard from the proxy of the job or worker the request names; retry shortly. */
    public static PsException jobPending(final String message, final long epoch) {
        return new PsException(Status.Code.UNAVAILABLE, message, Reject.JOB_PENDING, epoch);
    }

    public Status.Code code() {
        return code;
    }

    /**
     * Maps any failure to the status a caller sees: a {@code PsException} to its own code, an
     * {@link IllegalArgumentException} to INVALID_ARGUMENT, a status from an onward call unchanged, an I/O failure or
     * an interrupt (shutdown) to UNAVAILABLE, anything else to INTERNAL with its message.
     */
    /**
     * What a transport failure's status says beyond its description: its cause's message and, when deeper, the root
     * cause ({@code " (cause), because: root"}); "" without a cause. A TLS handshake's own message ("General
     * OpenSslEngine problem") hides the reason, deepest in the chain: a certificate path that does not lead to the
     * trusted CA, a host name the certificate does not name.
     */
    public static String causeOf(final Status status) {
        final Throwable cause = status.getCause();
        if (cause == null) {
            return "";
        }
        Throwable root = cause;
        while (root.getCause() != null && root.getCause() != root) {
            root = root.getCause();
        }
        return " (" + cause.getMessage() + ")" + (root == cause ? "" : ", because: " + root);
    }

    public static StatusRuntimeException toStatus(final Throwable failure) {
        if (failure instanceof PsException ps) {
            final Metadata trailers = new Metadata();
            if (ps.reject != null) {
                trailers.put(REJECT_KEY, ps.reject.wireName());
                trailers.put(EPOCH_KEY, Long.toString(ps.epoch));
            }
            if (ps.outcomeUnknown) {
                trailers.put(OUTCOME_KEY, OUTCOME_UNKNOWN);
            }
            return Status.fromCode(ps.code).withDescription(ps.getMessage()).asRuntimeException(trailers);
        }
        if (failure instanceof StatusRuntimeException sre) {
            return sre;
        }
        if (failure instanceof io.grpc.StatusException se) {
            return new StatusRuntimeException(se.getStatus(), se.getTrailers());
        }
        if (failure instanceof InterruptedException) {
            Thread.currentThread().interrupt();
            return Status.UNAVAILABLE.withDescription("shutting down").asRuntimeException();
        }
        if (failure instanceof java.io.IOException) {
            return Status.UNAVAILABLE
                    .withDescription("I/O failed: " + failure.getMessage())
                    .withCause(failure)
                    .asRuntimeException();
        }
        if (failure instanceof IllegalArgumentException) {
            return Status.INVALID_ARGUMENT.withDescription(failure.getMessage()).asRuntimeException();
        }
        return Status.INTERNAL
                .withDescription(failure.getClass().getSimpleName() + ": " + failure.getMessage())
                .withCause(failure)
                .asRuntimeException();
    }

    /** The reason a status says nothing was applied, or null when it does not say so. */
    public static Reject rejectOf(final StatusRuntimeException status) {
        final Metadata trailers = status.getTrailers();
        final String value = trailers == null ? null : trailers.get(REJECT_KEY);
        if (value != null) {
            for (final Reject reject : Reject.values()) {
                if (reject.wireName.equals(value)) {
                    return reject;
                }
            }
        }
        return null;
    }
}
