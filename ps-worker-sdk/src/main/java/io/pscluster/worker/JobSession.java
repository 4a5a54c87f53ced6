package io.pscluster.worker;

import com.google.protobuf.ByteString;
import io.grpc.Deadline;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.StreamObserver;
import io.pscluster.proto.v1.AttachTableRequest;
import io.pscluster.proto.v1.AwaitPauseRequest;
import io.pscluster.proto.v1.AwaitPauseResponse;
import io.pscluster.proto.v1.ClockRequest;
import io.pscluster.proto.v1.ClockResponse;
import io.pscluster.proto.v1.FlushRequest;
import io.pscluster.proto.v1.JobCheckpointState;
import io.pscluster.proto.v1.JobSpec;
import io.pscluster.proto.v1.JoinJobRequest;
import io.pscluster.proto.v1.JoinJobResponse;
import io.pscluster.proto.v1.LeaveJobRequest;
import io.pscluster.proto.v1.PausedRequest;
import io.pscluster.proto.v1.PausedResponse;
import io.pscluster.proto.v1.ProxyServiceGrpc;
import io.pscluster.proto.v1.RegisterJobRequest;
import io.pscluster.proto.v1.RenewWorkerRequest;
import io.pscluster.proto.v1.ShardServiceGrpc;
import io.pscluster.proto.v1.UpdateMode;
import io.pscluster.wire.Backoff;
import io.pscluster.wire.PsException;
import io.pscluster.wire.UpdateModes;
import java.net.InetAddress;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.function.BiFunction;
import java.util.function.Supplier;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A client's membership of a job: it registers the job, joins it (a long poll at the proxy until the job's expected
 * workers are there), renews the worker's lease in the background, keeps the worker's clock, ends clocks at every
 * shard, and leaves on close.
 *
 * <p>Joining: the proxy gives a start clock (0 for the workers a job starts with); the worker then reports "ended
 * start - 1" to every shard. A shard that has already applied past that answers not accepted with its applied clock;
 * the worker then moves its start past the highest such clock and reports again everywhere, so it never takes part
 * in a clock half-way.
 *
 * <p>Clocks: {@link #endClock()} reports the current clock ended to every shard of the routing table (retrying a shard
 * that cannot be reached, and following the table: a shard that left it is no longer waited for, one that joined is
 * told), then moves to the next clock. Repeating a report is harmless, so retries are safe.
 */
final class JobSession {
    private static final Logger LOG = LoggerFactory.getLogger(JobSession.class);
    /** Deadline of one pause poll (the proxy answers an idle one before it). */
    private static final long PAUSE_POLL_MS = 30_000;
    /** Wait before polling again after a failed poll. */
    private static final long PAUSE_RETRY_MS = 500;

    private final PsClient client;
    private final JobSpec spec;
    private final int workerId;
    private final int rank;
    private final long leaseMs;
    private volatile long clock;
    private volatile String expelled;
    private volatile boolean leaving;
    private final JobCheckpointState restored;
    /** Why the state of this worker's rank may have been lost (empty: it was not). */
    private final String restoredUnreadable;

    private ProxyServiceGrpc.ProxyServiceBlockingStub proxy;

    // Checkpoint pauses: the newest pause the proxy asked for, and the last this worker has paused for.
    private volatile long pauseAsked;
    private volatile long pauseHoldMs;
    // When the newest pause's ask arrived, and how long after it the proxy gives that pause up (0: not said).
    private volatile long pauseAskedNanos;
    private volatile long pauseTimeoutMs;
    private long pausedThrough;
    // SYNC: the clock to run on to before pausing again for pauseAsked (another worker of the job is there already).
    private long pauseAtClock;
    private long pauseAtClockOf;
    // Pushes sent and not yet answered, and the gate new pushes wait on while paused (null: open). Under pushLock.
    private final Object pushLock = new Object();
    private long pushesInFlight;
    private CompletableFuture<Void> pushGate;

    private JobSession(
            final PsClient client,
            final JobSpec spec,
            final int workerId,
            final int rank,
            final long start,
            final long lease,
            final JobCheckpointState restored,
            final String restoredUnreadable) {
        this.client = client;
        this.spec = spec;
        this.workerId = workerId;
        this.rank = rank;
        this.clock = start;
        this.leaseMs = lease;
        this.restored = restored;
        this.restoredUnreadable = restoredUnreadable;
    }

