package io.pscluster.worker;

import com.google.protobuf.ByteString;
import com.google.protobuf.UnsafeByteOperations;
import io.grpc.Deadline;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.StreamObserver;
import io.pscluster.proto.v1.PullRequest;
import io.pscluster.proto.v1.PullResponse;
import io.pscluster.proto.v1.PushRequest;
import io.pscluster.proto.v1.PushResponse;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.wire.PsException;
import io.pscluster.wire.Slots;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Consumer;

/**
 * A handle to one table. Every call groups its keys by slot, splits them by the shard that owns the slot and each
 * shard's share into requests of whole slots of about {@link #CHUNK_BYTES}, keeps up to {@link #CHUNKS_IN_FLIGHT} of
 * them in flight per shard (all shards at once), and completes when all have answered. A push sums the gradients of
 * duplicate keys as it encodes each request (duplicates share a slot, so a request holds them all), and the shard
 * applies each key once.
 *
 * <p>Retries: a request refused with a guarantee that nothing was applied (the shard no longer owns the slot, is
 * still restoring it, or has no room to queue it) is re-split under a refreshed routing table and sent again, with
 * backoff, until the call's deadline. A pull is also retried when a shard cannot be reached, since reading twice is
 * harmless; a push is not, since it may have been applied. Keys travel as little-endian int64 and values as
 * little-endian float32, encoded straight into the array the request wraps.
 */
public final class PsTable {
    /** Target size of one request's payload. */
    static final int CHUNK_BYTES = 1 << 20;

    /** Requests in flight per shard within one call. */
    static final int CHUNKS_IN_FLIGHT = 4;

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

    public CompletableFuture<float[]> pullAsync(final long[] keys) {
        final float[] values = new float[keys.length * dim];
        final Call call = new Call(true, keys);
        return send(call, allPositions(keys.length), (address, positions) -> {
                    final PullRequest request = PullRequest.newBuilder()
                            .setTable(name())
                            .setRoutingEpoch(call.epoch)
                            .setKeys(encodeKeys(keys, positions))
                            .build();
                    return this.<PullResponse>unary(observer -> client.shard(address)
                                    .withDeadline(call.deadline)
                                    .pull(request, observer))
                            .thenAccept(response -> scatter(response.getValues(), positions, values));
                })
                .thenApply(done -> values);
    }

    public CompletableFuture<Void> pushAsync(final long[] keys, final float[] gradients) {
        if ((long) keys.length * dim != gradients.length) {
            throw new IllegalArgumentException("table '" + name() + "' has dim=" + dim + ": " + keys.length
                    + " keys need " + (long) keys.length * dim + " gradient values, got " + gradients.length);
        }
        final Call call = new Call(false, keys);
        return send(call, allPositions(keys.length), (address, positions) -> {
            final KeyDedup.Encoded encoded = KeyDedup.encodePush(keys, gradients, dim, positions);
            final PushRequest request = PushRequest.newBuilder()
                    .setTable(name())
                    .setRoutingEpoch(call.epoch)
                    .setKeys(encoded.keys())
                    .setGradients(encoded.gradients())
                    .build();
            return this.<PushResponse>unary(observer ->
                            client.shard(address).withDeadline(call.deadline).push(request, observer))
                    .thenApply(response -> null);
        });
    }

    /** One user call: its keys, deadline, whether it is safe to resend after an unknown outcome, routing epoch. */
    private final class Call {
        final Deadline deadline = Deadline.after(client.context().deadlineMs(), TimeUnit.MILLISECONDS);
        final boolean idempotent;
        final long[] keys;
        volatile long epoch;
        final AtomicInteger attempts = new AtomicInteger();

        Call(final boolean idempotent, final long[] keys) {
            this.idempotent = idempotent;
            this.keys = keys;
        }
    }

    /** Sends one request of a call to one shard: the positions (into the call's keys) it carries. */
    @FunctionalInterface
    private interface RequestSender {
        CompletableFuture<Void> send(String address, int[] positions);
    }

