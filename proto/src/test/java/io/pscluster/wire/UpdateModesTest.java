package io.pscluster.wire;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.pscluster.proto.v1.JobSpec;
import io.pscluster.proto.v1.UpdateMode;
import org.junit.jupiter.api.Test;

/** {@link UpdateModes#validate}: what the proxy and the SDK accept as a job. */
class UpdateModesTest {
    private static JobSpec job(final int expectedWorkers) {
        return JobSpec.newBuilder()
                .setJobId("j")
                .setMode(UpdateMode.SYNC)
                .setExpectedWorkers(expectedWorkers)
                .build();
    }

    /**
     * A job waits for its expected workers before any clock begins: a count no job can reach (Integer.MAX_VALUE was
     * accepted) made every join wait out its timeout without saying why (found by a hostile review).
     */
    @Test
    void shouldRefuseAnExpectedWorkerCountOutsideItsRangeNamingIt() {
        assertThat(UpdateModes.validate(job(0)).getExpectedWorkers()).isZero();
        assertThat(UpdateModes.validate(job(UpdateModes.MAX_EXPECTED_WORKERS)).getExpectedWorkers())
                .isEqualTo(UpdateModes.MAX_EXPECTED_WORKERS);
        for (final int count : new int[] {-1, UpdateModes.MAX_EXPECTED_WORKERS + 1, Integer.MAX_VALUE}) {
            assertThatThrownBy(() -> UpdateModes.validate(job(count)))
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessage("job 'j': expected_workers " + count + " is outside 0..65536 (0 or 1: the first worker"
                            + " starts the job)");
        }
    }

    @Test
    void shouldTurnSspWithoutStalenessIntoSyncAndRefuseStalenessOutsideSsp() {
        assertThat(UpdateModes.validate(
                                job(2).toBuilder().setMode(UpdateMode.SSP).build())
                        .getMode())
                .isEqualTo(UpdateMode.SYNC);
        assertThatThrownBy(() ->
                        UpdateModes.validate(job(2).toBuilder().setStaleness(3).build()))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("staleness 3 is for SSP only");
    }
}
