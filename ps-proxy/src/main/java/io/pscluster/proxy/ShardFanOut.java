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
 * removal, job lists, checkpoint writes, restores).
 *
 * <p>Deadline: with {@link #callAll} (short calls) every onward call carries the earlier of the caller's deadline
 * ({@code io.grpc.Context.current()} on the thread that calls it) and the configured one, so a caller that gives up is
 * not outlived by the calls made on its behalf. With {@link #callAllWatched} (calls that take as long as the data
 * needs) there is no configured deadline but a stall timeout on each shard's progress, and an optional total limit. Errors: a shard's failure keeps its status code and its message names the shard and its
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
        return earlier(io.grpc.Context.current().getDeadline(), deadlineMs);
    }

    /** The earlier of {@code deadline} (null: none) and {@code ms} from now. */
    static Deadline earlier(final Deadline deadline, final long ms) {
        final Deadline own = Deadline.after(ms, TimeUnit.MILLISECONDS);
        return deadline != null && deadline.isBefore(own) ? deadline : own;
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

    /**
     * Limits of a watched fan-out ({@link #callAllWatched}).
     *
     * @param stallMs a shard whose progress has not moved for this long fails the call.
     * @param totalMs the whole call fails after this long; 0: no limit of its own (the caller's deadline still holds).
     */
    record Watch(long stallMs, long totalMs) {
        Watch {
            if (stallMs <= 0) {
                throw new IllegalArgumentException("stallMs=" + stallMs + " must be > 0");
            }
            if (totalMs < 0) {
                throw new IllegalArgumentException("totalMs=" + totalMs + " must be >= 0 (0: no limit)");
            }
        }
    }

    /** Reads the {@code index}-th target's progress in one short call with {@code deadline}. */
    @FunctionalInterface
    interface Probe {
        OperationBoard.ShardProgress poll(int index, ManagedChannel channel, Deadline deadline);
    }

    /** A poll's answer never waits longer than this, however long the stall timeout. */
    private static final long MAX_POLL_DEADLINE_MS = 10_000;

    /**
     * As {@link #callAll}, for calls whose length grows with the data (checkpoint writes, restores): no fixed
     * deadline, but the targets' progress is polled with {@code probe} (about four times per stall timeout, at most
     * once a second) and the call fails as soon as one target's progress has not moved for {@link Watch#stallMs}, or
     * the whole has run {@link Watch#totalMs}, or the caller's own deadline passes. A failed or late poll counts as no
     * movement; a target whose call fails (its channel breaks when its process dies) fails the whole at once. When
     * the whole fails, every call still running is cancelled (their shards may go on with their part; the proxy does
     * not wait for it). Each poll's answer is recorded in {@code operation}.
     *
     * @throws StatusRuntimeException DEADLINE_EXCEEDED naming the shard that stalled, its address, its phase and how
     *     far it had come; or the first failing shard's code, as {@link #callAll}.
     */
    <T> List<T> callAllWatched(
            final String what,
            final List<Target> targets,
            final Call<T> call,
            final Probe probe,
            final Watch watch,
            final OperationBoard.Operation operation)
            throws InterruptedException {
        return callAllWatched(what, targets, call, probe, watch, operation, null);
    }

    /** How often targets are polled while {@code allCut} waits: paused workers wait for it. */
    private static final long CUT_POLL_MS = 10;

    /**
     * As {@link #callAllWatched(String, List, Call, Probe, Watch, OperationBoard.Operation)}; {@code allCut} (if not
     * null) runs once, on the calling thread, as soon as every target has reported its cut marked or has answered:
     * until then the targets are polled every {@value #CUT_POLL_MS} ms.
     */
    <T> List<T> callAllWatched(
            final String what,
            final List<Target> targets,
            final Call<T> call,
            final Probe probe,
            final Watch watch,
            final OperationBoard.Operation operation,
            final Runnable allCut)
            throws InterruptedException {
        boolean cutPending = allCut != null;
        final io.grpc.Context.CancellableContext scope =
                io.grpc.Context.current().withCancellation();
        final long start = System.nanoTime();
        final Deadline caller = io.grpc.Context.current().getDeadline();
        Deadline deadline = caller;
        if (watch.totalMs() > 0) {
            final Deadline total = Deadline.after(watch.totalMs(), TimeUnit.MILLISECONDS);
            deadline = deadline != null && deadline.isBefore(total) ? deadline : total;
        }
        final Deadline callDeadline = deadline;
        final int n = targets.size();
        final List<CompletableFuture<T>> futures = new ArrayList<>(n);
        for (int i = 0; i < n; i++) {
            final int index = i;
            final ManagedChannel channel = channels.channel(targets.get(i).address());
            futures.add(CompletableFuture.supplyAsync(
                    () -> {
                        final io.grpc.Context previous = scope.attach();
                        try {
                            return call.call(index, channel, callDeadline);
                        } finally {
                            scope.detach(previous);
                        }
                    },
                    calls));
        }
        final long tickMs = Math.max(20, Math.min(1_000, watch.stallMs() / 4));
        final long pollDeadlineMs = Math.max(tickMs, Math.min(watch.stallMs(), MAX_POLL_DEADLINE_MS));
        final List<CompletableFuture<OperationBoard.ShardProgress>> polls = new ArrayList<>(n);
        final OperationBoard.ShardProgress[] last = new OperationBoard.ShardProgress[n];
        final long[] moved = new long[n];
        final boolean[] polled = new boolean[n];
        for (int i = 0; i < n; i++) {
            polls.add(null);
            last[i] = OperationBoard.ShardProgress.NONE;
            moved[i] = start;
        }
        try {
            while (true) {
                final List<CompletableFuture<T>> running =
                        futures.stream().filter(f -> !f.isDone()).toList();
                if (running.isEmpty()) {
                    break;
                }
                if (futures.stream().anyMatch(CompletableFuture::isCompletedExceptionally)) {
                    break; // fail fast: the whole cannot succeed
                }
                try {
                    CompletableFuture.anyOf(running.toArray(CompletableFuture[]::new))
                            .get(cutPending ? CUT_POLL_MS : tickMs, TimeUnit.MILLISECONDS);
                } catch (java.util.concurrent.TimeoutException | ExecutionException ignored) {
                    // A tick, or a call ended (its outcome is read below).
                }
                final long now = System.nanoTime();
                int stalled = -1;
                for (int i = 0; i < n; i++) {
                    final CompletableFuture<OperationBoard.ShardProgress> poll = polls.get(i);
                    if (poll != null && poll.isDone()) {
                        polls.set(i, null);
                        final OperationBoard.ShardProgress read = poll.isCompletedExceptionally() ? null : poll.join();
                        if (read != null && !read.equals(last[i])) {
                            last[i] = read;
                            moved[i] = now;
                        }
                    }
                    operation.shard(i, last[i], moved[i]);
                    if (futures.get(i).isDone() && polled[i]) {
                        continue;
                    }
                    if (polls.get(i) == null) {
                        // A target whose call ended is polled once more, so that its record shows where it ended.
                        polled[i] = futures.get(i).isDone();
                        final int index = i;
                        final ManagedChannel channel =
                                channels.channel(targets.get(i).address());
                        polls.set(
                                i,
                                CompletableFuture.supplyAsync(
                                        () -> probe.poll(
                                                index, channel, Deadline.after(pollDeadlineMs, TimeUnit.MILLISECONDS)),
                                        calls));
                    }
                    if (futures.get(i).isDone()) {
                        continue;
                    }
                    if (stalled < 0 && TimeUnit.NANOSECONDS.toMillis(now - moved[i]) > watch.stallMs()) {
                        stalled = i;
                    }
                }
                if (cutPending) {
                    boolean all = true;
                    for (int i = 0; i < n && all; i++) {
                        final CompletableFuture<T> done = futures.get(i);
                        all = last[i].cutMarked() || (done.isDone() && !done.isCompletedExceptionally());
                    }
                    if (all) {
                        cutPending = false;
                        allCut.run();
                    }
                }
                if (stalled >= 0) {
                    final Target target = targets.get(stalled);
                    final OperationBoard.ShardProgress at = last[stalled];
                    final String why = what + ": shard " + target.shardId() + " at " + target.address()
                            + " made no progress for " + TimeUnit.NANOSECONDS.toMillis(now - moved[stalled])
                            + " ms (stall timeout " + watch.stallMs() + " ms), in phase '" + at.phase() + "' at "
                            + at.rowsDone() + " of " + at.rowsTotal() + " rows, " + at.bytesDone() + " of "
                            + at.bytesTotal() + " bytes; gave up";
                    scope.cancel(Status.DEADLINE_EXCEEDED.withDescription(why).asRuntimeException());
                    throw Status.DEADLINE_EXCEEDED.withDescription(why).asRuntimeException();
                }
                if (watch.totalMs() > 0 && TimeUnit.NANOSECONDS.toMillis(now - start) > watch.totalMs()) {
                    final String why = what + ": not done after " + watch.totalMs() + " ms (the limit set for"
                            + " checkpoints and restores); gave up";
                    scope.cancel(Status.DEADLINE_EXCEEDED.withDescription(why).asRuntimeException());
                    throw Status.DEADLINE_EXCEEDED.withDescription(why).asRuntimeException();
                }
            }
        } catch (InterruptedException | RuntimeException e) {
            scope.cancel(e);
            throw e;
        }
        final List<T> results = new ArrayList<>(n);
        StatusRuntimeException first = null;
        for (int i = 0; i < n; i++) {
            final CompletableFuture<T> future = futures.get(i);
            if (future.isDone() && !future.isCompletedExceptionally()) {
                results.add(future.join());
                continue;
            }
            results.add(null);
            if (first == null && future.isCompletedExceptionally()) {
                try {
                    future.join();
                } catch (java.util.concurrent.CompletionException e) {
                    first = failure(what, targets.get(i), e.getCause());
                }
            }
        }
        if (first != null) {
            // The others may still run: cancel them, the whole has failed.
            scope.cancel(first);
            throw first;
        }
        scope.cancel(null);
        finalPolls(targets, probe, operation, last, moved);
        return results;
    }

    /** One last poll of every target once all succeeded, so that the recorded progress shows where they ended. */
    private void finalPolls(
            final List<Target> targets,
            final Probe probe,
            final OperationBoard.Operation operation,
            final OperationBoard.ShardProgress[] last,
            final long[] moved) {
        final List<CompletableFuture<OperationBoard.ShardProgress>> polls = new ArrayList<>();
        for (int i = 0; i < targets.size(); i++) {
            final int index = i;
            final ManagedChannel channel = channels.channel(targets.get(i).address());
            polls.add(CompletableFuture.supplyAsync(
                    () -> probe.poll(index, channel, Deadline.after(5, TimeUnit.SECONDS)), calls));
        }
        final long now = System.nanoTime();
        for (int i = 0; i < targets.size(); i++) {
            OperationBoard.ShardProgress read = last[i];
            try {
                read = polls.get(i).get();
            } catch (ExecutionException e) {
                // Keep the last one read.
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return;
            }
            operation.shard(
                    i,
                    new OperationBoard.ShardProgress(
                            read.phase(),
                            read.rowsDone(),
                            read.rowsTotal(),
                            read.bytesDone(),
                            read.bytesTotal(),
                            read.cutMarked(),
                            read.work(),
                            true),
                    read.equals(last[i]) ? moved[i] : now);
        }
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
