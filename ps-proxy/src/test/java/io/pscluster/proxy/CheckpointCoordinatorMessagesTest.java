package io.pscluster.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.Test;

/** The sentences the checkpoint coordinator logs, read as an operator reads them. */
class CheckpointCoordinatorMessagesTest {
    @Test
    void shouldSayWhichCheckpointOfTheChainCannotCarryADeltaInASentence() {
        assertThat(CheckpointCoordinator.cannotCarryDelta(17, 17, 1, "file f: missing"))
                .isEqualTo("checkpoint 17 cannot carry a delta: it has 1 file(s) missing or of the wrong length"
                        + " (file f: missing)");
        assertThat(CheckpointCoordinator.cannotCarryDelta(17, 15, 2, "file f: missing"))
                .isEqualTo("checkpoint 17 cannot carry a delta: checkpoint 15 of its chain has 2 file(s) missing or"
                        + " of the wrong length (file f: missing)");
    }
}
