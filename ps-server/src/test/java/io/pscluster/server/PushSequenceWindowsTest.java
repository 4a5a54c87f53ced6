package io.pscluster.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

import io.grpc.Status;
import io.pscluster.proto.v1.ClientPushWindow;
import io.pscluster.proto.v1.PushParts;
import io.pscluster.proto.v1.PushWindows;
import io.pscluster.wire.PsException;
import io.pscluster.wire.Slots;
import java.util.Arrays;
import java.util.BitSet;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import org.junit.jupiter.api.Test;

class PushSequenceWindowsTest {

    @Test
    void shouldRememberTheLastAcceptedSequencesAndRefuseAForgottenOneWhenTheWindowIsFull() {
        final PushSequenceWindows windows = new PushSequenceWindows(4, 10);
        final PushSequenceWindows.Window window = windows.window(77);
        for (long sequence = 1; sequence <= 5; sequence++) {
            assertThat(window.seen(sequence)).isFalse();
            window.record(sequence);
        }

        assertThat(window.seen(5)).isTrue();
        assertThat(window.seen(2)).isTrue();
        assertThat(window.seen(6)).isFalse();
        final PsException forgotten = catchThrowableOfType(PsException.class, () -> window.seen(1));
        assertThat(forgotten).isNotNull();
        assertThat(forgotten.code()).isEqualTo(Status.Code.FAILED_PRECONDITION);
        assertThat(forgotten.getMessage()).contains("client 77", "sequence 1", "oldest remembered: 2");
    }

    @Test
    void shouldRefuseAnEvictedSequenceWhenItWasAcceptedOutOfOrder() {
        final PushSequenceWindows.Window window = new PushSequenceWindows(2, 10).window(5);
        window.record(9);
        window.record(3);
        window.record(10); // evicts 9, although 3 (lower) is still remembered

        final PsException forgotten = catchThrowableOfType(PsException.class, () -> window.seen(9));

        assertThat(forgotten).as("a repeat of evicted sequence 9").isNotNull();
        assertThat(window.seen(3)).isTrue();
    }

    @Test
    void shouldForgetTheLeastRecentlyActiveClientWhenThereAreTooMany() {
        final PushSequenceWindows windows = new PushSequenceWindows(8, 2);
        windows.window(1).record(1);
        windows.window(2).record(1);
        windows.window(1); // client 1 is active again

        windows.window(3).record(1);

        assertThat(windows.clientCount()).isEqualTo(2);
        assertThat(windows.window(1).seen(1)).as("client 1, recently active").isTrue();
        final PushSequenceWindows.Window again = windows.window(2);
        final PsException forgotten = catchThrowableOfType(PsException.class, () -> again.seen(1));
        assertThat(forgotten)
                .as("client 2's sequence 1, accepted before its window was evicted")
                .isNotNull();
        assertThat(forgotten.code()).isEqualTo(Status.Code.FAILED_PRECONDITION);
        assertThat(forgotten.getMessage()).contains("client 2", "sequence 1", "more recently active clients");
        assertThat(again.seen(2)).as("client 2's next sequence").isFalse();
    }

    /** The highest sequence of an evicted client is the highest it had accepted, also out of order and in parts. */
    @Test
    void shouldKeepTheHighestSequenceAnEvictedClientHadAccepted() {
        final PushSequenceWindows windows = new PushSequenceWindows(2, 1);
        final PushSequenceWindows.Window first = windows.window(1);
        first.record(9, new int[] {3});
        first.record(4);
        first.record(5); // forgets 9's part
        windows.window(2);

        final PushSequenceWindows.Window again = windows.window(1);

        assertThat(first.evicted()).isTrue();
        assertThat(again).isNotSameAs(first);
        assertThat(catchThrowableOfType(PsException.class, () -> again.seen(9))).isNotNull();
        assertThat(catchThrowableOfType(PsException.class, () -> again.seen(5))).isNotNull();
        assertThat(again.seen(10)).isFalse();
    }

