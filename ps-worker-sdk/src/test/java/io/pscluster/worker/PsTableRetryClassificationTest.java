package io.pscluster.worker;

import static org.assertj.core.api.Assertions.assertThat;

import io.grpc.Status;
import io.pscluster.wire.PsException;
import org.junit.jupiter.api.Test;

/** Which answers a request is sent again after, and how. */
class PsTableRetryClassificationTest {
    @Test
    void shouldResendUnknownOutcomesUnderFreshRoutingWhenTheShardFailedOrCutTheStream() {
        for (final Status status : new Status[] {Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED, Status.CANCELLED}) {
            assertThat(PsTable.classify(status.asRuntimeException()))
                    .as(status.getCode().toString())
                    .isEqualTo(PsTable.Retry.REFRESH_AND_RESEND);
        }
    }

    @Test
    void shouldFailAtOnceWhenTheStatusIsFinal() {
        for (final Status status : new Status[] {
            Status.INVALID_ARGUMENT,
            Status.NOT_FOUND,
            Status.FAILED_PRECONDITION,
            Status.RESOURCE_EXHAUSTED,
            Status.DATA_LOSS,
            Status.INTERNAL
        }) {
            assertThat(PsTable.classify(status.asRuntimeException()))
                    .as(status.getCode().toString())
                    .isEqualTo(PsTable.Retry.NEVER);
        }
    }

    @Test
    void shouldFollowTheRejectTrailers() {
        assertThat(PsTable.classify(PsException.toStatus(PsException.backpressure("full"))))
                .isEqualTo(PsTable.Retry.RESEND);
        assertThat(PsTable.classify(PsException.toStatus(PsException.wrongOwner("moved", 3))))
                .isEqualTo(PsTable.Retry.REFRESH_AND_RESEND);
        assertThat(PsTable.classify(PsException.toStatus(PsException.restoring("loading", 3))))
                .isEqualTo(PsTable.Retry.REFRESH_AND_RESEND);
    }
}
