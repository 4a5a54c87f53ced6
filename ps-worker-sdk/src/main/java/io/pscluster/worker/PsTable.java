package io.pscluster.worker;

import com.google.protobuf.ByteString;
import com.google.protobuf.UnsafeByteOperations;
import io.grpc.Deadline;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.ClientCalls;
import io.grpc.stub.StreamObserver;
import io.pscluster.proto.v1.PullRequest;
import io.pscluster.proto.v1.PushRequest;
import io.pscluster.proto.v1.PushResponse;
import io.pscluster.proto.v1.ShardServiceGrpc;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.wire.Backoff;
import io.pscluster.wire.PsException;
import io.pscluster.wire.Slots;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Consumer;

/**
 * A handle to one table. Every call groups its keys by slot, splits them by the shard that owns the slot and each
 * shard's share into requests of whole slots of about {@link #CHUNK_BYTES} (a slot too large for one goes in several,
 * by key for a push: {@link SlotChunks}), keeps up to {@link #CHUNKS_IN_FLIGHT} of them in flight per shard (all shards
 * at once), and completes when all have answered. A push sums the gradients of duplicate keys as it encodes each
 * request (a request holds every duplicate of its keys), and the shard applies each key once.
 *
 * <p>Push ids: each push request takes a sequence number from its client when it is first sent, and every retry of it
 * carries the same (client id, sequence), also the parts it is re-split into when the routing changed: they are
 * subsets of what the shard validated and queued whole or refused whole, and a shard applies a (client, sequence) at
 * most once for each slot, answering a repeat as accepted ({@code duplicate}). A re-split part is marked {@code
 * partial}: the shard remembers the slots it accepted it for, so a sibling part (other slots) that reaches a shard
 * which applied a part of the same sequence is applied there, not taken for a repeat, and a part retried at a shard
 * that took over its slots (with the rows of a checkpoint that holds it) is a repeat there.
 *
 * <p>Retries: a request is sent again, under a refreshed routing table, when nothing was applied (a reject trailer:
 * the shard no longer owns the slot, is still restoring it, or has no room to queue it; or no shard owns the slot
 * yet) and, thanks to the push ids, also when the outcome is unknown (UNAVAILABLE, CANCELLED by the shard, or
 * DEADLINE_EXCEEDED of one attempt). So a call waits out a failover within its deadline and follows the new routing. Every other status is
 * final (a row cap is RESOURCE_EXHAUSTED without a trailer; INVALID_ARGUMENT, NOT_FOUND...). Each attempt has its own
 * deadline, the smaller of the call's remaining time and {@link PsClient.Context#attemptTimeoutMs}, so a hung shard
 * does not eat the whole call. Waits between attempts of a request grow exponentially, jittered in [b/2, b], capped by
 * {@link PsClient.Context#maxBackoffMs}; a refresh that shows a newer routing epoch ends the wait at once. A call
 * still failing at its deadline fails with DEADLINE_EXCEEDED naming the last failure. Failures name the shard's
 * address and keep its status code and trailers.
 *
 * <p>Keys travel as little-endian int64 and values as little-endian float32, encoded straight into the array the
 * request wraps.
 */
public final class PsTable {
    /**
     * Target size of one request's payload: a shard's share of a call goes in {@code max(1, round(share / target))}
     * requests of even size (see {@link SlotChunks}), each within about 1.6 times the target.
     */
    static final int CHUNK_BYTES = 1 << 20;

    /** Requests in flight per shard within one call. */
    static final int CHUNKS_IN_FLIGHT = 4;

    /** The ceiling of the first backoff; it doubles with every attempt of a request. */
    static final long FIRST_BACKOFF_MS = 10;

    private final PsClient client;
    private final TableSchema schema;
    private final long tableHash;
    private final int dim;
    private final int keysPerChunk;

    PsTable(final PsClient client, final TableSchema schema) {
        this.client = client;
        this.schema = schema;
        this.tableHash = Slots.tableHash(schema.getName());
        this.dim = schema.getDim();
        this.keysPerChunk = Math.max(1, CHUNK_BYTES / (Long.BYTES + Float.BYTES * dim));
    }

    public String name() {
        return schema.getName();
    }

    public int dim() {
        return dim;
    }

    public TableSchema schema() {
        return schema;
    }

    /** The values of {@code keys}, row after row ({@code keys.length * dim} floats). Blocks. */
    public float[] pull(final long[] keys) {
        return join(pullAsync(keys));
    }