    /**
     * Evicted clients are remembered for {@value PushSequenceWindows#FORGOTTEN_PER_CLIENT} times as many clients as
     * windows are kept, the oldest eviction dropped first (and counted); a client that came back is remembered by its
     * window again.
     */
    @Test
    void shouldDropTheOldestEvictedClientOnceTooManyAreRemembered() {
        final int kept = 2;
        final PushSequenceWindows windows = new PushSequenceWindows(8, kept);
        final int clients = kept + kept * PushSequenceWindows.FORGOTTEN_PER_CLIENT + 1;
        for (long client = 1; client <= clients; client++) {
            windows.window(client).record(7);
        }

        assertThat(windows.forgottenClientsDropped()).isEqualTo(1);
        // Client 2 first: each window asked for evicts another client, and client 1's would drop client 2.
        assertThat(catchThrowableOfType(
                        PsException.class, () -> windows.window(2).seen(7)))
                .as("client 2, evicted second and still remembered")
                .isNotNull();
        assertThat(windows.window(1).seen(7))
                .as("client 1, evicted first and dropped")
                .isFalse();
    }

    /** A push being accepted in a window when it is evicted is recorded first: the client's next window refuses it. */
    @Test
    void shouldCarryASequenceRecordedWhileTheWindowWasBeingEvicted() throws Exception {
        final PushSequenceWindows windows = new PushSequenceWindows(8, 1);
        final PushSequenceWindows.Window held = windows.window(1);
        final CountDownLatch inside = new CountDownLatch(1);
        final CompletableFuture<Void> release = new CompletableFuture<>();
        final Thread accepting = new Thread(() -> {
            synchronized (held) {
                inside.countDown();
                release.join();
                held.record(3);
            }
        });
        accepting.start();
        inside.await();
        final Thread evicting = new Thread(() -> windows.window(2));
        evicting.start();
        // The eviction waits for the window's monitor; the accepting thread records, then lets go.
        while (evicting.getState() != Thread.State.BLOCKED && evicting.isAlive()) {
            Thread.onSpinWait();
        }
        release.complete(null);
        accepting.join();
        evicting.join();

        assertThat(held.evicted()).isTrue();
        assertThat(catchThrowableOfType(
                        PsException.class, () -> windows.window(1).seen(3)))
                .as("sequence 3, recorded while the eviction waited")
                .isNotNull();
    }

    /**
     * Each part of a sequence takes a place in the window; what the sequence was accepted for is the union of its parts'
     * slots, remembered until its newest part leaves the window.
     */
    @Test
    void shouldRememberTheSlotsOfEachPartOfASequenceUntilItsNewestPartIsForgotten() {
        final PushSequenceWindows.Window window = new PushSequenceWindows(2, 10).window(5);
        window.record(4, new int[] {7, 9});
        window.record(4, new int[] {8});
        window.record(6); // forgets the first part of 4 only

        assertThat(window.size()).isEqualTo(2);
        assertThat(window.seen(4)).isTrue();
        assertThat(window.acceptedParts(4)).isEqualTo(BitSet.valueOf(new long[] {0b11_1000_0000L}));
        assertThat(window.acceptedParts(6)).as("accepted whole").isNull();

        window.record(10); // forgets 4
        assertThat(catchThrowableOfType(PsException.class, () -> window.seen(4)))
                .isNotNull();
        assertThat(window.acceptedParts(4)).isNull();
    }

    /**
     * A part accepted after rows were replaced (the restore that brought its slots here) is captured with its slots,
     * and so is an earlier part of its sequence whose rows were not replaced, but not one whose rows were; a part
     * accepted after more than a capture's worth of other pushes is captured with its sequence's earlier parts.
     */
    @Test
    void shouldCaptureThePartsOfASequenceAcceptedSinceRowsWereReplacedAndSinceManyOtherPushes() throws Exception {
        final PushSequenceWindows donor = new PushSequenceWindows();
        donor.window(5).record(40, new int[] {3});
        donor.window(5).record(40, new int[] {4});
        donor.rowsReplaced(slots(4, 5));
        donor.rowsReplaced(slots(7, 8));
        donor.window(5).record(40, new int[] {7});
        donor.window(6).record(60, new int[] {1});
        for (int i = 0; i < PushSequenceWindows.CAPTURED_PER_CLIENT; i++) {
            donor.window(6).record(100 + i);
        }
        donor.window(6).record(60, new int[] {2});

        final PushSequenceWindows heir = new PushSequenceWindows();
        heir.adopt(3, "push-windows/s0", PushWindows.parseFrom(encode(donor).toByteArray()), slots(0, 10));

        assertThat(adoptedHolds(heir, 5, 40, new int[] {7}))
                .as("the part after the restore")
                .isTrue();
        assertThat(adoptedHolds(heir, 5, 40, new int[] {3, 7}))
                .as("a part from before, whose rows stayed")
                .isTrue();
        assertThat(adoptedHolds(heir, 5, 40, new int[] {4}))
                .as("a part from before, whose rows were replaced since")
                .isFalse();
        assertThat(adoptedHolds(heir, 6, 60, new int[] {2})).isTrue();
        assertThat(adoptedHolds(heir, 6, 60, new int[] {1, 2}))
                .as("its earlier part too: no rows were replaced since")
                .isTrue();
    }

