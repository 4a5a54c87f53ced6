package io.pscluster.wire;

/**
 * The version of the data plane's protocol between the SDK and the shards: what a shard does with a request beyond
 * what its fields say. A shard reports it when it registers; the proxy passes it on in the routing table; an SDK sends
 * nothing to a shard older than it needs, since such a shard would take the request for something else and answer
 * success (a rolling upgrade goes proxy, shards, then SDKs).
 *
 * <ul>
 *   <li>0: not reported (a shard, or a proxy, from before this field);
 *   <li>2: a push's part re-split after a routing change carries {@code partial}, and the shard deduplicates it by the
 *       slots it was accepted for (an older shard takes a sibling part it never applied for a repeat and drops it).
 * </ul>
 */
public final class Protocol {
    /** What this build's shards speak. */
    public static final int VERSION = 2;

    /** The oldest shard protocol this build's SDK sends requests to. */
    public static final int OLDEST_SHARD = 2;

    private Protocol() {}
}
