package io.pscluster.proxy;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.grpc.Status;
import io.pscluster.proto.v1.HeartbeatRequest;
import io.pscluster.proto.v1.HeartbeatResponse;
import io.pscluster.proto.v1.ProxyStateRecord;
import io.pscluster.proto.v1.RegisterShardRequest;
import io.pscluster.proto.v1.RestoreDirective;
import io.pscluster.proto.v1.RestoreReport;
import io.pscluster.proto.v1.RollbackEvent;
import io.pscluster.proto.v1.ShardStatus;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.proto.v1.TableStats;
import io.pscluster.wire.Slots;
import java.io.IOException;
import java.util.List;
import java.util.Optional;
import org.junit.jupiter.api.Test;

/** Durable before visible, restart from the record, the grace period, epochs, claims, tombstones, ids, drain. */
class ClusterStateDurabilityTest extends ClusterStateFixture {

    private ClusterState restart() {
        state = open(store, Optional.empty());
        return state;
    }

    @Test
    void shouldNotShowTheChangeAndFailUnavailableWhenTheSaveFails() {
        final String a = register("h1:1");
        final long epoch = state.epoch();
        final ProxyStateRecord saved = store.saved();
        store.failSaves.set(true);

        assertStatus(() -> register("h2:1"), Status.Code.UNAVAILABLE);
        assertStatus(() -> state.addTable(EMB), Status.Code.UNAVAILABLE);
        assertStatus(() -> state.deregister(a), Status.Code.UNAVAILABLE);

        assertThat(state.epoch()).isEqualTo(epoch);
        assertThat(state.liveAddresses()).containsExactly("h1:1");
        assertThat(state.tables()).isEmpty();
        assertThat(state.routingTable().getShardsList()).hasSize(1);
        assertThat(store.saved()).isEqualTo(saved);
        store.failSaves.set(false);
        assertThat(register("h2:1")).as("the failed call did not use up an id").isEqualTo("shard-1");
    }

    /**
     * While the state cannot be saved (a committed checkpoint waits to be recorded, so every change tries), heartbeats
     * still renew the shards' leases: the proxy's full disk neither stops live shards (their own leases) nor fails them
     * over once saves work again. Before, each heartbeat was refused and undone, so when the disk had room again the
     * lease check moved every shard's slots, rolling them back to the last checkpoint.
     */
    @Test
    void shouldRenewLeasesFromHeartbeatsWhileTheStateCannotBeSaved() {
        final String a = register("h1:1");
        final String b = register("h2:1");
        state.addTable(EMB);
        final java.util.Set<Integer> slotsOfA = slotsOf(a);
        final java.util.Set<Integer> slotsOfB = slotsOf(b);
        assertThat(slotsOfA).isNotEmpty();
        store.failSaves.set(true);
        assertStatus(() -> state.checkpointCommitted(3, 1_000), Status.Code.UNAVAILABLE);

        for (int beat = 0; beat < 5; beat++) {
            advanceMillis(EXPIRY_MILLIS / 2);
            heartbeat(a);
            heartbeat(b);
            // The lease check is a change too: it fails to save (and is undone) as the timer would meet it.
            assertStatus(state::expireLeases, Status.Code.UNAVAILABLE);
        }
        store.failSaves.set(false);
        advanceMillis(EXPIRY_MILLIS / 2);
        state.expireLeases();

        assertThat(state.liveAddresses()).containsExactlyInAnyOrder("h1:1", "h2:1");
        assertThat(slotsOf(a)).isEqualTo(slotsOfA);
        assertThat(slotsOf(b)).isEqualTo(slotsOfB);
        assertThat(state.routingTable().getRollbacksList()).isEmpty();
        assertThat(store.saved().getLatestCheckpointId())
                .as("recorded by the first change that saved")
                .isEqualTo(3);
    }