    /** The part-slot budget of a capture goes to the most recently active clients first. */
    @Test
    void shouldSpendTheCapturesPartSlotsOnTheMostRecentlyActiveClientsFirst() throws Exception {
        final PushSequenceWindows donor = new PushSequenceWindows();
        final int[] allSlots =
                java.util.stream.IntStream.range(0, Slots.SLOT_COUNT).toArray();
        for (int i = 0; i <= PushSequenceWindows.CAPTURED_PART_SLOTS / Slots.SLOT_COUNT; i++) {
            donor.window(5).record(1 + i, allSlots);
        }
        donor.window(6).record(70, new int[] {2});

        final PushSequenceWindows heir = new PushSequenceWindows();
        heir.adopt(3, "push-windows/s0", PushWindows.parseFrom(encode(donor).toByteArray()), slots(0, 10));

        assertThat(adoptedHolds(heir, 6, 70, new int[] {2})).isTrue();
        assertThat(adoptedHolds(heir, 5, 1, new int[] {2}))
                .as("past the budget")
                .isFalse();
    }

    /** The slots a sequence repeats in: every capture holding it, whole or in parts, within what each vouches for. */
    @Test
    void shouldGiveTheSlotsInWhichASequenceRepeatsAcrossCaptures() {
        final PushSequenceWindows donor = new PushSequenceWindows();
        donor.window(5).record(7);
        donor.window(5).record(8, new int[] {30, 40});
        final PushSequenceWindows heir = new PushSequenceWindows();
        heir.adopt(3, "push-windows/s0", encode(donor), slots(0, 35));
        final PushSequenceWindows other = new PushSequenceWindows();
        other.window(5).record(8, new int[] {50});
        heir.adopt(3, "push-windows/s1", encode(other), slots(40, 60));

        assertThat(heir.adoptedSlots(5, 7)).isEqualTo(slots(0, 35));
        final BitSet expected = new BitSet();
        expected.set(30);
        expected.set(50);
        assertThat(heir.adoptedSlots(5, 8)).isEqualTo(expected);
        assertThat(heir.adoptedSlots(5, 9)).isNull();
    }

    @Test
    void shouldRefuseToAdoptACaptureNamingASlotThatDoesNotExist() {
        final PushWindows bad = PushWindows.newBuilder()
                .addClients(ClientPushWindow.newBuilder()
                        .setClientId(5)
                        .addParts(PushParts.newBuilder().setSequence(40).addSlots(Slots.SLOT_COUNT)))
                .build();
        final PushSequenceWindows heir = new PushSequenceWindows();

        assertThatThrownBy(() -> heir.adopt(3, "push-windows/s0", bad, slots(0, 8)))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("slot " + Slots.SLOT_COUNT);
        assertThat(adoptedHolds(heir, 5, 40, new int[] {0})).isFalse();
    }

    /** Whether {@code windows} takes a request of the sequence for keys in {@code slots} for a repeat in every slot. */
    private static boolean adoptedHolds(
            final PushSequenceWindows windows, final long clientId, final long sequence, final int[] slots) {
        final BitSet repeated = windows.adoptedSlots(clientId, sequence);
        return repeated != null && Arrays.stream(slots).allMatch(repeated::get);
    }

    private static PushWindows encode(final PushSequenceWindows windows) {
        return PushSequenceWindows.encode(windows.capture());
    }

