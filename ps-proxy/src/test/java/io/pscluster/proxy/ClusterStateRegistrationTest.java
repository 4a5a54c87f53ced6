package io.pscluster.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import io.grpc.Status;
import io.pscluster.proto.v1.HeartbeatRequest;
import io.pscluster.proto.v1.HeartbeatResponse;
import io.pscluster.proto.v1.RegisterShardRequest;
import io.pscluster.proto.v1.RegisterShardResponse;
import io.pscluster.proto.v1.ShardStatus;
import io.pscluster.wire.Slots;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** Shard registration, ids, heartbeats and leases. */
class ClusterStateRegistrationTest extends ClusterStateFixture {

    @Test
    void shouldAssignSequentialIdsWhenNoneIsGiven() {
        assertThat(register("h1:1")).isEqualTo("shard-0");
        assertThat(register("h2:1")).isEqualTo("shard-1");
    }

    @Test
    void shouldKeepAGivenIdAndSkipItWhenAssigningIds() {
        assertThat(register("shard-0", "h1:1", true).getShardId()).isEqualTo("shard-0");
        assertThat(register("h2:1")).isEqualTo("shard-1");
    }

    @ParameterizedTest
    @ValueSource(
            strings = {
                "has space",
                "a/b",
                "a;b",
                "a=b",
                "ümlaut",
                " ",
                "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
            })
    void shouldRejectAsInvalidArgumentWhenTheIdIsNotSafe(final String id) {
        assertStatus(() -> register(id, "h1:1", true), Status.Code.INVALID_ARGUMENT);
        assertThat(state.routingTable().getShardsList()).isEmpty();
    }

    @Test
    void shouldRejectAsInvalidArgumentWhenTheAddressIsBlank() {
        assertStatus(() -> register("", " ", true), Status.Code.INVALID_ARGUMENT);
    }

    @Test
    void shouldRejectAsAlreadyExistsWhenALiveIdRegistersFromAnotherAddress() {
        register("a", "h1:1", true);
        final long epoch = state.epoch();

        assertStatus(() -> register("a", "h2:1", true), Status.Code.ALREADY_EXISTS);

        assertThat(state.epoch()).isEqualTo(epoch);
        assertThat(state.liveAddresses()).containsExactly("h1:1");
    }

    @Test
    void shouldLetAnotherAddressTakeTheIdWhenTheLeaseLapsed() {
        register("a", "h1:1", true);
        advanceMillis(EXPIRY_MILLIS + 1);
        state.expireLeases();

        final RegisterShardResponse response = register("a", "h2:1", true);

        assertThat(response.getShardId()).isEqualTo("a");
        assertThat(state.liveAddresses()).containsExactly("h2:1");
        assertThat(slotsOf(response.getRouting(), "a")).hasSize(Slots.SLOT_COUNT);
    }

    @Test
    void shouldAnswerWithTheCurrentRoutingAndSettingsWhenAShardRegisters() {
        register("h1:1");
        state.addTable(EMB);

        final RegisterShardResponse response = register("", "h2:1", true);

        assertThat(response.getCheckpointRoot()).isEqualTo(ROOT);
        assertThat(response.getRouting()).isEqualTo(state.routingTable());
        assertThat(response.getTablesList()).containsExactly(EMB);
    }

    @Test
    void shouldExpireAShardWhenItMissesItsLease() {
        final String a = register("h1:1");
        final String b = register("h2:1");

        advanceMillis(EXPIRY_MILLIS);
        heartbeat(b);
        assertThat(state.expireLeases()).as("exactly at lease + margin").isFalse();
        advanceMillis(1);
        assertThat(state.expireLeases()).isTrue();
        assertThat(state.expireLeases()).as("nothing new lapsed").isFalse();

        assertThat(state.liveAddresses()).containsExactly("h2:1");
        assertThat(state.shardStatuses())
                .filteredOn(status -> status.getShard().getShardId().equals(a))
                .singleElement()
                .extracting(ShardStatus::getLive)
                .isEqualTo(false);
        assertThat(state.routingTable().getShardsList())
                .noneMatch(s -> s.getShardId().equals(a));
        assertStatus(() -> heartbeat(a), Status.Code.NOT_FOUND);
    }

    @Test
    void shouldKeepTheLeaseWhenHeartbeatsArriveInTime() {
        final String a = register("h1:1");

        for (int i = 0; i < 10; i++) {
            advanceMillis(LEASE_MILLIS - 1);
            heartbeat(a);
            assertThat(state.expireLeases()).isFalse();
        }

        assertThat(state.liveAddresses()).containsExactly("h1:1");
    }

