package io.pscluster.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatCode;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.pscluster.wire.PsException;
import java.util.BitSet;
import org.junit.jupiter.api.Test;

class SlotOwnershipTest {
    /** A request routed with an epoch newer than any in these tests. */
    private static final long ROUTED = 100;

    private static BitSet slots(final int fromInclusive, final int toExclusive) {
        final BitSet slots = new BitSet();
        slots.set(fromInclusive, toExclusive);
        return slots;
    }

    private static StatusRuntimeException statusOfCheck(final SlotOwnership.View view, final int slot) {
        final PsException failure =
                catchThrowableOfType(PsException.class, () -> view.check(slot, ROUTED, "shard-7", "emb", 99L));
        assertThat(failure).as("check of slot %d should be refused", slot).isNotNull();
        final StatusRuntimeException status = PsException.toStatus(failure);
        assertThat(status.getStatus().getCode()).isEqualTo(failure.code());
        return status;
    }

    @Test
    void shouldOwnNothingAtEpochZeroWhenNew() {
        final SlotOwnership ownership = new SlotOwnership();

        assertThat(ownership.view().epoch()).isZero();
        assertThat(ownership.view().ownedCount()).isZero();
        assertThat(PsException.rejectOf(statusOfCheck(ownership.view(), 0))).isEqualTo(PsException.Reject.WRONG_OWNER);
    }

    @Test
    void shouldReturnTheSlotsNoLongerOwnedWhenRoutingChanges() {
        final SlotOwnership ownership = new SlotOwnership();

        assertThat(ownership.route(1, slots(0, 10))).isEqualTo(new BitSet());
        final BitSet lost = ownership.route(2, slots(5, 15));

        assertThat(lost).isEqualTo(slots(0, 5));
        assertThat(ownership.view().epoch()).isEqualTo(2);
        assertThat(ownership.view().owned()).isEqualTo(slots(5, 15));
        assertThat(ownership.view().ownedCount()).isEqualTo(10);
        assertThat(ownership.route(3, new BitSet())).isEqualTo(slots(5, 15));
    }

    @Test
    void shouldAcceptOwnedSlotsAndRefuseOthersAsWrongOwnerWhenChecked() {
        final SlotOwnership ownership = new SlotOwnership();
        ownership.route(4, slots(100, 200));
        final SlotOwnership.View view = ownership.view();

        assertThatCode(() -> view.check(100, ROUTED, "shard-7", "emb", 1L)).doesNotThrowAnyException();
        assertThatCode(() -> view.check(199, ROUTED, "shard-7", "emb", 1L)).doesNotThrowAnyException();

        final StatusRuntimeException status = statusOfCheck(view, 200);
        assertThat(status.getStatus().getCode()).isEqualTo(Status.Code.FAILED_PRECONDITION);
        assertThat(PsException.rejectOf(status)).isEqualTo(PsException.Reject.WRONG_OWNER);
        assertThat(status.getTrailers().get(PsException.EPOCH_KEY)).isEqualTo("4");
        assertThat(status.getStatus().getDescription()).contains("slot 200", "shard-7", "emb", "99");
    }

    @Test
    void shouldRefuseAsRestoringWhenAnOwnedSlotIsBeingRestored() {
        final SlotOwnership ownership = new SlotOwnership();
        ownership.route(5, slots(0, 10));

        ownership.beginRestore(slots(3, 4));

        final StatusRuntimeException status = statusOfCheck(ownership.view(), 3);
        assertThat(status.getStatus().getCode()).isEqualTo(Status.Code.UNAVAILABLE);
        assertThat(PsException.rejectOf(status)).isEqualTo(PsException.Reject.RESTORING);
        assertThat(status.getTrailers().get(PsException.EPOCH_KEY)).isEqualTo("5");
        assertThatCode(() -> ownership.view().check(4, ROUTED, "shard-7", "emb", 1L))
                .doesNotThrowAnyException();
    }

    @Test
    void shouldKeepRefusingRestoringSlotsWhenRoutingMovesOnBeforeTheRestoreEnds() {
        final SlotOwnership ownership = new SlotOwnership();
        ownership.route(1, slots(0, 10));
        ownership.beginRestore(slots(0, 10));

        ownership.route(2, slots(0, 20));
        ownership.route(3, slots(0, 20));

        assertThat(ownership.view().restoring()).isEqualTo(slots(0, 10));
        assertThat(PsException.rejectOf(statusOfCheck(ownership.view(), 9))).isEqualTo(PsException.Reject.RESTORING);
        assertThatCode(() -> ownership.view().check(10, ROUTED, "shard-7", "emb", 1L))
                .doesNotThrowAnyException();

        ownership.endRestore(slots(0, 5));

        assertThatCode(() -> ownership.view().check(4, ROUTED, "shard-7", "emb", 1L))
                .doesNotThrowAnyException();
        assertThat(PsException.rejectOf(statusOfCheck(ownership.view(), 5))).isEqualTo(PsException.Reject.RESTORING);
        assertThat(ownership.view().epoch()).isEqualTo(3);
    }