    /**
     * An operator's restore rolls every slot back: once every shard loaded it, running jobs hear of it through the
     * routing table's events, as of a failover's, and status counts it (invariant 5). Before, nothing was reported
     * (found by a hostile review).
     */
    @Test
    void shouldReportAnOperatorsRestoreAsARollbackOfEverySlot() {
        final String a = register("h1:1");
        final String b = register("h2:1");
        state.addTable(EMB);
        final long before = state.status().getRollbacksTotal();

        state.restoringWhole(7, 2_000);
        assertThat(state.status().getRollbacksTotal())
                .as("while the shards load it (pushes until then are undone too)")
                .isEqualTo(before);
        state.restoredWhole(7);

        assertThat(state.status().getRollbacksTotal()).isEqualTo(before + 1);
        final RollbackEvent event =
                state.routingTable().getRollbacks(state.routingTable().getRollbacksCount() - 1);
        assertThat(event.getCheckpointId()).isEqualTo(7);
        assertThat(event.getCheckpointCreatedMillis()).isEqualTo(2_000);
        assertThat(event.getSlotCount()).isEqualTo(Slots.SLOT_COUNT);
        assertThat(event.getToShardsList()).containsExactlyInAnyOrder(a, b);
        assertThat(event.getLossless()).isFalse();
        assertThat(event.getReason()).contains("operator restored checkpoint 7");
        assertThat(restart().routingTable().getRollbacksList())
                .as("kept across a restart")
                .contains(event);
    }

    @Test
    void shouldHaveSavedTheChangeWhenTheAnswerIsBuilt() {
        final String a = register("h1:1");
        state.addTable(EMB);

        final ProxyStateRecord saved = store.saved();
        assertThat(saved.getEpoch()).isEqualTo(state.routingTable().getEpoch());
        assertThat(saved.getShardsList())
                .extracting(shard -> shard.getShardId())
                .containsExactly(a);
        assertThat(saved.getTablesList()).containsExactly(EMB);
        assertThat(saved.getSlotOwnerList()).hasSize(Slots.SLOT_COUNT).containsOnly(a);
    }

    @Test
    void shouldKeepOwnersTablesAndEpochWhenRestartedFromTheRecord() {
        final String a = register("h1:1");
        final String b = register("h2:1");
        state.addTable(EMB);
        final String[] owners = state.slotOwners();
        final long epoch = state.epoch();

        restart();

        assertThat(state.epoch()).isEqualTo(epoch);
        assertThat(state.slotOwners()).containsExactly(owners);
        assertThat(state.tables()).containsExactly(EMB);
        assertThat(state.unownedSlots()).isZero();
        assertThat(state.shardStatuses()).extracting(ShardStatus::getState).containsOnly("suspect");
        assertThat(heartbeat(a).getLeaseMillis())
                .as("no forced re-registration")
                .isEqualTo(LEASE_MILLIS);
        assertThat(state.shardState(a)).isEqualTo(ClusterState.ShardState.LIVE);
        assertThat(state.shardState(b)).isEqualTo(ClusterState.ShardState.SUSPECT);
        assertThat(heartbeat(a).getDroppedTablesList()).isEmpty();
    }

    @Test
    void shouldReassignNothingDuringTheGraceEvenWhenANewShardRegisters() {
        register("h1:1");
        register("h2:1");
        state.addTable(EMB);
        final String[] owners = state.slotOwners();
        restart();

        final String c = register("h3:1");
        advanceMillis(EXPIRY_MILLIS - 1);
        heartbeat(c);
        state.expireLeases();

        assertThat(state.slotOwners()).containsExactly(owners);
        assertThat(state.status().getPendingRestoresList()).isEmpty();
        assertThat(state.status().getGraceRemainingMillis()).isPositive();
        assertThat(state.status().getRollbacksTotal()).isZero();

        advanceMillis(2);
        assertThat(state.expireLeases()).isTrue();
        assertThat(state.status().getGraceRemainingMillis()).isZero();
        assertThat(slotsOf(c)).hasSize(Slots.SLOT_COUNT);
        assertThat(state.status().getRollbacksTotal()).isEqualTo(2);
    }