    /**
     * Pushes one gradient row per key ({@code keys.length * dim} floats); rows of repeated keys are summed first.
     * Blocks until every shard accepted its part.
     */
    public void push(final long[] keys, final float[] gradients) {
        join(pushAsync(keys, gradients));
    }

    /** Fails with CANCELLED at once when the client is closed, or when it closes before the call completes. */
    public CompletableFuture<float[]> pullAsync(final long[] callKeys) {
        if ((long) callKeys.length * dim > Integer.MAX_VALUE - 8) {
            throw new IllegalArgumentException("a pull of " + callKeys.length + " keys of table '" + name() + "' (dim "
                    + dim + ") needs " + (long) callKeys.length * dim + " floats, more than one Java array holds;"
                    + " split it");
        }
        final float[] values = new float[callKeys.length * dim];
        final JobSession job = client.session();
        if (job != null) {
            job.checkMember();
        }
        // A SYNC/SSP worker's pull waits on the shard for its clock. Each attempt still ends after attemptTimeoutMs and
        // is sent again under a refreshed routing table: a shard that lost the slots meanwhile is not waited on.
        // Large calls go in slot order (see SlotChunks.ORDER_MIN_KEYS); their answers' rows to the call's places.
        final SlotChunks.Ordered ordered = SlotChunks.inSlotOrder(tableHash, callKeys, null, dim);
        final long[] keys = ordered == null ? callKeys : ordered.keys();
        final Call call = new Call(keys, ordered == null ? null : ordered.slots(), false);
        final long clock = job == null ? 0 : job.clock();
        return client.track(() -> send(
                        call, allPositions(keys.length), null, 0, null, false, (address, request, deadline) -> {
                            final PullRequest.Builder pull = PullRequest.newBuilder()
                                    .setTable(name())
                                    .setRoutingEpoch(request.epoch())
                                    .setKeys(encodeKeys(keys, request.positions()));
                            if (job != null) {
                                pull.setJobId(job.spec().getJobId())
                                        .setWorkerId(job.workerId())
                                        .setClock(clock);
                            }
                            // The answer's rows go to their places in values as it is parsed (PullScatter).
                            final PullScatter scatter = new PullScatter(
                                    values,
                                    ordered == null ? request.positions() : ordered.originsOf(request.positions()),
                                    dim);
                            return this.<PullScatter.Outcome>unary(address, observer -> {
                                        final ShardServiceGrpc.ShardServiceStub stub =
                                                client.shard(address).withDeadline(deadline);
                                        ClientCalls.asyncUnaryCall(
                                                stub.getChannel().newCall(scatter.method(), stub.getCallOptions()),
                                                pull.build(),
                                                observer);
                                    })
                                    .thenAccept(outcome -> {
                                        if (outcome.problem() != null) {
                                            throw Status.INTERNAL
                                                    .withDescription(outcome.problem())
                                                    .asRuntimeException();
                                        }
                                    });
                        })
                .thenApply(done -> values));
    }

    /**
     * Fails with CANCELLED at once when the client is closed, or when it closes before the call completes. The arrays
     * are read while the requests are sent (and again for a retry): leave them unchanged until the future completes.
     */
    public CompletableFuture<Void> pushAsync(final long[] keys, final float[] gradients) {
        checkPush(keys, gradients);
        final JobSession job = client.session();
        if (job != null) {
            job.checkMember();
            // Held while the worker is paused for a checkpoint's cut; sent once it goes on.
            final CompletableFuture<Void> held = job.admitPush();
            if (held != null) {
                return held.thenCompose(resumed -> pushAsync(keys, gradients));
            }
            final CompletableFuture<Void> sent;
            try {
                sent = pushAdmitted(keys, gradients, job);
            } catch (RuntimeException e) {
                job.pushEnded();
                throw e;
            }
            sent.whenComplete((done, failure) -> job.pushEnded());
            return sent;
        }
        return pushAdmitted(keys, gradients, null);
    }

