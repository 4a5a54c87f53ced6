package io.pscluster.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

import io.grpc.Status;
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
}