    /**
     * A proxy restarted on its state with another checkpoint root (a mistyped --checkpoint-dir) refuses to start,
     * naming both: its restore orders and checkpoint ids name checkpoints under the old root, and under the new one a
     * failover would find none (or another cluster's checkpoint of the same id). Told the checkpoints were moved there,
     * it starts.
     */
    @Test
    void shouldRefuseToResumeAStateSavedWithAnotherCheckpointRootUnlessTheCheckpointsWereMoved() throws Exception {
        register("h1:1");
        state.addTable(EMB);
        assertThat(store.load().orElseThrow().getCheckpointRoot()).isEqualTo(ROOT);
        final String elsewhere = "file:///tmp/elsewhere";

        assertThatThrownBy(() -> ClusterState.open(
                        new ClusterState.Settings(LEASE_MILLIS, MARGIN_MILLIS, FORGET_MILLIS, elsewhere),
                        store,
                        Optional::empty,
                        () -> false,
                        nanos::get,
                        () -> 1_700_000_000_000L))
                .isInstanceOf(IOException.class)
                .hasMessageContaining(ROOT)
                .hasMessageContaining(elsewhere)
                .hasMessageContaining("--checkpoint-dir-moved");

        // The same directory, its URI with a trailing slash (a local path's URI has one once the directory exists).
        final ClusterState again = ClusterState.open(
                new ClusterState.Settings(LEASE_MILLIS, MARGIN_MILLIS, FORGET_MILLIS, ROOT + "/"),
                store,
                Optional::empty,
                () -> false,
                nanos::get,
                () -> 1_700_000_000_000L);
        assertThat(again.tables()).containsExactly(EMB);
        assertThat(ClusterState.sameRoot("file:///", "file:///")).isTrue();
        assertThat(ClusterState.sameRoot("hdfs://nn/ps/", "hdfs://nn/ps")).isTrue();
        assertThat(ClusterState.sameRoot("hdfs://nn/ps", "hdfs://nn/ps2")).isFalse();

        final ClusterState moved = ClusterState.open(
                new ClusterState.Settings(LEASE_MILLIS, MARGIN_MILLIS, FORGET_MILLIS, elsewhere, true),
                store,
                Optional::empty,
                () -> false,
                nanos::get,
                () -> 1_700_000_000_000L);
        assertThat(moved.tables()).containsExactly(EMB);
    }

    @Test
    void shouldNeverLetTheEpochGoBackWhenRestartedOrBootstrapped() {
        register("h1:1");
        state.addTable(EMB);
        final long before = state.epoch();

        restart();
        register("h2:1");
        assertThat(state.epoch()).isGreaterThan(before);

        state = open(
                new MemoryStateStore(),
                Optional.of(new ClusterState.Bootstrap(3, 0, List.of(EMB), SlotOwners.decode("x=0-4095"), 40)));
        assertThat(state.epoch()).isEqualTo(41);
        state.register(RegisterShardRequest.newBuilder()
                .setShardId("y")
                .setAddress("h9:1")
                .setRoutingEpoch(57)
                .addHeldSlots(5)
                .addHeldGenerations(52)
                .build());
        assertThat(state.epoch()).as("above what the shard already followed").isGreaterThan(57);
        assertThat(state.routingTable().getSlotGeneration(5)).isEqualTo(52);
    }

    /** Shard "y" re-registers holding slots 0-2 at generation 10 (routing epoch 20) and reporting table emb. */
    private void registerYClaimingSlots0To2() {
        state.register(RegisterShardRequest.newBuilder()
                .setShardId("y")
                .setAddress("h1:1")
                .setRoutingEpoch(20)
                .addAllHeldSlots(List.of(0, 1, 2))
                .addAllHeldGenerations(List.of(10L, 10L, 10L))
                .addTables(TableStats.newBuilder().setName(EMB.getName()).setSchema(EMB))
                .build());
    }

    @Test
    void shouldLetTheNewestClaimWinAndAdoptTablesWhenStartedWithoutARecord() {
        state = open(new MemoryStateStore(), Optional.empty());
        registerYClaimingSlots0To2();
        state.register(RegisterShardRequest.newBuilder()
                .setShardId("z")
                .setAddress("h2:1")
                .setRoutingEpoch(20)
                .addAllHeldSlots(List.of(1, 2))
                .addAllHeldGenerations(List.of(15L, 5L))
                .build());

        final String[] owners = state.slotOwners();
        assertThat(owners[0]).isEqualTo("y");
        assertThat(owners[1]).as("newer generation").isEqualTo("z");
        assertThat(owners[2]).as("older generation loses").isEqualTo("y");
        assertThat(state.tables()).containsExactly(EMB);
        assertThat(state.status().getPendingRestoresList()).isEmpty();
    }

