package io.pscluster.worker;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatCode;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.catchThrowable;
import static org.awaitility.Awaitility.await;

import io.grpc.Deadline;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.pscluster.proto.v1.PushRequest;
import io.pscluster.proto.v1.RollbackEvent;
import io.pscluster.wire.PsException;
import io.pscluster.wire.Slots;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.stream.LongStream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** The SDK's retries, push ids, routing refreshes, rollback reports and close() against loopback gRPC fakes. */
class PsClientFailoverTest {
    private static final long[] KEYS = LongStream.range(0, 200).toArray();

    private final List<AutoCloseable> closing = new ArrayList<>();
    private ScriptedProxy proxy;

    @BeforeEach
    void startProxy() throws Exception {
        proxy = new ScriptedProxy();
        closing.add(proxy);
    }

    @AfterEach
    void closeAll() throws Exception {
        for (int i = closing.size() - 1; i >= 0; i--) {
            closing.get(i).close();
        }
    }

    private ScriptedShard shard() throws Exception {
        final ScriptedShard shard = new ScriptedShard();
        closing.add(shard);
        return shard;
    }

    private PsClient connect(final PsClient.Context context) {
        // Connecting is not under test: on a loaded machine the first routing fetch can outlast a short deadline
        // a test sets for the call it is about, so a connect that ran out of time is tried again (a few times).
        for (int attempt = 1; ; attempt++) {
            try {
                final PsClient client = PsClient.connect(context.proxyAddress(proxy.address()));
                closing.add(client);
                return client;
            } catch (StatusRuntimeException e) {
                if (e.getStatus().getCode() != Status.Code.DEADLINE_EXCEEDED || attempt == 5) {
                    throw e;
                }
            }
        }
    }

    private PsClient connect() {
        return connect(quiet());
    }

    /** No background refresh within a test's life, so that proxy calls are only those the test causes. */
    private static PsClient.Context quiet() {
        return new PsClient.Context().routingRefreshMs(3_600_000).deadlineMs(20_000);
    }

    private static float[] ones(final long[] keys) {
        final float[] gradients = new float[keys.length];
        java.util.Arrays.fill(gradients, 1f);
        return gradients;
    }

    private static Set<Long> set(final long[] keys) {
        final Set<Long> set = new HashSet<>();
        for (final long key : keys) {
            set.add(key);
        }
        return set;
    }

    @Test
    void shouldApplyOnceWithTheSameIdsWhenAShardAppliedThePushButItsAnswerWasLost() throws Exception {
        final ScriptedShard shard = shard().then(ScriptedShard.applyThenLoseAnswer());
        proxy.routing = ScriptedProxy.allTo(1, shard.address());
        final PsClient client = connect();

        client.table("t").push(KEYS, ones(KEYS));

        assertThat(shard.pushes).hasSize(2);
        final PushRequest first = shard.pushes.get(0);
        final PushRequest retry = shard.pushes.get(1);
        assertThat(first.getClientId()).isEqualTo(client.clientId()).isNotZero();
        assertThat(first.getSequence()).isPositive();
        assertThat(retry.getClientId()).isEqualTo(first.getClientId());
        assertThat(retry.getSequence()).isEqualTo(first.getSequence());
        assertThat(first.getPartial()).isFalse();
        assertThat(retry.getPartial())
                .as("a retry of the whole request is no part")
                .isFalse();
        assertThat(shard.applied).hasSize(KEYS.length).containsExactlyInAnyOrderElementsOf(set(KEYS));
    }

    @Test
    void shouldSplitALargePushIntoEvenRequestsOfAboutOneMebibyte() throws Exception {
        final ScriptedShard shard = shard();
        proxy.routing = ScriptedProxy.allTo(1, shard.address());
        final PsClient client = connect();
        final long[] keys = LongStream.range(0, 300_000).map(i -> i * 7_919).toArray();

        client.table("t").push(keys, ones(keys));

        // Dim 1: 12 bytes a key, so 3.6 MB, which is 3.4 MiB: 3 requests of whole slots of about 1.2 MB each.
        assertThat(shard.pushes).hasSize(3);
        for (int i = 0; i < shard.pushes.size(); i++) {
            final PushRequest request = shard.pushes.get(i);
            final int bytes = request.getKeys().size() + request.getGradients().size();
            assertThat(bytes).as("request %d", i).isBetween(3_600_000 / 3 * 15 / 16, 3_600_000 / 3 * 17 / 16);
        }
        assertThat(shard.applied).hasSize(keys.length);
    }