    @Test
    void shouldReturnTheRoutingOnlyWhenTheHeartbeatCarriesAnotherEpoch() {
        final String a = register("h1:1");

        assertThat(heartbeat(a).hasRouting()).isFalse();
        final HeartbeatResponse stale = state.heartbeat(HeartbeatRequest.newBuilder()
                .setShardId(a)
                .setRoutingEpoch(state.epoch() - 1)
                .build());
        assertThat(stale.getRouting()).isEqualTo(state.routingTable());
    }

    /**
     * The data-plane protocol each shard reports reaches the SDKs in the routing table (an SDK sends nothing to a shard
     * older than it needs), survives a proxy restart, and is learnt again from heartbeats (a proxy that resumed from a
     * state of a version without the field), also from one whose change could not be saved.
     */
    @Test
    void shouldPassOnTheProtocolEachShardReportsAndLearnItAgainFromHeartbeats() {
        state.register(RegisterShardRequest.newBuilder()
                .setShardId("a")
                .setAddress("h1:1")
                .setFreshStart(true)
                .setProtocolVersion(io.pscluster.wire.Protocol.VERSION)
                .build());
        register("b", "h2:1", true);
        assertThat(protocols())
                .containsEntry("a", io.pscluster.wire.Protocol.VERSION)
                .containsEntry("b", 0);

        state = open(store, java.util.Optional.empty());
        assertThat(protocols())
                .as("after a restart")
                .containsEntry("a", io.pscluster.wire.Protocol.VERSION)
                .containsEntry("b", 0);

        // Learnt also while the state cannot be saved (the heartbeat renews the lease all the same): else every SDK
        // would refuse b's slots until saves worked again.
        store.failSaves.set(true);
        state.heartbeat(HeartbeatRequest.newBuilder()
                .setShardId("b")
                .setRoutingEpoch(state.epoch())
                .setProtocolVersion(io.pscluster.wire.Protocol.VERSION)
                .build());
        assertThat(protocols())
                .as("after b's heartbeat that could not be saved")
                .containsEntry("b", io.pscluster.wire.Protocol.VERSION);
        store.failSaves.set(false);

        state = open(store, java.util.Optional.empty());
        state.heartbeat(HeartbeatRequest.newBuilder()
                .setShardId("b")
                .setRoutingEpoch(state.epoch())
                .setProtocolVersion(io.pscluster.wire.Protocol.VERSION)
                .build());
        assertThat(protocols()).as("after b's heartbeat").containsEntry("b", io.pscluster.wire.Protocol.VERSION);
    }

    private java.util.Map<String, Integer> protocols() {
        final java.util.Map<String, Integer> protocols = new java.util.TreeMap<>();
        state.routingTable()
                .getShardsList()
                .forEach(shard -> protocols.put(shard.getShardId(), shard.getProtocolVersion()));
        return protocols;
    }

    /**
     * A shard registers again when its registration's answer did not come in time: the same process (its id in the
     * request) is not a second restart, so it makes no second rollback event (a review found one per retry); another
     * process of the shard is, heartbeat or not (it may have served before it died).
     */
    @Test
    void shouldTakeARegistrationTheSameProcessRepeatsForTheSameOne() {
        register("a", "h1:1", true);
        heartbeat("a");
        state.addTable(EMB);
        registerAs("a", "process-2");
        assertThat(state.routingTable().getRollbacksList())
                .as("a restart without rows")
                .hasSize(1);

        final RegisterShardResponse again = registerAs("a", "process-2");

        assertThat(state.routingTable().getRollbacksList())
                .as("after the repeated registration")
                .hasSize(1);
        assertThat(again.getRestoreOrdersList())
                .as("the restore the first registration planned")
                .isNotEmpty();
        registerAs("a", "process-3");
        assertThat(state.routingTable().getRollbacksList())
                .as("another process, no heartbeat between")
                .hasSize(2);
    }

    /** Without an id, the same process registering again gets the id it was given, not a second one. */
    @Test
    void shouldGiveAProcessThatRegistersAgainWithoutAnIdTheIdItWasGiven() {
        final String first = registerAs("", "process-1").getShardId();
        assertThat(registerAs("", "process-1").getShardId()).isEqualTo(first);
        assertThat(registerAs("", "process-2").getShardId()).isNotEqualTo(first);
        assertThat(state.routingTable().getShardsList()).hasSize(2);
    }

    private RegisterShardResponse registerAs(final String id, final String process) {
        return state.register(RegisterShardRequest.newBuilder()
                .setShardId(id)
                .setAddress("h1:1")
                .setFreshStart(true)
                .setProcessId(process)
                .build());
    }

    @Test
    void shouldRejectAsNotFoundWhenAnUnknownShardHeartbeats() {
        assertStatus(() -> heartbeat("nobody"), Status.Code.NOT_FOUND);
    }
}
