package io.pscluster.server;

import com.google.protobuf.UnsafeByteOperations;
import io.grpc.Context;
import io.grpc.ServerMethodDefinition;
import io.grpc.ServerServiceDefinition;
import io.grpc.ServiceDescriptor;
import io.grpc.stub.ServerCallStreamObserver;
import io.grpc.stub.ServerCalls;
import io.grpc.stub.StreamObserver;
import io.pscluster.proto.v1.ClockRequest;
import io.pscluster.proto.v1.ClockResponse;
import io.pscluster.proto.v1.CreateTableRequest;
import io.pscluster.proto.v1.CreateTableResponse;
import io.pscluster.proto.v1.DescribeTableRequest;
import io.pscluster.proto.v1.DescribeTableResponse;
import io.pscluster.proto.v1.DropTableRequest;
import io.pscluster.proto.v1.DropTableResponse;
import io.pscluster.proto.v1.FlushRequest;
import io.pscluster.proto.v1.FlushResponse;
import io.pscluster.proto.v1.PullRequest;
import io.pscluster.proto.v1.PullResponse;
import io.pscluster.proto.v1.PushRequest;
import io.pscluster.proto.v1.PushResponse;
import io.pscluster.proto.v1.ShardServiceGrpc;
import io.pscluster.proto.v1.TableStats;
import io.pscluster.server.table.ParameterTable;
import io.pscluster.server.table.PartitionWriters;
import io.pscluster.wire.LittleEndian;
import io.pscluster.wire.PsException;
import io.pscluster.wire.Unary;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.Executor;

/** The shard's data plane over gRPC: decodes requests, calls {@link Shard}, maps failures to statuses. */
final class ShardDataService extends ShardServiceGrpc.ShardServiceImplBase {
    private final Shard shard;
    private final Runnable routingRefresh;
    private final FaultPoints faults;
    // The gRPC handlers' executor: a pull released from its wait is answered there, not on the shard's clock threads.
    private final Executor handlers;

    /** @param routingRefresh asks the proxy for the routing table soon; called when a client knows a newer epoch. */
    ShardDataService(
            final Shard shard, final Runnable routingRefresh, final FaultPoints faults, final Executor handlers) {
        this.shard = shard;
        this.routingRefresh = routingRefresh;
        this.faults = faults;
        this.handlers = handlers;
    }

    /**
     * The generated definition, but pushes decoded by a {@link PushDecoder}: their keys and gradients are decoded
     * straight from the bytes each request arrived in, not from copies of them. Serve this, not
     * {@link #bindService()}.
     */
    ServerServiceDefinition definition() {
        final ServerServiceDefinition generated = bindService();
        final ServiceDescriptor service = generated.getServiceDescriptor();
        final ServiceDescriptor.Builder descriptor =
                ServiceDescriptor.newBuilder(service.getName()).setSchemaDescriptor(service.getSchemaDescriptor());
        final List<ServerMethodDefinition<?, ?>> methods = new ArrayList<>();
        for (final ServerMethodDefinition<?, ?> method : generated.getMethods()) {
            final ServerMethodDefinition<?, ?> bound = method.getMethodDescriptor() == ShardServiceGrpc.getPushMethod()
                    ? ServerMethodDefinition.create(PushDecoder.method(), ServerCalls.asyncUnaryCall(this::push))
                    : method;
            descriptor.addMethod(bound.getMethodDescriptor());
            methods.add(bound);
        }
        final ServerServiceDefinition.Builder builder = ServerServiceDefinition.builder(descriptor.build());
        methods.forEach(builder::addMethod);
        return builder.build();
    }

    @Override
    public void createTable(final CreateTableRequest request, final StreamObserver<CreateTableResponse> response) {
        Unary.respond(
                response,
                () -> CreateTableResponse.newBuilder()
                        .setCreated(shard.createTable(request.getSchema()))
                        .build());
    }

    @Override
    public void describeTable(
            final DescribeTableRequest request, final StreamObserver<DescribeTableResponse> response) {
        Unary.respond(response, () -> {
            final ParameterTable table = shard.table(request.getTable());
            return DescribeTableResponse.newBuilder()
                    .setSchema(table.schema())
                    .setStats(TableStats.newBuilder()
                            .setName(table.name())
                            .setRows(table.rowCount())
                            .setBytes(table.bytes()))
                    .build();
        });
    }

    @Override
    public void dropTable(final DropTableRequest request, final StreamObserver<DropTableResponse> response) {
        Unary.respond(
                response,
                () -> DropTableResponse.newBuilder()
                        .setDropped(shard.dropTable(request.getTable()))
                        .build());
    }

    @Override
    public void push(final PushRequest request, final StreamObserver<PushResponse> response) {
        push(PushDecoder.decoded(request), response);
    }

    private void push(final PushDecoder.DecodedPush push, final StreamObserver<PushResponse> response) {
        followNewerEpoch(push.routingEpoch());
        final Context call = Context.current();
        if (faults.fire(FaultPoints.DELAY_PUSHES)) {
            // Later, off the handler thread: requests behind it (a checkpoint's cut) go on meanwhile.
            faults.later(() -> takePush(push, response, call), FaultPoints.PUSH_DELAY_MS);
            return;
        }
        if (faults.holdPush(() -> takePush(push, response, call))) {
            return;
        }
        takePush(push, response, call);
    }