    /**
     * A capture keeps each client's newest sequences accepted whole (in acceptance order, not by value; parts of
     * re-split requests left out), and a shard adopting it takes any request with one of them for a repeat.
     */
    @Test
    void shouldCaptureTheNewestWholeSequencesOfEachClientForAnotherShardToAdopt() throws Exception {
        final PushSequenceWindows windows = new PushSequenceWindows(PushSequenceWindows.CAPTURED_PER_CLIENT * 2, 10);
        final PushSequenceWindows.Window window = windows.window(5);
        final int accepted = PushSequenceWindows.CAPTURED_PER_CLIENT + 100;
        for (int i = 0; i < accepted; i++) {
            // Out of order: 2001, 2000, 2003, 2002, ...
            window.record(2_000 + (i ^ 1));
        }
        windows.window(9).record(77);
        windows.window(9).record(78, new int[] {3});
        assertThat(windows.window(9).seen(78))
                .as("a part is deduped here all the same")
                .isTrue();

        final PushWindows captured = PushSequenceWindows.encode(windows.capture());
        assertThat(captured.getClientsList()).hasSize(2);

        final PushSequenceWindows other = new PushSequenceWindows();
        other.adopt(3, "push-windows/s0", PushWindows.parseFrom(captured.toByteArray()), slots(0, 100));
        for (int i = accepted - PushSequenceWindows.CAPTURED_PER_CLIENT; i < accepted; i++) {
            assertThat(adoptedHolds(other, 5, 2_000 + (i ^ 1), IN))
                    .as("sequence %d", 2_000 + (i ^ 1))
                    .isTrue();
        }
        assertThat(adoptedHolds(other, 5, 2_000, IN))
                .as("older than the capture")
                .isFalse();
        assertThat(adoptedHolds(other, 5, 2_000 + accepted, IN)).isFalse();
        assertThat(adoptedHolds(other, 9, 77, IN)).isTrue();
        assertThat(adoptedHolds(other, 9, 77, new int[] {99, 100}))
                .as("a slot whose rows came from elsewhere")
                .isFalse();
        assertThat(adoptedHolds(other, 9, 78, IN))
                .as("a part accepted alone: its siblings may be applied nowhere")
                .isFalse();
        assertThat(other.window(5).size()).as("its own window is untouched").isZero();
    }

    /** Captures of the two newest checkpoints are kept, all shards' of each (here each loaded for its own slots). */
    @Test
    void shouldKeepTheCapturesOfTheNewestTwoCheckpoints() {
        final PushSequenceWindows heir = new PushSequenceWindows();
        for (int checkpoint = 1; checkpoint <= 3; checkpoint++) {
            for (int shard = 0; shard < 20; shard++) {
                final PushSequenceWindows donor = new PushSequenceWindows();
                donor.window(5).record(checkpoint * 100 + shard);
                heir.adopt(
                        checkpoint,
                        "push-windows/s" + shard,
                        PushSequenceWindows.encode(donor.capture()),
                        slots(checkpoint * 10, checkpoint * 10 + 10));
            }
        }
        assertThat(adoptedHolds(heir, 5, 119, new int[] {10}))
                .as("checkpoint 1")
                .isFalse();
        assertThat(adoptedHolds(heir, 5, 200, new int[] {20})).isTrue();
        assertThat(adoptedHolds(heir, 5, 219, new int[] {29})).isTrue();
        assertThat(adoptedHolds(heir, 5, 300, new int[] {30})).isTrue();
        assertThat(adoptedHolds(heir, 5, 319, new int[] {39})).isTrue();
        assertThat(adoptedHolds(heir, 5, 319, new int[] {29}))
                .as("slot 29's rows are checkpoint 2's")
                .isFalse();
    }

    /** What a shard adopted does not push its own newest sequences out of its next capture. */
    @Test
    void shouldCaptureItsOwnSequencesAfterAdoptingAnothersFirst() {
        final PushSequenceWindows donor = new PushSequenceWindows();
        for (int i = 0; i < PushSequenceWindows.CAPTURED_PER_CLIENT; i++) {
            donor.window(5).record(i + 1);
        }
        final PushSequenceWindows heir = new PushSequenceWindows();
        heir.adopt(3, "push-windows/s0", PushSequenceWindows.encode(donor.capture()), slots(0, 10));
        heir.window(5).record(5_000);

        final List<PushSequenceWindows.Captured> next = heir.capture();
        assertThat(next)
                .singleElement()
                .satisfies(client -> assertThat(client.sequences()).containsExactly(5_000L));
    }