    /** Registers and joins the job, starts renewing, and reports the start to every shard. Blocks. */
    static JobSession join(
            final PsClient client,
            final ProxyServiceGrpc.ProxyServiceBlockingStub proxy,
            final ProxyServiceGrpc.ProxyServiceStub proxyAsync,
            final JobSpec requested,
            final long joinTimeoutMs,
            final ScheduledExecutorService timer) {
        final JobSpec spec = UpdateModes.validate(requested);
        proxy.withDeadlineAfter(client.context().deadlineMs(), TimeUnit.MILLISECONDS)
                .registerJob(RegisterJobRequest.newBuilder().setSpec(spec).build());
        final JoinJobResponse joined = proxy.withDeadlineAfter(joinTimeoutMs, TimeUnit.MILLISECONDS)
                .joinJob(JoinJobRequest.newBuilder()
                        .setJobId(spec.getJobId())
                        .setHost(hostName())
                        .setRank(client.context().rank())
                        .build());
        final JobSession session = new JobSession(
                client,
                spec,
                joined.getWorkerId(),
                joined.getRank(),
                joined.getStartClock(),
                Math.max(100, joined.getLeaseMillis()),
                joined.hasRestored() ? joined.getRestored() : null,
                joined.getRestoredUnreadable());
        session.proxy = proxy;
        final long period = Math.max(50, session.leaseMs / 3);
        timer.scheduleWithFixedDelay(() -> session.renew(proxyAsync), period, period, TimeUnit.MILLISECONDS);
        session.watchPauses(proxyAsync, timer);
        if (spec.getMode() != UpdateMode.ASYNC) {
            session.reportStart();
        }
        LOG.info(
                "worker {} (rank {}) of job {} ({} mode) starts at clock {}",
                session.workerId,
                session.rank,
                spec.getJobId(),
                UpdateModes.describe(spec),
                session.clock);
        return session;
    }

    JobSpec spec() {
        return spec;
    }

    int workerId() {
        return workerId;
    }

    int rank() {
        return rank;
    }

    long clock() {
        return clock;
    }

    /** True when pulls wait on the shards for the worker's clock (SYNC and SSP). */
    boolean clocked() {
        return spec.getMode() != UpdateMode.ASYNC;
    }

    /** Fails with the proxy's reason once the worker was dropped from the job. */
    void checkMember() {
        final String why = expelled;
        if (why != null) {
            throw Status.FAILED_PRECONDITION.withDescription(why).asRuntimeException();
        }
    }

    /** Binds a table to the job's mode at the proxy (refused when another mode updates it). */
    void attach(final ProxyServiceGrpc.ProxyServiceBlockingStub proxy, final String table) {
        proxy.attachTable(AttachTableRequest.newBuilder()
                .setJobId(spec.getJobId())
                .setTable(table)
                .build());
    }

    /**
     * The worker's state in the checkpoint the cluster's data is at, as the proxy gave it at the join.
     *
     * @throws PsException DATA_LOSS with the proxy's reason when that checkpoint cannot give it back.
     */
    Optional<JobCheckpointState> restored() {
        if (restored == null && !restoredUnreadable.isEmpty()) {
            throw PsException.dataLoss(restoredUnreadable);
        }
        return Optional.ofNullable(restored);
    }

    /**
     * Ends the current clock at every shard (SYNC, SSP) and moves to the next; returns the new clock. A step boundary:
     * when the proxy asked the job to pause for a checkpoint, the worker pauses here (see {@link #pauseIfAsked}).
     */
    long endClock() {
        checkMember();
        if (clocked()) {
            final long ended = clock;
            everyShard("end clock " + ended, (stub, deadline) -> call(stub, deadline, ended, false));
        }
        clock = clock + 1;
        pauseIfAsked();
        return clock;
    }

    /**
     * A push may go now (null: counted in flight until {@link #pushEnded}), or the gate it waits on while the worker is
     * paused for a checkpoint's cut.
     */
    CompletableFuture<Void> admitPush() {
        synchronized (pushLock) {
            if (pushGate != null) {
                return pushGate;
            }
            pushesInFlight++;
            return null;
        }
    }

    /** A push admitted by {@link #admitPush} was answered (or failed). */
    void pushEnded() {
        synchronized (pushLock) {
            pushesInFlight--;
            if (pushesInFlight == 0) {
                pushLock.notifyAll();
            }
        }
    }

