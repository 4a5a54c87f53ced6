package io.pscluster.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;
import static org.awaitility.Awaitility.await;

import ch.qos.logback.classic.Level;
import ch.qos.logback.classic.Logger;
import ch.qos.logback.classic.spi.ILoggingEvent;
import ch.qos.logback.core.read.ListAppender;
import com.google.protobuf.ByteString;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.pscluster.proto.v1.InjectFaultRequest;
import io.pscluster.proto.v1.PushRequest;
import io.pscluster.proto.v1.PushResponse;
import io.pscluster.proto.v1.RegisterShardRequest;
import io.pscluster.proto.v1.RestoreDirective;
import io.pscluster.proto.v1.ShardAdminServiceGrpc;
import io.pscluster.proto.v1.ShardServiceGrpc;
import io.pscluster.proto.v1.TableStats;
import io.pscluster.wire.PsException;
import io.pscluster.wire.Slots;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.IntStream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.slf4j.LoggerFactory;

/**
 * A shard server against a stand-in proxy on loopback: registration (assigned ids, claims on re-registration, a
 * refused registration deregisters nobody), the lease its heartbeats renew, the graceful drain, fault injection and
 * the one-line log of an unreachable proxy.
 */
class ShardServerFailoverTest {
    private static final Duration GENEROUS = Duration.ofSeconds(20);
    private static final String TABLE = CounterCheckpoints.TABLE;
    private static final long CLIENT = 77;

    private FakeProxy proxy;
    private ShardServer server;
    private ManagedChannel channel;
    private BlockedWriters blocked;

    @BeforeEach
    void startProxy() throws Exception {
        proxy = new FakeProxy().start();
        proxy.tables.add(CounterCheckpoints.SCHEMA);
    }

    @AfterEach
    void stopAll() throws Exception {
        if (blocked != null) {
            blocked.close();
        }
        if (channel != null) {
            channel.shutdownNow();
        }
        if (server != null) {
            server.close();
        }
        proxy.close();
    }

    private ShardServer.Context context() {
        return new ShardServer.Context()
                .proxyAddress(proxy.address())
                .port(0)
                .partitions(2)
                .faults(new FaultPoints(true));
    }

    private ShardServer start(final ShardServer.Context context) throws Exception {
        server = ShardServer.start(context);
        channel = Grpc.newChannelBuilder(server.address(), InsecureChannelCredentials.create())
                .build();
        return server;
    }

    private PushResponse push(final long epoch, final long sequence, final long... keys) {
        final ByteBuffer keyBytes = ByteBuffer.allocate(8 * keys.length).order(ByteOrder.LITTLE_ENDIAN);
        final ByteBuffer gradients = ByteBuffer.allocate(4 * keys.length).order(ByteOrder.LITTLE_ENDIAN);
        for (final long key : keys) {
            keyBytes.putLong(key);
            gradients.putFloat(-1f);
        }
        return ShardServiceGrpc.newBlockingStub(channel)
                .withDeadlineAfter(10, TimeUnit.SECONDS)
                .push(PushRequest.newBuilder()
                        .setTable(TABLE)
                        .setRoutingEpoch(epoch)
                        .setClientId(CLIENT)
                        .setSequence(sequence)
                        .setKeys(ByteString.copyFrom(keyBytes.array()))
                        .setGradients(ByteString.copyFrom(gradients.array()))
                        .build());
    }

    private static StatusRuntimeException refusal(final Runnable call) {
        final StatusRuntimeException refused = catchThrowableOfType(StatusRuntimeException.class, call::run);
        assertThat(refused).as("refusal").isNotNull();
        return refused;
    }

    private void inject(final String point, final boolean enabled) {
        ShardAdminServiceGrpc.newBlockingStub(channel)
                .withDeadlineAfter(10, TimeUnit.SECONDS)
                .injectFault(InjectFaultRequest.newBuilder()
                        .setPoint(point)
                        .setEnabled(enabled)
                        .build());
    }

    // ---- registration