    @Test
    void shouldSplitAPullOfAKeyRepeatedManyTimesIntoRequestsOfAboutOneMebibyte() throws Exception {
        final ScriptedShard shard = shard();
        proxy.routing = ScriptedProxy.allTo(1, shard.address());
        final PsClient client = connect();
        // One key 300,000 times, and a few others: one slot of 2.4 MB of keys. Whole slots would make it one request.
        final long[] keys = new long[300_005];
        Arrays.fill(keys, 7_919L);
        for (int i = 0; i < 5; i++) {
            keys[300_000 + i] = 1_000_000_007L * (i + 1);
        }

        final float[] values = client.table("t").pull(keys);

        // 12 bytes a key (8 sent, 4 back), as a push's: 3.6 MB in 3 requests of about 1.2 MB each.
        assertThat(shard.pulls)
                .extracting(request -> request.getKeys().size() * 3 / 2)
                .hasSize(3)
                .allSatisfy(bytes -> assertThat(bytes).isBetween(3_600_000 / 3 * 15 / 16, 3_600_000 / 3 * 17 / 16));
        final float[] expected = new float[keys.length];
        for (int i = 0; i < keys.length; i++) {
            expected[i] = ScriptedShard.valueOf(keys[i]);
        }
        assertThat(values).as("every repeat's value in its place").isEqualTo(expected);
    }

    @Test
    void shouldSendACallJustOverOneMebibyteInOneRequest() throws Exception {
        final ScriptedShard shard = shard();
        proxy.routing = ScriptedProxy.allTo(1, shard.address());
        final PsClient client = connect();
        // Dim 1: 100,000 keys are 1.2 MB, 1.14 MiB: one request rather than a full one and a sliver.
        final long[] keys = LongStream.range(0, 100_000).map(i -> i * 7_919).toArray();

        client.table("t").push(keys, ones(keys));

        assertThat(shard.pushes).hasSize(1);
        assertThat(shard.applied).hasSize(keys.length);
    }

    @Test
    void shouldTakeANewSequenceForEachNewPushOfAClient() throws Exception {
        final ScriptedShard shard = shard();
        proxy.routing = ScriptedProxy.allTo(1, shard.address());
        final PsClient client = connect();
        final PsTable table = client.table("t");

        table.push(KEYS, ones(KEYS));
        table.push(KEYS, ones(KEYS));

        assertThat(shard.pushes).extracting(PushRequest::getSequence).doesNotHaveDuplicates();
        assertThat(shard.applied).hasSize(2 * KEYS.length);
    }

    @Test
    void shouldRetryWithTheSameIdsWhenAnAttemptHangsPastTheAttemptTimeout() throws Exception {
        final ScriptedShard shard = shard().then(ScriptedShard.HANG);
        proxy.routing = ScriptedProxy.allTo(1, shard.address());
        final PsClient client = connect(quiet().attemptTimeoutMs(300).deadlineMs(20_000));

        final long started = System.nanoTime();
        client.table("t").push(KEYS, ones(KEYS));

        // Without a per-attempt deadline the hung attempt takes the whole 20 s call deadline and the call fails.
        assertThat(Duration.ofNanos(System.nanoTime() - started)).isLessThan(Duration.ofSeconds(10));
        assertThat(shard.pushes).hasSize(2);
        assertThat(shard.pushes.get(1).getSequence())
                .isEqualTo(shard.pushes.get(0).getSequence())
                .isPositive();
        assertThat(shard.applied).hasSize(KEYS.length);
    }

