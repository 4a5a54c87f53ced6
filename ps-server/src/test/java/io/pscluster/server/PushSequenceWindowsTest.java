package io.pscluster.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

import io.grpc.Status;
import io.pscluster.proto.v1.PushWindows;
import io.pscluster.wire.PsException;
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
        assertThat(windows.window(2).seen(1))
                .as("client 2, evicted and new again")
                .isFalse();
    }
    /**
     * A capture keeps each client's newest accepted sequences (in acceptance order, not by value), and another shard
     * adopting it takes them as accepted: their repeats are seen, others are not, and nothing is refused as forgotten.
     */
    @Test
    void shouldCaptureTheNewestSequencesOfEachClientForAnotherShardToAdopt() throws Exception {
        final PushSequenceWindows windows = new PushSequenceWindows(PushSequenceWindows.CAPTURED_PER_CLIENT * 2, 10);
        final PushSequenceWindows.Window window = windows.window(5);
        final int accepted = PushSequenceWindows.CAPTURED_PER_CLIENT + 100;
        for (int i = 0; i < accepted; i++) {
            // Out of order: 2001, 2000, 2003, 2002, ...
            window.record(2_000 + (i ^ 1));
        }
        windows.window(9).record(77);

        final PushWindows captured = PushSequenceWindows.encode(windows.capture());
        assertThat(captured.getClientsList()).hasSize(2);

        final PushSequenceWindows other = new PushSequenceWindows();
        assertThat(other.adopt(PushWindows.parseFrom(captured.toByteArray())))
                .isEqualTo(PushSequenceWindows.CAPTURED_PER_CLIENT + 1);
        final PushSequenceWindows.Window adopted = other.window(5);
        for (int i = accepted - PushSequenceWindows.CAPTURED_PER_CLIENT; i < accepted; i++) {
            assertThat(adopted.seen(2_000 + (i ^ 1)))
                    .as("sequence %d", 2_000 + (i ^ 1))
                    .isTrue();
        }
        assertThat(adopted.seen(2_000))
                .as("older than the capture: not known, not refused")
                .isFalse();
        assertThat(adopted.seen(2_000 + accepted)).isFalse();
        assertThat(other.window(9).seen(77)).isTrue();
        assertThat(other.window(5).size()).isEqualTo(PushSequenceWindows.CAPTURED_PER_CLIENT);
        assertThat(other.adopt(captured)).as("adopting again adds nothing").isZero();
    }
}