    @Test
    void shouldRegisterWithAnEmptyIdAndTakeTheOneTheProxyAssignsWhenNoneWasGiven() throws Exception {
        start(context());

        assertThat(proxy.registrations).hasSize(1);
        assertThat(proxy.registrations.get(0).getShardId()).isEmpty();
        assertThat(proxy.registrations.get(0).getFreshStart()).isTrue();
        assertThat(server.shardId()).isEqualTo("shard-1");
        await().atMost(GENEROUS).until(() -> proxy.lastHeartbeat() != null);
        assertThat(proxy.lastHeartbeat().getShardId()).isEqualTo("shard-1");
    }

    /**
     * A registration whose answer did not come in time (a loaded machine, a proxy busy starting) is tried again, as one
     * the proxy refused while unreachable: the shard used to exit after the first, though the proxy had registered it
     * and given it slots (found by a hostile review).
     */
    @Test
    void shouldRegisterAgainWhenARegistrationsAnswerDidNotComeInTime() throws Exception {
        proxy.registerRefusal = Status.DEADLINE_EXCEEDED.withDescription("deadline exceeded after 5.0s");
        proxy.registerRefusals.set(2);

        start(context().shardId("shard-7").registerTimeoutMs(30_000));

        assertThat(proxy.registrations).hasSize(3);
        assertThat(server.shardId()).isEqualTo("shard-7");
        await().atMost(GENEROUS).until(() -> proxy.lastHeartbeat() != null);
    }

    @Test
    void shouldDeregisterNobodyWhenItsRegistrationWasRefused() throws Exception {
        proxy.registerRefusal = Status.ALREADY_EXISTS.withDescription("shard-1 is registered at another address");

        final StatusRuntimeException refused = catchThrowableOfType(
                StatusRuntimeException.class,
                () -> start(context().shardId("shard-1").registerTimeoutMs(500)));

        assertThat(refused).isNotNull();
        assertThat(refused.getStatus().getCode()).isEqualTo(Status.Code.ALREADY_EXISTS);
        assertThat(proxy.registrations).as("retried while the id was refused").hasSizeGreaterThan(1);
        assertThat(proxy.deregistrations)
                .as("deregistrations after a refused registration")
                .isEmpty();
    }

    @Test
    void shouldClaimItsSlotsGenerationsAndTablesWhenItRegistersAgain() throws Exception {
        start(context().shardId("s-9"));
        await().atMost(GENEROUS).until(() -> proxy.lastHeartbeat() != null);
        final TableStats reported = proxy.lastHeartbeat().getTables(0);
        assertThat(reported.getSchema().getName()).as("schema in heartbeat").isEqualTo(TABLE);

        proxy.forgetShard.set(1);
        await().atMost(GENEROUS).until(() -> proxy.registrations.size() == 2);

        final RegisterShardRequest again = proxy.registrations.get(1);
        assertThat(again.getShardId()).isEqualTo("s-9");
        assertThat(again.getFreshStart()).isFalse();
        assertThat(again.getRoutingEpoch()).isEqualTo(1);
        assertThat(again.getHeldSlotsCount()).isEqualTo(Slots.SLOT_COUNT);
        assertThat(again.getHeldGenerationsList()).hasSize(Slots.SLOT_COUNT).containsOnly(1L);
        assertThat(again.getTablesList()).anySatisfy(table -> {
            assertThat(table.getSchema().getName()).isEqualTo(TABLE);
            assertThat(table.getSchema().getDim()).isEqualTo(1);
        });
        assertThat(server.shard().table(TABLE)).as("the table kept").isNotNull();
    }

    // ---- lease

    @Test
    void shouldRefuseWritesWhenHeartbeatsAreDroppedAndServeAgainWhenTheyResume() throws Exception {
        proxy.leaseMillis = 1_000;
        start(context());
        // A refused push applies nothing, so the counter stays exact however many tries this takes.
        await().atMost(GENEROUS).ignoreExceptions().until(() -> push(1, 1, 5).getAccepted() == 1);

        inject(FaultPoints.DROP_HEARTBEATS, true);
        await().atMost(GENEROUS).until(() -> server.shard().leaseRemainingNanos() <= 0);

        final StatusRuntimeException refused = refusal(() -> push(1, 2, 5));
        assertThat(PsException.rejectOf(refused)).isEqualTo(PsException.Reject.WRONG_OWNER);
        assertThat(refused.getStatus().getDescription()).contains("lease lapsed");

        inject(FaultPoints.DROP_HEARTBEATS, false);
        await().atMost(GENEROUS).ignoreExceptions().until(() -> push(1, 2, 5).getAccepted() == 1);
        server.shard().awaitQuiescent();
        assertThat(server.shard().table(TABLE).pull(new long[] {5})).containsOnly(2f);
    }

