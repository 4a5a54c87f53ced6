package io.pscluster.server;

import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.Callable;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;

/**
 * Applies accepted pushes in the background, in the order they were accepted, on one thread.
 *
 * <p>The queue is bounded: when it is full a push is refused (RESOURCE_EXHAUSTED, backpressure) rather than held in
 * memory without limit. Control tasks (snapshot, restore, dropping lost slots) go through the same queue, so each
 * one runs after every push accepted before it: a checkpoint includes every push acknowledged before it began.
 */
final class ApplyQueue implements AutoCloseable {
    private final ThreadPoolExecutor executor;
    private final ArrayBlockingQueue<Runnable> queue;

    ApplyQueue(final String shardName, final int capacity) {
        queue = new ArrayBlockingQueue<>(capacity);
        executor = new ThreadPoolExecutor(1, 1, 0, TimeUnit.SECONDS, queue, runnable -> {
            final Thread thread = new Thread(runnable, "ps-apply-" + shardName);
            thread.setDaemon(true);
            return thread;
        });
        executor.prestartAllCoreThreads();
    }

    /** Queues a push; returns false when the queue is full (the push is not applied). */
    boolean offer(final Runnable push) {
        try {
            executor.execute(push);
            return true;
        } catch (RejectedExecutionException full) {
            return false;
        }
    }

    /**
     * Runs {@code task} after every push queued before it, waiting for room in the queue if it is full (control
     * tasks must not be refused).
     */
    <T> CompletableFuture<T> runAfterQueued(final Callable<T> task) {
        final CompletableFuture<T> result = new CompletableFuture<>();
        final Runnable runnable = () -> {
            try {
                result.complete(task.call());
            } catch (Throwable failure) {
                result.completeExceptionally(failure);
            }
        };
        try {
            if (executor.isShutdown()) {
                throw new RejectedExecutionException("apply queue is closed");
            }
            // Put into the work queue itself (the one thread is always started) so that it lines up behind the
            // pushes already there and waits for room instead of being refused.
            queue.put(runnable);
        } catch (InterruptedException interrupted) {
            Thread.currentThread().interrupt();
            result.completeExceptionally(interrupted);
        } catch (RejectedExecutionException closed) {
            result.completeExceptionally(closed);
        }
        return result;
    }

    int depth() {
        return queue.size();
    }

    /** Applies what is queued, then stops. */
    @Override
    public void close() throws InterruptedException {
        executor.shutdown();
        if (!executor.awaitTermination(30, TimeUnit.SECONDS)) {
            executor.shutdownNow();
        }
    }
}