    /**
     * Refuses a push that a shard would refuse for its content, before any part of it is sent: split over shards and
     * requests, it would otherwise be applied by every shard whose part was good, and bad input must change nothing.
     *
     * @throws IllegalArgumentException naming the problem: the gradients' length, a key outside a dense table, a
     *     non-finite gradient, or repeats of a key whose gradients sum past float32's range (the shard applies the
     *     sum).
     */
    private void checkPush(final long[] keys, final float[] gradients) {
        if ((long) keys.length * dim != gradients.length) {
            throw new IllegalArgumentException("table '" + name() + "' has dim=" + dim + ": " + keys.length
                    + " keys need " + (long) keys.length * dim + " gradient values, got " + gradients.length);
        }
        final long denseRows = schema.getRows();
        if (denseRows > 0) {
            for (final long key : keys) {
                if (key < 0 || key >= denseRows) {
                    throw new IllegalArgumentException("key " + key + " is outside dense table '" + name()
                            + "' (rows 0.." + (denseRows - 1) + "); the push was refused whole, nothing was sent");
                }
            }
        }
        float largest = 0f;
        for (int i = 0; i < gradients.length; i++) {
            final float magnitude = Math.abs(gradients[i]);
            // False for NaN too.
            if (!(magnitude <= Float.MAX_VALUE)) {
                throw new IllegalArgumentException("non-finite gradient " + gradients[i] + " for key " + keys[i / dim]
                        + " (element " + i % dim + ") of table '" + name()
                        + "'; the push was refused whole, nothing was sent");
            }
            largest = Math.max(largest, magnitude);
        }
        // Summed one after another in float32, n values of at most M reach at most n * M * (1 + 2^-24)^(n - 1): only
        // a key with a value above MAX_VALUE over that factor can overflow, and gradients are far smaller.
        final double threshold = Float.MAX_VALUE / (keys.length * Math.exp(keys.length * 0x1p-24));
        if (keys.length > 1 && largest >= threshold) {
            checkRepeatSums(keys, gradients, threshold);
        }
    }

    /**
     * Sums the rows of the repeated keys that hold a value of at least {@code threshold} (no other key's sum can
     * overflow), in the order the request's encoding does (call order), and refuses an overflow.
     */
    private void checkRepeatSums(final long[] keys, final float[] gradients, final double threshold) {
        final Set<Long> large = new HashSet<>();
        for (int i = 0; i < gradients.length; i++) {
            if (Math.abs(gradients[i]) >= threshold) {
                large.add(keys[i / dim]);
            }
        }
        final Map<Long, float[]> sums = new HashMap<>();
        for (int i = 0; i < keys.length; i++) {
            if (!large.contains(keys[i])) {
                continue;
            }
            final float[] row = Arrays.copyOfRange(gradients, i * dim, (i + 1) * dim);
            final float[] sum = sums.putIfAbsent(keys[i], row);
            if (sum == null) {
                continue;
            }
            for (int d = 0; d < dim; d++) {
                sum[d] += row[d];
                if (!Float.isFinite(sum[d])) {
                    throw new IllegalArgumentException("the gradients of key " + keys[i] + " (element " + d
                            + "), repeated in this push of table '" + name() + "', sum to " + sum[d]
                            + " in float32; the push was refused whole, nothing was sent");
                }
            }
        }
    }

    private CompletableFuture<Void> pushAdmitted(
            final long[] callKeys, final float[] callGradients, final JobSession job) {
        final SlotChunks.Ordered ordered = SlotChunks.inSlotOrder(tableHash, callKeys, callGradients, dim);
        final long[] keys = ordered == null ? callKeys : ordered.keys();
        final float[] gradients = ordered == null ? callGradients : ordered.rows();
        final Call call = new Call(keys, ordered == null ? null : ordered.slots(), true);
        final long clock = job == null ? 0 : job.clock();
        return client.track(() ->
                send(call, allPositions(keys.length), null, 0, null, false, (address, request, deadline) -> {
                    final KeyDedup.Encoded encoded = KeyDedup.encodePush(keys, gradients, dim, request.positions());
                    final PushRequest.Builder builder = PushRequest.newBuilder()
                            .setTable(name())
                            .setRoutingEpoch(request.epoch())
                            .setKeys(encoded.keys())
                            .setGradients(encoded.gradients())
                            .setClientId(client.clientId())
                            .setSequence(request.lineage().sequence(client))
                            .setPartial(request.positions().length
                                    < request.lineage().keys());
                    if (job != null) {
                        builder.setJobId(job.spec().getJobId())
                                .setWorkerId(job.workerId())
                                .setClock(clock);
                    }
                    final PushRequest push = builder.build();
                    return this.<PushResponse>unary(
                                    address,
                                    observer -> client.shard(address)
                                            .withDeadline(deadline)
                                            .push(push, observer))
                            // A duplicate is success too: the shard applied that push (or part) once before.
                            .thenAccept(response -> {});
                }));
    }