    @Test
    void shouldRefuseFaultInjectionWhenTheJvmWasNotStartedWithFaultsOn() throws Exception {
        start(context().faults(new FaultPoints(false)));

        final StatusRuntimeException refused = refusal(() -> inject(FaultPoints.DROP_HEARTBEATS, true));

        assertThat(refused.getStatus().getCode()).isEqualTo(Status.Code.FAILED_PRECONDITION);
        assertThat(refused.getStatus().getDescription())
                .isEqualTo("fault injection is off: start the shard with -Dpscluster.faults=true");
    }

    // ---- drain

    @Test
    void shouldRefuseThenCallDrainShardOnlyAfterEveryAcceptedPushIsApplied() throws Exception {
        start(context().shardId("s-1"));
        final long[] keys = {1, 2, 3};
        for (long sequence = 1; sequence <= 5; sequence++) {
            push(1, sequence, keys);
        }
        blocked = BlockedWriters.block(server.shard(), 2);
        for (long sequence = 6; sequence <= 10; sequence++) {
            assertThat(push(1, sequence, keys).getAccepted()).isEqualTo(3);
        }
        final AtomicReference<float[]> atDrain = new AtomicReference<>();
        final List<String> events = new CopyOnWriteArrayList<>();
        proxy.onDrain = () -> {
            events.add("drain");
            atDrain.set(server.shard().table(TABLE).pull(keys));
        };

        final CompletableFuture<Void> closing = CompletableFuture.runAsync(() -> {
            try {
                server.close();
            } catch (InterruptedException e) {
                throw new IllegalStateException(e);
            }
        });

        await().atMost(GENEROUS).until(() -> server.shard().isDraining());
        final StatusRuntimeException refused = refusal(() -> push(1, 11, keys));
        assertThat(PsException.rejectOf(refused)).isEqualTo(PsException.Reject.WRONG_OWNER);
        assertThat(refused.getStatus().getDescription()).contains("shard s-1 is draining");
        final int beats = proxy.heartbeats.size();
        await().atMost(GENEROUS).until(() -> proxy.heartbeats.size() >= beats + 3);
        assertThat(proxy.drains)
                .as("DrainShard calls while accepted pushes wait")
                .isEmpty();

        blocked.release();
        closing.get(GENEROUS.toSeconds(), TimeUnit.SECONDS);

        assertThat(proxy.drains).hasSize(1);
        assertThat(proxy.drains.get(0).getShardId()).isEqualTo("s-1");
        assertThat(atDrain.get()).as("counters when DrainShard was called").containsOnly(10f);
        assertThat(proxy.deregistrations).hasSize(1);
        assertThat(events).containsExactly("drain");
    }

    /**
     * Starts shard s-1 with a row pushed, then closes it in the background against a proxy whose DrainShard hands every
     * slot to another shard at epoch 2 and lists them all as kept here; returns the closing once they are kept.
     */
    private CompletableFuture<Void> drainKeepingEverySlot(final ShardServer.Context context) throws Exception {
        start(context.shardId("s-1"));
        push(1, 1, 1, 2, 3);
        proxy.drainEpoch = 2;
        proxy.onDrain = () -> {
            proxy.keepMovedSlots = IntStream.range(0, Slots.SLOT_COUNT).boxed().toList();
            proxy.routing = id -> TestRouting.allSlotsTo("s-2", 2);
        };
        final CompletableFuture<Void> closing = CompletableFuture.runAsync(() -> {
            try {
                server.close();
            } catch (InterruptedException e) {
                throw new IllegalStateException(e);
            }
        });
        await().atMost(GENEROUS).until(() -> server.shard().keptMovedSlotCount() == Slots.SLOT_COUNT);
        return closing;
    }

