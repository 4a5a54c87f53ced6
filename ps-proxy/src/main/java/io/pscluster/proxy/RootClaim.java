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
import java.util.concurrent.RejectedExecutionException;
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
 * <p>A claim is a small file under the root named {@code _PROXY-<state id>@<run id>.<phase><n>}: the proxy's state, a
 * random id of this run of it (two processes on one state, e.g. a state directory copied to another machine, are two
 * runs), {@code s} while it waits to start or {@code r} once it has decided to run, and a count that each renewal
 * raises (every renewal interval; the next name is written aside and renamed, then the name two back is deleted, so a
 * reader always finds one whole: a directory listing is no snapshot). Liveness is judged by the name changing, never by
 * clocks: the machines may disagree.
 *
 * <p>At start, after deleting its own state's claims from this host (the state directory's lock is this process's, so
 * they are of an earlier run of it), a proxy writes its claim; if another run's claim is there, it waits two renewal
 * intervals and a second, renewing its own, and looks again. A claim that changed meanwhile is alive: if that proxy
 * has decided to run, this one refuses to start (FAILED_PRECONDITION naming it); if it waits too, the run whose id
 * sorts first goes on and the other refuses. A claim that did not change is of a proxy that stopped without deleting it
 * (killed): all its names are deleted. A proxy that goes on marks its claim running before it does anything else.
 *
 * <p>While it runs, a proxy whose own claim was deleted by another (one that took it for stopped: this proxy was
 * paused, or cut off from the root, for longer than a start waits) has lost the root: {@link #trouble} says so for
 * good, and its checkpoints are refused. So they are while its renewals have been failing for that long, and while
 * another running proxy's claim changes between two of its renewals (both then refuse, each logging an ERROR naming
 * the other, until one stops).
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
    /** How long a claim may go unrenewed before a starting proxy takes it for stopped. */
    private final long staleAfterNanos;

    private volatile String who;
    // The renewals do filesystem calls that may hang for a while: a thread of their own, not the lease checks'.
    private final ScheduledExecutorService timer =
            Executors.newSingleThreadScheduledExecutor(ThreadFactories.daemon("ps-proxy-claim"));
    /** Guards the claim's files: renewals and the release do not interleave. */
    private final Object files = new Object();

    /** The claim's two newest names (null until written). */
    private String current;

    private String previous;
    private long count;
    private boolean running;
    private boolean released;
    /** Why this proxy lost the root for good (another proxy deleted its claim); empty while it holds it. */
    private volatile String lost = "";
    /** Another running proxy's claim changed between this one's last two renewals: why; else empty. */
    private volatile String shared = "";

    private volatile long lastRenewedNanos = System.nanoTime();
    private volatile String lastFailure = "";
    /** Whether the last renewal failed because the root's NameNode is in safe mode. */
    private volatile boolean inSafeMode;
    /** A renewal asked for by {@link #trouble} is queued and has not begun (so that refusals do not pile them up). */
    private final java.util.concurrent.atomic.AtomicBoolean renewalAsked =
            new java.util.concurrent.atomic.AtomicBoolean();
    /** Other runs' claims as the last renewal read them; the renewal thread's alone. */
    private Map<String, Claim> othersSeen = new HashMap<>();

    private boolean failing;
    private boolean warnedUnparsed;

    private RootClaim(
            final CheckpointStore store,
            final String stateId,
            final String host,
            final String who,
            final long renewMillis) {
        this.store = store;
        this.stateId = stateId;
        this.host = host;
        this.who = who;
        this.staleAfterNanos = TimeUnit.MILLISECONDS.toNanos(waitMillis(renewMillis));
        this.instance = stateId + "@"
                + HexFormat.of().toHexDigits(ThreadLocalRandom.current().nextLong());
    }

    private static long waitMillis(final long renewMillis) {
        return 2 * renewMillis + START_SLACK_MS;
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
        final RootClaim claim = new RootClaim(store, stateId, host, who, renewMillis);
        try {
            claim.dropOwnStaleClaims();
            claim.write();
            claim.waitForOthers(renewMillis);
            // Decided: a proxy starting from now on refuses, whatever its run id, even while this one gets ready.
            synchronized (claim.files) {
                claim.running = true;
                claim.write();
            }
        } catch (IOException | RuntimeException | InterruptedException e) {
            claim.release();
            throw e;
        }
        claim.timer.scheduleWithFixedDelay(claim::renew, renewMillis, renewMillis, TimeUnit.MILLISECONDS);
        return claim;
    }

    /** Deletes this state's claims written on this host by an earlier run of it (this process holds the state). */
    private void dropOwnStaleClaims() throws IOException {
        for (final Claim other : others().values()) {
            if (other.stateId().equals(stateId) && hostOf(textOf(other)).equals(host)) {
                LOG.info("deleting the claim of an earlier run of this proxy on {} ({})", host, other.instance());
                deleteRun(other.instance());
            }
        }
    }

    private void waitForOthers(final long renewMillis) throws IOException, InterruptedException {
        final Map<String, Claim> before = others();
        if (before.isEmpty()) {
            return;
        }
        final long waitMillis = waitMillis(renewMillis);
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
            write();
        }
        final Map<String, Claim> after = others();
        for (final Claim other : after.values()) {
            final Claim earlier = before.get(other.instance());
            final boolean alive = earlier == null || earlier.count() != other.count();
            if (alive && (other.running() || other.instance().compareTo(instance) < 0)) {
                throw PsException.failedPrecondition("checkpoint root " + store.root() + " is in use by "
                        + (other.running() ? "a running proxy" : "a proxy starting at the same time")
                        + " (state " + other.stateId() + "; " + summary(textOf(other)) + "; this proxy's state is "
                        + stateId + "): two clusters must not share a --checkpoint-dir. Give this proxy a"
                        + " --checkpoint-dir of its own, or stop that proxy first");
            }
        }
        for (final Claim stale : before.values()) {
            final Claim now = after.get(stale.instance());
            if (now != null && now.count() == stale.count()) {
                LOG.warn(
                        "deleting the claim of {} on {}: not renewed in {} ms, so its proxy stopped without deleting"
                                + " it ({})",
                        stale.instance(),
                        store.root(),
                        waitMillis,
                        summary(textOf(stale)));
                deleteRun(stale.instance());
            }
        }
    }

    /** The proxy serves: its claim says who it is ({@code who}, now with its port) from the next renewal on. */
    void serving(final String value) {
        who = value;
        try {
            timer.execute(this::renew);
        } catch (RejectedExecutionException released) {
            // Released meanwhile: the proxy is closing.
        }
    }

    /**
     * Why this proxy must not write to its root now: empty while it holds its claim; else another proxy took the root
     * (for good), or its renewals have been failing for as long as a start waits (until one succeeds).
     */
    String trouble() {
        if (!lost.isEmpty()) {
            return lost;
        }
        if (!shared.isEmpty()) {
            return shared;
        }
        final long since = System.nanoTime() - lastRenewedNanos;
        if (since > staleAfterNanos) {
            // Renewed now rather than at the next interval: once the cause is gone, the next attempt goes through.
            if (renewalAsked.compareAndSet(false, true)) {
                try {
                    timer.execute(this::renew);
                } catch (RejectedExecutionException released) {
                    // The proxy is closing.
                }
            }
            final String unrenewed = "this proxy has not renewed its claim on checkpoint root " + store.root() + " for "
                    + TimeUnit.NANOSECONDS.toMillis(since) + " ms";
            if (inSafeMode) {
                return "the NameNode of checkpoint root " + store.root() + " was in safe mode at this proxy's last"
                        + " renewal, where it takes no writes (it leaves by itself once its DataNodes have reported"
                        + " enough blocks; `hdfs dfsadmin -safemode get` shows it), so " + unrenewed + " and takes no"
                        + " checkpoint there until the NameNode leaves safe mode (" + lastFailure + ")";
            }
            return unrenewed + " (" + lastFailure + "), so a proxy starting there may take it for stopped";
        }
        return "";
    }

    /**
     * Whether {@code failure} is the NameNode's refusal of a write while it is in safe mode: a {@code
     * SafeModeException}, also from the NameNode as a {@code RemoteException}, or wrapped in a {@code
     * RetriableException} (an HA NameNode in its startup safe mode), whose message names it.
     */
    static boolean isSafeMode(final Throwable failure) {
        for (Throwable cause = failure; cause != null; cause = cause.getCause()) {
            final String name = cause instanceof org.apache.hadoop.ipc.RemoteException remote
                    ? remote.getClassName()
                    : cause.getClass().getName();
            final String message = cause.getMessage();
            if (name.endsWith(".SafeModeException")
                    || (name.endsWith(".RetriableException")
                            && message != null
                            && message.contains("SafeModeException"))) {
                return true;
            }
        }
        return false;
    }

    /** Renews the claim and looks at the others'; never throws (a failure is logged once until one succeeds). */
    private void renew() {
        renewalAsked.set(false);
        try {
            synchronized (files) {
                if (released) {
                    return;
                }
                if (current != null && lost.isEmpty()) {
                    final List<String> names = store.proxyClaimNames();
                    if (!names.contains(current) && !names.contains(previous)) {
                        lost = "another proxy deleted this proxy's claim on checkpoint root " + store.root()
                                + ", taking"
                                + " it for stopped (this proxy was paused or cut off from the root for longer than a"
                                + " start waits), and may run on the root now: this proxy takes no more checkpoints"
                                + " there; stop it, or the other";
                        LOG.error("{}", lost);
                    }
                }
                write();
            }
            watchOthers();
            if (failing) {
                LOG.info("the claim on checkpoint root {} is renewed again", store.root());
                failing = false;
            }
            inSafeMode = false;
        } catch (IOException | RuntimeException | org.apache.hadoop.fs.FSError e) {
            // FSError: the local filesystem's I/O failure (a full disk); a timer task that throws is never run again.
            lastFailure = e.toString();
            inSafeMode = isSafeMode(e);
            if (!failing) {
                LOG.warn(
                        "cannot renew this proxy's claim on checkpoint root {} ({}); if this lasts, another proxy"
                                + " starting on it may take this one for stopped, and this one stops taking"
                                + " checkpoints",
                        store.root(),
                        e.toString());
                failing = true;
            }
        }
    }

    /** Writes the claim's next name, then deletes the one before the previous (so a reader always finds one). */
    private void write() throws IOException {
        synchronized (files) {
            if (released) {
                return;
            }
            count++;
            final String next = CheckpointStore.PROXY_CLAIM_PREFIX + instance + "." + (running ? "r" : "s") + count;
            store.createProxyClaim(
                    next, "host " + host + "\n" + who + "\nrenewal " + count + " at " + Instant.now() + "\n");
            lastRenewedNanos = System.nanoTime();
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
        String sharing = "";
        for (final Claim other : others.values()) {
            final Claim before = othersSeen.get(other.instance());
            if (other.running() && before != null && before.count() != other.count()) {
                sharing = "another running proxy (" + other.instance() + "; " + summary(textOf(other)) + ") uses"
                        + " this proxy's checkpoint root " + store.root() + ": two clusters must not share a"
                        + " --checkpoint-dir; neither takes checkpoints there until one of them stops";
                LOG.error("{}", sharing);
            }
        }
        shared = sharing;
        othersSeen = others;
    }

    /**
     * Stops the renewals (one under way ends first) and deletes the claim (the proxy stops); a failure is logged: a
     * later start of another state then waits once.
     */
    void release() {
        timer.shutdown();
        try {
            if (!timer.awaitTermination(10, TimeUnit.SECONDS)) {
                LOG.warn("a renewal of the claim on {} did not end in time", store.root());
                timer.shutdownNow();
            }
        } catch (InterruptedException e) {
            timer.shutdownNow();
            Thread.currentThread().interrupt();
        }
        synchronized (files) {
            released = true;
            try {
                deleteRun(instance);
            } catch (IOException | RuntimeException e) {
                LOG.warn("cannot delete this proxy's claim on checkpoint root {}: {}", store.root(), e.toString());
            }
        }
    }

    /** Deletes every name of run {@code run}'s claim (a killed proxy leaves two). */
    private void deleteRun(final String run) throws IOException {
        for (final String name : store.proxyClaimNames()) {
            final Optional<Claim> claim = Claim.parse(name);
            if (claim.isPresent() && claim.get().instance().equals(run)) {
                store.deleteProxyClaim(name);
            }
        }
    }

    /** Every other run's newest claim, by run. */
    private Map<String, Claim> others() throws IOException {
        final Map<String, Claim> newest = new HashMap<>();
        for (final String name : store.proxyClaimNames()) {
            final Optional<Claim> parsed = Claim.parse(name);
            if (parsed.isEmpty()) {
                if (!warnedUnparsed) {
                    LOG.warn("ignoring {} under checkpoint root {}: not a proxy claim's name", name, store.root());
                    warnedUnparsed = true;
                }
                continue;
            }
            final Claim claim = parsed.get();
            if (!claim.instance().equals(instance)) {
                newest.merge(claim.instance(), claim, (a, b) -> a.count() >= b.count() ? a : b);
            }
        }
        return newest;
    }

    /**
     * The text of {@code claim}'s run: of its newest name, looked up again if a renewal replaced the one given
     * meanwhile; empty if the run's claim is gone.
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

    /** The host a claim's text names: its first line, {@code host <name>}. */
    private static String hostOf(final String text) {
        final int end = text.indexOf('\n');
        final String first = end < 0 ? text : text.substring(0, end);
        return first.startsWith("host ") ? first.substring("host ".length()) : "";
    }

    /** A claim's host and who it is, on one line. */
    private static String summary(final String text) {
        final String[] lines = text.split("\n", 3);
        return lines.length < 2 ? text.strip() : lines[0] + ", " + lines[1];
    }
}
