package io.pscluster.proxy;

import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.wire.PsException;
import java.io.IOException;
import java.time.Instant;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A running proxy's claim on its checkpoint root, so that two clusters do not share one unnoticed (their checkpoint
 * ids, retention and restores would mix; before this, the second was found out only when one of them next took a
 * checkpoint).
 *
 * <p>A claim is a small file under the root named {@code _PROXY-<state id>@<instance>.<phase><n>}: the proxy's state,
 * a random id of this run of it (two processes on one state, e.g. a state directory copied to another machine, are two
 * instances), {@code s} while it starts or {@code r} once it runs, and a count that each renewal raises (every
 * renewal interval; the next name is created before the previous is deleted, so a reader always finds one whole).
 * Liveness is judged by the name changing, never by clocks: the machines may disagree.
 *
 * <p>At start, after dropping its own state's claims from this host (the state directory's lock is this process's,
 * so they are of an earlier run of it), a proxy writes its claim; if another instance's claim is there, it waits two
 * renewal intervals and a second, renewing its own, and looks again. A claim that changed meanwhile is alive: if it
 * runs, this proxy refuses to start (FAILED_PRECONDITION naming it); if it starts too, the instance whose id sorts first
 * goes on and the other refuses. A claim that did not change is of a proxy that stopped without deleting it (killed): it
 * is deleted. While it runs, a proxy that sees another instance's claim change between two of its renewals logs an
 * ERROR naming it at each renewal. A file with the prefix whose name does not parse is named in a WARN and ignored.
 */
final class RootClaim {
    private static final Logger LOG = LoggerFactory.getLogger(RootClaim.class);
    /** Added to two renewal intervals when a start waits to see whether another proxy renews its claim. */
    static final long START_SLACK_MS = 1_000;

    private static final Pattern NAME = Pattern.compile(Pattern.quote(CheckpointStore.PROXY_CLAIM_PREFIX)
            + "([A-Za-z0-9._-]{1,100})@([0-9a-f]{16})\\.([sr])(\\d{1,18})");

    /** One claim file, parsed. */
    record Claim(String name, String stateId, String instance, boolean running, long count) {
        static Optional<Claim> parse(final String name) {
            final Matcher matcher = NAME.matcher(name);
            if (!matcher.matches()) {
                return Optional.empty();
            }
            return Optional.of(new Claim(
                    name,
                    matcher.group(1),
                    matcher.group(1) + "@" + matcher.group(2),
                    matcher.group(3).equals("r"),
                    Long.parseLong(matcher.group(4))));
        }
    }

    private final CheckpointStore store;
    private final String stateId;
    private final String host;
    /** {@code <state id>@<random>}: this run of the proxy. */
    private final String instance;

    private volatile String who;
    /** Guards the claim's files: renewals, the switch to running and the release do not interleave. */
    private final Object files = new Object();

    // The renewals do filesystem calls that may hang for a while: a thread of their own, not the lease checks'.
    private final ScheduledExecutorService timer =
            Executors.newSingleThreadScheduledExecutor(ThreadFactories.daemon("ps-proxy-claim"));

    /** The claim's two newest names (null until written). */
    private String current;

    private String previous;
    private long count;
    /** Set on the timer's thread once the proxy serves; read there. */
    private boolean running;

    private boolean released;
    /** Other instances' claims as the last renewal read them; the renewal thread's alone. */
    private Map<String, Claim> othersSeen = new HashMap<>();

    private boolean failing;
    private boolean warnedUnparsed;

    private RootClaim(final CheckpointStore store, final String stateId, final String host, final String who) {
        this.store = store;
        this.stateId = stateId;
        this.host = host;
        this.who = who;
        this.instance = stateId + "@"
                + HexFormat.of().toHexDigits(ThreadLocalRandom.current().nextLong());
    }

    /**
     * Claims {@code store}'s root for the proxy of state {@code stateId} on {@code host} (described by {@code who}),
     * after making sure no other proxy runs on it.
     *
     * @throws PsException FAILED_PRECONDITION naming the running proxy's claim, the root and what to do.
     * @throws IOException when the root cannot be read or the claim not written.
     */
    static RootClaim take(
            final CheckpointStore store,
            final String stateId,
            final String host,
            final String who,
            final long renewMillis)
            throws IOException, InterruptedException {
        final RootClaim claim = new RootClaim(store, stateId, host, who);
        claim.dropOwnStaleClaims();
        claim.write(false);
        try {
            claim.waitForOthers(renewMillis);
        } catch (IOException | RuntimeException | InterruptedException e) {
            claim.release();
            throw e;
        }
        // Renewed from now on, also while the proxy gets ready to serve.
        claim.timer.scheduleWithFixedDelay(claim::renew, renewMillis, renewMillis, TimeUnit.MILLISECONDS);
        return claim;
    }

    /** Deletes this state's claims written on this host by an earlier run of it (this process holds the state). */
    private void dropOwnStaleClaims() throws IOException {
        for (final Claim other : others().values()) {
            if (other.stateId().equals(stateId)
                    && hostOf(store.readProxyClaim(other.name())).equals(host)) {
                LOG.info("deleting claim {} of an earlier run of this proxy on {}", other.name(), host);
                store.deleteProxyClaim(other.name());
            }
        }
    }