    @Test
    void shouldKeepTheSequenceWhenARetryIsReSplitAfterARoutingRefresh() throws Exception {
        final ScriptedShard low = shard();
        final ScriptedShard high = shard();
        final List<String> both = List.of(low.address(), high.address());
        proxy.routing = ScriptedProxy.routing(1, both, slot -> 0);
        // The first push finds half of its slots moved to the other shard.
        low.then(ScriptedShard.wrongOwner(() ->
                proxy.routing = ScriptedProxy.routing(2, both, slot -> slot < Slots.SLOT_COUNT / 2 ? 0 : 1)));
        final PsClient client = connect();

        client.table("t").push(KEYS, ones(KEYS));

        assertThat(low.pushes).hasSize(2);
        assertThat(high.pushes).hasSize(1);
        final long sequence = low.pushes.get(0).getSequence();
        assertThat(sequence).isPositive();
        assertThat(low.pushes.get(1).getSequence()).isEqualTo(sequence);
        assertThat(high.pushes.get(0).getSequence()).isEqualTo(sequence);
        assertThat(low.pushes.get(0).getPartial()).isFalse();
        assertThat(low.pushes.get(1).getPartial()).as("re-split parts").isTrue();
        assertThat(high.pushes.get(0).getPartial()).isTrue();
        assertThat(low.pushes.get(1).getRoutingEpoch()).isEqualTo(2);
        assertThat(ScriptedShard.keysOf(low.pushes.get(1))).isNotEmpty();
        assertThat(ScriptedShard.keysOf(high.pushes.get(0))).isNotEmpty();
        final List<Long> applied = new ArrayList<>(low.applied);
        applied.addAll(high.applied);
        assertThat(applied).hasSize(KEYS.length).containsExactlyInAnyOrderElementsOf(set(KEYS));
    }

    @Test
    void shouldKeepTheSequenceForAPartBoundForAShardThatAlreadyAppliedASiblingPart() throws Exception {
        final ScriptedShard low = shard();
        final ScriptedShard high = shard();
        final List<String> both = List.of(low.address(), high.address());
        proxy.routing = ScriptedProxy.routing(1, both, slot -> 0);
        low.then(ScriptedShard.wrongOwner(() ->
                proxy.routing = ScriptedProxy.routing(2, both, slot -> slot < Slots.SLOT_COUNT / 2 ? 0 : 1)));
        // The high part is refused once its sibling was applied (and answered) on the low shard, and every slot
        // moves back to the low shard. It keeps the sequence, marked partial: the shard remembers which slots it
        // accepted that sequence for and applies a part for others (ShardPushDedupeTest), and a shard that took over
        // its slots with the rows of a checkpoint that holds it can tell it for a repeat, which under a fresh sequence
        // it could not.
        high.then((shard, request, response) -> {
            await().atMost(Duration.ofSeconds(10)).until(() -> low.applied.size() > 0);
            ScriptedShard.wrongOwner(() -> proxy.routing = ScriptedProxy.routing(3, both, slot -> 0))
                    .answer(shard, request, response);
        });
        final PsClient client = connect();

        client.table("t").push(KEYS, ones(KEYS));

        assertThat(low.pushes).hasSize(3);
        assertThat(low.pushes.get(2).getSequence()).isEqualTo(low.pushes.get(1).getSequence());
        assertThat(low.pushes.get(2).getPartial()).isTrue();
        assertThat(low.applied).hasSize(KEYS.length).containsExactlyInAnyOrderElementsOf(set(KEYS));
    }

    enum FinalStatus {
        INVALID_ARGUMENT(Status.INVALID_ARGUMENT.withDescription("bad gradients")),
        ROW_CAP(Status.RESOURCE_EXHAUSTED.withDescription("table 't' is full on this shard")),
        NOT_FOUND(Status.NOT_FOUND.withDescription("table 't' does not exist")),
        FAILED_PRECONDITION(Status.FAILED_PRECONDITION.withDescription("sequence below the window"));

        final Status status;

        FinalStatus(final Status status) {
            this.status = status;
        }
    }

