package io.pscluster.proxy;

import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.wire.PsException;
import java.io.IOException;
import java.time.Instant;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A running proxy's claim on its checkpoint root: the file {@code _PROXY-<state id>} under it
 * ({@link CheckpointStore#writeProxyClaim}), rewritten every renewal interval while the proxy runs and deleted when it
 * stops. Two clusters must not share a root (their checkpoint ids, retention and restores would mix), and before this a
 * second cluster's proxy was found out only when one of them next took a checkpoint.
 *
 * <p>At start a proxy reads the other states' claims, waits two renewal intervals and a second, and reads them again:
 * a claim that changed meanwhile is a running proxy, and this one refuses to start (FAILED_PRECONDITION naming it). A
 * claim that did not change is of a proxy that stopped without deleting it (killed): it is deleted and the start goes
 * on. Only a restart with another state waits (a restart on the same state finds its own claim). While it runs, a
 * proxy that sees another state's claim change between two of its renewals (a proxy started while this one was
 * paused or cut off from the root) logs an ERROR naming it at each renewal; its checkpoints are refused as before
 * once the other commits one. Judged by the claim's content, not by clocks: the two proxies' machines may disagree.
 */
final class RootClaim {
    private static final Logger LOG = LoggerFactory.getLogger(RootClaim.class);
    /** Added to two renewal intervals when a start waits to see whether another proxy renews its claim. */
    static final long START_SLACK_MS = 1_000;

    private final CheckpointStore store;
    private final String stateId;
    private final String who;
    private long renewals;
    /** Other states' claims as the last renewal read them; the renewal thread's alone. */
    private Map<String, String> othersSeen = new HashMap<>();

    private boolean failing;

    private RootClaim(final CheckpointStore store, final String stateId, final String who) {
        this.store = store;
        this.stateId = stateId;
        this.who = who;
    }

    /**
     * Claims {@code store}'s root for the proxy of state {@code stateId} (described by {@code who}), after making sure
     * no other proxy's claim is being renewed.
     *
     * @throws PsException FAILED_PRECONDITION naming the running proxy's claim, the root and what to do.
     * @throws IOException when the root cannot be read or the claim not written.
     */
    static RootClaim take(final CheckpointStore store, final String stateId, final String who, final long renewMillis)
            throws IOException, InterruptedException {
        final Map<String, String> others = new HashMap<>(store.proxyClaims());
        others.remove(stateId);
        if (!others.isEmpty()) {
            final long waitMillis = 2 * renewMillis + START_SLACK_MS;
            LOG.info(
                    "checkpoint root {} holds the claim(s) of other proxy states {}: waiting {} ms to see whether one"
                            + " of them is running",
                    store.root(),
                    others.keySet(),
                    waitMillis);
            TimeUnit.MILLISECONDS.sleep(waitMillis);
            final Map<String, String> later = store.proxyClaims();
            for (final Map.Entry<String, String> other : others.entrySet()) {
                final String now = later.get(other.getKey());
                if (now != null && !now.equals(other.getValue())) {
                    throw PsException.failedPrecondition("checkpoint root " + store.root() + " is in use by a running"
                            + " proxy of another cluster (state " + other.getKey() + "; " + firstLine(now) + "; this"
                            + " proxy's state is " + stateId + "): two clusters must not share a --checkpoint-dir."
                            + " Give this proxy a --checkpoint-dir of its own, or stop that proxy first");
                }
            }
            for (final String stale : others.keySet()) {
                if (later.containsKey(stale)) {
                    LOG.warn(
                            "deleting the claim of proxy state {} on {}: not renewed in {} ms, so that proxy stopped"
                                    + " without deleting it ({})",
                            stale,
                            store.root(),
                            waitMillis,
                            firstLine(others.get(stale)));
                    store.deleteProxyClaim(stale);
                }
            }
        }
        final RootClaim claim = new RootClaim(store, stateId, who);
        claim.write();
        return claim;
    }

    /** Rewrites the claim and looks at the others'; never throws (a failure is logged once until one succeeds). */
    void renew() {
        try {
            write();
            final Map<String, String> others = new HashMap<>(store.proxyClaims());
            others.remove(stateId);
            for (final Map.Entry<String, String> other : others.entrySet()) {
                final String before = othersSeen.get(other.getKey());
                if (before != null && !before.equals(other.getValue())) {
                    LOG.error(
                            "another running proxy (state {}; {}) uses this proxy's checkpoint root {}: two clusters"
                                    + " must not share a --checkpoint-dir; stop one of them",
                            other.getKey(),
                            firstLine(other.getValue()),
                            store.root());
                }
            }
            othersSeen = others;
            if (failing) {
                LOG.info("the claim on checkpoint root {} is renewed again", store.root());
                failing = false;
            }
        } catch (IOException | RuntimeException e) {
            if (!failing) {
                LOG.warn(
                        "cannot renew this proxy's claim on checkpoint root {} ({}); another proxy starting on it"
                                + " meanwhile may take this one for stopped",
                        store.root(),
                        e.toString());
                failing = true;
            }
        }
    }

    /** Deletes the claim (the proxy stops); a failure is logged: the next start on the root then waits once. */
    void release() {
        try {
            store.deleteProxyClaim(stateId);
        } catch (IOException | RuntimeException e) {
            LOG.warn("cannot delete this proxy's claim on checkpoint root {}: {}", store.root(), e.toString());
        }
    }

    private void write() throws IOException {
        renewals++;
        store.writeProxyClaim(stateId, who + "\nrenewal " + renewals + " at " + Instant.now() + "\n");
    }

    private static String firstLine(final String text) {
        final int end = text.indexOf('\n');
        return end < 0 ? text : text.substring(0, end);
    }
}