    private void waitForOthers(final long renewMillis) throws IOException, InterruptedException {
        final Map<String, Claim> before = others();
        if (before.isEmpty()) {
            return;
        }
        final long waitMillis = 2 * renewMillis + START_SLACK_MS;
        LOG.info(
                "checkpoint root {} holds other proxies' claims {}: waiting {} ms to see whether one of them runs",
                store.root(),
                before.keySet(),
                waitMillis);
        final long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(waitMillis);
        long left;
        while ((left = deadline - System.nanoTime()) > 0) {
            TimeUnit.NANOSECONDS.sleep(Math.min(left, TimeUnit.MILLISECONDS.toNanos(renewMillis)));
            // Renewed while waiting, so that another proxy starting meanwhile sees this one alive too.
            write(false);
        }
        final Map<String, Claim> after = others();
        for (final Claim other : after.values()) {
            final Claim earlier = before.get(other.instance());
            final boolean alive = earlier == null || earlier.count() != other.count();
            if (!alive) {
                continue;
            }
            if (other.running() || other.instance().compareTo(instance) < 0) {
                final String text = textOf(other);
                throw PsException.failedPrecondition("checkpoint root " + store.root() + " is in use by "
                        + (other.running() ? "a running proxy" : "a proxy starting at the same time")
                        + " (state " + other.stateId() + "; " + firstLine(text) + "; this proxy's state is " + stateId
                        + "): two clusters must not share a --checkpoint-dir. Give this proxy a --checkpoint-dir of"
                        + " its own, or stop that proxy first");
            }
        }
        for (final Claim stale : before.values()) {
            final Claim now = after.get(stale.instance());
            if (now != null && now.count() == stale.count()) {
                LOG.warn(
                        "deleting claim {} on {}: not renewed in {} ms, so its proxy stopped without deleting it ({})",
                        stale.name(),
                        store.root(),
                        waitMillis,
                        firstLine(textOf(stale)));
                store.deleteProxyClaim(stale.name());
            }
        }
    }

    /** The proxy serves: its claim says so from now on, and who it is ({@code who}, now with its port). */
    void serving(final String value) {
        who = value;
        timer.execute(() -> {
            running = true;
            renew();
        });
    }

    /** Renews the claim and looks at the others'; never throws (a failure is logged once until one succeeds). */
    private void renew() {
        try {
            write(running);
            if (running) {
                watchOthers();
            }
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

    /** Writes the claim's next name, then deletes the one before the previous (so a reader always finds one). */
    private void write(final boolean nowRunning) throws IOException {
        synchronized (files) {
            if (released) {
                return;
            }
            count++;
            final String next = CheckpointStore.PROXY_CLAIM_PREFIX + instance + "." + (nowRunning ? "r" : "s") + count;
            store.createProxyClaim(
                    next, "host " + host + "; " + who + "\nrenewal " + count + " at " + Instant.now() + "\n");
            // The one before the previous goes: a directory listing is no snapshot, and one that races this renewal
            // still finds the previous name whatever it misses of this one.
            final String older = previous;
            previous = current;
            current = next;
            if (older != null) {
                store.deleteProxyClaim(older);
            }
        }
    }

    private void watchOthers() throws IOException {
        final Map<String, Claim> others = others();
        for (final Claim other : others.values()) {
            final Claim before = othersSeen.get(other.instance());
            if (other.running() && before != null && before.count() != other.count()) {
                LOG.error(
                        "another running proxy ({}; {}) uses this proxy's checkpoint root {}: two clusters must not"
                                + " share a --checkpoint-dir; stop one of them",
                        other.instance(),
                        firstLine(textOf(other)),
                        store.root());
            }
        }
        othersSeen = others;
    }

    /**
     * Stops the renewals and deletes the claim (the proxy stops); a failure is logged: a later start of another state
     * then waits once.
     */
    void release() {
        timer.shutdownNow();
        try {
            if (!timer.awaitTermination(10, TimeUnit.SECONDS)) {
                LOG.warn("a renewal of the claim on {} did not end in time", store.root());
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        synchronized (files) {
            released = true;
            try {
                for (final String name : new String[] {current, previous}) {
                    if (name != null) {
                        store.deleteProxyClaim(name);
                    }
                }
            } catch (IOException | RuntimeException e) {
                LOG.warn("cannot delete this proxy's claim on checkpoint root {}: {}", store.root(), e.toString());
            }
        }
    }

    /** Every other instance's newest claim, by instance. */
    private Map<String, Claim> others() throws IOException {
        final List<String> names = store.proxyClaimNames();
        final Map<String, Claim> newest = new HashMap<>();
        for (final String name : names) {
            final Optional<Claim> parsed = Claim.parse(name);
            if (parsed.isEmpty()) {
                if (!warnedUnparsed) {
                    LOG.warn("ignoring {} under checkpoint root {}: not a proxy claim's name", name, store.root());
                    warnedUnparsed = true;
                }
                continue;
            }
            final Claim claim = parsed.get();
            if (claim.instance().equals(instance)) {
                continue;
            }
            newest.merge(claim.instance(), claim, (a, b) -> a.count() >= b.count() ? a : b);
        }
        return newest;
    }

    /**
     * The text of {@code claim}'s instance: of its newest name, looked up again if a renewal replaced the one given
     * meanwhile; empty if the instance's claim is gone.
     */
    private String textOf(final Claim claim) throws IOException {
        Claim newest = claim;
        for (int attempt = 0; attempt < 3; attempt++) {
            final String text = store.readProxyClaim(newest.name());
            if (!text.isEmpty()) {
                return text;
            }
            newest = others().get(claim.instance());
            if (newest == null) {
                return "";
            }
        }
        return "";
    }

    private static String hostOf(final String text) {
        if (!text.startsWith("host ")) {
            return "";
        }
        final int end = text.indexOf(';');
        return end < 0 ? "" : text.substring("host ".length(), end);
    }

    private static String firstLine(final String text) {
        final int end = text.indexOf('\n');
        return end < 0 ? text : text.substring(0, end);
    }
}