    /**
     * Pauses for a checkpoint when the proxy asked for one since the last pause: holds new pushes (from any thread of
     * this client), waits until every push sent is acknowledged (then each is queued on its shard ahead of any cut
     * taken later), hands the proxy this worker's clock and state, and waits for its answer: every shard has cut, or
     * the pause was given up. Waits for pushes in flight no longer than the proxy waits for the pause (its pause
     * timeout since it asked), never stays paused longer than the proxy's hold time, and never fails the step: a
     * proxy that cannot be reached costs a warning, not the job.
     */
    private void pauseIfAsked() {
        final long pause = pauseAsked;
        if (pause != pauseAtClockOf) {
            // A run-on clock belongs to the pause that gave it.
            pauseAtClock = 0;
        }
        if (pause <= pausedThrough || clock < pauseAtClock) {
            return;
        }
        pausedThrough = pause;
        final long holdMs = Math.max(1_000, pauseHoldMs);
        final CompletableFuture<Void> gate = new CompletableFuture<>();
        synchronized (pushLock) {
            pushGate = gate;
        }
        final long start = System.nanoTime();
        // Pushes in flight are waited for only until the proxy gives the pause up (its timeout since it asked): after
        // that, waiting on would only hold this worker's other threads back at the gate, for nothing.
        final long timeoutMs = pauseTimeoutMs;
        final long until = timeoutMs > 0
                ? pauseAskedNanos + TimeUnit.MILLISECONDS.toNanos(timeoutMs)
                : start + TimeUnit.MILLISECONDS.toNanos(holdMs);
        try {
            synchronized (pushLock) {
                while (pushesInFlight > 0) {
                    final long left = until - System.nanoTime();
                    if (left <= 0) {
                        LOG.warn(
                                "worker {} of job {}: {} pushes still unanswered {} ms after checkpoint pause {} was"
                                        + " asked for, when the proxy gives it up; not pausing for it",
                                workerId,
                                spec.getJobId(),
                                pushesInFlight,
                                timeoutMs > 0 ? timeoutMs : holdMs,
                                pause);
                        return;
                    }
                    TimeUnit.NANOSECONDS.timedWait(pushLock, left);
                }
            }
            final Supplier<byte[]> supplier = client.context().checkpointState();
            final byte[] state = supplier == null ? new byte[0] : supplier.get();
            final PausedResponse resumed = proxy.withDeadlineAfter(holdMs, TimeUnit.MILLISECONDS)
                    .paused(PausedRequest.newBuilder()
                            .setJobId(spec.getJobId())
                            .setWorkerId(workerId)
                            .setPauseId(pause)
                            .setClock(clock)
                            .setState(ByteString.copyFrom(state == null ? new byte[0] : state))
                            .build());
            if (resumed.getRunToClock() > clock) {
                // Another worker of this SYNC job is there already: the clocks up to it belong before the cut.
                pauseAtClock = resumed.getRunToClock();
                pauseAtClockOf = pause;
                pausedThrough = pause - 1;
                return;
            }
            LOG.debug(
                    "worker {} of job {} paused {} ms at clock {} for checkpoint {}",
                    workerId,
                    spec.getJobId(),
                    TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start),
                    clock,
                    resumed.getCheckpointId());
        } catch (RuntimeException e) {
            LOG.warn(
                    "worker {} of job {}: pause {} for a checkpoint ended early: {}",
                    workerId,
                    spec.getJobId(),
                    pause,
                    e.toString());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } finally {
            synchronized (pushLock) {
                pushGate = null;
            }
            gate.complete(null);
        }
    }

    /**
     * Keeps one poll open at the proxy for checkpoint pauses (answered when a pause begins, or empty after a while),
     * and records the newest pause asked for; {@link #endClock()} acts on it.
     */
    private void watchPauses(final ProxyServiceGrpc.ProxyServiceStub proxyAsync, final ScheduledExecutorService timer) {
        if (expelled != null || leaving || client.isClosed()) {
            return;
        }
        final CompletableFuture<AwaitPauseResponse> answer = new CompletableFuture<>();
        try {
            proxyAsync
                    .withDeadlineAfter(PAUSE_POLL_MS, TimeUnit.MILLISECONDS)
                    .awaitPause(
                            AwaitPauseRequest.newBuilder()
                                    .setJobId(spec.getJobId())
                                    .setWorkerId(workerId)
                                    .setAfterPauseId(pauseAsked)
                                    .build(),
                            observer(answer));
        } catch (RuntimeException e) {
            answer.completeExceptionally(e);
        }
        answer.whenComplete((asked, failure) -> {
            long again = 0;
            if (failure == null) {
                if (asked.getPauseId() > pauseAsked) {
                    pauseHoldMs = asked.getHoldMillis();
                    pauseTimeoutMs = asked.getPauseTimeoutMillis();
                    pauseAskedNanos = System.nanoTime();
                    // Written last: a reader of the new id sees the fields above (volatile).
                    pauseAsked = asked.getPauseId();
                }
            } else {
                final Status.Code code = PsException.toStatus(PsClient.unwrap(failure))
                        .getStatus()
                        .getCode();
                if (code == Status.Code.UNIMPLEMENTED) {
                    LOG.warn("the proxy does not pause workers for checkpoints (an older version)");
                    return;
                }
                again = code == Status.Code.DEADLINE_EXCEEDED ? 0 : PAUSE_RETRY_MS;
            }
            try {
                timer.schedule(() -> watchPauses(proxyAsync, timer), again, TimeUnit.MILLISECONDS);
            } catch (java.util.concurrent.RejectedExecutionException closed) {
                // The client closed.
            }
        });
    }

    /** Waits until every shard has applied every push it accepted before. */
    void flush() {
        checkMember();
        flushAll(client);
    }

    /** {@link #flush()} for any client, in a job or not. */
    static void flushAll(final PsClient client) {
        everyShard(client, "flush", (stub, deadline) -> {
            final CompletableFuture<Object> done = new CompletableFuture<>();
            stub.withDeadline(deadline).flush(FlushRequest.getDefaultInstance(), observer(done));
            return done;
        });
    }

    /** Leaves the job (best effort: a lapsed lease drops it anyway). */
    void leave(final ProxyServiceGrpc.ProxyServiceBlockingStub proxy) {
        leaving = true;
        try {
            proxy.withDeadlineAfter(Math.min(2_000, client.context().deadlineMs()), TimeUnit.MILLISECONDS)
                    .leaveJob(LeaveJobRequest.newBuilder()
                            .setJobId(spec.getJobId())
                            .setWorkerId(workerId)
                            .build());
        } catch (StatusRuntimeException e) {
            LOG.warn("worker {} could not leave job {}: {}", workerId, spec.getJobId(), e.getMessage());
        }
    }

    /** Renews the lease without blocking the timer thread it runs on. */
    private void renew(final ProxyServiceGrpc.ProxyServiceStub proxy) {
        if (expelled != null || leaving || client.isClosed()) {
            return;
        }
        final CompletableFuture<Object> renewed = new CompletableFuture<>();
        try {
            proxy.withDeadlineAfter(leaseMs, TimeUnit.MILLISECONDS)
                    .renewWorker(
                            RenewWorkerRequest.newBuilder()
                                    .setJobId(spec.getJobId())
                                    .setWorkerId(workerId)
                                    .setClock(clock)
                                    .build(),
                            observer(renewed));
        } catch (RuntimeException e) {
            renewed.completeExceptionally(e);
        }
        renewed.whenComplete((ok, failure) -> {
            if (failure == null) {
                return;
            }
            final StatusRuntimeException e = PsException.toStatus(PsClient.unwrap(failure));
            if (leaving) {
                return;
            }
            if (e.getStatus().getCode() == Status.Code.FAILED_PRECONDITION
                    || e.getStatus().getCode() == Status.Code.NOT_FOUND) {
                expelled = "worker " + workerId + " of job '" + spec.getJobId() + "' was dropped: "
                        + e.getStatus().getDescription();
                LOG.error("{}", expelled);
            } else if (!client.isClosed() && !leaving) {
                LOG.warn("worker {} of job {}: lease renewal failed: {}", workerId, spec.getJobId(), e.getMessage());
                if (e.getStatus().getCode() == Status.Code.UNAVAILABLE) {
                    // The proxy is down or restarting: the next renewal tries to reach it at once, not after gRPC's
                    // growing reconnect backoff, which could outlast the lease once the proxy is back.
                    client.resetProxyBackoff();
                }
            }
        });
    }

    /** Reports "ended start - 1" everywhere, moving the start past any shard that has applied beyond it. */
    private void reportStart() {
        while (true) {
            final long ended = clock - 1;
            final Map<String, ClockResponse> answers =
                    everyShard("join at clock " + clock, (stub, deadline) -> call(stub, deadline, ended, true));
            long latest = ended;
            for (final ClockResponse answer : answers.values()) {
                if (!answer.getAccepted()) {
                    latest = Math.max(latest, answer.getAppliedClock());
                }
            }
            if (latest == ended) {
                return;
            }
            LOG.info(
                    "worker {} of job {}: clock {} is applied already, starting at {}",
                    workerId,
                    spec.getJobId(),
                    latest,
                    latest + 1);
            clock = latest + 1;
        }
    }

    private CompletableFuture<ClockResponse> call(
            final ShardServiceGrpc.ShardServiceStub stub,
            final Deadline deadline,
            final long ended,
            final boolean join) {
        final CompletableFuture<ClockResponse> done = new CompletableFuture<>();
        stub.withDeadline(deadline)
                .clock(
                        ClockRequest.newBuilder()
                                .setJobId(spec.getJobId())
                                .setWorkerId(workerId)
                                .setEndedClock(ended)
                                .setJoin(join)
                                .build(),
                        observer(done));
        return done;
    }

    /**
     * Calls every shard of the routing table until each has answered, within the client's deadline: a shard that
     * failed retryably is called again after a backoff under a refreshed table (dropped if it left the table; shards
     * that joined it are called too). Blocks.
     *
     * @throws StatusRuntimeException the first final failure, or DEADLINE_EXCEEDED naming the shards left.
     */
    private <T> Map<String, T> everyShard(
            final String what,
            final BiFunction<ShardServiceGrpc.ShardServiceStub, Deadline, CompletableFuture<T>> call) {
        return everyShard(client, "job '" + spec.getJobId() + "' " + what, call);
    }

    private static <T> Map<String, T> everyShard(
            final PsClient client,
            final String what,
            final BiFunction<ShardServiceGrpc.ShardServiceStub, Deadline, CompletableFuture<T>> call) {
        final Deadline deadline = Deadline.after(client.context().deadlineMs(), TimeUnit.MILLISECONDS);
        final Map<String, T> answers = new HashMap<>();
        final Set<String> failed = new HashSet<>();
        StatusRuntimeException last = null;
        for (int attempt = 0; ; attempt++) {
            final Routing routing = client.routing();
            final Set<String> todo = new HashSet<>(List.of(routing.addresses()));
            todo.removeAll(answers.keySet());
            if (todo.isEmpty()) {
                return answers;
            }
            for (int owner = 0; owner < routing.addresses().length; owner++) {
                final String tooOld = todo.contains(routing.addresses()[owner]) ? routing.tooOld(owner) : null;
                if (tooOld != null) {
                    // As for a table's calls: a shard this SDK cannot push to takes no part in a job's clocks either.
                    throw Status.FAILED_PRECONDITION
                            .withDescription(what + ": " + tooOld)
                            .asRuntimeException();
                }
            }
            final Map<String, CompletableFuture<T>> sent = new HashMap<>();
            final Deadline attemptDeadline =
                    deadline.minimum(Deadline.after(client.context().attemptTimeoutMs(), TimeUnit.MILLISECONDS));
            for (final String address : todo) {
                try {
                    sent.put(address, call.apply(client.shard(address), attemptDeadline));
                } catch (RuntimeException e) {
                    sent.put(address, CompletableFuture.failedFuture(e));
                }
            }
            failed.clear();
            for (final Map.Entry<String, CompletableFuture<T>> entry : sent.entrySet()) {
                try {
                    answers.put(entry.getKey(), entry.getValue().join());
                } catch (CompletionException e) {
                    final StatusRuntimeException status = PsException.toStatus(PsClient.unwrap(e));
                    if (client.isClosed()) {
                        throw PsClient.closedStatus();
                    }
                    if (PsTable.classify(status) == PsTable.Retry.NEVER) {
                        throw PsClient.prefixed(what + " at shard " + entry.getKey(), status);
                    }
                    failed.add(entry.getKey());
                    last = status;
                }
            }
            if (failed.isEmpty()) {
                continue;
            }
            final long remaining = deadline.timeRemaining(TimeUnit.MILLISECONDS);
            if (remaining <= 0) {
                throw Status.DEADLINE_EXCEEDED
                        .withDescription(what + " did not reach shards " + failed + " within "
                                + client.context().deadlineMs() + " ms; last: " + last.getMessage())
                        .asRuntimeException();
            }
            client.delay(Math.min(
                            remaining,
                            Backoff.jitteredMs(
                                    PsTable.FIRST_BACKOFF_MS, client.context().maxBackoffMs(), attempt)))
                    .join();
            try {
                client.refreshRouting();
            } catch (StatusRuntimeException e) {
                last = e;
            }
        }
    }

    private static <T> StreamObserver<T> observer(final CompletableFuture<? super T> done) {
        return new StreamObserver<>() {
            @Override
            public void onNext(final T value) {
                done.complete(value);
            }

            @Override
            public void onError(final Throwable failure) {
                done.completeExceptionally(failure);
            }

            @Override
            public void onCompleted() {}
        };
    }

    private static String hostName() {
        try {
            return InetAddress.getLocalHost().getHostName() + "/"
                    + ProcessHandle.current().pid();
        } catch (java.io.IOException e) {
            return "pid " + ProcessHandle.current().pid();
        }
    }
}