    /**
     * After the hand-over the shard keeps the rows of every slot it handed over, and stops (deregisters) only once the
     * proxy no longer lists them (their new owners restored them): a damaged drain checkpoint can still be undone.
     */
    @Test
    void shouldKeepTheHandedOverRowsUntilTheProxyNoLongerListsThemThenStop() throws Exception {
        final CompletableFuture<Void> closing = drainKeepingEverySlot(context());

        final int beats = proxy.heartbeats.size();
        await().atMost(GENEROUS).until(() -> proxy.heartbeats.size() >= beats + 3);
        assertThat(closing).as("still keeping the rows").isNotDone();
        assertThat(proxy.deregistrations).isEmpty();
        assertThat(server.shard().table(TABLE).rowCount())
                .as("the rows are kept")
                .isEqualTo(3);

        proxy.keepMovedSlots = List.of();

        closing.get(GENEROUS.toSeconds(), TimeUnit.SECONDS);
        assertThat(proxy.drains).hasSize(1);
        assertThat(proxy.deregistrations).hasSize(1);
        assertThat(server.shard().keptMovedSlotCount()).isZero();
    }

    /**
     * The proxy forgets the draining shard while it keeps the rows (its lease lapsed): it registers again saying it
     * drains, so that the proxy gives it no slot, and goes on waiting.
     */
    @Test
    void shouldSayItDrainsWhenItRegistersAgainWhileKeepingTheRows() throws Exception {
        final CompletableFuture<Void> closing = drainKeepingEverySlot(context());
        final int registrations = proxy.registrations.size();

        try {
            proxy.forgetShard.set(1);

            await().atMost(GENEROUS).until(() -> proxy.registrations.size() > registrations);
            assertThat(proxy.registrations.get(registrations).getDraining()).isTrue();
            assertThat(proxy.registrations.get(0).getDraining())
                    .as("its first registration")
                    .isFalse();
            assertThat(closing).as("still keeping the rows").isNotDone();
        } finally {
            proxy.keepMovedSlots = List.of();
        }
        closing.get(GENEROUS.toSeconds(), TimeUnit.SECONDS);
    }

    /**
     * A retried DrainShard (the first answer was lost) hands nothing over, its slots being gone already, but the proxy
     * still counts on the rows kept here: the shard waits all the same (a hostile review found it stopped at once).
     */
    @Test
    void shouldKeepTheRowsWhenARetriedDrainHandsNothingOverButTheyAreStillListed() throws Exception {
        proxy.drainSlots = 0;

        final CompletableFuture<Void> closing = drainKeepingEverySlot(context());

        final int beats = proxy.heartbeats.size();
        await().atMost(GENEROUS).until(() -> proxy.heartbeats.size() >= beats + 3);
        assertThat(closing).as("still keeping the rows").isNotDone();
        proxy.keepMovedSlots = List.of();
        closing.get(GENEROUS.toSeconds(), TimeUnit.SECONDS);
        assertThat(proxy.deregistrations).hasSize(1);
    }

    /**
     * The proxy gives the handed-over slots back (their checkpoint was damaged) with an order to serve the rows kept
     * here: the shard takes them back and drains again, then stops once the second hand-over is restored.
     */
    @Test
    void shouldDrainAgainWhenTheProxyGivesTheSlotsBack() throws Exception {
        final CompletableFuture<Void> closing = drainKeepingEverySlot(context());

        proxy.onDrain = () -> {
            proxy.keepMovedSlots = List.of();
            proxy.routing = id -> TestRouting.allSlotsTo("s-2", 4);
        };
        proxy.drainEpoch = 4;
        // As a proxy does it: the slots are routed back first, then the take-back is ordered (the other order let the
        // shard take the rows back while the routing still sent every slot elsewhere, and stop without draining).
        proxy.routing = id -> TestRouting.allSlotsTo("s-1", 3);
        proxy.orders.add(RestoreDirective.newBuilder()
                .setOrderId(7)
                .setShardId("s-1")
                .setFromShard("s-2")
                .setCheckpointId(1)
                .setTakeBackKeptRows(true)
                .addAllSlots(IntStream.range(0, Slots.SLOT_COUNT).boxed().toList())
                .build());

        closing.get(GENEROUS.toSeconds(), TimeUnit.SECONDS);
        assertThat(proxy.drains).as("drained again").hasSize(2);
        assertThat(proxy.orders).as("the take-back reported done").isEmpty();
        assertThat(proxy.deregistrations).hasSize(1);
    }

