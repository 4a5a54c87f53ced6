package io.pscluster.proxy;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.grpc.Status;
import io.pscluster.proto.v1.HeartbeatRequest;
import io.pscluster.proto.v1.RegisterShardRequest;
import io.pscluster.proto.v1.RestoreDirective;
import io.pscluster.proto.v1.RestoreReport;
import org.junit.jupiter.api.Test;

/** A drain's hand-over at the proxy, where a shard's answers or leases go astray (cases found by a hostile review). */
class ClusterStateDrainTest extends ClusterStateFixture {

    /**
     * A draining shard the proxy took for gone (its heartbeats did not arrive for lease + margin while it waited for its
     * hand-over) hears NOT_FOUND and registers again, saying it drains: it takes no slot, also not those of a shard lost
     * before its first heartbeat.
     */
    @Test
    void shouldGiveNoSlotsToADrainingShardThatRegistersAgain() {
        final String a = register("h1:1");
        final String b = register("h2:1");
        state.addTable(EMB);
        final String c = register("h3:1");
        state.beginDrain(a);
        state.handOver(a, 11, 110_000, "");
        heartbeat(b);
        heartbeat(c);
        state.heartbeat(HeartbeatRequest.newBuilder()
                .setShardId(a)
                .setRoutingEpoch(state.epoch())
                .setDraining(true)
                .build());
        // a's heartbeats stop reaching the proxy (a network blip) while it keeps the rows it handed over.
        advanceMillis(EXPIRY_MILLIS / 2);
        heartbeat(c);
        heartbeat(b);
        advanceMillis(EXPIRY_MILLIS / 2 + 1);
        heartbeat(c);
        state.expireLeases();
        assertThat(state.shardState(a)).isEqualTo(ClusterState.ShardState.GONE);

        // b's heartbeats stop too; a's next heartbeat gets NOT_FOUND and it registers again, holding no slot.
        advanceMillis(EXPIRY_MILLIS / 2 - 100);
        heartbeat(c);
        state.register(RegisterShardRequest.newBuilder()
                .setShardId(a)
                .setAddress("h1:1")
                .setDraining(true)
                .build());
        advanceMillis(101);
        heartbeat(c);
        state.expireLeases();

        assertThat(state.shardState(b)).isEqualTo(ClusterState.ShardState.GONE);
        assertThat(state.shardState(a)).isEqualTo(ClusterState.ShardState.DRAINING);
        assertThat(slotsOf(a))
                .as("slots of lost shard %s given to draining shard %s", b, a)
                .isEmpty();
    }

    /**
     * The taker c finds the drain's checkpoint damaged, the slots go back to a (c's answer is lost), a drains again and
     * c, still idle, gets the same slots with a new order. Until c hears the first order is gone it may still run it
     * and refuse the slots: its reports of an order the proxy no longer has keep cluster-wide operations refused.
     */
    @Test
    void shouldRefuseACheckpointWhileATakerStillRunsAnOrderThatWasSuperseded() {
        final String a = register("h1:1");
        register("h2:1");
        state.addTable(EMB);
        final String c = register("h3:1");
        state.beginDrain(a);
        state.handOver(a, 11, 110_000, "");
        final RestoreDirective first = heartbeat(c).getRestoreOrders(0);
        reportDamaged(c, first); // its answer (the slots back to a) is lost
        final RestoreDirective takeBack = heartbeat(a).getRestoreOrders(0);
        reportDone(a, takeBack);
        state.beginDrain(a);
        assertThat(state.handOver(a, 12, 120_000, "")).isEqualTo(2048);
        final RestoreDirective second = heartbeat(c).getRestoreOrders(0);
        assertThat(second.getSlotsList()).containsExactlyInAnyOrderElementsOf(first.getSlotsList());

        state.heartbeat(HeartbeatRequest.newBuilder()
                .setShardId(c)
                .setRoutingEpoch(state.epoch())
                .addRestores(RestoreReport.newBuilder()
                        .setOrderId(first.getOrderId())
                        .setDamaged(true)
                        .setNote("checkpoint 11 damaged"))
                .addRestores(RestoreReport.newBuilder()
                        .setOrderId(second.getOrderId())
                        .setDone(true)
                        .setHeld(true)
                        .setCheckpointId(12))
                .build());

        assertThat(state.status().getPendingRestoresCount()).isZero();
        assertStatus(() -> state.ownersForClusterOperation("a checkpoint"), Status.Code.FAILED_PRECONDITION);
        assertThatThrownBy(() -> state.ownersForClusterOperation("a checkpoint"))
                .hasMessageContaining("shard " + c + " does not serve the slots of restore order(s) ["
                        + first.getOrderId() + ", " + second.getOrderId() + "]");

        heartbeat(c); // c followed the answer: it dropped the first order and serves the second's slots

        assertThat(state.ownersForClusterOperation("a checkpoint")).isNotEmpty();
    }
}