    /** One user call: its keys (with their slots when it was put in slot order, else null) and deadline. */
    private final class Call {
        final Deadline deadline = Deadline.after(client.context().deadlineMs(), TimeUnit.MILLISECONDS);
        final long[] keys;
        final int[] slots;
        /**
         * Whether every repeat of a key must be in one request: a push's are summed there; a pull may send them in
         * several, so that no key repeated millions of times makes one request past the limits.
         */
        final boolean wholeKeys;

        Call(final long[] keys, final int[] slots, final boolean wholeKeys) {
            this.keys = keys;
            this.slots = slots;
            this.wholeKeys = wholeKeys;
        }
    }

    /**
     * A request as first split from a call and every part it is re-split into on retries: they share one push
     * sequence, taken when the first of them is sent.
     */
    static final class Lineage {
        private final int keys;
        private long sequence;

        /** A lineage of a request of {@code keys} keys (positions), all that its sequence will ever carry. */
        Lineage(final int keys) {
            this.keys = keys;
        }

        synchronized long sequence(final PsClient client) {
            if (sequence == 0) {
                sequence = client.nextSequence();
            }
            return sequence;
        }

        /**
         * How many keys the request the lineage began with carried; a request with fewer is a part (the shard remembers
         * the slots it accepted a part's sequence for, since its siblings, with other slots, may be applied nowhere
         * yet).
         */
        int keys() {
            return keys;
        }
    }

    /**
     * One request to one shard: the positions (into the call's keys) it carries, the routing epoch it was split
     * under, its lineage, how many attempts of it (or the request it was split from) failed, and the last failure
     * (null before the first).
     */
    private record Request(
            int[] positions,
            long epoch,
            Lineage lineage,
            int attempts,
            StatusRuntimeException lastFailure,
            boolean outcomeUnknown) {}

    /** Sends one attempt of a request to one shard, with the attempt's deadline. */
    @FunctionalInterface
    private interface RequestSender {
        CompletableFuture<Void> send(String address, Request request, Deadline deadline);
    }

    /**
     * Splits {@code positions} by owning shard and into chunks of whole slots (for a push, a slot too large for one in
     * chunks of whole keys, so that every repeat of a key is in one request; see {@link Call#wholeKeys}), sends them
     * windowed, and retries refused ones. A re-split ({@code parent} set) makes exactly one request per owner, each no
     * larger than the one it came from, so that no two requests to one shard share a sequence.
     */
    private CompletableFuture<Void> send(
            final Call call,
            final int[] positions,
            final Lineage parent,
            final int attempts,
            final StatusRuntimeException lastFailure,
            final boolean outcomeUnknown,
            final RequestSender sender) {
        final Routing routing = client.routing();
        final int targetKeys = parent == null ? keysPerChunk : Integer.MAX_VALUE;
        final List<List<int[]>> chunksOf =
                SlotChunks.split(tableHash, call.keys, call.slots, positions, routing, targetKeys, call.wholeKeys);
        final int shards = routing.addresses().length;
        for (int owner = 0; owner < shards; owner++) {
            final String tooOld = chunksOf.get(owner).isEmpty() ? null : routing.tooOld(owner);
            if (tooOld != null) {
                // Before any request of the call is sent, so that an older shard takes no part of it.
                final StatusRuntimeException refused = Status.FAILED_PRECONDITION
                        .withDescription("table '" + name() + "': " + tooOld)
                        .asRuntimeException();
                return CompletableFuture.failedFuture(
                        call.wholeKeys && outcomeUnknown ? withOutcomeUnknown(refused) : refused);
            }
        }
        final List<CompletableFuture<Void>> sent = new ArrayList<>();
        for (int owner = 0; owner < shards; owner++) {
            final String address = routing.addresses()[owner];
            final List<Request> requests = new ArrayList<>();
            for (final int[] chunk : chunksOf.get(owner)) {
                final Lineage lineage = parent == null ? new Lineage(chunk.length) : parent;
                requests.add(new Request(chunk, routing.epoch(), lineage, attempts, lastFailure, outcomeUnknown));
            }
            if (!requests.isEmpty()) {
                sent.add(sendWindowed(call, address, requests, sender));
            }
        }
        for (final int[] unowned : chunksOf.get(shards)) {
            final StatusRuntimeException noOwner = Status.UNAVAILABLE
                    .withDescription(unowned.length + " keys of table '" + name()
                            + "' map to slots no live shard owns at routing epoch " + routing.epoch())
                    .asRuntimeException();
            final Request request = new Request(
                    unowned,
                    routing.epoch(),
                    parent == null ? new Lineage(unowned.length) : parent,
                    attempts,
                    lastFailure,
                    outcomeUnknown);
            sent.add(retry(call, request, new Unsent(noOwner), sender));
        }
        final CompletableFuture<?>[] all = sent.toArray(CompletableFuture[]::new);
        // A call fails with one of its requests' failures; with the outcome unknown when any of them leaves it so.
        return CompletableFuture.allOf(all).exceptionallyCompose(failure -> {
            Throwable chosen = PsClient.unwrap(failure);
            for (final CompletableFuture<?> request : all) {
                final Throwable other = request.handle((ok, t) -> t).join();
                chosen = other == null ? chosen : unknownIfEither(chosen, PsClient.unwrap(other));
            }
            return CompletableFuture.failedFuture(chosen);
        });
    }