    /**
     * A proxy that lost its state in a cluster without a checkpoint (the root carries the cluster's mark): a new
     * shard that registers before the old ones must not get their slots, not even while no table is known yet, or it
     * would acknowledge pushes for rows it does not hold, lost when the owners claim the slots back.
     */
    @Test
    void shouldGiveANewShardNothingBeforeTheOwnersClaimWhenTheLostStateHadNoCheckpoint() {
        state = open(new MemoryStateStore(), Optional.empty(), true);
        final String fresh = register("h9:1");
        assertThat(slotsOf(fresh)).as("nothing before the owners claim").isEmpty();
        registerYClaimingSlots0To2();
        advanceMillis(EXPIRY_MILLIS - 1);
        heartbeat(fresh);
        state.expireLeases();
        assertThat(slotsOf(fresh)).as("still nothing within the grace").isEmpty();
        assertThat(slotsOf("y")).containsExactlyInAnyOrder(0, 1, 2);

        // After the grace the slots nobody claimed are orphans: adopted with a restore order and a rollback event.
        advanceMillis(2);
        heartbeat("y");
        state.expireLeases();
        assertThat(slotsOf("y")).contains(0, 1, 2);
        assertThat(slotsOf(fresh)).hasSize(Slots.SLOT_COUNT - 3);
        assertThat(state.status().getRollbacksTotal()).isEqualTo(1);
    }

    /**
     * The proxy restarts again in the middle of the grace of a lost state (its record saved by a new shard's
     * registration): the new grace still takes claims and still gives new shards nothing, and a claim taken before the
     * restart still beats an older one after it.
     */
    @Test
    void shouldKeepTakingClaimsWhenRestartedDuringTheGraceOfALostState() {
        final MemoryStateStore lost = new MemoryStateStore();
        state = open(lost, Optional.empty(), true);
        final String fresh = register("h9:1");
        registerYClaimingSlots0To2();
        assertThat(lost.saved().getClaimGrace()).isTrue();

        advanceMillis(EXPIRY_MILLIS / 2);
        state = open(lost, Optional.empty(), false);
        final String second = register("h8:1");
        state.register(RegisterShardRequest.newBuilder()
                .setShardId("z")
                .setAddress("h2:1")
                .setRoutingEpoch(20)
                .addAllHeldSlots(List.of(1, 3))
                .addAllHeldGenerations(List.of(5L, 5L))
                .build());
        assertThat(slotsOf(fresh)).isEmpty();
        assertThat(slotsOf(second)).isEmpty();
        assertThat(slotsOf("y")).as("an older claim after the restart loses").containsExactlyInAnyOrder(0, 1, 2);
        assertThat(slotsOf("z")).containsExactly(3);

        advanceMillis(EXPIRY_MILLIS + 1);
        heartbeat("y");
        heartbeat("z");
        heartbeat(fresh);
        heartbeat(second);
        state.expireLeases();
        assertThat(slotsOf("y")).contains(0, 1, 2);
        assertThat(slotsOf("z")).contains(3);
        assertThat(lost.saved().getClaimGrace())
                .as("cleared when the grace ends")
                .isFalse();
        assertThat(lost.saved().getClaimedAtList()).isEmpty();
    }

    @Test
    void shouldSpreadSlotsAtOnceInANewCluster() {
        state = open(new MemoryStateStore(), Optional.empty(), false);
        final String a = register("h1:1");
        final String b = register("h2:1");
        assertThat(slotsOf(a)).hasSize(Slots.SLOT_COUNT / 2);
        assertThat(slotsOf(b)).hasSize(Slots.SLOT_COUNT / 2);
        assertThat(state.status().getGraceRemainingMillis()).isPositive();
    }

    /** Without tables a slot holds no rows, so after the grace a lost state that learned of none spreads them. */
    @Test
    void shouldSpreadSlotsAfterTheGraceWhenTheLostStateLearnedOfNoTable() {
        state = open(new MemoryStateStore(), Optional.empty(), true);
        final String a = register("h1:1");
        assertThat(slotsOf(a)).isEmpty();
        advanceMillis(EXPIRY_MILLIS + 1);
        heartbeat(a);
        state.expireLeases();
        assertThat(slotsOf(a)).hasSize(Slots.SLOT_COUNT);
        assertThat(state.status().getRollbacksTotal()).isZero();
    }