    private void takePush(
            final PushDecoder.DecodedPush push, final StreamObserver<PushResponse> response, final Context call) {
        if (call.isCancelled()) {
            // The client gave up (its attempt's deadline passed, or it cancelled) before the push was taken: it has
            // been told the outcome is unknown, and a push it never hears of must not change the table later.
            Unary.respond(response, () -> {
                throw PsException.unavailable("the call of a push to table '" + push.table() + "' ended (deadline or"
                        + " cancel) before shard " + shard.shardId() + " took it: not applied");
            });
            return;
        }
        // The answer goes first, then the writers the push was queued to are woken, while it travels.
        final PartitionWriters.DeferredWakes wakes = shard.deferredWakes();
        try {
            answerPush(push, response, wakes);
        } finally {
            wakes.wakeNow();
        }
    }

    private void answerPush(
            final PushDecoder.DecodedPush push,
            final StreamObserver<PushResponse> response,
            final PartitionWriters.DeferredWakes wakes) {
        Unary.respond(response, () -> {
            // Not decoded when a length was not a whole number of values: decoding here names the field.
            final PushRequest undecodable = push.undecodable();
            final long[] keys =
                    undecodable == null ? push.keys() : LittleEndian.decodeLongs(undecodable.getKeys(), "keys");
            final float[] gradients = undecodable == null
                    ? push.gradients()
                    : LittleEndian.decodeFloats(undecodable.getGradients(), "gradients");
            final Shard.PushResult result = shard.push(
                    push.table(),
                    push.routingEpoch(),
                    push.clientId(),
                    push.sequence(),
                    push.partial(),
                    keys,
                    gradients,
                    new Shard.JobTag(push.jobId(), push.workerId(), push.clock()),
                    wakes);
            if (faults.fire(FaultPoints.LOSE_PUSH_ANSWER)) {
                throw PsException.unavailable("fault injected: the answer to an accepted push was lost");
            }
            return PushResponse.newBuilder()
                    .setAccepted(result.accepted())
                    .setDuplicate(result.duplicate())
                    .build();
        });
    }

    /**
     * A pull from a SYNC or SSP job's worker waits here, holding no thread, until the shard has the parameters the
     * worker may read at its clock; the wait ends with the call (its deadline, or the caller cancelling it).
     */
    @Override
    public void pull(final PullRequest request, final StreamObserver<PullResponse> response) {
        followNewerEpoch(request.getRoutingEpoch());
        final Shard.JobTag tag = new Shard.JobTag(request.getJobId(), request.getWorkerId(), request.getClock());
        final JobClocks.Wait wait;
        try {
            final Thread caller = Thread.currentThread();
            wait = shard.whenReadable(
                    tag,
                    () -> {
                        if (Thread.currentThread() == caller) {
                            answerPull(request, response, tag);
                        } else {
                            handlers.execute(() -> answerPull(request, response, tag));
                        }
                    },
                    failure -> fail(response, failure));
        } catch (RuntimeException e) {
            fail(response, e);
            return;
        }
        if (wait != null) {
            Context.current().addListener(context -> wait.cancel(), Runnable::run);
        }
    }

    private void answerPull(
            final PullRequest request, final StreamObserver<PullResponse> response, final Shard.JobTag tag) {
        if (response instanceof ServerCallStreamObserver<PullResponse> call && call.isCancelled()) {
            return;
        }
        Unary.respond(response, () -> {
            final long[] keys = LittleEndian.decodeLongs(request.getKeys(), "keys");
            return PullResponse.newBuilder()
                    .setValues(UnsafeByteOperations.unsafeWrap(
                            shard.pull(request.getTable(), request.getRoutingEpoch(), keys, tag)))
                    .build();
        });
    }

    @Override
    public void clock(final ClockRequest request, final StreamObserver<ClockResponse> response) {
        final CompletableFuture<JobClocks.Reported> reported;
        try {
            reported = shard.endClock(
                    request.getJobId(), request.getWorkerId(), request.getEndedClock(), request.getJoin());
        } catch (RuntimeException e) {
            fail(response, e);
            return;
        }
        answerWhenDone(
                reported.thenApply(answer -> ClockResponse.newBuilder()
                        .setAccepted(answer.accepted())
                        .setAppliedClock(answer.applied())
                        .build()),
                response);
    }

    @Override
    public void flush(final FlushRequest request, final StreamObserver<FlushResponse> response) {
        answerWhenDone(shard.flush().thenApply(done -> FlushResponse.getDefaultInstance()), response);
    }

    /** Completes a unary call with what {@code answer} completes with, or with its failure's status. */
    private static <T> void answerWhenDone(final CompletableFuture<T> answer, final StreamObserver<T> response) {
        answer.whenComplete((value, failure) -> {
            if (failure != null) {
                fail(response, failure instanceof CompletionException ? failure.getCause() : failure);
                return;
            }
            response.onNext(value);
            response.onCompleted();
        });
    }

    private static void fail(final StreamObserver<?> response, final Throwable failure) {
        if (response instanceof ServerCallStreamObserver<?> call && call.isCancelled()) {
            return;
        }
        response.onError(PsException.toStatus(failure));
    }

    private void followNewerEpoch(final long clientEpoch) {
        if (clientEpoch > shard.routingEpoch()) {
            routingRefresh.run();
        }
    }
}