    /**
     * Splits {@code positions} by owning shard and into chunks of whole slots (so that every duplicate of a key is in
     * one request), sends them windowed, and retries refused ones.
     */
    private CompletableFuture<Void> send(final Call call, final int[] positions, final RequestSender sender) {
        final Routing routing = client.routing();
        call.epoch = routing.epoch();
        // Counting sort of the positions by slot.
        final int[] slotOf = new int[positions.length];
        final int[] start = new int[Slots.SLOT_COUNT + 1];
        for (int i = 0; i < positions.length; i++) {
            slotOf[i] = Slots.slotOf(tableHash, call.keys[positions[i]]);
            start[slotOf[i] + 1]++;
        }
        for (int slot = 0; slot < Slots.SLOT_COUNT; slot++) {
            start[slot + 1] += start[slot];
        }
        final int[] bySlot = new int[positions.length];
        final int[] fill = java.util.Arrays.copyOf(start, Slots.SLOT_COUNT);
        for (int i = 0; i < positions.length; i++) {
            bySlot[fill[slotOf[i]]++] = positions[i];
        }
        final int shards = routing.addresses().length;
        final List<List<int[]>> chunksOf = new ArrayList<>();
        for (int owner = 0; owner <= shards; owner++) {
            chunksOf.add(new ArrayList<>());
        }
        // Keys left per owner, so that a small call allocates small chunks.
        final int[] left = new int[shards + 1];
        for (int slot = 0; slot < Slots.SLOT_COUNT; slot++) {
            final int owner = routing.ownerOfSlot()[slot] < 0 ? shards : routing.ownerOfSlot()[slot];
            left[owner] += start[slot + 1] - start[slot];
        }
        final int[] open = new int[shards + 1];
        final int[][] building = new int[shards + 1][];
        for (int slot = 0; slot < Slots.SLOT_COUNT; slot++) {
            final int size = start[slot + 1] - start[slot];
            if (size == 0) {
                continue;
            }
            final int owner = routing.ownerOfSlot()[slot] < 0 ? shards : routing.ownerOfSlot()[slot];
            if (building[owner] != null && open[owner] + size > building[owner].length) {
                chunksOf.get(owner).add(java.util.Arrays.copyOf(building[owner], open[owner]));
                building[owner] = null;
                open[owner] = 0;
            }
            if (building[owner] == null) {
                building[owner] = new int[Math.max(size, Math.min(keysPerChunk, left[owner]))];
            }
            left[owner] -= size;
            System.arraycopy(bySlot, start[slot], building[owner], open[owner], size);
            open[owner] += size;
        }
        for (int owner = 0; owner <= shards; owner++) {
            if (open[owner] > 0) {
                chunksOf.get(owner).add(java.util.Arrays.copyOf(building[owner], open[owner]));
            }
        }
        final List<CompletableFuture<Void>> sent = new ArrayList<>();
        for (int owner = 0; owner < shards; owner++) {
            if (!chunksOf.get(owner).isEmpty()) {
                sent.add(sendWindowed(call, routing.addresses()[owner], chunksOf.get(owner), sender));
            }
        }
        for (final int[] unowned : chunksOf.get(shards)) {
            final StatusRuntimeException noOwner = Status.UNAVAILABLE
                    .withDescription(unowned.length + " keys of table '" + name()
                            + "' map to slots no live shard owns at routing epoch " + routing.epoch())
                    .asRuntimeException();
            sent.add(retry(call, unowned, sender, new Unsent(noOwner)));
        }
        return CompletableFuture.allOf(sent.toArray(CompletableFuture[]::new));
    }

