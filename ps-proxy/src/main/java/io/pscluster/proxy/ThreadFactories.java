package io.pscluster.proxy;

import java.util.concurrent.ThreadFactory;
import java.util.concurrent.atomic.AtomicInteger;

/** The one way the proxy makes threads: daemon threads named {@code <name>-<n>}, so a thread dump says whose it is. */
final class ThreadFactories {
    private ThreadFactories() {}

    /** Daemon threads: the proxy's lifecycle is {@link ProxyServer#close()}, not the JVM waiting on its pools. */
    static ThreadFactory daemon(final String name) {
        final AtomicInteger count = new AtomicInteger();
        return runnable -> {
            final Thread thread = new Thread(runnable, name + "-" + count.incrementAndGet());
            thread.setDaemon(true);
            return thread;
        };
    }
}
