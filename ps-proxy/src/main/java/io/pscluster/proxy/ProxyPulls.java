package io.pscluster.proxy;

import io.grpc.Deadline;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.pscluster.proto.v1.PullRequest;
import io.pscluster.proto.v1.PullResponse;
import io.pscluster.proto.v1.RoutingTable;
import io.pscluster.proto.v1.ShardServiceGrpc;
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
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Executor;
import java.util.concurrent.TimeUnit;

/**
 * Pulls through the proxy ({@code ProxyDataService.Pull}): rows from the {@link ReadCache} when the caller accepts
 * their age, the others from the shards that own their slots under the proxy's own routing, one request per shard at
 * a time, retried (a slot being restored or moved, a shard that just lost or gained slots) until the caller's
 * deadline. A row is never made up: a key whose shard does not answer fails the call, naming why.
 */
final class ProxyPulls {
    /** How long a pull through the proxy waits for its shards at most (less when its caller's deadline is nearer). */
    static final long DEADLINE_MS = 30_000;

    /** The most keys one pull through the proxy may carry (8 MiB of request; the proxy takes messages of 16 MiB). */
    static final int MAX_KEYS = 1 << 20;

    /**
     * The most bytes of rows one pull through the proxy answers: each is built whole on the proxy's heap (8 pulls at
     * once) and each shard's part of it must fit the proxy's 64 MiB inbound limit.
     */
    static final int MAX_ANSWER_BYTES = 32 << 20;

    private static final long FIRST_BACKOFF_MS = 10;
    private static final long MAX_BACKOFF_MS = 500;

    /** The rows of one pull, how many came from the cache, and the table's dim. */
    record Pulled(byte[] values, int dim, int cachedRows) {}

    private final ClusterState state;
    private final ShardChannels channels;
    private final Executor calls;
    private final ReadCache cache;
    private final long deadlineMs;

    ProxyPulls(
            final ClusterState state,
            final ShardChannels channels,
            final Executor calls,
            final ReadCache cache,
            final long deadlineMs) {
        this.state = state;
        this.channels = channels;
        this.calls = calls;
        this.cache = cache;
        this.deadlineMs = deadlineMs;
    }

    ReadCache cache() {
        return cache;
    }

    Pulled pull(final String table, final long[] keys, final long maxStalenessMs) throws InterruptedException {
        if (keys.length > MAX_KEYS) {
            throw PsException.invalidArgument("pull of " + keys.length + " keys through the proxy: at most " + MAX_KEYS
                    + " keys per call; split it");
        }
        if (maxStalenessMs < 0) {
            throw PsException.invalidArgument("max_staleness_millis=" + maxStalenessMs + " must be >= 0");
        }
        final TableSchema schema = state.table(table);
        if (schema == null) {
            throw PsException.notFound("table '" + table + "' does not exist");
        }
        final int rowBytes = 4 * schema.getDim();
        if ((long) keys.length * rowBytes > MAX_ANSWER_BYTES) {
            throw PsException.invalidArgument(
                    "pull of " + keys.length + " keys x dim " + schema.getDim() + " of table '"
                            + table + "' is " + (long) keys.length * rowBytes + " bytes of rows, more than the "
                            + (MAX_ANSWER_BYTES >> 20) + " MiB one pull through the proxy answers; split it");
        }
        final byte[] out = new byte[keys.length * rowBytes];
        final long version = state.readVersion();
        // While an operator's restore is unfinished the model may be a mix that shards still change: no cache.
        final ReadCache cache = state.unfinishedRestore() ? ReadCache.NONE : this.cache;
        final boolean[] found = cache.lookUp(
                table, keys, rowBytes, version, System.nanoTime(), TimeUnit.MILLISECONDS.toNanos(maxStalenessMs), out);
        int cached = 0;
        final int[] missing = new int[keys.length];
        int missingCount = 0;
        for (int i = 0; i < keys.length; i++) {
            if (found[i]) {
                cached++;
            } else {
                missing[missingCount++] = i;
            }
        }
        readFromShards(cache, table, keys, Arrays.copyOf(missing, missingCount), rowBytes, version, out);
        return new Pulled(out, schema.getDim(), cached);
    }

    /** The earlier of the current caller's deadline and the configured one, from now. */
    private Deadline deadline() {
        return ShardFanOut.earlier(io.grpc.Context.current().getDeadline(), deadlineMs);
    }