    @Test
    void shouldAdoptAnUnknownTableButDropATombstonedOneWhenAShardReportsThem() {
        final String a = register("h1:1");
        state.addTable(EMB);
        state.removeTable(EMB.getName());
        final var other = schema("other", 1f);

        final var response = state.heartbeat(HeartbeatRequest.newBuilder()
                .setShardId(a)
                .setRoutingEpoch(state.epoch())
                .addTables(TableStats.newBuilder().setName(EMB.getName()).setSchema(EMB))
                .addTables(TableStats.newBuilder().setName("other").setSchema(other))
                .build());

        assertThat(response.getDroppedTablesList()).containsExactly(EMB.getName());
        assertThat(state.tables()).containsExactly(other);
        assertThat(store.saved().getTablesList()).containsExactly(other);
        assertThat(store.saved().getTombstonesList())
                .extracting(t -> t.getName())
                .containsExactly(EMB.getName());

        state.addTable(EMB);
        assertThat(store.saved().getTombstonesList()).as("created again").isEmpty();
        assertThat(heartbeat(a).getDroppedTablesList()).isEmpty();
    }

    @Test
    void shouldKeepIdsUniqueAcrossRestartsWhenShardsRegisterWithoutOne() {
        assertThat(register("h1:1")).isEqualTo("shard-0");
        assertThat(register("h2:1")).isEqualTo("shard-1");

        restart();

        assertThat(register("h3:1")).isEqualTo("shard-2");
    }

    @Test
    void shouldChangeNothingWhenARegistrationIsRejected() {
        register("a", "h1:1", true);
        state.addTable(EMB);
        final ProxyStateRecord saved = store.saved();
        final int saves = store.saves.get();
        final long epoch = state.epoch();

        assertStatus(() -> register("a", "h2:1", true), Status.Code.ALREADY_EXISTS);
        assertStatus(
                () -> state.register(RegisterShardRequest.newBuilder()
                        .setAddress("h3:1")
                        .addHeldSlots(1)
                        .build()),
                Status.Code.INVALID_ARGUMENT);

        assertThat(store.saves.get()).isEqualTo(saves);
        assertThat(store.saved()).isEqualTo(saved);
        assertThat(state.epoch()).isEqualTo(epoch);
        assertThat(state.liveAddresses()).containsExactly("h1:1");
        assertThat(register("h4:1")).isEqualTo("shard-0");
    }

    @Test
    void shouldForgetAGoneShardThatOwnsNothingAfterTheDelay() {
        final String a = register("h1:1");
        final String b = register("h2:1");
        state.deregister(b);
        assertStatus(() -> state.forget(a), Status.Code.FAILED_PRECONDITION);
        assertThat(state.shardStatuses()).hasSize(2);

        advanceMillis(FORGET_MILLIS - 1);
        heartbeat(a);
        state.expireLeases();
        assertThat(state.shardState(b)).isEqualTo(ClusterState.ShardState.GONE);
        advanceMillis(1);
        heartbeat(a);
        state.expireLeases();

        assertThat(state.shardState(b)).isNull();
        assertThat(store.saved().getShardsList())
                .extracting(shard -> shard.getShardId())
                .containsExactly(a);
    }

    @Test
    void shouldHandAForgottenShardsSlotsToLiveShardsAtOnce() {
        final String a = register("h1:1");
        final String b = register("h2:1");
        state.addTable(EMB);
        state.beginDrain(b);
        state.deregister(a); // nowhere to go: b is draining
        assertThat(state.unownedSlots()).isEqualTo(2048);
        final String c = register("h3:1");
        assertThat(slotsOf(c)).as("the idle newcomer adopts").hasSize(2048);

        assertThat(state.forget(a)).isTrue();
        assertThat(state.forget("nobody")).isFalse();
        assertThat(state.shardState(a)).isNull();
    }