    /**
     * A retry the shard can no longer tell from a push it applied (its sequence older than what it remembers) fails
     * with the outcome unknown, so that the caller does not push the same gradients again as if nothing had been
     * applied; a plain FAILED_PRECONDITION leaves it known (nothing applied).
     */
    @Test
    void shouldSayTheOutcomeIsUnknownWhenTheShardRefusesARetryThatMayHaveBeenApplied() throws Exception {
        final ScriptedShard shard = shard().then(
                        ScriptedShard.applyThenLoseAnswer(),
                        (scripted, request, response) -> response.onError(
                                PsException.toStatus(PsException.mayHaveBeenApplied("sequence older than the window"))))
                .then(ScriptedShard.fail(FinalStatus.FAILED_PRECONDITION.status));
        proxy.routing = ScriptedProxy.allTo(1, shard.address());
        final PsClient client = connect();

        final Throwable maybeApplied = catchThrowable(() -> client.table("t").push(KEYS, ones(KEYS)));
        final Throwable refused = catchThrowable(() -> client.table("t").push(KEYS, ones(KEYS)));

        assertThat(maybeApplied).isInstanceOf(StatusRuntimeException.class);
        assertThat(((StatusRuntimeException) maybeApplied).getStatus().getCode())
                .isEqualTo(Status.Code.FAILED_PRECONDITION);
        assertThat(PsTable.outcomeUnknown(maybeApplied))
                .as("may have been applied")
                .isTrue();
        assertThat(PsTable.outcomeUnknown(refused))
                .as("refused: nothing applied")
                .isFalse();
    }

    /**
     * A push over two shards, one of which refuses its request for good at once while the other's request may have
     * been applied (its answer lost, then its retry refused as possibly applied): the call's failure says the outcome
     * is unknown, whichever request's failure it carries.
     */
    @Test
    void shouldSayTheOutcomeIsUnknownWhenAnyRequestOfACallLeavesItUnknown() throws Exception {
        final ScriptedShard refusing =
                shard().then(ScriptedShard.fail(Status.NOT_FOUND.withDescription("table 't' does not exist")));
        final ScriptedShard applying = shard().then(
                        ScriptedShard.applyThenLoseAnswer(),
                        (scripted, request, response) -> response.onError(PsException.toStatus(
                                PsException.mayHaveBeenApplied("sequence older than the window"))));
        proxy.routing = ScriptedProxy.routing(
                1, List.of(refusing.address(), applying.address()), slot -> slot < Slots.SLOT_COUNT / 2 ? 0 : 1);
        final PsClient client = connect();

        final Throwable failed = catchThrowable(() -> client.table("t").push(KEYS, ones(KEYS)));

        assertThat(failed).isInstanceOf(StatusRuntimeException.class);
        assertThat(refusing.pushes).isNotEmpty();
        assertThat(applying.applied).as("keys the second shard applied").isNotEmpty();
        assertThat(PsTable.outcomeUnknown(failed))
                .as("part of the push may have been applied")
                .isTrue();
    }

    /**
     * A push whose first attempt got no answer (the shard may have applied it) and whose retry then failed for good
     * fails with the outcome unknown, whatever the retry's own failure says.
     */
    @Test
    void shouldKeepTheOutcomeUnknownWhenARetryAfterALostAnswerFailsForGood() throws Exception {
        final ScriptedShard shard = shard().then(
                        ScriptedShard.applyThenLoseAnswer(),
                        ScriptedShard.fail(Status.NOT_FOUND.withDescription("table 't' does not exist")));
        proxy.routing = ScriptedProxy.allTo(1, shard.address());
        final PsClient client = connect();

        final Throwable failed = catchThrowable(() -> client.table("t").push(KEYS, ones(KEYS)));

        assertThat(failed).isInstanceOf(StatusRuntimeException.class);
        assertThat(((StatusRuntimeException) failed).getStatus().getCode()).isEqualTo(Status.Code.NOT_FOUND);
        assertThat(PsTable.outcomeUnknown(failed))
                .as("the first attempt may have been applied")
                .isTrue();
        assertThat(shard.applied).as("the first attempt was applied").isNotEmpty();
    }

    /** A push whose first attempt never reached a shard (connection refused) and whose retry was refused applied nothing. */
    @Test
    void shouldKnowNothingWasAppliedWhenTheFirstAttemptsConnectionWasRefused() throws Exception {
        final int deadPort;
        try (java.net.ServerSocket socket = new java.net.ServerSocket(0)) {
            deadPort = socket.getLocalPort();
        }
        final ScriptedShard refusing =
                shard().then(ScriptedShard.fail(Status.NOT_FOUND.withDescription("table 't' does not exist")));
        proxy.routing = ScriptedProxy.allTo(1, "127.0.0.1:" + deadPort);
        final PsClient client = connect();
        proxy.routing = ScriptedProxy.allTo(2, refusing.address());

        final Throwable failed = catchThrowable(() -> client.table("t").push(KEYS, ones(KEYS)));

        assertThat(failed).isInstanceOf(StatusRuntimeException.class);
        assertThat(((StatusRuntimeException) failed).getStatus().getCode()).isEqualTo(Status.Code.NOT_FOUND);
        assertThat(refusing.applied).isEmpty();
        assertThat(PsTable.outcomeUnknown(failed))
                .as("no shard got the first attempt, and the retry was refused")
                .isFalse();
    }

