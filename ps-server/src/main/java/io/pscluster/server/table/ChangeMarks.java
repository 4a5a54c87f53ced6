package io.pscluster.server.table;

import java.util.Arrays;

/**
 * Which records of a partition were written in which write epochs (epoch {@code e} runs from cut {@code e - 1} to cut
 * {@code e}): one bit per record for each range of epochs kept, what a delta since a cut holds. Writer-only, but
 * {@link #bytes} (the table's size in stats, heartbeats and metrics), which any thread may read.
 *
 * <p>A bit per record per epoch rather than the epoch of each record's last write: a partition of 5M records marks
 * its writes in 610 KiB, which the processor's caches keep, where an int per record took 19 MiB and a cache miss on
 * most updates of a large table. Ranges no delta reaches back to any more are forgotten ({@link #forgetUpTo}); when
 * more than {@link #MAX_RANGES} are kept the two oldest are merged into one, so that a delta since a cut inside a
 * merged range holds the rows of the whole range: more rows than changed, never fewer.
 */
final class ChangeMarks {
    /** Ranges kept before the two oldest are merged: deltas since the last 15 cuts stay exact. */
    static final int MAX_RANGES = 16;

    private static final long[] NO_BITS = new long[0];

    /** Each range's bits, oldest first; the last is the current epoch's. */
    private final long[][] bits = new long[MAX_RANGES][];
    /** The first and last epoch of each range (equal unless ranges were merged). */
    private final int[] firstEpochs = new int[MAX_RANGES];

    private final int[] lastEpochs = new int[MAX_RANGES];
    private int ranges;
    private long[] current = NO_BITS;
    /** The last epoch of the ranges forgotten so far (0: none): deltas since an older cut cannot be told. */
    private int forgottenThrough;
    /** What the ranges' bits take, counted by the writer whenever they change, for readers on other threads. */
    private volatile long bytes;

    ChangeMarks(final int epoch) {
        open(epoch);
    }

    /**
     * Makes room to mark records {@code 0 .. records) in the current epoch, so that {@link #mark} of them allocates
     * nothing: called where a partition allocates a chunk of records, which is ready for memory to run out.
     *
     * @throws OutOfMemoryError with nothing changed.
     */
    void ensureCapacity(final int records) {
        final int words = (records + 63) >>> 6;
        if (words > current.length) {
            grow(words - 1);
        }
    }

    /** Marks record {@code id} written in the current epoch (allocates only past {@link #ensureCapacity}). */
    void mark(final int id) {
        final int word = id >>> 6;
        long[] words = current;
        if (word >= words.length) {
            words = grow(word);
        }
        words[word] |= 1L << id;
    }

    /** The current epoch: the one {@link #mark} marks in. */
    int epoch() {
        return lastEpochs[ranges - 1];
    }

    /**
     * Whether record {@code id} was written in an epoch above {@code after} and at most {@code upTo} (true also when
     * it was written in a merged range that reaches above {@code after}).
     */
    boolean writtenBetween(final int id, final int after, final int upTo) {
        final int word = id >>> 6;
        final long bit = 1L << id;
        for (int r = ranges - 1; r >= 0 && lastEpochs[r] > after; r--) {
            final long[] words = bits[r];
            if (firstEpochs[r] <= upTo && word < words.length && (words[word] & bit) != 0) {
                return true;
            }
        }
        return false;
    }

    /**
     * Makes {@code epoch} the current one (nothing changes when it already is): later writes are marked in it, apart
     * from those before.
     *
     * @throws IllegalArgumentException if {@code epoch} is below the current one.
     */
    void startEpoch(final int epoch) {
        final int now = epoch();
        if (epoch == now) {
            return;
        }
        if (epoch < now) {
            throw new IllegalArgumentException("write epoch " + epoch + " is below the current one, " + now);
        }
        if (ranges == MAX_RANGES) {
            mergeOldest();
        }
        open(epoch);
    }

    /** Forgets the ranges that end at or before {@code epoch}: no delta since a cut that old will be asked for. */
    void forgetUpTo(final int epoch) {
        int drop = 0;
        while (drop < ranges - 1 && lastEpochs[drop] <= epoch) {
            drop++;
        }
        if (drop > 0) {
            forgottenThrough = Math.max(forgottenThrough, lastEpochs[drop - 1]);
            shiftDown(drop);
        }
    }

    /** Whether the writes after cut {@code epoch} are all still marked: none of them was forgotten. */
    boolean knownSince(final int epoch) {
        return epoch >= forgottenThrough;
    }

    /** Bytes the marks hold (on the heap), as of the writer's last change to them; any thread. */
    long bytes() {
        return bytes;
    }

    /** Ranges kept (tests). */
    int ranges() {
        return ranges;
    }

    /** The first epoch of range {@code range}, oldest first (tests). */
    int firstEpoch(final int range) {
        return firstEpochs[range];
    }

    /** The last epoch of range {@code range}, oldest first (tests). */
    int lastEpoch(final int range) {
        return lastEpochs[range];
    }

    private void open(final int epoch) {
        // Sized as the last range ended up: a partition's writes reach about as many records each epoch.
        current = ranges == 0 ? NO_BITS : new long[current.length];
        bits[ranges] = current;
        firstEpochs[ranges] = epoch;
        lastEpochs[ranges] = epoch;
        ranges++;
        recount();
    }

    private long[] grow(final int word) {
        current = Arrays.copyOf(current, Math.max(word + 1, Math.max(16, 2 * current.length)));
        bits[ranges - 1] = current;
        recount();
        return current;
    }

    private void recount() {
        long words = 0;
        for (int r = 0; r < ranges; r++) {
            words += bits[r].length;
        }
        bytes = 8 * words;
    }

    private void mergeOldest() {
        final long[] older = bits[0];
        final long[] newer = bits[1];
        final long[] merged = older.length >= newer.length ? older : newer;
        final long[] other = merged == older ? newer : older;
        for (int i = 0; i < other.length; i++) {
            merged[i] |= other[i];
        }
        bits[1] = merged;
        firstEpochs[1] = firstEpochs[0];
        shiftDown(1);
    }

    private void shiftDown(final int drop) {
        final int kept = ranges - drop;
        System.arraycopy(bits, drop, bits, 0, kept);
        System.arraycopy(firstEpochs, drop, firstEpochs, 0, kept);
        System.arraycopy(lastEpochs, drop, lastEpochs, 0, kept);
        Arrays.fill(bits, kept, ranges, null);
        ranges = kept;
        recount();
    }
}
