package io.pscluster.wire;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.grpc.Status;
import io.grpc.stub.StreamObserver;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/** {@link Unary#respond}: every body's outcome reaches the caller, an {@link Error} too. */
class UnaryTest {
    /** What a call's response observer was told, in order. */
    private static final class Recorded implements StreamObserver<String> {
        final List<String> events = new ArrayList<>();
        Throwable error;

        @Override
        public void onNext(final String value) {
            events.add("next " + value);
        }

        @Override
        public void onError(final Throwable t) {
            events.add("error");
            error = t;
        }

        @Override
        public void onCompleted() {
            events.add("completed");
        }
    }

    @Test
    void shouldAnswerAValueThenComplete() {
        final Recorded out = new Recorded();
        Unary.respond(out, () -> "v");
        assertThat(out.events).containsExactly("next v", "completed");
    }

    @Test
    void shouldAnswerAnExceptionWithItsStatus() {
        final Recorded out = new Recorded();
        Unary.respond(out, () -> {
            throw PsException.invalidArgument("bad key");
        });
        assertThat(out.events).containsExactly("error");
        assertThat(Status.fromThrowable(out.error).getCode()).isEqualTo(Status.Code.INVALID_ARGUMENT);
    }

    /**
     * A body failing with an Error (a class that changed under a running process, an assertion) still answers the
     * caller, with INTERNAL naming it, and the Error goes on to the thread: before, the call was never answered and a
     * client without a deadline waited forever.
     */
    @Test
    void shouldAnswerAnErrorWithInternalAndRethrowIt() {
        final Recorded out = new Recorded();
        assertThatThrownBy(() -> Unary.respond(out, () -> {
                    throw new NoSuchMethodError("CheckpointStore.retain");
                }))
                .isInstanceOf(NoSuchMethodError.class);
        assertThat(out.events).containsExactly("error");
        assertThat(Status.fromThrowable(out.error).getCode()).isEqualTo(Status.Code.INTERNAL);
        assertThat(Status.fromThrowable(out.error).getDescription()).contains("CheckpointStore.retain");
    }
}