    @Test
    void shouldHandADrainingShardsSlotsOverWithALosslessEvent() {
        final String a = register("h1:1");
        final String b = register("h2:1");
        state.addTable(EMB);
        final String c = register("h3:1");
        final var slotsOfA = slotsOf(a);
        final long epoch = state.epoch();

        assertThat(state.beginDrain(a)).as("its rows need a checkpoint").isTrue();
        assertThat(state.handOver(a, 11, 110_000, "")).isEqualTo(2048);

        assertThat(slotsOf(c)).isEqualTo(slotsOfA);
        assertThat(slotsOf(b)).hasSize(2048);
        assertThat(state.epoch()).isGreaterThan(epoch);
        assertThat(heartbeat(c).getRestoreOrdersList()).singleElement().satisfies(order -> {
            assertThat(order.getCheckpointId()).isEqualTo(11);
            assertThat(order.getSlotsCount()).isEqualTo(2048);
        });
        assertThat(state.status().getRollbacksList()).singleElement().satisfies(event -> {
            assertThat(event.getLossless()).isTrue();
            assertThat(event.getFromShard()).isEqualTo(a);
            assertThat(event.getCheckpointId()).isEqualTo(11);
        });
        assertThat(state.status().getRollbacksTotal())
                .as("lossless hand-overs are not rollbacks")
                .isZero();
        assertThat(state.latestCheckpointId()).isEqualTo(11);
    }

    /**
     * A drain's orders count on the draining shard keeping the rows it handed over: a taker that finds the drain's
     * checkpoint damaged gets nothing from an older one; the slots go back to the draining shard (an order to serve
     * what it kept, a lossless event), and its next hand-over is from a new checkpoint. Only once the draining shard is
     * gone does an order fall back.
     */
    @Test
    void shouldGiveADrainsSlotsBackToTheDrainingShardWhenTheirCheckpointIsDamaged() {
        final String a = register("h1:1");
        final String b = register("h2:1");
        state.addTable(EMB);
        final String c = register("h3:1");
        final var slotsOfA = slotsOf(a);
        state.beginDrain(a);
        state.handOver(a, 11, 110_000, "");
        final RestoreDirective toC = heartbeat(c).getRestoreOrders(0);
        assertThat(toC.getGiverKeepsRows()).isTrue();
        assertThat(heartbeat(a).getKeepMovedSlotsList()).containsExactlyInAnyOrderElementsOf(slotsOfA);

        reportDamaged(c, toC);

        assertThat(slotsOf(a)).as("given back to the draining shard").isEqualTo(slotsOfA);
        assertThat(state.shardState(a)).isEqualTo(ClusterState.ShardState.DRAINING);
        final HeartbeatResponse toA = heartbeat(a);
        assertThat(toA.getRestoreOrdersList()).singleElement().satisfies(order -> {
            assertThat(order.getTakeBackKeptRows()).isTrue();
            assertThat(order.getSlotsList()).containsExactlyInAnyOrderElementsOf(slotsOfA);
        });
        reportDone(a, toA.getRestoreOrders(0));
        assertThat(heartbeat(a).getKeepMovedSlotsList()).isEmpty();

        assertThat(state.beginDrain(a)).as("it owns rows again").isTrue();
        assertThat(state.handOver(a, 12, 120_000, "")).isEqualTo(2048);
        final RestoreDirective again = heartbeat(c).getRestoreOrders(0);
        assertThat(again.getCheckpointId()).isEqualTo(12);
        assertThat(again.getGiverKeepsRows()).isTrue();
        assertThat(state.status().getRollbacksTotal()).as("nothing rolled back").isZero();

        state.deregister(a);

        assertThat(heartbeat(c).getRestoreOrders(0).getGiverKeepsRows())
                .as("a gone shard keeps nothing")
                .isFalse();
        assertThat(slotsOf(c)).isEqualTo(slotsOfA);
        assertThat(slotsOf(b)).hasSize(2048);
    }

    /**
     * Draining is not saved: a proxy restarted while a shard drains (it keeps handed-over rows for up to its drain
     * timeout) learns it from the shard's heartbeats, and gives it no slots (a review found it taken for live).
     */
    @Test
    void shouldLearnFromItsHeartbeatThatAShardIsDrainingAfterARestart() {
        final String a = register("h1:1");
        register("h2:1");
        state.addTable(EMB);
        state.beginDrain(a);
        state.handOver(a, 11, 110_000, "");

        restart();
        state.heartbeat(HeartbeatRequest.newBuilder()
                .setShardId(a)
                .setRoutingEpoch(state.epoch())
                .setDraining(true)
                .build());

        assertThat(state.shardState(a)).isEqualTo(ClusterState.ShardState.DRAINING);
        assertThat(state.shardStatuses())
                .filteredOn(status -> status.getShard().getShardId().equals(a))
                .extracting(ShardStatus::getState)
                .containsExactly("draining");
    }