    /** Whether an attempt failed before it reached a shard: its connection was refused (nothing was sent). */
    private static boolean neverSent(final StatusRuntimeException status) {
        for (Throwable cause = status.getCause(); cause != null; cause = cause.getCause()) {
            if (cause instanceof java.net.ConnectException) {
                return true;
            }
        }
        return false;
    }

    /** {@code chosen}, marked outcome unknown ({@link #outcomeUnknown}) when {@code other} is. */
    private static Throwable unknownIfEither(final Throwable chosen, final Throwable other) {
        return !outcomeUnknown(chosen) && outcomeUnknown(other) && chosen instanceof StatusRuntimeException status
                ? withOutcomeUnknown(status)
                : chosen;
    }

    /** Sends one shard's requests, {@link #CHUNKS_IN_FLIGHT} at a time. */
    private CompletableFuture<Void> sendWindowed(
            final Call call, final String address, final List<Request> requests, final RequestSender sender) {
        // After a failure no new request is launched, and the call completes (exceptionally) only once the requests
        // already in flight have settled: a failed push never goes on changing the table after its caller heard.
        final CompletableFuture<Void> done = new CompletableFuture<>();
        final AtomicInteger next = new AtomicInteger();
        final AtomicInteger inFlight = new AtomicInteger();
        final AtomicReference<Throwable> firstFailure = new AtomicReference<>();
        final Runnable[] launch = new Runnable[1];
        launch[0] = () -> {
            final int index = firstFailure.get() == null ? next.getAndIncrement() : requests.size();
            if (index >= requests.size()) {
                if (inFlight.get() == 0 && !done.isDone()) {
                    final Throwable failure = firstFailure.get();
                    if (failure != null) {
                        done.completeExceptionally(failure);
                    } else {
                        done.complete(null);
                    }
                }
                return;
            }
            inFlight.incrementAndGet();
            attempt(call, address, requests.get(index), sender).whenComplete((ok, failure) -> {
                if (failure != null) {
                    final Throwable cause = PsClient.unwrap(failure);
                    if (!firstFailure.compareAndSet(null, cause)) {
                        firstFailure.updateAndGet(first -> unknownIfEither(first, cause));
                    }
                }
                inFlight.decrementAndGet();
                launch[0].run();
            });
        };
        for (int i = 0; i < Math.min(CHUNKS_IN_FLIGHT, requests.size()); i++) {
            launch[0].run();
        }
        return done;
    }

    /** One attempt of {@code request}, with its own deadline, and the retries its failure calls for. */
    private CompletableFuture<Void> attempt(
            final Call call, final String address, final Request request, final RequestSender sender) {
        final Deadline deadline =
                call.deadline.minimum(Deadline.after(client.context().attemptTimeoutMs(), TimeUnit.MILLISECONDS));
        CompletableFuture<Void> sent;
        try {
            sent = sender.send(address, request, deadline);
        } catch (RuntimeException e) {
            sent = CompletableFuture.failedFuture(e);
        }
        return sent.exceptionallyCompose(failure -> retry(call, request, failure, sender));
    }

