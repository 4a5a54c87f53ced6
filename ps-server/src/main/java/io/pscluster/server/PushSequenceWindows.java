package io.pscluster.server;

import io.pscluster.proto.v1.ClientPushWindow;
import io.pscluster.proto.v1.PushParts;
import io.pscluster.proto.v1.PushWindows;
import io.pscluster.wire.PsException;
import io.pscluster.wire.Slots;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.Collections;
import java.util.Comparator;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import org.agrona.collections.Long2ObjectHashMap;
import org.agrona.collections.LongHashSet;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Which pushes a shard has accepted, per client, so that a retried push is applied at most once.
 *
 * <p>Per client, a window of the last {@value #DEFAULT_WINDOW} accepted sequences (a set for lookup and a ring in
 * acceptance order for eviction, both grown on demand); at most {@value #DEFAULT_CLIENTS} clients, the least
 * recently active evicted first. The caller holds a {@link Window}'s monitor across check, offer and record, so two
 * copies of one push arriving at once are accepted once: {@code synchronized (window) { if (window.seen(seq)) ...;
 * offer; window.record(seq); }}.
 *
 * <p>Forgetting: once a client's window is full, accepting a sequence evicts the oldest accepted one. A sequence
 * that is not retained but is not above the highest one ever evicted may have been applied and forgotten: it is
 * refused with FAILED_PRECONDITION rather than applied again. (That is a little stricter than "lower than every
 * retained sequence": pushes are accepted out of order, so an evicted sequence can be above the lowest retained.)
 *
 * <p>A client's window that makes room for more recently active clients leaves the highest sequence it accepted
 * behind (at most {@value #FORGOTTEN_PER_CLIENT} times as many clients as windows are kept, the oldest dropped first):
 * should the client come back, its window starts from there, so a retry of a push accepted before is refused as
 * possibly applied rather than applied again. Eviction marks the window under its monitor; a caller that finds its
 * window evicted once it holds the monitor asks for the client's window again ({@link Window#evicted}).
 */
final class PushSequenceWindows {
    private static final Logger LOG = LoggerFactory.getLogger(PushSequenceWindows.class);
    static final int DEFAULT_WINDOW = 65_536;
    static final int DEFAULT_CLIENTS = 16_384;
    /** The newest sequences of each client a checkpoint keeps ({@link #capture}): pushes whose answer may be in doubt. */
    static final int CAPTURED_PER_CLIENT = 1_024;
    /** At most this many sequences in one capture, whatever the number of clients (fewer per client then). */
    static final int CAPTURED_TOTAL = 1 << 16;
    /**
     * At most this many slots of sequences accepted in parts in one capture (about 2 bytes each in the manifest): parts
     * past it are left out, so their retries at a new owner are applied again.
     */
    static final int CAPTURED_PART_SLOTS = 1 << 20;
    /** The captures of at most this many checkpoints are kept (the newest): retries do not last that long. */
    static final int ADOPTED_CHECKPOINTS = 2;
    /** Evicted clients whose highest accepted sequence is kept, per client window kept. */
    static final int FORGOTTEN_PER_CLIENT = 4;

    private final int windowSize;
    private final Map<Long, Window> clients;
    /**
     * Clients whose windows were evicted, with the highest sequence each had accepted, oldest eviction first; guarded
     * by {@link #clients}' monitor.
     */
    private final Map<Long, Long> forgotten;
    /** Evicted clients whose highest sequence was dropped from {@link #forgotten} in turn; guarded like it. */
    private long forgottenDropped;

    PushSequenceWindows() {
        this(DEFAULT_WINDOW, DEFAULT_CLIENTS);
    }

    PushSequenceWindows(final int windowSize, final int maxClients) {
        if (windowSize < 1 || maxClients < 1) {
            throw new IllegalArgumentException(
                    "windowSize=" + windowSize + " and maxClients=" + maxClients + " must be > 0");
        }
        this.windowSize = windowSize;
        final long maxForgotten = (long) maxClients * FORGOTTEN_PER_CLIENT;
        this.forgotten = new LinkedHashMap<>(256, 0.75f, false) {
            @Override
            protected boolean removeEldestEntry(final Map.Entry<Long, Long> eldest) {
                if (size() <= maxForgotten) {
                    return false;
                }
                forgottenDropped++;
                if (Long.bitCount(forgottenDropped) == 1) {
                    LOG.warn(
                            "forgot the highest push sequence of {} evicted clients (the oldest first, {} kept): a retry"
                                    + " of such a client's earlier push would be applied again",
                            forgottenDropped,
                            maxForgotten);
                }
                return true;
            }
        };
        // Access order: the eldest entry is the least recently active client.
        this.clients = new LinkedHashMap<>(256, 0.75f, true) {
            @Override
            protected boolean removeEldestEntry(final Map.Entry<Long, Window> eldest) {
                if (size() <= maxClients) {
                    return false;
                }
                // Under the window's monitor: a push being accepted in it is recorded first, or finds it evicted.
                final Window window = eldest.getValue();
                synchronized (window) {
                    window.evicted = true;
                    if (window.highestAccepted != Long.MIN_VALUE) {
                        forgotten.put(window.clientId, window.highestAccepted);
                    }
                }
                return true;
            }
        };
    }

    /**
     * The window of {@code clientId} (non-zero), created if new (starting from the highest sequence it had accepted if
     * its window was evicted before); marks the client active.
     */
    Window window(final long clientId) {
        synchronized (clients) {
            return clients.computeIfAbsent(clientId, id -> {
                final Long highest = forgotten.remove(id);
                return new Window(id, windowSize, highest == null ? Long.MIN_VALUE : highest);
            });
        }
    }

    /** Evicted clients whose highest accepted sequence was not kept: their retries are not recognised (status). */
    long forgottenClientsDropped() {
        synchronized (clients) {
            return forgottenDropped;
        }
    }

    /**
     * One client's newest accepted sequences as {@link #capture} copied them: those accepted whole, in acceptance
     * order, and those accepted for some parts only, with the slots of those parts.
     */
    record Captured(long clientId, long[] sequences, List<Parts> parts) {}

    /** A sequence accepted for some parts only, and the slots of those parts, ascending. */
    record Parts(long sequence, int[] slots) {}

    /**
     * The newest accepted sequences of every client (at most {@value #CAPTURED_PER_CLIENT} each, fewer when clients are
     * many), for a checkpoint cut now: every one of them names a push whose effect the checkpoint holds. Copies only
     * (it runs while pushes wait for the cut); {@link #encode} the result afterwards.
     */
    List<Captured> capture() {
        final List<Window> all;
        synchronized (clients) {
            all = new ArrayList<>(clients.values());
        }
        // Most recently active first: the part-slot budget goes to the pushes likeliest to be in doubt.
        Collections.reverse(all);
        final List<Captured> captured = new ArrayList<>(all.size());
        if (all.isEmpty()) {
            return captured;
        }
        final int perClient = Math.max(1, Math.min(CAPTURED_PER_CLIENT, CAPTURED_TOTAL / all.size()));
        int partSlotsLeft = CAPTURED_PART_SLOTS;
        for (final Window window : all) {
            final long[] newest;
            final List<Parts> parts;
            synchronized (window) {
                newest = window.newest(perClient);
                parts = window.newestParts(perClient, partSlotsLeft);
            }
            for (final Parts part : parts) {
                partSlotsLeft -= part.slots().length;
            }
            if (newest.length > 0 || !parts.isEmpty()) {
                captured.add(new Captured(window.clientId, newest, parts));
            }
        }
        return captured;
    }

    /**
     * {@code captured} as a checkpoint keeps it: per client, its sequences accepted whole ascending, delta-coded, and
     * those accepted in parts ascending, each with its slots.
     */
    static PushWindows encode(final List<Captured> captured) {
        final PushWindows.Builder windows = PushWindows.newBuilder();
        for (final Captured one : captured) {
            final long[] sorted = one.sequences().clone();
            Arrays.sort(sorted);
            final ClientPushWindow.Builder client =
                    ClientPushWindow.newBuilder().setClientId(one.clientId());
            long previous = 0;
            for (final long sequence : sorted) {
                client.addSequenceDeltas(sequence - previous);
                previous = sequence;
            }
            final List<Parts> parts = new ArrayList<>(one.parts());
            parts.sort(Comparator.comparingLong(Parts::sequence));
            for (final Parts part : parts) {
                final PushParts.Builder encoded = PushParts.newBuilder().setSequence(part.sequence());
                for (final int slot : part.slots()) {
                    encoded.addSlots(slot);
                }
                client.addParts(encoded);
            }
            windows.addClients(client);
        }
        return windows.build();
    }

    /**
     * Another shard's capture taken at checkpoint {@code checkpointId}'s cut, adopted as this shard loads that
     * checkpoint's rows of {@code slots}: kept apart from this shard's own windows (its own next capture holds only
     * its own sequences). A request with one of its sequences is a repeat if all its slots' rows came from that
     * checkpoint ({@link #adoptedSlots}). Every other adopted capture stops vouching for {@code slots}, whose rows are
     * now this checkpoint's. {@code source} names the capture (the manifest property): adopting it again for more
     * slots adds them. The captures of the newest {@value #ADOPTED_CHECKPOINTS} checkpoints are kept.
     *
     * @throws IllegalArgumentException when the capture names a slot that does not exist (nothing is adopted).
     */
    void adopt(final long checkpointId, final String source, final PushWindows captured, final BitSet slots) {
        final Map<Long, LongHashSet> byClient = new HashMap<>();
        final Map<Long, Long2ObjectHashMap<BitSet>> partsByClient = new HashMap<>();
        for (final ClientPushWindow client : captured.getClientsList()) {
            final LongHashSet sequences = byClient.computeIfAbsent(client.getClientId(), id -> new LongHashSet());
            long sequence = 0;
            for (final long delta : client.getSequenceDeltasList()) {
                sequence += delta;
                sequences.add(sequence);
            }
            if (client.getPartsCount() > 0) {
                final Long2ObjectHashMap<BitSet> parts =
                        partsByClient.computeIfAbsent(client.getClientId(), id -> new Long2ObjectHashMap<>());
                for (final PushParts part : client.getPartsList()) {
                    final BitSet partSlots = parts.computeIfAbsent(part.getSequence(), s -> new BitSet());
                    for (final int slot : part.getSlotsList()) {
                        if (slot < 0 || slot >= Slots.SLOT_COUNT) {
                            throw new IllegalArgumentException("push windows of client " + client.getClientId()
                                    + " name slot " + slot + " for sequence " + part.getSequence()
                                    + ", outside 0.." + (Slots.SLOT_COUNT - 1));
                        }
                        partSlots.set(slot);
                    }
                }
            }
        }
        synchronized (this) {
            // The other checkpoints' captures stop vouching for these slots; this one's other shards' do not.
            final BitSet vouched = (BitSet) slots.clone();
            final List<Adopted> kept = new ArrayList<>();
            final List<Adopted> others = new ArrayList<>();
            for (final Adopted earlier : adopted) {
                if (earlier.checkpointId() != checkpointId) {
                    others.add(earlier);
                } else if (earlier.source().equals(source)) {
                    vouched.or(earlier.slots());
                } else {
                    kept.add(earlier);
                }
            }
            kept.addAll(without(slots, others));
            kept.add(new Adopted(checkpointId, source, vouched, byClient, partsByClient));
            final TreeSet<Long> checkpoints = new TreeSet<>();
            kept.forEach(capture -> checkpoints.add(capture.checkpointId()));
            while (checkpoints.size() > ADOPTED_CHECKPOINTS) {
                checkpoints.pollFirst();
            }
            kept.removeIf(capture -> !checkpoints.contains(capture.checkpointId()));
            adopted = List.copyOf(kept);
        }
    }

    /**
     * The rows of {@code slots} were replaced (loaded from a checkpoint, emptied, or gone with the slots): no adopted
     * capture vouches for them any more, and no sequence this shard accepted so far goes into its later captures,
     * since the effect of its push may be among the rows replaced (its own window keeps deduping it here).
     */
    void rowsReplaced(final BitSet slots) {
        synchronized (this) {
            adopted = List.copyOf(without(slots, adopted));
        }
        final List<Window> all;
        synchronized (clients) {
            all = new ArrayList<>(clients.values());
        }
        for (final Window window : all) {
            synchronized (window) {
                window.keepOutOfCaptures(slots);
            }
        }
    }

    /** {@code captures} with {@code slots} taken out of each (those left vouching for nothing dropped). */
    private static List<Adopted> without(final BitSet slots, final List<Adopted> captures) {
        final List<Adopted> kept = new ArrayList<>();
        for (final Adopted capture : captures) {
            if (!capture.slots().intersects(slots)) {
                kept.add(capture);
                continue;
            }
            final BitSet left = (BitSet) capture.slots().clone();
            left.andNot(slots);
            if (!left.isEmpty()) {
                kept.add(new Adopted(
                        capture.checkpointId(), capture.source(), left, capture.byClient(), capture.partsByClient()));
            }
        }
        return kept;
    }

    /**
     * The slots for which a request of {@code clientId} with {@code sequence} repeats a push another shard accepted
     * before a cut whose rows this shard holds for them, or null when no adopted capture holds the sequence: the slots
     * an adopted capture vouches for, of every capture that holds the sequence accepted whole, and of the slots of its
     * parts for one that holds it accepted in parts. A request with that sequence carries a part of that push's keys (a
     * sequence is taken once per request; re-split parts keep it, each with slots of its own), so its effect in those
     * slots is in their rows. Lock-free; a new set.
     */
    BitSet adoptedSlots(final long clientId, final long sequence) {
        BitSet repeated = null;
        for (final Adopted capture : adopted) {
            final LongHashSet sequences = capture.byClient().get(clientId);
            final Long2ObjectHashMap<BitSet> parts = capture.partsByClient().get(clientId);
            final BitSet partSlots = parts == null ? null : parts.get(sequence);
            if (sequences != null && sequences.contains(sequence)) {
                repeated = repeated == null ? new BitSet() : repeated;
                repeated.or(capture.slots());
            } else if (partSlots != null) {
                final BitSet vouched = (BitSet) partSlots.clone();
                vouched.and(capture.slots());
                repeated = repeated == null ? new BitSet() : repeated;
                repeated.or(vouched);
            }
        }
        return repeated;
    }

    /** A capture adopted from a checkpoint, and the slots whose rows here came from it: read-only once made. */
    private record Adopted(
            long checkpointId,
            String source,
            BitSet slots,
            Map<Long, LongHashSet> byClient,
            Map<Long, Long2ObjectHashMap<BitSet>> partsByClient) {}

    private volatile List<Adopted> adopted = List.of();

    int clientCount() {
        synchronized (clients) {
            return clients.size();
        }
    }

    /** What a sequence accepted in parts was accepted for. */
    private static final class PartsAccepted {
        /** Every slot of its parts: a request of the sequence for these slots is a repeat here. */
        final BitSet slots = new BitSet();
        /** The slots of its parts whose rows have not been replaced since: what a capture may vouch for. */
        final BitSet capturable = new BitSet();
        /** Its entries in the ring, one per part. */
        int entries;
    }

    /** One client's accepted sequences. Not thread-safe: callers hold its monitor. */
    static final class Window {
        private final long clientId;
        private final int capacity;
        private final LongHashSet retained = new LongHashSet();
        /** The retained sequences accepted in parts, and the slots of those parts ({@link #acceptedParts}). */
        private final Long2ObjectHashMap<PartsAccepted> parts = new Long2ObjectHashMap<>();

        private long[] ring;
        private int head;
        private int size;
        private long highestEvicted;
        /** The highest sequence ever recorded here, or that the client's evicted window had accepted. */
        private long highestAccepted;
        /** Its client's window was evicted: a caller holding it asks for the client's window again. */
        private boolean evicted;
        /**
         * Entries recorded so far (one per sequence accepted whole, one per part), and how many of them before the last
         * {@link #keepOutOfCaptures}.
         */
        private long accepted;

        private long capturableFrom;

        private Window(final long clientId, final int capacity, final long highestBefore) {
            this.clientId = clientId;
            this.capacity = capacity;
            this.ring = new long[Math.min(16, capacity)];
            this.highestEvicted = highestBefore;
            this.highestAccepted = highestBefore;
        }

        /**
         * True once the client's window was evicted (checked under the monitor): nothing is to be checked or recorded
         * here, the caller asks {@link PushSequenceWindows#window} again.
         */
        boolean evicted() {
            return evicted;
        }

        /**
         * True if {@code sequence} was accepted before and is still remembered (whole, or for some parts: see
         * {@link #acceptedParts}).
         *
         * @throws PsException FAILED_PRECONDITION when it is not remembered but may have been accepted and forgotten.
         */
        boolean seen(final long sequence) {
            if (retained.contains(sequence)) {
                return true;
            }
            if (sequence <= highestEvicted) {
                throw PsException.mayHaveBeenApplied("push of client " + clientId + " with sequence " + sequence
                        + (size == 0
                                ? " is older than every push this shard remembers of it (it forgot them to make room"
                                        + " for more recently active clients)"
                                : " is older than the last " + capacity + " pushes this shard remembers (oldest"
                                        + " remembered: " + (ring[head] >> 1) + ")")
                        + "; it may have been applied and is not applied again");
            }
            return false;
        }

        /**
         * The slots {@code sequence} was accepted for when only parts of it were ({@link #record(long, int[])}), or
         * null when it was accepted whole or never (ask {@link #seen} first). A request of the SDK holds whole slots
         * (or, for a slot too large for one request, a group of its keys under a sequence of its own), and the parts a
         * request is re-split into share its sequence and hold none of each other's slots; so a part
         * for other slots than these is a sibling this shard never applied (its slots moved here after it was
         * refused elsewhere), not a repeat. Read-only for the caller.
         */
        BitSet acceptedParts(final long sequence) {
            final PartsAccepted accepted = parts.get(sequence);
            return accepted == null ? null : accepted.slots;
        }

        /** Remembers a sequence accepted whole ({@link #record(long, int[])}). */
        void record(final long sequence) {
            record(sequence, null);
        }

        /**
         * Remembers an accepted sequence, forgetting the oldest accepted entry when the window is full. {@code
         * partSlots} is null when the request carried its sequence whole, else the slots of the part accepted (the
         * request carried only some of its sequence's keys): what the sequence was accepted for is then the union of
         * its parts' slots ({@link #acceptedParts}), and each part takes an entry of its own, so that the newest part
         * counts among the newest sequences for captures ({@link #newestParts}) and the sequence is forgotten with
         * its last entry.
         */
        void record(final long sequence, final int[] partSlots) {
            if (partSlots != null) {
                PartsAccepted known = parts.get(sequence);
                if (known == null) {
                    known = new PartsAccepted();
                    parts.put(sequence, known);
                }
                known.entries++;
                for (final int slot : partSlots) {
                    known.slots.set(slot);
                    known.capturable.set(slot);
                }
            }
            // The ring keeps each sequence shifted left by one, its lowest bit saying partial (sequences are positive).
            final long entry = sequence << 1 | (partSlots != null ? 1 : 0);
            accepted++;
            highestAccepted = Math.max(highestAccepted, sequence);
            if (size == capacity) {
                forget(ring[head]);
                ring[head] = entry;
                // Full means the ring has grown to exactly capacity entries.
                head = (head + 1) % ring.length;
            } else {
                if (size == ring.length) {
                    grow();
                }
                ring[(head + size) % ring.length] = entry;
                size++;
            }
            retained.add(sequence);
        }

        /** The oldest entry leaves the ring: its sequence is forgotten unless a newer part of it still has an entry. */
        private void forget(final long entry) {
            final long evicted = entry >> 1;
            if ((entry & 1) != 0) {
                final PartsAccepted known = parts.get(evicted);
                if (--known.entries > 0) {
                    return;
                }
                parts.remove(evicted);
            }
            retained.remove(evicted);
            highestEvicted = Math.max(highestEvicted, evicted);
        }

        private void grow() {
            final long[] larger = new long[Math.min(capacity, ring.length * 2)];
            for (int i = 0; i < size; i++) {
                larger[i] = ring[(head + i) % ring.length];
            }
            ring = larger;
            head = 0;
        }

        int size() {
            return size;
        }

        /**
         * The rows of {@code replaced} were replaced: keeps every sequence accepted whole so far out of captures
         * ({@link #newest}; its slots are not known), and those slots out of the captured slots of sequences accepted in
         * parts ({@link #newestParts}).
         */
        void keepOutOfCaptures(final BitSet replaced) {
            capturableFrom = accepted;
            for (final PartsAccepted known : parts.values()) {
                known.capturable.andNot(replaced);
            }
        }

        /**
         * The sequences accepted whole among the newest {@code count} accepted, in acceptance order (none accepted
         * before {@link #keepOutOfCaptures}).
         */
        long[] newest(final int count) {
            final int n = (int) Math.min(Math.min(count, size), accepted - capturableFrom);
            final long[] out = new long[n];
            int whole = 0;
            for (int i = 0; i < n; i++) {
                final long entry = ring[(head + size - n + i) % ring.length];
                if ((entry & 1) == 0) {
                    out[whole++] = entry >> 1;
                }
            }
            return whole == n ? out : Arrays.copyOf(out, whole);
        }

        /**
         * The sequences accepted for some parts only among the newest {@code count} entries, newest first, each with the
         * slots of its parts whose rows were not replaced since ({@link #keepOutOfCaptures}), at most {@code maxSlots}
         * slots in all (a part left out is applied again if retried at a new owner, never lost).
         */
        List<Parts> newestParts(final int count, final int maxSlots) {
            final int n = Math.min(count, size);
            final List<Parts> out = new ArrayList<>();
            final LongHashSet listed = new LongHashSet();
            int slots = 0;
            for (int i = n - 1; i >= 0; i--) {
                final long entry = ring[(head + size - n + i) % ring.length];
                if ((entry & 1) != 0 && listed.add(entry >> 1)) {
                    final BitSet capturable = parts.get(entry >> 1).capturable;
                    if (capturable.isEmpty()) {
                        continue;
                    }
                    slots += capturable.cardinality();
                    if (slots > maxSlots) {
                        break;
                    }
                    out.add(new Parts(entry >> 1, capturable.stream().toArray()));
                }
            }
            return out;
        }
    }
}
