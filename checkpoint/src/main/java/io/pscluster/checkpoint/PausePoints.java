package io.pscluster.checkpoint;

import java.io.InterruptedIOException;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * Named points in the checkpoint protocol where a test makes the writing process stop, so that it can kill it
 * ({@code kill -9}) at exactly that step instead of after a sleep that hopes. A point is armed per process, through
 * the shard's or the proxy's {@code InjectFault} (both refuse unless the JVM runs with {@code -Dpscluster.faults=true};
 * the list of points is in the shard's {@code FaultPoints}). The first thread to reach an armed point prints
 * {@link #MARKER}, the point's name and where it is, on a line of standard output, and parks until the point is
 * disarmed; an armed point fires once.
 *
 * <ul>
 *   <li>{@value #MID_ROW_FILE}: {@link RowFileWriter} has written its first chunk and {@code hflush}ed it (so the
 *       partial file is on the DataNodes); the file has no slot index yet and is not closed.
 *   <li>{@value #BEFORE_MANIFEST}: {@link CheckpointStore#commit} was called, so every data file is written and
 *       closed; no manifest exists yet.
 *   <li>{@value #BEFORE_RENAME}: the manifest is written under its temporary name, {@code hsync}ed and closed, and
 *       no {@code _MANIFEST} was there a moment ago; the next call is the rename.
 *   <li>{@value #AFTER_RENAME}: the rename succeeded, so the checkpoint is committed; the caller (the proxy) has not
 *       recorded it yet.
 * </ul>
 *
 * <p>Thread-safe. Reaching a point that is not armed costs one map lookup.
 */
public final class PausePoints {
    public static final String MID_ROW_FILE = "pause-mid-row-file";
    public static final String BEFORE_MANIFEST = "pause-before-manifest";
    public static final String BEFORE_RENAME = "pause-before-rename";
    public static final String AFTER_RENAME = "pause-after-rename";
    /** Every point, by name. */
    public static final Set<String> ALL = Set.of(MID_ROW_FILE, BEFORE_MANIFEST, BEFORE_RENAME, AFTER_RENAME);
    /** Starts the line printed when a point is reached: {@code MARKER + name + " at " + where}. */
    public static final String MARKER = "PAUSED at fault point ";

    private static final Map<String, Pause> ARMED = new ConcurrentHashMap<>();

    private record Pause(AtomicBoolean reached, CountDownLatch released) {}

    private PausePoints() {}

    /** Arms {@code point}: the next thread to reach it stops there until {@link #disarm}. */
    public static void arm(final String point) {
        check(point);
        final Pause previous = ARMED.put(point, new Pause(new AtomicBoolean(), new CountDownLatch(1)));
        if (previous != null) {
            previous.released().countDown();
        }
    }

    /** Disarms {@code point} and lets a thread parked there go on. */
    public static void disarm(final String point) {
        check(point);
        final Pause pause = ARMED.remove(point);
        if (pause != null) {
            pause.released().countDown();
        }
    }

    /** True while {@code point} is armed and nobody has reached it yet. */
    public static boolean armed(final String point) {
        final Pause pause = ARMED.get(point);
        return pause != null && !pause.reached().get();
    }

    /**
     * Stops here if {@code point} is armed and this is the first thread to reach it: prints the marker line and parks
     * until the point is disarmed. Otherwise returns at once.
     *
     * @param where what the process is doing, for the marker line (a checkpoint id, a file).
     * @throws InterruptedIOException if the thread is interrupted while parked.
     */
    public static void reach(final String point, final String where) throws InterruptedIOException {
        final Pause pause = ARMED.get(point);
        if (pause == null || !pause.reached().compareAndSet(false, true)) {
            return;
        }
        // Standard output, not the logger: the line must be there, unbuffered, before the test kills the process.
        System.out.println(MARKER + point + " at " + where);
        System.out.flush();
        try {
            pause.released().await();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new InterruptedIOException("interrupted while paused at fault point " + point);
        }
    }

    private static void check(final String point) {
        if (!ALL.contains(point)) {
            throw new IllegalArgumentException("unknown pause point '" + point + "'; known: " + ALL);
        }
    }
}
