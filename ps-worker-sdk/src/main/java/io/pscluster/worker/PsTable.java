package io.pscluster.worker;

import io.grpc.Deadline;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.StreamObserver;
import io.pscluster.proto.v1.PullRequest;
import io.pscluster.proto.v1.PullResponse;
import io.pscluster.proto.v1.PushRequest;
import io.pscluster.proto.v1.PushResponse;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.wire.LittleEndian;
import io.pscluster.wire.PsException;
import io.pscluster.wire.Slots;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.TimeUnit;
import java.util.function.BiConsumer;

/**
 * A handle to one table. Every call splits its keys by the shard that owns their slot, sends one request per shard
 * concurrently, and completes when all have answered.
 *
 * <p>Retries: a part refused with a guarantee that nothing was applied (the shard no longer owns the slot, is still
 * restoring it, or its apply queue is full) is re-split under a refreshed routing table and sent again, with backoff,
 * until the call's deadline. A pull is also retried when a shard cannot be reached, since reading twice is harmless;
 * a push is not, since it may have been applied. Values travel as little-endian float32, keys as int64.
 */
public final class PsTable {
    private final PsClient client;
    private final TableSchema schema;
    private final long tableHash;
    private final int dim;

    PsTable(final PsClient client, final TableSchema schema) {
        this.client = client;
        this.schema = schema;
        this.tableHash = Slots.tableHash(schema.getName());
        this.dim = schema.getDim();
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

    /** Pushes one gradient row per key ({@code keys.length * dim} floats). Blocks until every shard accepted it. */
    public void push(final long[] keys, final float[] gradients) {
        join(pushAsync(keys, gradients));
    }

    public CompletableFuture<float[]> pullAsync(final long[] keys) {
        final float[] values = new float[keys.length * dim];
        final Call call = new Call(true);
        return send(call, keys, allPositions(keys.length), (address, positions) -> {
                    final long[] partKeys = gather(keys, positions);
                    final PullRequest request = PullRequest.newBuilder()
                            .setTable(name())
                            .setRoutingEpoch(call.epoch)
                            .setKeys(LittleEndian.encodeLongs(partKeys))
                            .build();
                    return this.<PullResponse>unary(observer -> client.shard(address)
                                    .withDeadline(call.deadline)
                                    .pull(request, observer))
                            .thenAccept(response -> {
                                final float[] part = LittleEndian.decodeFloats(response.getValues(), "values");
                                for (int i = 0; i < positions.length; i++) {
                                    System.arraycopy(part, i * dim, values, positions[i] * dim, dim);
                                }
                            });
                })
                .thenApply(done -> values);
    }

    public CompletableFuture<Void> pushAsync(final long[] keys, final float[] gradients) {
        if ((long) keys.length * dim != gradients.length) {
            throw new IllegalArgumentException("table '" + name() + "' has dim=" + dim + ": " + keys.length
                    + " keys need " + (long) keys.length * dim + " gradient values, got " + gradients.length);
        }
        final Call call = new Call(false);
        return send(call, keys, allPositions(keys.length), (address, positions) -> {
            final float[] partGradients = new float[positions.length * dim];
            for (int i = 0; i < positions.length; i++) {
                System.arraycopy(gradients, positions[i] * dim, partGradients, i * dim, dim);
            }
            final PushRequest request = PushRequest.newBuilder()
                    .setTable(name())
                    .setRoutingEpoch(call.epoch)
                    .setKeys(LittleEndian.encodeLongs(gather(keys, positions)))
                    .setGradients(LittleEndian.encodeFloats(partGradients))
                    .build();
            return this.<PushResponse>unary(observer ->
                            client.shard(address).withDeadline(call.deadline).push(request, observer))
                    .thenApply(response -> null);
        });
    }

    /** One user call: its deadline, whether it is safe to resend after an unknown outcome, its routing epoch. */
    private final class Call {
        final Deadline deadline = Deadline.after(client.context().deadlineMs(), TimeUnit.MILLISECONDS);
        final boolean idempotent;
        volatile long epoch;
        int attempts;

        Call(final boolean idempotent) {
            this.idempotent = idempotent;
        }
    }

    /** Sends one request of a call to one shard: the positions (into the call's keys) it carries. */
    @FunctionalInterface
    private interface PartSender {
        CompletableFuture<Void> send(String address, int[] positions);
    }

    /** Splits {@code positions} by owning shard, sends each part, and retries refused parts. */
    private CompletableFuture<Void> send(
            final Call call, final long[] keys, final int[] positions, final PartSender sender) {
        final Routing routing = client.routing();
        call.epoch = routing.epoch();
        final Map<String, List<Integer>> parts = new LinkedHashMap<>();
        final List<Integer> unrouted = new ArrayList<>();
        for (final int position : positions) {
            final String address = routing.addressOfSlot()[Slots.slotOf(tableHash, keys[position])];
            (address == null ? unrouted : parts.computeIfAbsent(address, a -> new ArrayList<>())).add(position);
        }
        final List<CompletableFuture<Void>> sent = new ArrayList<>();
        for (final Map.Entry<String, List<Integer>> part : parts.entrySet()) {
            final int[] partPositions = toArray(part.getValue());
            sent.add(sender.send(part.getKey(), partPositions)
                    .exceptionallyCompose(failure -> retry(call, keys, partPositions, sender, failure)));
        }
        if (!unrouted.isEmpty()) {
            final StatusRuntimeException noOwner = Status.UNAVAILABLE
                    .withDescription(unrouted.size() + " keys of table '" + name()
                            + "' map to slots no live shard owns at routing epoch " + routing.epoch())
                    .asRuntimeException();
            sent.add(retry(call, keys, toArray(unrouted), sender, new Unsent(noOwner)));
        }
        return CompletableFuture.allOf(sent.toArray(CompletableFuture[]::new));
    }

    private CompletableFuture<Void> retry(
            final Call call, final long[] keys, final int[] positions, final PartSender sender, final Throwable cause) {
        final Throwable failure = cause instanceof CompletionException ? cause.getCause() : cause;
        final StatusRuntimeException status =
                failure instanceof Unsent unsent ? unsent.status : PsException.toStatus(failure);
        final boolean safe = failure instanceof Unsent
                || PsException.rejectOf(status) != null
                || status.getStatus().getCode() == Status.Code.RESOURCE_EXHAUSTED
                || (call.idempotent && status.getStatus().getCode() == Status.Code.UNAVAILABLE);
        final long remainingMs = call.deadline.timeRemaining(TimeUnit.MILLISECONDS);
        if (!safe || remainingMs <= 0) {
            return CompletableFuture.failedFuture(status);
        }
        final int attempt;
        synchronized (call) {
            attempt = ++call.attempts;
        }
        final long backoffMs = Math.min(
                Math.min(client.context().maxBackoffMs(), 5L << Math.min(attempt, 20)), Math.max(0, remainingMs - 1));
        final CompletableFuture<Void> retried = new CompletableFuture<>();
        client.retries()
                .schedule(
                        () -> {
                            try {
                                client.refreshRouting();
                            } catch (StatusRuntimeException proxyDown) {
                                // Keep the old table; the resend below reports what fails.
                            }
                            send(call, keys, positions, sender).whenComplete(completeWith(retried));
                        },
                        backoffMs,
                        TimeUnit.MILLISECONDS);
        return retried;
    }

    /** A part that was never sent (no shard owns its slots); always safe to retry. */
    private static final class Unsent extends RuntimeException {
        private static final long serialVersionUID = 1L;
        final transient StatusRuntimeException status;

        Unsent(final StatusRuntimeException status) {
            super(status.getMessage(), null, false, false);
            this.status = status;
        }
    }

    private <T> CompletableFuture<T> unary(final java.util.function.Consumer<StreamObserver<T>> call) {
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

    private static <T> BiConsumer<T, Throwable> completeWith(final CompletableFuture<T> target) {
        return (value, failure) -> {
            if (failure != null) {
                target.completeExceptionally(failure instanceof CompletionException ? failure.getCause() : failure);
            } else {
                target.complete(value);
            }
        };
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

    private static long[] gather(final long[] keys, final int[] positions) {
        final long[] part = new long[positions.length];
        for (int i = 0; i < positions.length; i++) {
            part[i] = keys[positions[i]];
        }
        return part;
    }

    private static int[] toArray(final List<Integer> values) {
        return values.stream().mapToInt(Integer::intValue).toArray();
    }
}
