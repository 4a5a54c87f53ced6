package io.pscluster.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import io.grpc.Status;
import io.pscluster.proto.v1.HeartbeatResponse;
import org.junit.jupiter.api.Test;

/** The table catalog. */
class ClusterStateCatalogTest extends ClusterStateFixture {

    @Test
    void shouldReportFalseWhenTheSameSchemaIsAddedTwice() {
        register("h1:1");

        assertThat(state.addTable(EMB)).isTrue();
        assertThat(state.addTable(schema("emb", 0.5f))).isFalse();
        assertThat(state.tables()).containsExactly(EMB);
    }

    @Test
    void shouldRejectAsAlreadyExistsWhenTheNameIsTakenByAnotherSchema() {
        register("h1:1");
        state.addTable(EMB);

        assertStatus(() -> state.addTable(schema("emb", 0.25f)), Status.Code.ALREADY_EXISTS);
        assertThat(state.tables()).containsExactly(EMB);
    }

    @Test
    void shouldRejectAsFailedPreconditionWhenNoShardIsLive() {
        assertStatus(() -> state.addTable(EMB), Status.Code.FAILED_PRECONDITION);

        register("h1:1");
        advanceMillis(EXPIRY_MILLIS + 1);
        state.expireLeases();
        assertStatus(() -> state.addTable(EMB), Status.Code.FAILED_PRECONDITION);
        assertThat(state.tables()).isEmpty();
    }

    /**
     * A checkpoint's time comes with the tables it lists: a table it lists was created at or before it, and one created
     * after it is stamped later, also within the same millisecond, so that a restore tells a table the checkpoint holds
     * from one created (again) since.
     */
    @Test
    void shouldStampATableCreatedAfterACheckpointBeganLaterThanTheCheckpointInTheSameMillisecond() throws Exception {
        register("h1:1");
        state.addTable(EMB);

        final ClusterState.CheckpointStart start = state.beginCheckpoint();
        state.removeTable(EMB.getName());
        state.addTable(EMB);

        assertThat(start.tables()).containsExactly(EMB);
        assertThat(start.millis()).isEqualTo(wall.get());
        assertThat(store.load().orElseThrow().getTableCreatedMillisMap())
                .as("the table created again after the checkpoint began, the clock standing still")
                .containsEntry(EMB.getName(), start.millis() + 1);
        assertThat(state.beginCheckpoint().millis())
                .as("the next checkpoint, after every table it lists")
                .isEqualTo(start.millis() + 1);
    }

    @Test
    void shouldSendMissingTablesWhenAHeartbeatDoesNotReportThem() {
        final String a = register("h1:1");
        state.addTable(EMB);
        state.addTable(schema("other", 1f));

        final HeartbeatResponse response = heartbeat(a); // reports only "emb"

        assertThat(response.getTablesList()).containsExactly(schema("other", 1f));
    }

    @Test
    void shouldTellAShardToDropATableWhenTheCatalogNoLongerHoldsIt() {
        final String a = register("h1:1");
        state.addTable(EMB);
        assertThat(heartbeat(a).getDroppedTablesList()).isEmpty();

        assertThat(state.removeTable(EMB.getName())).isTrue();
        assertThat(state.removeTable(EMB.getName())).isFalse();

        assertThat(state.tables()).isEmpty();
        assertThat(heartbeat(a).getDroppedTablesList()).containsExactly(EMB.getName()); // it still reports "emb"
    }
}