    /** Sends one shard's chunks, {@link #CHUNKS_IN_FLIGHT} at a time. */
    private CompletableFuture<Void> sendWindowed(
            final Call call, final String address, final List<int[]> chunks, final RequestSender sender) {
        // After a failure no new chunk is launched, and the call completes (exceptionally) only once the chunks
        // already in flight have settled: a failed push never goes on changing the table after its caller heard.
        final CompletableFuture<Void> done = new CompletableFuture<>();
        final AtomicInteger next = new AtomicInteger();
        final AtomicInteger inFlight = new AtomicInteger();
        final java.util.concurrent.atomic.AtomicReference<Throwable> firstFailure =
                new java.util.concurrent.atomic.AtomicReference<>();
        final Runnable[] launch = new Runnable[1];
        launch[0] = () -> {
            final int chunk = firstFailure.get() == null ? next.getAndIncrement() : chunks.size();
            if (chunk >= chunks.size()) {
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
            final int[] part = chunks.get(chunk);
            sender.send(address, part)
                    .exceptionallyCompose(failure -> retry(call, part, sender, failure))
                    .whenComplete((ok, failure) -> {
                        if (failure != null) {
                            firstFailure.compareAndSet(null, unwrap(failure));
                        }
                        inFlight.decrementAndGet();
                        launch[0].run();
                    });
        };
        for (int i = 0; i < Math.min(CHUNKS_IN_FLIGHT, chunks.size()); i++) {
            launch[0].run();
        }
        return done;
    }

    private CompletableFuture<Void> retry(
            final Call call, final int[] positions, final RequestSender sender, final Throwable cause) {
        final Throwable failure = unwrap(cause);
        final StatusRuntimeException status =
                failure instanceof Unsent unsent ? unsent.status : PsException.toStatus(failure);
        // Retry only what the shard guarantees it did not apply (a reject trailer: wrong owner, restoring,
        // backpressure), a request never sent, or a read. A row cap (RESOURCE_EXHAUSTED without a trailer) is final.
        final boolean safe = failure instanceof Unsent
                || PsException.rejectOf(status) != null
                || (call.idempotent && status.getStatus().getCode() == Status.Code.UNAVAILABLE);
        final long remainingMs = call.deadline.timeRemaining(TimeUnit.MILLISECONDS);
        if (!safe || remainingMs <= 0) {
            return CompletableFuture.failedFuture(status);
        }
        final int attempt = call.attempts.incrementAndGet();
        final long backoffMs = Math.min(
                Math.min(client.context().maxBackoffMs(), 5L << Math.min(attempt, 20)), Math.max(0, remainingMs - 1));
        final CompletableFuture<Void> retried = new CompletableFuture<>();
        client.retries()
                .schedule(
                        () -> {
                            try {
                                // Backpressure says nothing about routing: only other refusals ask the proxy again.
                                if (PsException.rejectOf(status) != PsException.Reject.BACKPRESSURE) {
                                    try {
                                        client.refreshRouting();
                                    } catch (StatusRuntimeException proxyDown) {
                                        // Keep the old table; the resend below reports what fails.
                                    }
                                }
                                send(call, positions, sender).whenComplete((ok, again) -> {
                                    if (again != null) {
                                        retried.completeExceptionally(unwrap(again));
                                    } else {
                                        retried.complete(null);
                                    }
                                });
                            } catch (Throwable unexpected) {
                                retried.completeExceptionally(unexpected);
                            }
                        },
                        backoffMs,
                        TimeUnit.MILLISECONDS);
        return retried;
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

    private void scatter(final ByteString encoded, final int[] positions, final float[] values) {
        if (encoded.size() != positions.length * dim * Float.BYTES) {
            throw Status.INTERNAL
                    .withDescription("shard answered " + encoded.size() + " bytes for " + positions.length
                            + " keys of dim " + dim)
                    .asRuntimeException();
        }
        final FloatBuffer floats =
                encoded.asReadOnlyByteBuffer().order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer();
        for (final int position : positions) {
            floats.get(values, position * dim, dim);
        }
    }

    private <T> CompletableFuture<T> unary(final Consumer<StreamObserver<T>> call) {
        final CompletableFuture<T> future = new CompletableFuture<>();
        call.accept(new StreamObserver<>() {
            @Override
            public void onNext(final T value) {
                future.complete(value);
            }

            @Override
            public void onError(final Throwable failure) {
                future.completeExceptionally(failure);
            }

            @Override
            public void onCompleted() {}
        });
        return future;
    }

    private static Throwable unwrap(final Throwable failure) {
        return failure instanceof CompletionException && failure.getCause() != null ? failure.getCause() : failure;
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
        java.util.Arrays.setAll(positions, i -> i);
        return positions;
    }
}