    /** Without answers from the proxy for a lease, the proxy no longer counts on the kept rows: the shard stops. */
    @Test
    void shouldStopKeepingTheHandedOverRowsWhenTheProxyDoesNotAnswerWithinALease() throws Exception {
        proxy.leaseMillis = 1_000;
        // Past GENEROUS: a shard that kept waiting fails the test rather than stopping at this timeout.
        final CompletableFuture<Void> closing =
                drainKeepingEverySlot(context().drainTimeoutMs(3 * GENEROUS.toMillis()));
        assertThat(closing).isNotDone();

        proxy.heartbeatFailure = Status.UNAVAILABLE.withDescription("proxy partitioned away");

        closing.get(GENEROUS.toSeconds(), TimeUnit.SECONDS);
        assertThat(proxy.drains).hasSize(1);
    }

    @Test
    void shouldStillDeregisterWhenDrainShardFails() throws Exception {
        proxy.drainFailure = Status.INTERNAL.withDescription("proxy broken");
        start(context());

        server.close();

        assertThat(proxy.drains).hasSize(1);
        assertThat(proxy.deregistrations).hasSize(1);
    }

    @Test
    void shouldAskAgainUntilItsTimeoutWhileTheProxyCannotTakeTheSlotsYet() throws Exception {
        // As when a restore elsewhere (or this shard's own, not yet reported) is still outstanding.
        proxy.drainFailure = Status.FAILED_PRECONDITION.withDescription("a restore is outstanding");
        start(context().drainTimeoutMs(1_500));

        server.close();

        assertThat(proxy.drains).as("DrainShard calls").hasSizeGreaterThan(1);
        assertThat(proxy.deregistrations).hasSize(1);
    }

    @Test
    void shouldNotCallDrainShardWhenDrainOnCloseIsOff() throws Exception {
        start(context().drainOnClose(false));

        server.close();

        assertThat(proxy.drains).isEmpty();
        assertThat(proxy.deregistrations).hasSize(1);
    }

    // ---- logging

    @Test
    void shouldLogOneWarningNamingTheProxyWhenItIsUnreachableAndOneLineWhenItIsBack() throws Exception {
        final Logger logger = (Logger) LoggerFactory.getLogger(ProxyLink.class);
        final ListAppender<ILoggingEvent> appender = new ListAppender<>();
        appender.start();
        logger.addAppender(appender);
        final Level level = logger.getLevel();
        logger.setLevel(Level.INFO);
        try {
            start(context());
            final int beats = proxy.heartbeats.size();

            proxy.heartbeatFailure = Status.UNAVAILABLE.withDescription("down for the test");
            await().atMost(GENEROUS).until(() -> proxy.heartbeats.size() >= beats + 6);
            proxy.heartbeatFailure = null;
            await().atMost(GENEROUS)
                    .until(() -> appender.list.stream()
                            .anyMatch(event -> event.getFormattedMessage().contains("reachable again")));

            final List<String> warnings = appender.list.stream()
                    .filter(event -> event.getLevel() == Level.WARN)
                    .map(ILoggingEvent::getFormattedMessage)
                    .toList();
            assertThat(warnings)
                    .singleElement()
                    .asString()
                    .contains("cannot reach the proxy at " + proxy.address(), "down for the test");
            assertThat(appender.list.stream()
                            .map(ILoggingEvent::getFormattedMessage)
                            .filter(message -> message.contains("reachable again")))
                    .singleElement()
                    .asString()
                    .matches("proxy at " + proxy.address() + " reachable again after \\d+ failed heartbeats");
        } finally {
            logger.detachAppender(appender);
            logger.setLevel(level);
        }
    }
}
