package io.pscluster.proxy;

import io.pscluster.proto.v1.ProxyStateRecord;
import java.io.IOException;
import java.util.Optional;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;

/** A state store in memory whose saves a test can make fail, and which counts them. */
final class MemoryStateStore implements ProxyStateStore {
    private volatile ProxyStateRecord record;
    final AtomicBoolean failSaves = new AtomicBoolean();
    final AtomicInteger saves = new AtomicInteger();

    @Override
    public Optional<ProxyStateRecord> load() {
        return Optional.ofNullable(record);
    }

    @Override
    public void save(final ProxyStateRecord value) throws IOException {
        if (failSaves.get()) {
            throw new IOException("injected: disk full");
        }
        record = value;
        saves.incrementAndGet();
    }

    @Override
    public String describe() {
        return "memory";
    }

    ProxyStateRecord saved() {
        return record;
    }
}
