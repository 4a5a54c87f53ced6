package io.pscluster.server;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.IntSupplier;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Runs background work (checkpoint writes) at a lower CPU priority than the threads that serve pushes and pulls, so
 * that on a busy machine the scheduler gives the serving threads the cores first and the background work the rest.
 *
 * <p>On Linux the niceness of one thread can be raised by any user (only lowering it back needs privileges). Java
 * has no call for it, so a thread raises its own: it finds its kernel thread id through {@code /proc/thread-self} and
 * runs {@code renice} on that id, once, when it starts. Threads it starts later inherit the niceness. Where that
 * fails (another OS, no {@code renice}) the thread runs at normal priority and the first failure is logged.
 */
final class BackgroundPriority {
    private static final Logger LOG = LoggerFactory.getLogger(BackgroundPriority.class);
    private static final Path THREAD_SELF = Path.of("/proc/thread-self");
    private static final long RENICE_TIMEOUT_MS = 5_000;
    private static final AtomicBoolean FAILURE_LOGGED = new AtomicBoolean();

    private BackgroundPriority() {}

    /**
     * Daemon threads named {@code name} that raise their own niceness to {@code niceness.getAsInt()} (read when each
     * starts; 1..19) before they run anything; 0 leaves them at normal priority.
     */
    static ThreadFactory threads(final String name, final IntSupplier niceness) {
        return runnable -> {
            final Thread thread = new Thread(
                    () -> {
                        final int value = niceness.getAsInt();
                        if (value > 0) {
                            lowerCurrentThread(value);
                        }
                        runnable.run();
                    },
                    name);
            thread.setDaemon(true);
            return thread;
        };
    }

    /** @throws IllegalArgumentException unless {@code niceness} is 0 (off) to 19 */
    static void check(final int niceness) {
        if (niceness < 0 || niceness > 19) {
            throw new IllegalArgumentException(
                    "checkpoint niceness must be 0 (normal priority) to 19; got " + niceness);
        }
    }

    /** Raises the calling thread's niceness to {@code niceness}; returns whether it did. */
    static boolean lowerCurrentThread(final int niceness) {
        final String thread = Thread.currentThread().getName();
        try {
            // "<pid>/task/<tid>": the link names this thread's kernel id.
            final String link = Files.readSymbolicLink(THREAD_SELF).toString();
            final String tid = link.substring(link.lastIndexOf('/') + 1);
            Long.parseLong(tid);
            final Process renice = new ProcessBuilder("renice", "-n", Integer.toString(niceness), "-p", tid)
                    .redirectErrorStream(true)
                    .start();
            final String output =
                    new String(renice.getInputStream().readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
            if (!renice.waitFor(RENICE_TIMEOUT_MS, TimeUnit.MILLISECONDS)) {
                renice.destroyForcibly();
                return failed(thread, "renice did not finish within " + RENICE_TIMEOUT_MS + " ms");
            }
            if (renice.exitValue() != 0) {
                return failed(thread, "renice exited with " + renice.exitValue() + ": " + output.strip());
            }
            LOG.debug("thread {} (tid {}) runs at niceness {}", thread, tid, niceness);
            return true;
        } catch (IOException | UnsupportedOperationException | NumberFormatException e) {
            return failed(thread, e.toString());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return failed(thread, "interrupted");
        }
    }

    private static boolean failed(final String thread, final String reason) {
        if (FAILURE_LOGGED.compareAndSet(false, true)) {
            LOG.warn(
                    "thread {} could not lower its CPU priority ({}); background work runs at normal priority and"
                            + " competes with pushes and pulls for the cores (logged once)",
                    thread,
                    reason);
        }
        return false;
    }
}