    /** What a failed attempt calls for. */
    enum Retry {
        /** The status is final: the call fails with it. */
        NEVER,
        /** The shard was full: send again after a backoff, to the same place. */
        RESEND,
        /** The routing may be stale or the shard gone: refresh the table, then re-split and send again. */
        REFRESH_AND_RESEND
    }

    static Retry classify(final StatusRuntimeException status) {
        final PsException.Reject reject = PsException.rejectOf(status);
        if (reject == PsException.Reject.BACKPRESSURE) {
            return Retry.RESEND;
        }
        if (reject != null) {
            return Retry.REFRESH_AND_RESEND;
        }
        // The outcome is unknown: safe to send again for a pull (a read) and for a push (deduplicated by its id).
        // CANCELLED comes from the other side (a shard stopping abruptly resets its streams, as a dying one drops its
        // connections) or from gRPC here when an answer cannot be parsed ("Failed to read message": a malformed
        // answer, sent again until the deadline, whose failure then names it); this client never cancels its calls
        // but on close, which is checked first.
        return switch (status.getStatus().getCode()) {
            case UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED -> Retry.REFRESH_AND_RESEND;
            default -> Retry.NEVER;
        };
    }

    /** The wait before attempt {@code attempts + 1}: uniform in [b/2, b], b = min(max, first * 2^attempts). */
    static long backoffMs(final int attempts, final long maxBackoffMs) {
        return Backoff.jitteredMs(FIRST_BACKOFF_MS, maxBackoffMs, attempts);
    }

    private CompletableFuture<Void> retry(
            final Call call, final Request request, final Throwable cause, final RequestSender sender) {
        final Throwable failure = PsClient.unwrap(cause);
        final StatusRuntimeException status =
                failure instanceof Unsent unsent ? unsent.status : PsException.toStatus(failure);
        if (client.isClosed()) {
            return CompletableFuture.failedFuture(PsClient.closedStatus());
        }
        final Retry retry = failure instanceof Unsent ? Retry.REFRESH_AND_RESEND : classify(status);
        if (retry == Retry.NEVER) {
            return CompletableFuture.failedFuture(
                    call.wholeKeys && request.outcomeUnknown() ? withOutcomeUnknown(status) : status);
        }
        // No answer came (no reject trailer says nothing was applied): the shard may have taken it, unless the attempt
        // never reached it (its connection was refused).
        final boolean unknown = request.outcomeUnknown()
                || !(failure instanceof Unsent) && PsException.rejectOf(status) == null && !neverSent(status);
        final long remainingMs = call.deadline.timeRemaining(TimeUnit.MILLISECONDS);
        if (remainingMs <= 0) {
            return CompletableFuture.failedFuture(deadlineExceeded(call, request, status, unknown));
        }
        final CompletableFuture<Void> backedOff = client.delay(
                Math.min(backoffMs(request.attempts(), client.context().maxBackoffMs()), remainingMs));
        final CompletableFuture<Void> ready = new CompletableFuture<>();
        if (retry == Retry.REFRESH_AND_RESEND) {
            client.refreshRoutingAsync(call.deadline).whenComplete((routing, refreshFailed) -> {
                if (refreshFailed == null && routing.epoch() > request.epoch()) {
                    // The table moved on since this request was routed: waiting longer would not change where it
                    // goes, and a failover is what the caller is waiting out.
                    ready.complete(null);
                } else {
                    backedOff.whenComplete((ok, closing) -> ready.complete(null));
                }
            });
        } else {
            backedOff.whenComplete((ok, closing) -> ready.complete(null));
        }
        return ready.thenComposeAsync(
                ignored -> {
                    if (client.isClosed()) {
                        return CompletableFuture.failedFuture(PsClient.closedStatus());
                    }
                    if (call.deadline.isExpired()) {
                        return CompletableFuture.failedFuture(deadlineExceeded(call, request, status, unknown));
                    }
                    return send(
                            call,
                            request.positions(),
                            request.lineage(),
                            request.attempts() + 1,
                            status,
                            unknown,
                            sender);
                },
                client.resends());
    }