    @Test
    void shouldRefuseAsWrongOwnerWhenARestoreEndsOnASlotTheRoutingTookAway() {
        final SlotOwnership ownership = new SlotOwnership();
        ownership.route(1, slots(0, 10));
        ownership.beginRestore(slots(0, 10));
        ownership.route(2, slots(0, 5));

        assertThat(PsException.rejectOf(statusOfCheck(ownership.view(), 7))).isEqualTo(PsException.Reject.RESTORING);

        ownership.endRestore(slots(0, 10));

        assertThat(PsException.rejectOf(statusOfCheck(ownership.view(), 7))).isEqualTo(PsException.Reject.WRONG_OWNER);
        assertThatCode(() -> ownership.view().check(4, ROUTED, "shard-7", "emb", 1L))
                .doesNotThrowAnyException();
    }

    @Test
    void shouldKeepEarlierViewsUnchangedWhenOwnershipChanges() {
        final SlotOwnership ownership = new SlotOwnership();
        final BitSet owned = slots(0, 10);
        ownership.route(1, owned);
        final SlotOwnership.View before = ownership.view();

        owned.clear(); // the caller's set is copied, not shared
        ownership.beginRestore(slots(0, 1));
        ownership.route(2, slots(50, 60));

        assertThat(before.epoch()).isEqualTo(1);
        assertThat(before.owned()).isEqualTo(slots(0, 10));
        assertThat(before.restoring()).isEqualTo(new BitSet());
        assertThatCode(() -> before.check(0, ROUTED, "shard-7", "emb", 1L)).doesNotThrowAnyException();
        assertThat(ownership.view().owned()).isEqualTo(slots(50, 60));
    }

    @Test
    void shouldRefuseAsWrongOwnerWhenRoutedAtAnEpochOlderThanTheSlotsGeneration() {
        final SlotOwnership ownership = new SlotOwnership();
        ownership.route(3, slots(0, 10));
        ownership.route(7, slots(0, 20));

        assertThat(ownership.view().generationOf(5))
                .as("a slot kept since epoch 3")
                .isEqualTo(3);
        assertThat(ownership.view().generationOf(15))
                .as("a slot gained at epoch 7")
                .isEqualTo(7);
        assertThatCode(() -> ownership.view().check(5, 3, "shard-7", "emb", 1L)).doesNotThrowAnyException();
        assertThatCode(() -> ownership.view().check(15, 7, "shard-7", "emb", 1L))
                .doesNotThrowAnyException();

        final PsException refused =
                catchThrowableOfType(PsException.class, () -> ownership.view().check(15, 6, "shard-7", "emb", 1L));
        assertThat(refused).isNotNull();
        final StatusRuntimeException status = PsException.toStatus(refused);
        assertThat(PsException.rejectOf(status)).isEqualTo(PsException.Reject.WRONG_OWNER);
        assertThat(status.getStatus().getDescription()).contains("routed at epoch 6", "slot 15", "at epoch 7");
    }

    @Test
    void shouldTakeTheProxysGenerationsWhenTheRoutingCarriesThem() {
        final SlotOwnership ownership = new SlotOwnership();
        final long[] generations = new long[4096];
        generations[2] = 4;
        generations[3] = 9;

        ownership.route(9, slots(2, 4), generations);

        assertThat(ownership.view().generationOf(2)).isEqualTo(4);
        assertThat(ownership.view().generationOf(3)).isEqualTo(9);
        assertThatCode(() -> ownership.view().check(2, 5, "shard-7", "emb", 1L)).doesNotThrowAnyException();
        assertThat(PsException.rejectOf(PsException.toStatus(catchThrowableOfType(
                        PsException.class, () -> ownership.view().check(3, 8, "shard-7", "emb", 1L)))))
                .isEqualTo(PsException.Reject.WRONG_OWNER);
    }
    /**
     * A restore's last failure is told in its slots' refusals while the next attempt runs (each attempt marks the
     * slots again), cut short when long, and forgotten once the restore ends.
     */
    @Test
    void shouldTellTheLastFailureOfARestoreUntilItEnds() {
        final SlotOwnership ownership = new SlotOwnership();
        ownership.route(1, slots(0, 20));
        ownership.beginRestore(slots(0, 10));
        ownership.restoreFailed(slots(0, 10), "attempt 1 failed: " + "x".repeat(5_000));
        ownership.beginRestore(slots(0, 10));

        final String told = statusOfCheck(ownership.view(), 3).getStatus().getDescription();
        assertThat(told)
                .contains("is restoring slot 3", "attempt 1 failed: xxx")
                .endsWith("...");
        assertThat(told.length()).isLessThan(SlotOwnership.MAX_TROUBLE_CHARS + 200);

        ownership.endRestore(slots(0, 10));
        ownership.beginRestore(slots(0, 10));
        assertThat(statusOfCheck(ownership.view(), 3).getStatus().getDescription())
                .doesNotContain("failed");
    }

