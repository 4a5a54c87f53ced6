package io.pscluster.proxy;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.grpc.Status;
import io.pscluster.proto.v1.HeartbeatRequest;
import io.pscluster.proto.v1.HeartbeatResponse;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.RegisterShardRequest;
import io.pscluster.proto.v1.RegisterShardResponse;
import io.pscluster.proto.v1.RestoreDirective;
import io.pscluster.proto.v1.RestoreReport;
import io.pscluster.proto.v1.RoutingTable;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.proto.v1.TableStats;
import io.pscluster.wire.PsException;
import io.pscluster.wire.TableSchemas;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.HashSet;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.assertj.core.api.ThrowableAssert.ThrowingCallable;

/**
 * A {@link ClusterState} on a clock the test moves by hand and an in-memory state store, with helpers to register,
 * heartbeat and read the routing table. Each test class extends it and so starts from an empty cluster per test,
 * past its start-up grace period (tests of the grace open a state of their own with {@link #open}).
 */
abstract class ClusterStateFixture {
    static final long LEASE_MILLIS = 3_000;
    static final long MARGIN_MILLIS = 1_000;
    /** Lease + margin: how long after the last heartbeat (or the start) the proxy may move a shard's slots. */
    static final long EXPIRY_MILLIS = LEASE_MILLIS + MARGIN_MILLIS;

    static final long FORGET_MILLIS = 60_000;
    static final String ROOT = "file:///tmp/checkpoints";
    static final TableSchema EMB = schema("emb", 0.5f);
    static final ClusterState.Settings SETTINGS =
            new ClusterState.Settings(LEASE_MILLIS, MARGIN_MILLIS, FORGET_MILLIS, ROOT);

    /** A clock the test moves by hand, so that leases lapse without waiting. */
    final AtomicLong nanos = new AtomicLong(1_000_000_000L);

    /** The wall clock (ms) the state sees: tables' creation times, tombstones. */
    final AtomicLong wall = new AtomicLong(1_700_000_000_000L);

    final MemoryStateStore store = new MemoryStateStore();

    ClusterState state = open(store, Optional.empty());

    ClusterStateFixture() {
        passGrace();
    }

    /** Opens a state on the fixture's clock, as a proxy (re)starting on {@code stateStore} of a new cluster does. */
    ClusterState open(final ProxyStateStore stateStore, final Optional<ClusterState.Bootstrap> bootstrap) {
        return open(stateStore, bootstrap, false);
    }

    /** {@link #open}, saying whether the checkpoint root carries a cluster's mark (asked only without a record). */
    ClusterState open(
            final ProxyStateStore stateStore,
            final Optional<ClusterState.Bootstrap> bootstrap,
            final boolean clusterExisted) {
        try {
            return ClusterState.open(
                    SETTINGS, stateStore, () -> bootstrap, () -> clusterExisted, nanos::get, wall::get);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** Moves the clock past the start-up grace of {@link #state} and lets the timer run once. */
    void passGrace() {
        advanceMillis(EXPIRY_MILLIS);
        state.expireLeases();
    }

    static TableSchema schema(final String name, final float learningRate) {
        return TableSchemas.normalize(TableSchema.newBuilder()
                .setName(name)
                .setKind(TableKind.SPARSE)
                .setDim(4)
                .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(learningRate))
                .build());
    }

    RegisterShardResponse register(final String id, final String address, final boolean freshStart) {
        return state.register(RegisterShardRequest.newBuilder()
                .setShardId(id)
                .setAddress(address)
                .setFreshStart(freshStart)
                .build());
    }

    String register(final String address) {
        return register("", address, true).getShardId();
    }

    HeartbeatResponse heartbeat(final String id) {
        return state.heartbeat(HeartbeatRequest.newBuilder()
                .setShardId(id)
                .setRoutingEpoch(state.epoch())
                .addTables(TableStats.newBuilder().setName(EMB.getName()))
                .build());
    }

    /** Shard {@code id}'s heartbeat reporting restore order {@code order} done. */
    HeartbeatResponse reportDone(final String id, final RestoreDirective order) {
        return state.heartbeat(HeartbeatRequest.newBuilder()
                .setShardId(id)
                .setRoutingEpoch(state.epoch())
                .addRestores(RestoreReport.newBuilder()
                        .setOrderId(order.getOrderId())
                        .setDone(true)
                        .setCheckpointId(order.getCheckpointId()))
                .build());
    }

    /** Shard {@code id}'s heartbeat reporting that restore order {@code order} found its checkpoint damaged. */
    HeartbeatResponse reportDamaged(final String id, final RestoreDirective order) {
        return state.heartbeat(HeartbeatRequest.newBuilder()
                .setShardId(id)
                .setRoutingEpoch(state.epoch())
                .addRestores(RestoreReport.newBuilder()
                        .setOrderId(order.getOrderId())
                        .setDamaged(true)
                        .setNote("checkpoint " + order.getCheckpointId() + " damaged: crc32c mismatch"))
                .build());
    }

    void advanceMillis(final long millis) {
        nanos.addAndGet(TimeUnit.MILLISECONDS.toNanos(millis));
    }

    /** The slots whose routing-table owner index points at the shard {@code id}. */
    static Set<Integer> slotsOf(final RoutingTable routing, final String id) {
        final Set<Integer> slots = new HashSet<>();
        for (int slot = 0; slot < routing.getSlotOwnerCount(); slot++) {
            final int owner = routing.getSlotOwner(slot);
            if (owner >= 0 && routing.getShards(owner).getShardId().equals(id)) {
                slots.add(slot);
            }
        }
        return slots;
    }

    Set<Integer> slotsOf(final String id) {
        return slotsOf(state.routingTable(), id);
    }

    static void assertStatus(final ThrowingCallable call, final Status.Code code) {
        assertThatThrownBy(call)
                .isInstanceOfSatisfying(
                        PsException.class, e -> assertThat(e.code()).isEqualTo(code));
    }
}