    /**
     * A restore order says when the catalog's tables were created, so that the shard does not restore a dropped
     * table's rows into a table of that name created after the checkpoint (same schema); the times are saved, and an
     * operator's restore, after which the tables hold a checkpoint's rows whenever they were created, clears them.
     */
    @Test
    void shouldSayInARestoreOrderWhenEachTableWasCreated() {
        final TableSchema other = schema("other", 0.5f);
        final String a = register("h1:1");
        register("h2:1");
        state.addTable(EMB);
        state.addTable(other);
        final String c = register("h3:1");
        wall.addAndGet(1_000);
        state.checkpointCommitted(7, wall.get());
        wall.addAndGet(1_000);
        state.removeTable(EMB.getName());
        state.addTable(EMB);

        state.deregister(a);
        assertThat(heartbeat(c).getRestoreOrders(0).getTableCreatedMillisMap())
                .containsEntry(EMB.getName(), wall.get())
                .containsEntry(other.getName(), wall.get() - 2_000);

        assertThat(store.load().orElseThrow().getTableCreatedMillisMap())
                .as("creation times are in the saved state")
                .containsEntry(EMB.getName(), wall.get());
        state.restoringWhole(7, wall.get() - 1_000);
        final String d = register("h4:1");
        state.deregister(c);
        assertThat(heartbeat(d).getRestoreOrdersList())
                .isNotEmpty()
                .as("a table created after the restored checkpoint now holds its rows; one created before keeps its"
                        + " time, so that a fallback to an older checkpoint does not bring back an earlier table's")
                .allSatisfy(order -> assertThat(order.getTableCreatedMillisMap())
                        .containsOnlyKeys(other.getName())
                        .containsEntry(other.getName(), wall.get() - 2_000));
    }

    @Test
    void shouldReportTheCheckpointActuallyRestoredWhenTheShardFellBack() {
        final String a = register("h1:1");
        register("h2:1");
        state.addTable(EMB);
        final String c = register("h3:1");
        state.checkpointCommitted(7, 70_000);
        state.deregister(a);
        final RestoreDirective order = heartbeat(c).getRestoreOrders(0);

        state.heartbeat(HeartbeatRequest.newBuilder()
                .setShardId(c)
                .setRoutingEpoch(state.epoch())
                .addRestores(RestoreReport.newBuilder()
                        .setOrderId(order.getOrderId())
                        .setDone(true)
                        .setCheckpointId(6)
                        .setNote("checkpoint 7 damaged: crc32c mismatch; restored checkpoint 6"))
                .build());

        assertThat(state.status().getRollbacksList()).last().satisfies(event -> {
            assertThat(event.getCheckpointId()).isEqualTo(6);
            assertThat(event.getReason()).contains("checkpoint 6").contains("damaged");
        });
        assertThat(state.status().getRollbacksTotal()).isEqualTo(2);
        assertThat(state.routingTable().getRollbacksList()).hasSize(2);
    }

    @Test
    void shouldKeepTheCheckpointTheDataWasRestoredFromAcrossARestartUntilTheNextCommit() {
        state.checkpointCommitted(5, 1_000);
        state.checkpointCommitted(7, 2_000);
        assertThat(state.dataCheckpointId()).isEqualTo(7);

        state.restoringWhole(5, 1_000);

        assertThat(store.saved().getDataCheckpointId()).isEqualTo(5);
        assertThat(restart().dataCheckpointId()).isEqualTo(5);
        assertThat(state.latestCheckpointId()).isEqualTo(7);
        assertThat(state.checkpointsInUse()).as("spared by retention").contains(5L, 7L);
        state.checkpointCommitted(8, 3_000);
        assertThat(state.dataCheckpointId()).isEqualTo(8);

        store.failSaves.set(true);
        assertStatus(() -> state.restoringWhole(5, 1_000), Status.Code.UNAVAILABLE);
        assertThat(state.dataCheckpointId()).isEqualTo(8);
    }

