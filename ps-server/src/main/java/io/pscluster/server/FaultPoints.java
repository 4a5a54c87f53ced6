package io.pscluster.server;

import io.pscluster.checkpoint.PausePoints;
import io.pscluster.wire.PsException;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Named fault-injection points in the shard's production code, so that a test says exactly which failure it
 * exercises. They are switched only through {@code ShardAdminService.InjectFault}, and only in a JVM started with
 * {@code -Dpscluster.faults=true}; otherwise every point stays off and {@link #inject} is refused.
 *
 * <ul>
 *   <li>{@value #DROP_HEARTBEATS}: the proxy link sends no heartbeat while it is on (the lease then lapses).
 *   <li>{@value #FAIL_RESTORE}: a restore attempt fails with a transient {@link java.io.IOException} (a proxy's
 *       order), or an operator's restore is refused UNAVAILABLE before it changes anything.
 *   <li>{@value #LOSE_PUSH_ANSWER}: a push is accepted (and will be applied) but its answer is replaced by
 *       UNAVAILABLE, as when the connection drops after the shard took it: the client cannot tell and retries.
 *   <li>{@value #HOLD_WRITERS}: every partition writer stops (behind what it has queued) until the point is switched
 *       off: pushes are still accepted and acknowledged, and applied once it is off.
 *   <li>{@value #DELAY_PUSHES}: a push waits {@value #PUSH_DELAY_MS} ms before the shard takes it, as on a slow
 *       network: it is in flight (sent, not queued, not answered) all that time.
 *   <li>{@value #HOLD_PUSHES}: a push waits, not taken and not answered, until the point is switched off (then it is
 *       taken): in flight for as long as a test needs.
 *   <li>{@value #SLOW_CHECKPOINT}: while on, a checkpoint write waits {@link #SLOW_CHECKPOINT_DELAY_MS} ms after each
 *       batch of rows it takes from its snapshot, and a restore after each batch of rows it loads: slow, yet always
 *       moving (tests of the proxy's stall timeout).
 *   <li>{@value #PAUSE_MID_ROW_FILE}: the first row file this process writes next stops after its first chunk (written
 *       and {@code hflush}ed), prints a marker line and waits until the point is switched off: the test kills the
 *       shard there ({@link PausePoints#MID_ROW_FILE}).
 * </ul>
 *
 * <p>The proxy has the commit's pause points, switched by {@code AdminService.InjectFault} under the same property:
 * {@value PausePoints#BEFORE_MANIFEST} (every data file written, no manifest), {@value PausePoints#BEFORE_RENAME} (the
 * temporary manifest written, not renamed) and {@value PausePoints#AFTER_RENAME} (committed, not yet recorded by the
 * proxy). A pause point fires once ({@code times} 0 or 1); see {@link PausePoints}.
 *
 * <p>Thread-safe. A point switched on with {@code times > 0} fires that many times, then switches itself off.
 */
public final class FaultPoints {
    public static final String DROP_HEARTBEATS = "drop-heartbeats";
    public static final String FAIL_RESTORE = "fail-restore";
    public static final String LOSE_PUSH_ANSWER = "lose-push-answer";
    public static final String HOLD_WRITERS = "hold-writers";
    public static final String DELAY_PUSHES = "delay-pushes";
    public static final String HOLD_PUSHES = "hold-pushes";
    /** How long {@value #DELAY_PUSHES} holds each push. */
    public static final long PUSH_DELAY_MS = 1_000;

    public static final String SLOW_CHECKPOINT = "slow-checkpoint";
    public static final long SLOW_CHECKPOINT_DELAY_MS = 20;
    public static final String PAUSE_MID_ROW_FILE = PausePoints.MID_ROW_FILE;
    /** The system property that allows fault injection. */
    public static final String ENABLE_PROPERTY = "pscluster.faults";

    private static final Set<String> KNOWN = Set.of(
            DROP_HEARTBEATS,
            FAIL_RESTORE,
            LOSE_PUSH_ANSWER,
            HOLD_WRITERS,
            DELAY_PUSHES,
            HOLD_PUSHES,
            SLOW_CHECKPOINT,
            PAUSE_MID_ROW_FILE);
    /** Remaining firings of a point that is on; {@link Integer#MAX_VALUE} for "until switched off". */
    private final Map<String, AtomicInteger> armed = new ConcurrentHashMap<>();
    /** Pushes {@value #HOLD_PUSHES} holds, taken when it is switched off. Guarded by itself. */
    private final List<Runnable> heldPushes = new ArrayList<>();
    /** Held pushes released and run (taken or refused): tests wait for them. */
    private final java.util.concurrent.atomic.AtomicInteger heldTaken = new java.util.concurrent.atomic.AtomicInteger();

    private final boolean allowed;

    /** Points allowed when the JVM was started with {@code -Dpscluster.faults=true}. */
    public FaultPoints() {
        this(Boolean.getBoolean(ENABLE_PROPERTY));
    }

    FaultPoints(final boolean allowed) {
        this.allowed = allowed;
    }

    /** Runs {@code task} after {@code delayMs} on a timer of its own (a fault only: never in production use). */
    void later(final Runnable task, final long delayMs) {
        CompletableFuture.delayedExecutor(delayMs, TimeUnit.MILLISECONDS).execute(task);
    }

    public boolean allowed() {
        return allowed;
    }

    /**
     * Switches {@code point} on (firing {@code times} times, 0: until switched off) or off.
     *
     * @throws PsException FAILED_PRECONDITION when fault injection is off, INVALID_ARGUMENT for an unknown point.
     */
    public void inject(final String point, final boolean enabled, final int times) {
        if (!allowed) {
            throw PsException.failedPrecondition(
                    "fault injection is off: start the shard with -D" + ENABLE_PROPERTY + "=true");
        }
        if (!KNOWN.contains(point)) {
            throw PsException.invalidArgument("unknown fault point '" + point + "'; known: " + KNOWN);
        }
        if (times < 0) {
            throw PsException.invalidArgument("times=" + times + " must be >= 0");
        }
        if (point.equals(PAUSE_MID_ROW_FILE)) {
            if (times > 1) {
                throw PsException.invalidArgument("times=" + times + ": pause point " + point + " fires once");
            }
            if (enabled) {
                PausePoints.arm(point);
            } else {
                PausePoints.disarm(point);
            }
        } else if (enabled) {
            armed.put(point, new AtomicInteger(times == 0 ? Integer.MAX_VALUE : times));
        } else {
            final List<Runnable> release;
            synchronized (heldPushes) {
                armed.remove(point);
                release = point.equals(HOLD_PUSHES) ? List.copyOf(heldPushes) : List.of();
                if (point.equals(HOLD_PUSHES)) {
                    heldPushes.clear();
                }
            }
            release.forEach(push -> later(
                    () -> {
                        try {
                            push.run();
                        } finally {
                            heldTaken.incrementAndGet();
                        }
                    },
                    0));
        }
    }

    /**
     * {@value #HOLD_PUSHES}: when on, keeps {@code push} (returning true) until the point is switched off, then runs it
     * off the caller's thread; false (nothing kept) when off.
     */
    /** Pushes {@value #HOLD_PUSHES} holds now (tests). */
    public int heldPushes() {
        synchronized (heldPushes) {
            return heldPushes.size();
        }
    }

    /** Held pushes that were released and have run since this JVM's fault points began (tests). */
    public int heldPushesTaken() {
        return heldTaken.get();
    }

    boolean holdPush(final Runnable push) {
        synchronized (heldPushes) {
            if (!fire(HOLD_PUSHES)) {
                return false;
            }
            heldPushes.add(push);
            return true;
        }
    }

    /** True when {@code point} is on; consumes one firing. */
    boolean fire(final String point) {
        final AtomicInteger remaining = armed.get(point);
        if (remaining == null) {
            return false;
        }
        while (true) {
            final int left = remaining.get();
            if (left <= 0) {
                armed.remove(point, remaining);
                return false;
            }
            if (left == Integer.MAX_VALUE || remaining.compareAndSet(left, left - 1)) {
                if (left == 1) {
                    armed.remove(point, remaining);
                }
                return true;
            }
        }
    }
}
