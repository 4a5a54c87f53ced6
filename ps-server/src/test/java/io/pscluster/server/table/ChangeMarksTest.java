package io.pscluster.server.table;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;

class ChangeMarksTest {
    @Test
    void shouldTellWhichRecordsWereWrittenBetweenTwoCuts() {
        final ChangeMarks marks = new ChangeMarks(1);
        marks.mark(3);
        marks.mark(64);
        marks.startEpoch(2);
        marks.mark(64);
        marks.mark(5_000);
        marks.startEpoch(7); // cuts of other tables came between
        marks.mark(1);

        assertThat(marks.epoch()).isEqualTo(7);
        assertThat(marks.writtenBetween(3, 0, 1)).isTrue();
        assertThat(marks.writtenBetween(3, 1, 7)).isFalse();
        assertThat(marks.writtenBetween(64, 1, 2)).isTrue();
        assertThat(marks.writtenBetween(5_000, 1, 6)).isTrue();
        assertThat(marks.writtenBetween(5_000, 2, 7)).isFalse();
        // Written after the cut asked about: not the cut's.
        assertThat(marks.writtenBetween(1, 0, 6)).isFalse();
        assertThat(marks.writtenBetween(1, 6, 7)).isTrue();
        // Never written, also past every mark.
        assertThat(marks.writtenBetween(2, 0, 7)).isFalse();
        assertThat(marks.writtenBetween(1 << 20, 0, 7)).isFalse();
    }

    @Test
    void shouldAgreeWithTheEpochsEveryRecordWasWrittenInOverManyCuts() {
        // The reference: every epoch each record was written in.
        final SplittableRandom random = new SplittableRandom(7);
        final int records = 2_000;
        final List<BitSet> written = new ArrayList<>();
        for (int id = 0; id < records; id++) {
            written.add(new BitSet());
        }
        final ChangeMarks marks = new ChangeMarks(1);
        int epoch = 1;
        int pruned = 0;
        int merged = 0;
        for (int cut = 0; cut < 60; cut++) {
            for (int i = 0; i < 150; i++) {
                final int id = random.nextInt(records);
                marks.mark(id);
                written.get(id).set(epoch);
            }
            epoch += 1 + random.nextInt(3);
            marks.startEpoch(epoch);
            if (cut % 25 == 24) {
                pruned = epoch - 4;
                marks.forgetUpTo(pruned);
            }
            assertThat(marks.ranges()).isLessThanOrEqualTo(ChangeMarks.MAX_RANGES);
            for (int after = pruned; after < epoch; after++) {
                for (int id = 0; id < records; id++) {
                    final BitSet epochs = written.get(id);
                    final int lastAtCut = epochs.previousSetBit(epoch - 1);
                    final boolean exact = lastAtCut > after;
                    final boolean told = marks.writtenBetween(id, after, epoch - 1);
                    if (exact) {
                        assertThat(told)
                                .as("record %d written in %d, since %d", id, lastAtCut, after)
                                .isTrue();
                    } else if (told) {
                        // Only a merged range says more: one that reaches above the cut asked about and holds a write.
                        final int first = marks.firstEpoch(0);
                        final int last = marks.lastEpoch(0);
                        assertThat(first).isLessThan(last);
                        assertThat(last).isGreaterThan(after);
                        assertThat(epochs.nextSetBit(first)).isBetween(first, last);
                        merged++;
                    }
                }
            }
        }
        assertThat(merged).as("answers that came from a merged range").isPositive();
    }

    @Test
    void shouldStayExactForTheLastCutsWhenOldRangesAreMerged() {
        final ChangeMarks marks = new ChangeMarks(1);
        for (int epoch = 1; epoch <= 40; epoch++) {
            marks.mark(epoch);
            marks.startEpoch(epoch + 1);
        }
        assertThat(marks.ranges()).isEqualTo(ChangeMarks.MAX_RANGES);
        // The last 15 epochs are kept apart: a delta since any of their cuts is exact.
        for (int after = 26; after <= 40; after++) {
            final List<Integer> written = new ArrayList<>();
            for (int id = 1; id <= 40; id++) {
                if (marks.writtenBetween(id, after, 41)) {
                    written.add(id);
                }
            }
            final int since = after;
            assertThat(written).hasSize(40 - since).allMatch(id -> id > since);
        }
        // Since a cut inside the merged range: more rows, never fewer.
        for (int id = 6; id <= 40; id++) {
            assertThat(marks.writtenBetween(id, 5, 41)).isTrue();
        }
    }

