package io.pscluster.worker;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.proto.v1.RollbackEvent;
import org.junit.jupiter.api.Test;

/** The one line the SDK logs (and psctl status prints) for each kind of routing event says where the rows come from. */
class RollbackDescriptionTest {
    private static RollbackEvent.Builder event() {
        return RollbackEvent.newBuilder()
                .setId(4)
                .setFromShard("s1")
                .addToShards("s2")
                .setSlotCount(1365)
                .setCheckpointId(9)
                .setReason("why");
    }

    @Test
    void shouldSayAMoveUndoneGaveTheSlotsBackToTheShardThatKeptTheirRows() {
        final String undone =
                PsClient.describe(event().setLossless(true).setKeptRows(true).build());

        assertThat(undone)
                .startsWith("hand-over 4: 1365 slots of shard s1 moved to [s2], given back to the shard that kept their"
                        + " rows")
                .contains("nothing lost")
                .contains("the move's checkpoint 9 could not be restored")
                .doesNotContain("through checkpoint 9");
    }

    @Test
    void shouldSayAHandOverCameThroughItsCheckpointAndARollbackWhatWasLost() {
        assertThat(PsClient.describe(event().setLossless(true).build()))
                .contains("handed over through checkpoint 9 with every acknowledged push (nothing lost)");
        assertThat(PsClient.describe(event().build()))
                .startsWith("rollback 4: ")
                .contains("restored from checkpoint 9; updates to them after that checkpoint are lost");
        assertThat(PsClient.describe(event().setCheckpointId(0).build()))
                .contains("no checkpoint existed: they start empty");
    }
}
