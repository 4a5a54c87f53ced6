package io.pscluster.worker;

import io.grpc.Grpc;
import io.grpc.InsecureServerCredentials;
import io.grpc.Server;
import io.grpc.Status;
import io.grpc.stub.StreamObserver;
import io.pscluster.proto.v1.PullRequest;
import io.pscluster.proto.v1.PullResponse;
import io.pscluster.proto.v1.PushRequest;
import io.pscluster.proto.v1.PushResponse;
import io.pscluster.proto.v1.ShardServiceGrpc;
import io.pscluster.wire.LittleEndian;
import io.pscluster.wire.PsException;
import java.io.IOException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedDeque;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;

/**
 * A shard on loopback whose answers to pushes are scripted, one per push, then "accept". It deduplicates on (client,
 * sequence) as a real shard does, and records every push it received and every key it applied.
 */
final class ScriptedShard implements AutoCloseable {
    /** How to answer one push. */
    @FunctionalInterface
    interface Answer {
        void answer(ScriptedShard shard, PushRequest request, StreamObserver<PushResponse> response);
    }

    static final Answer ACCEPT = ScriptedShard::accept;

    /** Never answers: the caller's deadline ends the call. */
    static final Answer HANG = (shard, request, response) -> {};

    private final Server server;
    private final ConcurrentLinkedDeque<Answer> script = new ConcurrentLinkedDeque<>();
    final List<PushRequest> pushes = new CopyOnWriteArrayList<>();
    final List<Long> applied = new CopyOnWriteArrayList<>();
    final List<PullRequest> pulls = new CopyOnWriteArrayList<>();
    private final Set<List<Long>> seen = ConcurrentHashMap.newKeySet();
    /** Sequences accepted for parts only, and the keys of those parts (guarded by {@link #seen}). */
    private final Map<List<Long>, Set<Long>> partsSeen = new HashMap<>();

    ScriptedShard() throws IOException {
        this.server = Grpc.newServerBuilderForPort(0, InsecureServerCredentials.create())
                .addService(new Service())
                .build()
                .start();
    }

    /** The value this shard answers a pull of {@code key} with (dim 1). */
    static float valueOf(final long key) {
        return Math.floorMod(key, 1_000_003L);
    }

    String address() {
        return "127.0.0.1:" + server.getPort();
    }

    /** Answers the next pushes with {@code answers}, in order; later ones are accepted. */
    ScriptedShard then(final Answer... answers) {
        script.addAll(List.of(answers));
        return this;
    }

    static Answer fail(final Status status) {
        return (shard, request, response) -> response.onError(status.asRuntimeException());
    }

    static Answer wrongOwner(final Runnable before) {
        return (shard, request, response) -> {
            before.run();
            response.onError(PsException.toStatus(PsException.wrongOwner("slot moved: refresh", 1)));
        };
    }

    /** Applies the push, then loses the answer: the caller sees UNAVAILABLE. */
    static Answer applyThenLoseAnswer() {
        return (shard, request, response) -> {
            shard.accept(request, new StreamObserver<>() {
                @Override
                public void onNext(final PushResponse value) {}

                @Override
                public void onError(final Throwable t) {}

                @Override
                public void onCompleted() {}
            });
            response.onError(
                    Status.UNAVAILABLE.withDescription("connection reset").asRuntimeException());
        };
    }

    void accept(final PushRequest request, final StreamObserver<PushResponse> response) {
        final long[] keys = LittleEndian.decodeLongs(request.getKeys(), "keys");
        // As a real shard: a sequence accepted whole is a repeat; one accepted for parts only is a repeat for what
        // those parts held (slots there; keys here, which parts never share), and the rest of a request is applied.
        final List<Long> id = List.of(request.getClientId(), request.getSequence());
        final List<Long> boxed = new ArrayList<>(keys.length);
        synchronized (seen) {
            final Set<Long> parts = partsSeen.get(id);
            if (request.getClientId() == 0 || (!seen.contains(id) && parts == null)) {
                for (final long key : keys) {
                    boxed.add(key);
                }
                if (request.getClientId() != 0 && request.getPartial()) {
                    partsSeen.put(id, new HashSet<>(boxed));
                } else if (request.getClientId() != 0) {
                    seen.add(id);
                }
            } else if (parts != null) {
                for (final long key : keys) {
                    if (parts.add(key)) {
                        boxed.add(key);
                    }
                }
            }
        }
        final boolean duplicate = boxed.isEmpty() && keys.length > 0;
        // One copy per request: the list is copy-on-write.
        applied.addAll(boxed);
        response.onNext(PushResponse.newBuilder()
                .setAccepted(keys.length)
                .setDuplicate(duplicate)
                .build());
        response.onCompleted();
    }

    static List<Long> keysOf(final PushRequest request) {
        final List<Long> keys = new ArrayList<>();
        for (final long key : LittleEndian.decodeLongs(request.getKeys(), "keys")) {
            keys.add(key);
        }
        return keys;
    }

    @Override
    public void close() throws InterruptedException {
        server.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }

    private final class Service extends ShardServiceGrpc.ShardServiceImplBase {
        @Override
        public void push(final PushRequest request, final StreamObserver<PushResponse> response) {
            pushes.add(request);
            final Answer answer = script.pollFirst();
            (answer == null ? ACCEPT : answer).answer(ScriptedShard.this, request, response);
        }

        @Override
        public void pull(final PullRequest request, final StreamObserver<PullResponse> response) {
            pulls.add(request);
            // Dim 1: each key's value is its key modulo a prime, as a float (exact below 2^24).
            final java.nio.ByteBuffer keys =
                    request.getKeys().asReadOnlyByteBuffer().order(java.nio.ByteOrder.LITTLE_ENDIAN);
            final java.nio.ByteBuffer values =
                    java.nio.ByteBuffer.allocate(keys.remaining() / 2).order(java.nio.ByteOrder.LITTLE_ENDIAN);
            while (keys.hasRemaining()) {
                values.putFloat(valueOf(keys.getLong()));
            }
            response.onNext(PullResponse.newBuilder()
                    .setValues(com.google.protobuf.ByteString.copyFrom(values.array()))
                    .build());
            response.onCompleted();
        }
    }
}