    /**
     * A sequence accepted for some parts only is captured with their slots: a shard adopting it takes a request of
     * that sequence for a repeat only where both the parts and its own rows from the checkpoint cover every slot, so a
     * sibling part (other slots, applied nowhere yet) is applied there.
     */
    @Test
    void shouldCaptureSequencesAcceptedInPartsWithTheSlotsOfThoseParts() throws Exception {
        final PushSequenceWindows donor = new PushSequenceWindows();
        donor.window(5).record(40, new int[] {3, 4});
        donor.window(5).record(41);
        donor.window(5).record(40, new int[] {7});
        donor.window(6).record(50, new int[] {9});

        final List<PushSequenceWindows.Captured> captured = donor.capture();
        final PushWindows encoded =
                PushWindows.parseFrom(PushSequenceWindows.encode(captured).toByteArray());
        final PushSequenceWindows heir = new PushSequenceWindows();
        heir.adopt(3, "push-windows/s0", encoded, slots(0, 8));

        assertThat(adoptedHolds(heir, 5, 40, new int[] {3})).isTrue();
        assertThat(adoptedHolds(heir, 5, 40, new int[] {4, 7, 3})).isTrue();
        assertThat(adoptedHolds(heir, 5, 40, new int[] {5}))
                .as("a sibling part's slot")
                .isFalse();
        assertThat(adoptedHolds(heir, 5, 40, new int[] {3, 5})).isFalse();
        assertThat(adoptedHolds(heir, 5, 41, new int[] {0, 5}))
                .as("accepted whole")
                .isTrue();
        assertThat(adoptedHolds(heir, 6, 50, new int[] {9}))
                .as("slot 9's rows came from elsewhere")
                .isFalse();

        donor.rowsReplaced(slots(0, 10));
        assertThat(donor.capture())
                .as("whole sequences and parts whose slots' rows were replaced since")
                .isEmpty();
    }

    /**
     * Slots whose rows come from another checkpoint (an older one, on a fallback) or from none are vouched for by that
     * one only: the earlier capture no longer makes their requests repeats, while its other slots keep it.
     */
    @Test
    void shouldVouchOnlyForTheSlotsWhoseRowsCameFromTheCapturesCheckpoint() {
        final PushSequenceWindows donor = new PushSequenceWindows();
        donor.window(5).record(7);
        final PushSequenceWindows heir = new PushSequenceWindows();
        heir.adopt(9, "push-windows/s0", PushSequenceWindows.encode(donor.capture()), slots(0, 10));
        assertThat(adoptedHolds(heir, 5, 7, new int[] {1, 6})).isTrue();

        heir.adopt(4, "push-windows/s0", PushSequenceWindows.encode(new PushSequenceWindows().capture()), slots(0, 5));
        assertThat(adoptedHolds(heir, 5, 7, new int[] {1, 6}))
                .as("slot 1's rows are checkpoint 4's")
                .isFalse();
        assertThat(adoptedHolds(heir, 5, 7, new int[] {6})).isTrue();

        heir.rowsReplaced(slots(5, 7));
        assertThat(adoptedHolds(heir, 5, 7, new int[] {6})).as("slot 6 emptied").isFalse();
        assertThat(adoptedHolds(heir, 5, 7, new int[] {7, 9})).isTrue();
    }

    /**
     * Once rows were replaced (a restore rolled them back, or they left with their slots), the sequences accepted
     * before stay deduped here but go into no later capture: their effect may not be in the rows any more.
     */
    @Test
    void shouldKeepSequencesAcceptedBeforeRowsWereReplacedOutOfLaterCaptures() {
        final PushSequenceWindows windows = new PushSequenceWindows();
        windows.window(5).record(1);
        windows.window(5).record(2);

        windows.rowsReplaced(slots(0, 1));
        windows.window(5).record(3);

        assertThat(windows.capture())
                .singleElement()
                .satisfies(client -> assertThat(client.sequences()).containsExactly(3L));
        assertThat(windows.window(5).seen(2)).isTrue();
    }

    private static final int[] IN = {0, 99};

    private static BitSet slots(final int from, final int to) {
        final BitSet slots = new BitSet();
        slots.set(from, to);
        return slots;
    }
}