    @Test
    void shouldForgetRangesNoDeltaReachesAndKeepTheCurrentOne() {
        final ChangeMarks marks = new ChangeMarks(1);
        marks.mark(10);
        marks.startEpoch(2);
        marks.mark(11);
        marks.startEpoch(3);
        marks.mark(12);
        final long before = marks.bytes();

        assertThat(marks.knownSince(0)).isTrue();
        marks.forgetUpTo(2);

        assertThat(marks.knownSince(1)).as("writes of epoch 2 forgotten").isFalse();
        assertThat(marks.knownSince(2)).isTrue();
        assertThat(marks.ranges()).isEqualTo(1);
        assertThat(marks.bytes()).isLessThan(before);
        assertThat(marks.writtenBetween(12, 2, 3)).isTrue();
        marks.forgetUpTo(100);
        assertThat(marks.ranges()).isEqualTo(1);
        assertThat(marks.epoch()).isEqualTo(3);
        assertThat(marks.writtenBetween(12, 2, 3)).isTrue();
    }

    @Test
    void shouldTellItsSizeToAnotherThreadWhileTheWriterChangesIt() throws Exception {
        // Table stats (heartbeats, metrics, describeTable) read the size while the writer cuts, merges and forgets.
        final ChangeMarks marks = new ChangeMarks(1);
        final AtomicBoolean done = new AtomicBoolean();
        final AtomicReference<Throwable> failure = new AtomicReference<>();
        final AtomicLong reads = new AtomicLong();
        final Thread reader = new Thread(() -> {
            try {
                while (!done.get()) {
                    final long bytes = marks.bytes();
                    if (bytes < 0 || bytes % 8 != 0) {
                        throw new AssertionError("size " + bytes);
                    }
                    reads.incrementAndGet();
                }
            } catch (Throwable t) {
                failure.set(t);
            }
        });
        reader.start();
        try {
            final SplittableRandom random = new SplittableRandom(3);
            for (int epoch = 2; epoch < 200_000 && failure.get() == null; epoch++) {
                marks.mark(random.nextInt(50_000));
                marks.startEpoch(epoch);
                if (epoch % 5 == 0) {
                    marks.forgetUpTo(epoch - 2);
                }
            }
        } finally {
            done.set(true);
            reader.join();
        }
        assertThat(failure.get()).isNull();
        assertThat(reads.get()).isPositive();
        // Each range holds at most twice the 782 words of 50,000 records (grown by doubling).
        assertThat(marks.bytes()).isPositive().isLessThanOrEqualTo(8L * 2 * 782 * marks.ranges());
    }

    @Test
    void shouldMarkRecordsWithinTheRoomMadeAheadWithoutAllocating() {
        final ChangeMarks marks = new ChangeMarks(1);
        marks.ensureCapacity(4_096);
        final long room = marks.bytes();
        assertThat(room).isEqualTo(4_096 / 8);
        marks.mark(4_095);
        marks.mark(0);
        assertThat(marks.bytes()).isEqualTo(room);
        assertThat(marks.writtenBetween(4_095, 0, 1)).isTrue();
        marks.startEpoch(2);
        // A new epoch's range has the room of the last one.
        assertThat(marks.bytes()).isEqualTo(2 * room);
        marks.mark(4_095);
        assertThat(marks.bytes()).isEqualTo(2 * room);
        marks.ensureCapacity(4_097);
        assertThat(marks.bytes()).isGreaterThan(2 * room);
    }

    @Test
    void shouldRefuseAnEpochBelowTheCurrentOne() {
        final ChangeMarks marks = new ChangeMarks(5);
        marks.startEpoch(5);
        assertThat(marks.ranges()).isEqualTo(1);
        assertThatThrownBy(() -> marks.startEpoch(4))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("write epoch 4 is below the current one, 5");
    }
}
