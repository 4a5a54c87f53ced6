package io.pscluster.proxy;

import io.grpc.Deadline;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.pscluster.wire.PsException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Executor;
import java.util.concurrent.TimeUnit;

/**
 * Calls a set of shards concurrently and waits for every answer: the one fan-out of the proxy (table creation and
 * removal, checkpoint writes, restores).
 *
 * <p>Deadline: every onward call carries the earlier of the caller's deadline ({@code io.grpc.Context.current()} on
 * the thread that calls {@link #callAll}) and the configured one, so a caller that gives up is not outlived by the
 * calls made on its behalf. Errors: a shard's failure keeps its status code and its message names the shard and its
 * address; when several fail, the first in target order is thrown after every call has finished.
 */
final class ShardFanOut {
    /** A shard to call. */
    record Target(String shardId, String address) {}

    /** One onward call to the {@code index}-th target, on its channel, with the deadline to give its stub. */
    @FunctionalInterface
    interface Call<T> {
        T call(int index, ManagedChannel channel, Deadline deadline);
    }

    private final ShardChannels channels;
    private final Executor calls;
    private final long deadlineMs;

    ShardFanOut(final ShardChannels channels, final Executor calls, final long deadlineMs) {
        this.channels = channels;
        this.calls = calls;
        this.deadlineMs = deadlineMs;
    }

    /** The earlier of the current caller's deadline and the configured one, from now. */
    Deadline deadline() {
        final Deadline configured = Deadline.after(deadlineMs, TimeUnit.MILLISECONDS);
        final Deadline caller = io.grpc.Context.current().getDeadline();
        return caller != null && caller.isBefore(configured) ? caller : configured;
    }

    /**
     * Calls every target at once; returns the answers in target order.
     *
     * @throws StatusRuntimeException with the failing shard's code, naming what, the shard and its address.
     */
    <T> List<T> callAll(final String what, final List<Target> targets, final Call<T> call) throws InterruptedException {
        final Deadline deadline = deadline();
        final List<CompletableFuture<T>> futures = new ArrayList<>(targets.size());
        for (int i = 0; i < targets.size(); i++) {
            final int index = i;
            final String address = targets.get(i).address();
            futures.add(
                    CompletableFuture.supplyAsync(() -> call.call(index, channels.channel(address), deadline), calls));
        }
        final List<T> results = new ArrayList<>(targets.size());
        StatusRuntimeException first = null;
        for (int i = 0; i < futures.size(); i++) {
            try {
                results.add(futures.get(i).get());
            } catch (ExecutionException e) {
                results.add(null);
                if (first == null) {
                    first = failure(what, targets.get(i), e.getCause());
                }
            } catch (InterruptedException e) {
                futures.forEach(future -> future.cancel(true));
                throw e;
            }
        }
        if (first != null) {
            throw first;
        }
        return results;
    }

    /** A shard's failure as the proxy's caller sees it: the shard's code, a message naming shard and address. */
    static StatusRuntimeException failure(final String what, final Target target, final Throwable cause) {
        final Status status = PsException.toStatus(cause).getStatus();
        return Status.fromCode(status.getCode())
                .withDescription(what + ": shard " + target.shardId() + " at " + target.address() + " failed: "
                        + status.getCode() + (status.getDescription() == null ? "" : ": " + status.getDescription()))
                .withCause(cause)
                .asRuntimeException();
    }
}