    @ParameterizedTest
    @EnumSource(FinalStatus.class)
    void shouldFailAtOnceWithTheShardsStatusWhenItIsFinal(final FinalStatus answer) throws Exception {
        final ScriptedShard shard = shard().then(ScriptedShard.fail(answer.status));
        proxy.routing = ScriptedProxy.allTo(1, shard.address());
        final PsClient client = connect();

        assertThatThrownBy(() -> client.table("t").push(KEYS, ones(KEYS)))
                .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                    assertThat(e.getStatus().getCode()).isEqualTo(answer.status.getCode());
                    assertThat(e.getStatus().getDescription())
                            .isEqualTo("shard at " + shard.address() + ": " + answer.status.getDescription());
                });
        assertThat(shard.pushes).hasSize(1);
    }

    @Test
    void shouldWaitForAnOwnerAndSucceedWhenTheRoutingGivesOneWithinTheDeadline() throws Exception {
        final ScriptedShard shard = shard();
        proxy.routing = ScriptedProxy.routing(1, List.of(shard.address()), slot -> -1);
        final PsClient client = connect();
        final int atConnect = proxy.routingCalls.get();

        final CompletableFuture<Void> pushed = client.table("t").pushAsync(KEYS, ones(KEYS));
        await().atMost(Duration.ofSeconds(10)).until(() -> proxy.routingCalls.get() >= atConnect + 2);
        assertThat(pushed).isNotDone();
        proxy.routing = ScriptedProxy.allTo(2, shard.address());

        pushed.get(10, TimeUnit.SECONDS);
        assertThat(shard.pushes).hasSize(1);
        assertThat(shard.pushes.get(0).getRoutingEpoch()).isEqualTo(2);
    }

    /**
     * Keys no shard owned at first, then owned by two shards: both requests carry part of what their sequence stands
     * for, and say so (a shard keeps no part's sequence in checkpoints), though neither was ever sent whole.
     */
    @Test
    void shouldMarkEveryPartOfAnUnsentRequestSplitOverShardsAsPartial() throws Exception {
        final ScriptedShard low = shard();
        final ScriptedShard high = shard();
        final List<String> both = List.of(low.address(), high.address());
        proxy.routing = ScriptedProxy.routing(1, both, slot -> -1);
        final PsClient client = connect();
        final int atConnect = proxy.routingCalls.get();

        final CompletableFuture<Void> pushed = client.table("t").pushAsync(KEYS, ones(KEYS));
        await().atMost(Duration.ofSeconds(10)).until(() -> proxy.routingCalls.get() >= atConnect + 2);
        proxy.routing = ScriptedProxy.routing(2, both, slot -> slot < Slots.SLOT_COUNT / 2 ? 0 : 1);
        pushed.get(10, TimeUnit.SECONDS);

        assertThat(low.pushes)
                .singleElement()
                .satisfies(part -> assertThat(part.getPartial()).isTrue());
        assertThat(high.pushes)
                .singleElement()
                .satisfies(part -> assertThat(part.getPartial()).isTrue());
        assertThat(low.pushes.get(0).getSequence()).isEqualTo(high.pushes.get(0).getSequence());
    }

    @Test
    void shouldFailWithDeadlineExceededWhenNoShardOwnsTheSlotsUntilTheDeadline() throws Exception {
        final ScriptedShard shard = shard();
        proxy.routing = ScriptedProxy.routing(1, List.of(shard.address()), slot -> -1);
        final PsClient client = connect(quiet().deadlineMs(1_500));

        assertThatThrownBy(() -> client.table("t").push(KEYS, ones(KEYS)))
                .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                    assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.DEADLINE_EXCEEDED);
                    assertThat(e.getStatus().getDescription()).contains("no live shard owns");
                });
        assertThat(shard.pushes).isEmpty();
    }

    @Test
    void shouldCoalesceConcurrentRefreshesIntoOneProxyCall() throws Exception {
        final ScriptedShard shard = shard();
        proxy.routing = ScriptedProxy.allTo(1, shard.address());
        final PsClient client = connect();
        final int atConnect = proxy.routingCalls.get();
        final CountDownLatch release = new CountDownLatch(1);
        proxy.hold = release;
        proxy.routing = ScriptedProxy.allTo(2, shard.address());

        final List<CompletableFuture<Routing>> refreshes = new ArrayList<>();
        for (int i = 0; i < 8; i++) {
            refreshes.add(client.refreshRoutingAsync(Deadline.after(10, TimeUnit.SECONDS)));
        }
        await().atMost(Duration.ofSeconds(10)).until(() -> proxy.routingCalls.get() == atConnect + 1);
        assertThat(refreshes).noneMatch(CompletableFuture::isDone);
        release.countDown();

        for (final CompletableFuture<Routing> refresh : refreshes) {
            assertThat(refresh.get(10, TimeUnit.SECONDS).epoch()).isEqualTo(2);
        }
        assertThat(proxy.routingCalls.get()).isEqualTo(atConnect + 1);
        assertThat(client.routingEpoch()).isEqualTo(2);
    }

    @Test
    void shouldNotWaitForARefreshPastTheCallersDeadline() throws Exception {
        final ScriptedShard shard = shard();
        proxy.routing = ScriptedProxy.allTo(1, shard.address());
        final PsClient client = connect();
        proxy.hold = new CountDownLatch(1);

        final CompletableFuture<Routing> slow = client.refreshRoutingAsync(Deadline.after(20, TimeUnit.SECONDS));
        final CompletableFuture<Routing> hurried =
                client.refreshRoutingAsync(Deadline.after(200, TimeUnit.MILLISECONDS));

        assertThatThrownBy(() -> hurried.get(5, TimeUnit.SECONDS))
                .hasCauseInstanceOf(StatusRuntimeException.class)
                .hasMessageContaining("DEADLINE_EXCEEDED");
        assertThat(slow).isNotDone();
    }

    private static RollbackEvent rollback(final long id) {
        return RollbackEvent.newBuilder()
                .setId(id)
                .setAtMillis(1_700_000_000_000L + id)
                .setFromShard("s-" + id)
                .addToShards("s-9")
                .setSlotCount(1365)
                .setCheckpointId(7)
                .setCheckpointCreatedMillis(1_700_000_000_000L)
                .setReason("shard s-" + id + " missed its lease")
                .build();
    }

    @Test
    void shouldKeepItsOwnDeadlineWhenARefreshJoinsABackgroundOneThatTimesOut() throws Exception {
        final ScriptedShard shard = shard();
        proxy.routing = ScriptedProxy.allTo(1, shard.address());
        // Background refreshes every 100 ms, each with a 100 ms deadline; the caller's own deadline is 20 s.
        final PsClient client = connect(quiet().routingRefreshMs(100));
        final CountDownLatch release = new CountDownLatch(1);
        proxy.hold = release;
        final int before = proxy.routingCalls.get();
        // A background refresh is waiting on the proxy: the caller's refresh joins it.
        await().atMost(Duration.ofSeconds(10)).until(() -> proxy.routingCalls.get() > before);
        final CompletableFuture<Void> refreshed = CompletableFuture.runAsync(client::refreshRouting);

        // The joined call runs out of its 100 ms; the caller, with time left, asks again.
        await().atMost(Duration.ofSeconds(10)).until(() -> proxy.routingCalls.get() >= before + 2);
        release.countDown();

        assertThatCode(() -> refreshed.get(10, TimeUnit.SECONDS)).doesNotThrowAnyException();
    }

    @Test
    void shouldReportEachRollbackOnceToEveryListenerWhenABackgroundRefreshFindsIt() throws Exception {
        final ScriptedShard shard = shard();
        proxy.routing = ScriptedProxy.allTo(1, shard.address(), rollback(1));
        final PsClient client = connect(quiet().routingRefreshMs(50));
        final List<RollbackEvent> heard = new CopyOnWriteArrayList<>();
        client.addRollbackListener(heard::add);

        // A client that makes no call at all learns of it from the background refresh.
        proxy.routing = ScriptedProxy.allTo(2, shard.address(), rollback(1), rollback(2));
        await().atMost(Duration.ofSeconds(10)).until(() -> !heard.isEmpty());
        final int calls = proxy.routingCalls.get();
        await().atMost(Duration.ofSeconds(10)).until(() -> proxy.routingCalls.get() >= calls + 3);
        client.refreshRouting();

        assertThat(heard).extracting(RollbackEvent::getId).containsExactly(2L);
        assertThat(heard.get(0).getCheckpointId()).isEqualTo(7);
        assertThat(client.rollbacks()).extracting(RollbackEvent::getId).containsExactly(2L);
        final List<RollbackEvent> late = new CopyOnWriteArrayList<>();
        client.addRollbackListener(late::add);
        assertThat(late).extracting(RollbackEvent::getId).containsExactly(2L);

        proxy.routing = ScriptedProxy.allTo(3, shard.address(), rollback(1), rollback(2), rollback(3));
        await().atMost(Duration.ofSeconds(10)).until(() -> heard.size() == 2 && late.size() == 2);
        client.refreshRouting();
        assertThat(heard).extracting(RollbackEvent::getId).containsExactly(2L, 3L);
        assertThat(late).extracting(RollbackEvent::getId).containsExactly(2L, 3L);
        assertThat(client.rollbacks()).hasSize(2);
    }

    @Test
    void shouldFailEveryPendingFutureWithCancelledWhenTheClientCloses() throws Exception {
        final ScriptedShard hung = shard().then(ScriptedShard.HANG);
        final ScriptedShard idle = shard();
        final List<String> both = List.of(hung.address(), idle.address());
        // Low slots go to a shard that never answers, high ones to no shard: one future waits on a call, the
        // other on a retry timer.
        proxy.routing = ScriptedProxy.routing(1, both, slot -> slot < Slots.SLOT_COUNT / 2 ? 0 : -1);
        final PsClient client = connect();
        final PsTable table = client.table("t");
        final long lowKey = LongStream.range(0, 1_000)
                .filter(key -> Slots.slotOf(Slots.tableHash("t"), key) < Slots.SLOT_COUNT / 2)
                .findFirst()
                .orElseThrow();
        final long highKey = LongStream.range(0, 1_000)
                .filter(key -> Slots.slotOf(Slots.tableHash("t"), key) >= Slots.SLOT_COUNT / 2)
                .findFirst()
                .orElseThrow();

        final CompletableFuture<Void> onCall = table.pushAsync(new long[] {lowKey}, new float[] {1});
        final CompletableFuture<Void> onTimer = table.pushAsync(new long[] {highKey}, new float[] {1});
        final CompletableFuture<float[]> pull = table.pullAsync(new long[] {highKey});
        await().atMost(Duration.ofSeconds(10)).until(() -> hung.pushes.size() == 1);
        client.close();

        for (final CompletableFuture<?> future : List.of(onCall, onTimer, pull)) {
            assertThatThrownBy(() -> future.get(5, TimeUnit.SECONDS))
                    .hasCauseInstanceOf(StatusRuntimeException.class)
                    .hasMessageContaining("CANCELLED: PsClient closed");
        }
        final CompletableFuture<Void> afterClose = table.pushAsync(new long[] {lowKey}, new float[] {1});
        assertThat(afterClose).isCompletedExceptionally();
        assertThatThrownBy(() -> table.pull(new long[] {lowKey}))
                .isInstanceOf(StatusRuntimeException.class)
                .hasMessage("CANCELLED: PsClient closed");
        assertThatThrownBy(() -> client.table("t")).hasMessage("CANCELLED: PsClient closed");
        assertThat(hung.pushes).hasSize(1);
    }

    @Test
    void shouldNameTheShardsAddressWhenTheShardCannotBeReached() throws Exception {
        final ScriptedShard gone = new ScriptedShard();
        final String address = gone.address();
        gone.close();
        proxy.routing = ScriptedProxy.allTo(1, address);
        final PsClient client = connect(quiet().deadlineMs(1_500).attemptTimeoutMs(500));

        assertThatThrownBy(() -> client.table("t").push(KEYS, ones(KEYS)))
                .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                    assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.DEADLINE_EXCEEDED);
                    assertThat(e.getStatus().getDescription())
                            .contains("last: UNAVAILABLE: shard at " + address + ": ");
                    assertThat(e.getCause()).isInstanceOfSatisfying(StatusRuntimeException.class, last -> {
                        assertThat(last.getStatus().getCode()).isEqualTo(Status.Code.UNAVAILABLE);
                        assertThat(last.getStatus().getDescription()).startsWith("shard at " + address + ": ");
                    });
                });
    }

    @Test
    void shouldRetryABackpressuredPushWithoutAskingTheProxy() throws Exception {
        final ScriptedShard shard = shard().then((s, request, response) -> response.onError(
                io.pscluster.wire.PsException.toStatus(io.pscluster.wire.PsException.backpressure("writers full"))));
        proxy.routing = ScriptedProxy.allTo(1, shard.address());
        final PsClient client = connect();
        final int atConnect = proxy.routingCalls.get();

        client.table("t").push(KEYS, ones(KEYS));

        assertThat(shard.pushes).hasSize(2);
        assertThat(proxy.routingCalls.get()).isEqualTo(atConnect);
    }

    /**
     * A shard of an older protocol (or behind an older proxy: none reported) would take a re-split push part for a repeat
     * and answer success: the SDK sends such a shard nothing, and no part of a call that reaches it goes anywhere. Once
     * the routing shows it upgraded, calls go through.
     */
    @Test
    void shouldSendNothingOfACallThatReachesAShardOfAnOlderProtocol() throws Exception {
        final ScriptedShard current = shard();
        final ScriptedShard older = shard();
        final List<String> addresses = List.of(current.address(), older.address());
        proxy.routing = ScriptedProxy.routing(
                1, addresses, new int[] {io.pscluster.wire.Protocol.VERSION, 0}, slot -> slot % 2);
        final PsClient client = connect();
        final PsTable table = client.table("t");

        for (final Runnable call : List.<Runnable>of(() -> table.push(KEYS, ones(KEYS)), () -> table.pull(KEYS))) {
            assertThatThrownBy(call::run).isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.FAILED_PRECONDITION);
                assertThat(e.getStatus().getDescription())
                        .contains(older.address(), "protocol 0", "upgrade the proxy and the shards");
            });
        }
        // Calls to every shard (a flush here; a job's clocks, joins and leaves alike) are refused before any is sent.
        assertThatThrownBy(client::flush).isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
            assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.FAILED_PRECONDITION);
            assertThat(e.getStatus().getDescription()).contains(older.address(), "protocol 0");
        });
        assertThat(current.pushes).isEmpty();
        assertThat(current.pulls).isEmpty();
        assertThat(older.pushes).isEmpty();
        assertThat(older.pulls).isEmpty();

        // Keys all on the current shard go through meanwhile.
        final long[] onCurrent = LongStream.range(0, 10_000)
                .filter(key -> Slots.slotOf(Slots.tableHash("t"), key) % 2 == 0)
                .limit(50)
                .toArray();
        table.push(onCurrent, ones(onCurrent));
        assertThat(current.pushes).hasSize(1);

        proxy.routing = ScriptedProxy.routing(1, addresses, slot -> slot % 2);
        client.refreshRouting();
        table.push(KEYS, ones(KEYS));
        assertThat(older.pushes).hasSize(1);
    }

    @Test
    void shouldJitterTheBackoffBetweenHalfAndAllOfItsCeilingAndCapIt() {
        for (int attempts = 0; attempts < 12; attempts++) {
            final long ceiling = Math.min(1_000, PsTable.FIRST_BACKOFF_MS << attempts);
            final Set<Long> seen = new HashSet<>();
            for (int i = 0; i < 500; i++) {
                final long wait = PsTable.backoffMs(attempts, 1_000);
                assertThat(wait).isBetween(ceiling / 2, ceiling);
                seen.add(wait);
            }
            assertThat(seen).hasSizeGreaterThan(1);
        }
    }

    @Test
    void shouldRefuseABadContextNamingTheFieldAndValue() {
        assertThatThrownBy(() -> PsClient.connect(
                        new PsClient.Context().proxyAddress("127.0.0.1:1").attemptTimeoutMs(0)))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessage("attemptTimeoutMs=0 must be > 0");
        assertThatThrownBy(() -> PsClient.connect(
                        new PsClient.Context().proxyAddress("127.0.0.1:1").routingRefreshMs(-5)))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessage("routingRefreshMs=-5 must be > 0");
    }
}