    /** Reads the rows of {@code keys[missing[...]]} from their shards into {@code out}, keeping them in the cache. */
    private void readFromShards(
            final ReadCache cache,
            final String table,
            final long[] keys,
            final int[] missing,
            final int rowBytes,
            final long version,
            final byte[] out)
            throws InterruptedException {
        final Deadline deadline = deadline();
        final long tableHash = Slots.tableHash(table);
        int[] left = missing;
        long backoffMs = FIRST_BACKOFF_MS;
        String lastRefusal = null;
        while (left.length > 0) {
            final RoutingTable routing = state.routingTable();
            final Map<Integer, List<Integer>> byOwner = new LinkedHashMap<>();
            final List<Integer> unowned = new ArrayList<>();
            for (final int index : left) {
                final int owner = routing.getSlotOwner(Slots.slotOf(tableHash, keys[index]));
                (owner < 0 ? unowned : byOwner.computeIfAbsent(owner, o -> new ArrayList<>())).add(index);
            }
            if (!unowned.isEmpty()) {
                lastRefusal = unowned.size() + " keys are in slots no live shard owns (a lost shard not replaced yet)";
            }
            final List<CompletableFuture<PullResponse>> answers = new ArrayList<>();
            final List<int[]> groups = new ArrayList<>();
            final List<String> addresses = new ArrayList<>();
            final long readNanos = System.nanoTime();
            for (final Map.Entry<Integer, List<Integer>> group : byOwner.entrySet()) {
                final int[] indexes =
                        group.getValue().stream().mapToInt(Integer::intValue).toArray();
                final long[] groupKeys = new long[indexes.length];
                for (int j = 0; j < indexes.length; j++) {
                    groupKeys[j] = keys[indexes[j]];
                }
                final String address = routing.getShards(group.getKey()).getAddress();
                final PullRequest request = PullRequest.newBuilder()
                        .setTable(table)
                        .setRoutingEpoch(routing.getEpoch())
                        .setKeys(LittleEndian.encodeLongs(groupKeys))
                        .build();
                groups.add(indexes);
                addresses.add(address);
                answers.add(CompletableFuture.supplyAsync(
                        () -> ShardServiceGrpc.newBlockingStub(channels.channel(address))
                                .withDeadline(deadline)
                                .pull(request),
                        calls));
            }
            final List<Integer> retry = new ArrayList<>(unowned);
            for (int g = 0; g < answers.size(); g++) {
                final int[] indexes = groups.get(g);
                final PullResponse answer;
                try {
                    answer = answers.get(g).get();
                } catch (ExecutionException e) {
                    final StatusRuntimeException status = PsException.toStatus(e.getCause());
                    if (!retryable(status)) {
                        throw shardFailed(table, addresses.get(g), status);
                    }
                    lastRefusal = "shard at " + addresses.get(g) + ": " + describe(status);
                    for (final int index : indexes) {
                        retry.add(index);
                    }
                    continue;
                } catch (InterruptedException e) {
                    answers.forEach(answer2 -> answer2.cancel(true));
                    throw e;
                }
                final byte[] values = answer.getValues().toByteArray();
                if (values.length != indexes.length * rowBytes) {
                    throw PsException.failedPrecondition("table '" + table + "': shard at " + addresses.get(g)
                            + " answered " + values.length + " bytes for " + indexes.length + " rows of "
                            + rowBytes + " bytes (the table was dropped and created with another dim meanwhile?)");
                }
                final long[] groupKeys = new long[indexes.length];
                for (int j = 0; j < indexes.length; j++) {
                    System.arraycopy(values, j * rowBytes, out, indexes[j] * rowBytes, rowBytes);
                    groupKeys[j] = keys[indexes[j]];
                }
                cache.keep(table, groupKeys, rowBytes, values, readNanos, version);
            }
            left = retry.stream().mapToInt(Integer::intValue).toArray();
            if (left.length == 0) {
                return;
            }
            final long remainingMs = deadline.timeRemaining(TimeUnit.MILLISECONDS);
            if (remainingMs <= 0) {
                throw Status.DEADLINE_EXCEEDED
                        .withDescription("pull of table '" + table + "' through the proxy: " + left.length + " of "
                                + keys.length + " keys not read before the deadline; last: " + lastRefusal)
                        .asRuntimeException();
            }
            TimeUnit.MILLISECONDS.sleep(Math.min(backoffMs, remainingMs));
            backoffMs = Math.min(MAX_BACKOFF_MS, 2 * backoffMs);
        }
    }

    /** Nothing was read and the keys may be served soon: a reject (restoring, moving, wrong owner), a shard away. */
    private static boolean retryable(final StatusRuntimeException status) {
        return PsException.rejectOf(status) != null
                || status.getStatus().getCode() == Status.Code.UNAVAILABLE
                || status.getStatus().getCode() == Status.Code.CANCELLED;
    }

    private static String describe(final StatusRuntimeException status) {
        return status.getStatus().getCode() + ": " + status.getStatus().getDescription();
    }

    private static StatusRuntimeException shardFailed(
            final String table, final String address, final StatusRuntimeException status) {
        return status.getStatus()
                .withDescription("pull of table '" + table + "' through the proxy: shard at " + address + ": "
                        + status.getStatus().getDescription())
                .asRuntimeException();
    }
}