    private static PsException writeRefusal(final SlotOwnership.View view, final int slot) {
        return catchThrowableOfType(PsException.class, () -> view.checkNotFenced(slot, "shard-7", "emb", 99L, "", 0));
    }

    /** A fence refuses requests for its slots as while restoring (retryable, nothing applied). */
    @Test
    void shouldRefuseRequestsForFencedSlotsAsRestoring() {
        final SlotOwnership ownership = new SlotOwnership();
        ownership.route(4, slots(0, 100));

        ownership.fence(slots(10, 20), java.util.concurrent.TimeUnit.MINUTES.toNanos(10), 1_000, java.util.Map.of());

        final SlotOwnership.View view = ownership.view();
        final PsException refused = writeRefusal(view, 15);
        assertThat(refused).isNotNull();
        assertThat(refused.getMessage()).contains("slot 15", "handing", "over to another shard", "wait for the move");
        assertThat(PsException.rejectOf(PsException.toStatus(refused))).isEqualTo(PsException.Reject.RESTORING);
        assertThat(writeRefusal(view, 20)).as("not fenced").isNull();
        assertThat(view.writable().get(15))
                .as("the writers still apply what was accepted before the fence")
                .isTrue();
    }

    @Test
    void shouldLiftAFenceWhenItsHoldLapsesWhenLiftedAndForSlotsRoutedAway() throws Exception {
        final SlotOwnership ownership = new SlotOwnership();
        ownership.route(4, slots(0, 100));

        ownership.fence(
                slots(10, 20), java.util.concurrent.TimeUnit.MILLISECONDS.toNanos(50), 1_000, java.util.Map.of());
        assertThat(writeRefusal(ownership.view(), 10)).isNotNull();
        final long start = System.nanoTime();
        while (System.nanoTime() - start < java.util.concurrent.TimeUnit.MILLISECONDS.toNanos(60)) {
            Thread.sleep(10);
        }
        assertThat(writeRefusal(ownership.view(), 10)).as("lapsed").isNull();

        ownership.fence(slots(10, 20), java.util.concurrent.TimeUnit.MINUTES.toNanos(10), 1_000, java.util.Map.of());
        assertThat(ownership.unfence()).isEqualTo(10);
        assertThat(writeRefusal(ownership.view(), 10)).as("lifted").isNull();

        ownership.fence(slots(10, 20), java.util.concurrent.TimeUnit.MINUTES.toNanos(10), 1_000, java.util.Map.of());
        ownership.route(5, slots(15, 100));
        ownership.route(6, slots(0, 100));
        assertThat(writeRefusal(ownership.view(), 12))
                .as("moved away and back: no longer held by the old move")
                .isNull();
        assertThat(writeRefusal(ownership.view(), 17))
                .as("never moved: still fenced")
                .isNotNull();
    }

    /** A restarted proxy's heartbeats lift the fence of a move its predecessor did not finish, not one of its own. */
    @Test
    void shouldLiftOnlyAFenceMadeBeforeTheGivenTime() {
        final SlotOwnership ownership = new SlotOwnership();
        ownership.route(4, slots(0, 100));
        ownership.fence(slots(10, 20), java.util.concurrent.TimeUnit.MINUTES.toNanos(10), 5_000, java.util.Map.of());

        assertThat(ownership.unfenceMadeBefore(5_000)).isZero();
        assertThat(writeRefusal(ownership.view(), 10)).isNotNull();
        assertThat(ownership.unfenceMadeBefore(5_001)).isEqualTo(10);
        assertThat(writeRefusal(ownership.view(), 10)).isNull();
    }

    /**
     * SYNC pushes of a clock that was open when the fence went up pass it (they are held for that clock, which must
     * be able to end and be applied before the move's cut); later clocks, other jobs and reads do not.
     */
    @Test
    void shouldLetSyncPushesOfTheClocksOpenAtTheFenceThrough() {
        final SlotOwnership ownership = new SlotOwnership();
        ownership.route(4, slots(0, 100));
        ownership.fence(
                slots(10, 20), java.util.concurrent.TimeUnit.MINUTES.toNanos(10), 1_000, java.util.Map.of("j", 7L));
        final SlotOwnership.View view = ownership.view();

        assertThatCode(() -> view.checkNotFenced(15, "shard-7", "emb", 1L, "j", 7))
                .doesNotThrowAnyException();
        assertThatCode(() -> view.checkNotFenced(15, "shard-7", "emb", 1L, "j", 3))
                .doesNotThrowAnyException();
        for (final Runnable refused : java.util.List.<Runnable>of(
                () -> view.checkNotFenced(15, "shard-7", "emb", 1L, "j", 8),
                () -> view.checkNotFenced(15, "shard-7", "emb", 1L, "other", 7),
                () -> view.checkNotFenced(15, "shard-7", "emb", 1L, "", 0))) {
            assertThat(catchThrowableOfType(PsException.class, refused::run)).isNotNull();
        }
    }
}