    /**
     * A commit whose record could not be saved is recorded by the next change that saves, before that change's own
     * effect: after an operator's restore of 7 the latest is 9 and the data is at 7, not the other way round.
     */
    @Test
    void shouldRecordACheckpointWhoseSaveFailedWithTheNextChangeThatSaves() {
        state.checkpointCommitted(5, 1_000);
        store.failSaves.set(true);
        assertStatus(() -> state.checkpointCommitted(7, 2_000), Status.Code.UNAVAILABLE);
        assertThat(state.latestCheckpointId()).isEqualTo(5);

        store.failSaves.set(false);
        register("h1:1");
        assertThat(store.saved().getLatestCheckpointId()).isEqualTo(7);
        assertThat(store.saved().getDataCheckpointId()).isEqualTo(7);

        store.failSaves.set(true);
        assertStatus(() -> state.checkpointCommitted(9, 3_000), Status.Code.UNAVAILABLE);
        store.failSaves.set(false);
        state.restoringWhole(7, 2_000);
        assertThat(store.saved().getLatestCheckpointId()).isEqualTo(9);
        assertThat(store.saved().getDataCheckpointId()).isEqualTo(7);
        assertThat(restart().dataCheckpointId()).isEqualTo(7);
    }

    /** A state's identity is made once and kept across restarts; a record of an older proxy gets one at once. */
    @Test
    void shouldKeepItsIdentityAcrossRestartsAndGiveAnOlderRecordOne() throws IOException {
        final String id = state.stateId();
        register("h1:1");
        assertThat(id).isNotBlank();
        assertThat(store.saved().getStateId()).isEqualTo(id);
        assertThat(restart().stateId()).isEqualTo(id);

        final MemoryStateStore older = new MemoryStateStore();
        older.save(store.saved().toBuilder().clearStateId().build());
        final ClusterState upgraded = open(older, Optional.empty());
        assertThat(upgraded.stateId()).isNotBlank().isNotEqualTo(id);
        assertThat(older.saved().getStateId()).isEqualTo(upgraded.stateId());
    }

    /**
     * After an operator restored checkpoint 5 into every shard (7 is the latest), a lost shard's slots come back from
     * 5 like the rest of the model, not from 7: a model mixed from two checkpoints is no checkpoint's. Across a proxy
     * restart too. The rollback event names 5 and its time.
     */
    @Test
    void shouldRestoreALostShardsSlotsFromTheCheckpointTheDataIsAtAfterAnOperatorRestore() {
        final String a = register("h1:1");
        final String b = register("h2:1");
        state.addTable(EMB);
        state.checkpointCommitted(5, 1_000);
        state.checkpointCommitted(7, 2_000);
        state.restoringWhole(5, 1_000);
        state = restart();
        passGrace();
        heartbeat(a);
        heartbeat(b);
        state.checkpointTime(5, 1_000);

        state.deregister(a);
        heartbeat(b);

        assertThat(state.status().getPendingRestoresList()).singleElement().satisfies(order -> {
            assertThat(order.getShardId()).isEqualTo(b);
            assertThat(order.getCheckpointId()).isEqualTo(5);
        });
        assertThat(state.status().getRollbacksList()).last().satisfies(event -> {
            assertThat(event.getCheckpointId()).isEqualTo(5);
            assertThat(event.getCheckpointCreatedMillis()).isEqualTo(1_000);
        });

        state.checkpointCommitted(8, 3_000);
        final String c = register("h3:1");
        heartbeat(c);
        state.deregister(b);
        assertThat(state.status().getPendingRestoresList())
                .as("after the next commit the data is at it")
                .anySatisfy(order -> assertThat(order.getCheckpointId()).isEqualTo(8));
    }

    @Test
    void shouldKeepOnlyTheNewest64EventsButCountThemAll() {
        final String a = register("h1:1");
        state.addTable(EMB);
        for (int i = 0; i < 70; i++) {
            register(a, "h1:1", true); // a fresh restart: its rows come back from the checkpoint
        }

        assertThat(state.status().getRollbacksList()).hasSize(ClusterState.MAX_ROLLBACKS);
        assertThat(state.status().getRollbacksTotal()).isEqualTo(70);
        // Ids follow one another; the first of a new state is seeded from the clock, so only differences are known.
        final long newest =
                state.status().getRollbacks(ClusterState.MAX_ROLLBACKS - 1).getId();
        assertThat(newest - state.status().getRollbacks(0).getId()).isEqualTo(ClusterState.MAX_ROLLBACKS - 1);
    }
}