    private StatusRuntimeException deadlineExceeded(
            final Call call, final Request request, final StatusRuntimeException failure, final boolean unknown) {
        // An attempt started just before the deadline times out at once: the failure before it says more.
        final StatusRuntimeException last =
                failure.getStatus().getCode() == Status.Code.DEADLINE_EXCEEDED && request.lastFailure() != null
                        ? request.lastFailure()
                        : failure;
        final boolean pushMayBeApplied = call.wholeKeys && unknown;
        final Metadata trailers = new Metadata();
        if (pushMayBeApplied) {
            trailers.put(PsException.OUTCOME_KEY, PsException.OUTCOME_UNKNOWN);
        }
        return Status.DEADLINE_EXCEEDED
                .withDescription("table '" + name() + "': deadline of "
                        + client.context().deadlineMs()
                        + " ms passed after " + (request.attempts() + 1) + " attempts of a request of "
                        + request.positions().length + " keys; last: " + last.getMessage()
                        + (pushMayBeApplied
                                ? "; the push's outcome is unknown: an attempt got no answer, so the shard may have"
                                        + " applied it (and may still); pushing the same gradients again may apply"
                                        + " them twice"
                                : ""))
                .withCause(last)
                .asRuntimeException(trailers);
    }

    /**
     * {@code status} marked outcome unknown ({@link #outcomeUnknown}): a push's final failure after an earlier attempt of
     * the same request got no answer, which the shard may have applied.
     */
    private static StatusRuntimeException withOutcomeUnknown(final StatusRuntimeException status) {
        final Metadata trailers = new Metadata();
        if (status.getTrailers() != null) {
            trailers.merge(status.getTrailers());
        }
        if (trailers.get(PsException.OUTCOME_KEY) == null) {
            trailers.put(PsException.OUTCOME_KEY, PsException.OUTCOME_UNKNOWN);
        }
        return status.getStatus().asRuntimeException(trailers);
    }

    /**
     * Whether a push failed without knowing whether its shard applied it: it ran out of its deadline after an attempt
     * got no answer (a shard lost or stalled, an answer lost), or a shard refused a retry it could no longer tell from
     * a push it applied (FAILED_PRECONDITION, its sequence older than what the shard remembers). Such a push may have
     * been applied, or may be applied still; pushing its gradients again may apply them twice. A push failing
     * otherwise applied nothing of the request that failed (other requests of the same call may have been applied).
     */
    public static boolean outcomeUnknown(final Throwable failure) {
        final Throwable cause = PsClient.unwrap(failure);
        if (cause instanceof StatusRuntimeException status && status.getTrailers() != null) {
            return PsException.OUTCOME_UNKNOWN.equals(status.getTrailers().get(PsException.OUTCOME_KEY));
        }
        return false;
    }

    /** A request that was never sent (no shard owns its slots); always safe to retry. */
    private static final class Unsent extends RuntimeException {
        private static final long serialVersionUID = 1L;
        final transient StatusRuntimeException status;

        Unsent(final StatusRuntimeException status) {
            super(status.getMessage(), null, false, false);
            this.status = status;
        }
    }

    // ---- encoding: straight into the array the request wraps, no intermediate copies

    private static ByteString encodeKeys(final long[] keys, final int[] positions) {
        final ByteBuffer bytes =
                ByteBuffer.allocate(positions.length * Long.BYTES).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < positions.length; i++) {
            bytes.putLong(i * Long.BYTES, keys[positions[i]]);
        }
        return UnsafeByteOperations.unsafeWrap(bytes.array());
    }

    /** One unary call; its failure names the shard's address and keeps the status code and trailers. */
    private <T> CompletableFuture<T> unary(final String address, final Consumer<StreamObserver<T>> call) {
        final CompletableFuture<T> future = new CompletableFuture<>();
        call.accept(new StreamObserver<>() {
            @Override
            public void onNext(final T value) {
                future.complete(value);
            }

            @Override
            public void onError(final Throwable failure) {
                final StatusRuntimeException status = PsException.toStatus(failure);
                future.completeExceptionally(
                        status.getStatus().getCode() == Status.Code.CANCELLED && client.isClosed()
                                ? PsClient.closedStatus()
                                : PsClient.prefixed("shard at " + address, status));
            }

            @Override
            public void onCompleted() {}
        });
        return future;
    }

    private static <T> T join(final CompletableFuture<T> future) {
        try {
            return future.join();
        } catch (CompletionException e) {
            if (e.getCause() instanceof RuntimeException runtime) {
                throw runtime;
            }
            throw e;
        }
    }

    private static int[] allPositions(final int count) {
        final int[] positions = new int[count];
        Arrays.setAll(positions, i -> i);
        return positions;
    }
}
