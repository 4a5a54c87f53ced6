package io.pscluster.proxy;

import io.pscluster.proto.v1.ProxyStateRecord;
import java.io.IOException;
import java.util.Optional;

/**
 * Where the proxy keeps its durable state: one {@link ProxyStateRecord}, replaced whole by each save.
 *
 * <p>Contract: when {@link #save} returns, the record survives a crash of the process and of the machine, and a
 * later {@link #load} returns it (or a newer one); when it throws, a later load returns the previous record or the
 * new one, never a mixture. {@link #load} never returns a damaged record as if it were none: damage is an
 * {@link IOException} naming where the record lives, so that a proxy never starts empty by mistake. A local file
 * ({@link LocalFileStateStore}) is the default; a store shared by several proxies (ZooKeeper) fits the same interface.
 */
public interface ProxyStateStore {
    /** The saved record, or empty when none was ever saved. */
    Optional<ProxyStateRecord> load() throws IOException;

    /** Replaces the saved record, durably. */
    void save(ProxyStateRecord record) throws IOException;

    /** Where the record lives, for messages. */
    String describe();

    /** Releases what the store holds (a lock on its directory); the proxy calls it once, when it stops. */
    default void close() throws IOException {}
}
