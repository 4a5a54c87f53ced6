package io.pscluster.worker;

import io.grpc.Deadline;
import io.grpc.Grpc;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.StreamObserver;
import io.pscluster.proto.v1.CreateTableRequest;
import io.pscluster.proto.v1.DropTableRequest;
import io.pscluster.proto.v1.GetRoutingTableRequest;
import io.pscluster.proto.v1.GetRoutingTableResponse;
import io.pscluster.proto.v1.JobCheckpointState;
import io.pscluster.proto.v1.JobSpec;
import io.pscluster.proto.v1.ListTablesRequest;
import io.pscluster.proto.v1.ProxyServiceGrpc;
import io.pscluster.proto.v1.RollbackEvent;
import io.pscluster.proto.v1.RoutingTable;
import io.pscluster.proto.v1.ShardServiceGrpc;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.wire.PsException;
import java.security.SecureRandom;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Consumer;
import java.util.function.Supplier;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The worker SDK's entry point: built from the proxy's address, it caches the routing table and one channel per
 * shard, and hands out {@link PsTable} handles that push and pull directly to the shards (no extra hop through the
 * proxy). Thread-safe; one client per process is enough, though several are fine.
 *
 * <pre>{@code
 * try (PsClient client = PsClient.connect("localhost:7070")) {
 *     client.addRollbackListener(event -> log.warn("lost updates: {}", event));
 *     PsTable weights = client.createTable(schema);
 *     float[] w = weights.pull(keys);
 *     weights.push(keys, gradients);
 * }
 * }</pre>
 *
 * <p>Push ids: the client draws a random non-zero {@link #clientId()} and numbers its push requests from one; a shard
 * applies a given (client id, sequence) at most once, which is what makes retrying a push whose outcome is unknown
 * safe (see {@link PsTable}).
 *
 * <p>Routing: the table is refreshed asynchronously (never on a caller's or the retry timer's thread), when a request
 * is refused or a shard cannot be reached, and every {@link Context#routingRefreshMs} in the background so that a
 * client that only pushes still learns of moves and rollbacks. Concurrent refreshes share one call to the proxy. A
 * table older than the one held is ignored: the epoch seen by a client never goes back.
 *
 * <p>Rollbacks: every {@link RollbackEvent} the proxy lists with an id newer than the newest one listed when the
 * client connected is reported once: a WARN line, every listener, and {@link #rollbacks()}.
 *
 * <p>{@link #close()} fails every call still pending with CANCELLED "PsClient closed"; later calls fail at once.
 */
public final class PsClient implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(PsClient.class);

    private final Context context;
    private final long clientId;
    private final AtomicLong sequences = new AtomicLong();
    private final ManagedChannel proxyChannel;
    private final ProxyServiceGrpc.ProxyServiceBlockingStub proxy;
    private final ProxyServiceGrpc.ProxyServiceStub proxyAsync;
    private final Map<String, ManagedChannel> shardChannels = new ConcurrentHashMap<>();
    /** Of every channel: TLS and the token as {@link Context#security} says, read once. */
    private final io.grpc.ChannelCredentials credentials;

    private final ScheduledExecutorService timer;
    private final ExecutorService resends;
    private final AtomicReference<CompletableFuture<Routing>> refreshInFlight = new AtomicReference<>();
    private final Set<CompletableFuture<?>> pending = ConcurrentHashMap.newKeySet();
    private final AtomicBoolean closed = new AtomicBoolean();
    private final AtomicBoolean refreshFailing = new AtomicBoolean();
    // Written under routingLock so that a slower answer never replaces a newer table; read without it.
    private final Object routingLock = new Object();
    private volatile Routing routing = Routing.EMPTY;

    // Guarded by rollbackLock: the newest event id already reported (or seen at connect), what was reported, and
    // who listens. One lock for all three makes "each event reaches each listener once" hold when a listener is
    // added while an event arrives.
    private final Object rollbackLock = new Object();
    private long lastRollbackId = -1;
    private final List<RollbackEvent> rollbacks = new ArrayList<>();
    private final List<Consumer<RollbackEvent>> rollbackListeners = new ArrayList<>();
    private volatile JobSession session;

    private PsClient(final Context context) {
        this.context = context;
        this.clientId = randomNonZero();
        this.credentials = context.security.channelCredentials();
        this.proxyChannel =
                Grpc.newChannelBuilder(context.proxyAddress, credentials).build();
        this.proxy = ProxyServiceGrpc.newBlockingStub(proxyChannel);
        this.proxyAsync = ProxyServiceGrpc.newStub(proxyChannel);
        // The timer only completes futures (backoff waits, deadlines) and starts background refreshes: nothing on it
        // blocks or encodes, so one thread keeps time for every call.
        this.timer = Executors.newSingleThreadScheduledExecutor(daemon("ps-client-timer"));
        // Resends re-split and encode up to a request's worth of keys: kept off the timer and off gRPC's threads.
        this.resends = Executors.newCachedThreadPool(daemon("ps-client-resend"));
    }

    public static PsClient connect(final String proxyAddress) {
        return connect(new Context().proxyAddress(proxyAddress));
    }

    /** Connects, fetches the routing table and starts the background refresh. */
    public static PsClient connect(final Context context) {
        context.validate();
        final PsClient client = new PsClient(context);
        try {
            client.refreshRouting();
            client.timer.scheduleWithFixedDelay(
                    client::refreshInBackground,
                    context.routingRefreshMs,
                    context.routingRefreshMs,
                    TimeUnit.MILLISECONDS);
            if (context.job != null) {
                client.session = JobSession.join(
                        client, client.proxy, client.proxyAsync, context.job, context.joinTimeoutMs, client.timer);
            }
        } catch (RuntimeException e) {
            client.close();
            throw e;
        }
        return client;
    }

    // ---- the job this client works for (Context#job)

    /** This worker's id in its job; -1 for a client outside any job. */
    public int workerId() {
        final JobSession job = session;
        return job == null ? -1 : job.workerId();
    }

    /**
     * This worker's rank in its job (from 1): the one it asked for ({@link Context#rank}), else the lowest no other
     * member held when it joined; 0 for a client outside any job. Its {@link #restoredState()} is that of its rank.
     */
    public int rank() {
        final JobSession job = session;
        return job == null ? 0 : job.rank();
    }

    /** The clock this worker is at (its pushes belong to it; its pulls read what this clock may see); 0 outside a job. */
    public long currentClock() {
        final JobSession job = session;
        return job == null ? 0 : job.clock();
    }

    /**
     * Ends the current clock and moves to the next one; returns it. SYNC and SSP: the end reaches every shard (also
     * those this worker pushed nothing to) before it returns; call it after the clock's pushes have returned. ASYNC:
     * only counts (the clock shows in {@code psctl status}).
     *
     * @throws IllegalStateException for a client outside any job.
     * @throws StatusRuntimeException FAILED_PRECONDITION once the worker was dropped from the job (its lease lapsed);
     *     DEADLINE_EXCEEDED when a shard could not be reached within the deadline.
     */
    public long clock() {
        return session("clock()").endClock();
    }

    /**
     * This worker's state in the checkpoint the cluster's data is at (the latest committed one, or the one an
     * operator restored into every shard since): what its {@link Context#checkpointState} gave when the job last
     * paused for a checkpoint, from the worker of the same {@link #rank()}, with the checkpoint's id and the clock it
     * was at. What a job restarted from that checkpoint resumes from. Empty outside a job, for a worker joining a
     * running job, or when that checkpoint holds no state for this rank (the job did not run then, or its
     * workers did not all pause).
     *
     * @throws PsException {@code DATA_LOSS} naming the checkpoint and the cause when the state of this rank may have
     *     been saved and cannot be given back (that checkpoint's manifest is damaged or gone, or it was taken when an
     *     earlier one could not carry the states of idle jobs over): the job then decides whether to start from
     *     scratch; never an empty state in its place.
     */
    public Optional<JobCheckpointState> restoredState() {
        final JobSession job = session;
        return job == null ? Optional.empty() : job.restored();
    }

    /**
     * Returns once every push this client has had acknowledged has been applied on its shard (async pushes are applied
     * in the background): for tests, evaluation and checkpoints. Pushes still in flight are not waited for.
     */
    public void flush() {
        final JobSession job = session;
        if (job != null) {
            job.flush();
            return;
        }
        JobSession.flushAll(this);
    }

    JobSession session() {
        return session;
    }

    private JobSession session(final String what) {
        final JobSession job = session;
        if (job == null) {
            throw new IllegalStateException(what + " needs a client that joined a job (PsClient.Context.job)");
        }
        return job;
    }

    /**
     * Creates a table on every shard, or returns a handle to an existing one with an identical schema.
     *
     * @throws StatusRuntimeException ALREADY_EXISTS if the name is taken by another schema, INVALID_ARGUMENT for a
     *     bad schema.
     */
    public PsTable createTable(final TableSchema schema) {
        atProxy(() -> proxy().createTable(
                        CreateTableRequest.newBuilder().setSchema(schema).build()));
        return table(schema.getName());
    }

    /** A client in a job binds every table it opens to the job's update mode (refused when another mode holds it). */
    private PsTable attached(final TableSchema schema) {
        final JobSession job = session;
        if (job != null) {
            atProxy(() -> {
                job.attach(proxy(), schema.getName());
                return null;
            });
        }
        return new PsTable(this, schema);
    }

    /**
     * A handle to an existing table.
     *
     * @throws StatusRuntimeException NOT_FOUND if the cluster has no such table.
     */
    public PsTable table(final String name) {
        for (final TableSchema schema : atProxy(() -> proxy().listTables(ListTablesRequest.getDefaultInstance()))
                .getTablesList()) {
            if (schema.getName().equals(name)) {
                return attached(schema);
            }
        }
        throw PsException.toStatus(PsException.notFound("table '" + name + "' does not exist"));
    }

    /** Drops a table from every shard; returns false if there was no such table. Its rows are gone. */
    public boolean dropTable(final String name) {
        return atProxy(() -> proxy().dropTable(
                                DropTableRequest.newBuilder().setTable(name).build()))
                .getDropped();
    }

    /** Fetches the proxy's current routing table (joining a refresh already in flight); blocks. */
    public void refreshRouting() {
        try {
            refreshRoutingAsync(Deadline.after(context.deadlineMs, TimeUnit.MILLISECONDS))
                    .join();
        } catch (CompletionException e) {
            if (e.getCause() instanceof RuntimeException runtime) {
                throw runtime;
            }
            throw e;
        }
    }

    public long routingEpoch() {
        return routing.epoch();
    }

    /** This client's push id: random, non-zero, fixed for the client's life. */
    public long clientId() {
        return clientId;
    }

    /**
     * Calls {@code listener} with every rollback reported since connect: first those already reported (at once, on
     * this thread), then each new one as it is learned, on an SDK thread (it must not block). Each event reaches each
     * listener once. A listener that throws is logged and keeps listening.
     */
    public void addRollbackListener(final Consumer<RollbackEvent> listener) {
        final List<RollbackEvent> seen;
        synchronized (rollbackLock) {
            rollbackListeners.add(listener);
            seen = List.copyOf(rollbacks);
        }
        for (final RollbackEvent event : seen) {
            deliver(listener, event);
        }
    }

    /** The rollbacks reported since connect, oldest first; its size is the count of them. */
    public List<RollbackEvent> rollbacks() {
        synchronized (rollbackLock) {
            return List.copyOf(rollbacks);
        }
    }

    Routing routing() {
        return routing;
    }

    long nextSequence() {
        return sequences.incrementAndGet();
    }

    boolean isClosed() {
        return closed.get();
    }

    static StatusRuntimeException closedStatus() {
        return Status.CANCELLED.withDescription("PsClient closed").asRuntimeException();
    }

    ShardServiceGrpc.ShardServiceStub shard(final String address) {
        if (closed.get()) {
            // A channel made now would never be shut down.
            throw closedStatus();
        }
        return ShardServiceGrpc.newStub(shardChannels.computeIfAbsent(
                address,
                target -> Grpc.newChannelBuilder(target, credentials)
                        .maxInboundMessageSize(context.maxMessageBytes)
                        .build()));
    }

    Context context() {
        return context;
    }

    ExecutorService resends() {
        return resends;
    }

    /**
     * The user-facing future of {@code call}: completes as {@code call} does, or with CANCELLED when the client
     * closes first. Registered before the closed flag is read, so close() either sees it or it sees close().
     */
    <T> CompletableFuture<T> track(final Supplier<CompletableFuture<T>> call) {
        final CompletableFuture<T> tracked = new CompletableFuture<>();
        pending.add(tracked);
        tracked.whenComplete((value, failure) -> pending.remove(tracked));
        if (closed.get()) {
            tracked.completeExceptionally(closedStatus());
            return tracked;
        }
        final CompletableFuture<T> inner;
        try {
            inner = call.get();
        } catch (RuntimeException e) {
            pending.remove(tracked);
            throw e;
        }
        inner.whenComplete((value, failure) -> {
            if (failure != null) {
                tracked.completeExceptionally(unwrap(failure));
            } else {
                tracked.complete(value);
            }
        });
        return tracked;
    }

    /** A future completed after {@code millis} by the timer (at once when the client is closed). */
    CompletableFuture<Void> delay(final long millis) {
        final CompletableFuture<Void> done = new CompletableFuture<>();
        try {
            timer.schedule(() -> done.complete(null), millis, TimeUnit.MILLISECONDS);
        } catch (RejectedExecutionException closing) {
            done.completeExceptionally(closedStatus());
        }
        return done;
    }

    /**
     * Refreshes the routing table without blocking: joins the refresh in flight if there is one, else starts one
     * whose deadline is the smaller of {@link Context#deadlineMs} and {@code waiter}'s remaining time. The returned
     * future completes with the table held afterwards, or fails (with the proxy's address in the message) when the
     * proxy could not answer; either way no later than {@code waiter}, so a caller never waits past its deadline
     * for a refresh someone else started.
     */
    CompletableFuture<Routing> refreshRoutingAsync(final Deadline waiter) {
        if (closed.get()) {
            return CompletableFuture.failedFuture(closedStatus());
        }
        while (true) {
            final CompletableFuture<Routing> current = refreshInFlight.get();
            if (current != null) {
                // A refresh someone else started: its call has their deadline, which may be shorter than this
                // waiter's (the background refresh's is the refresh period). If that runs out while this waiter still
                // has time, refresh again rather than fail a caller whose own deadline has not passed.
                return within(current, waiter).exceptionallyCompose(failure -> {
                    if (!waiter.isExpired()
                            && !closed.get()
                            && Status.fromThrowable(unwrap(failure)).getCode() == Status.Code.DEADLINE_EXCEEDED) {
                        return refreshRoutingAsync(waiter);
                    }
                    return CompletableFuture.failedFuture(failure);
                });
            }
            final CompletableFuture<Routing> mine = new CompletableFuture<>();
            if (refreshInFlight.compareAndSet(null, mine)) {
                startRefresh(mine, waiter);
                return within(mine, waiter);
            }
        }
    }

    private void startRefresh(final CompletableFuture<Routing> mine, final Deadline waiter) {
        final long deadlineMs = Math.min(context.deadlineMs, waiter.timeRemaining(TimeUnit.MILLISECONDS));
        // The slot is cleared before the future completes, so a waiter that reacts by refreshing again starts a
        // new call instead of joining the finished one.
        final Consumer<Throwable> fail = failure -> {
            refreshInFlight.compareAndSet(mine, null);
            mine.completeExceptionally(failure);
        };
        if (deadlineMs <= 0) {
            fail.accept(Status.DEADLINE_EXCEEDED
                    .withDescription("no time left to refresh the routing table")
                    .asRuntimeException());
            return;
        }
        try {
            proxyAsync
                    .withDeadlineAfter(deadlineMs, TimeUnit.MILLISECONDS)
                    .getRoutingTable(
                            GetRoutingTableRequest.newBuilder()
                                    .setKnownEpoch(routing.epoch())
                                    .build(),
                            new StreamObserver<>() {
                                @Override
                                public void onNext(final GetRoutingTableResponse response) {
                                    final Routing adopted;
                                    try {
                                        adopted = adopt(response.getRouting());
                                    } catch (RuntimeException e) {
                                        fail.accept(e);
                                        return;
                                    }
                                    if (refreshFailing.compareAndSet(true, false)) {
                                        LOG.info("routing table from the proxy at {} again", context.proxyAddress);
                                    }
                                    refreshInFlight.compareAndSet(mine, null);
                                    mine.complete(adopted);
                                }

                                @Override
                                public void onError(final Throwable failure) {
                                    fail.accept(atProxy(failure));
                                }

                                @Override
                                public void onCompleted() {}
                            });
        } catch (RuntimeException e) {
            fail.accept(atProxy(e));
        }
    }

    private <T> CompletableFuture<T> within(final CompletableFuture<T> shared, final Deadline deadline) {
        if (shared.isDone()) {
            return shared;
        }
        final CompletableFuture<T> bounded = new CompletableFuture<>();
        final long remainingMs = deadline.timeRemaining(TimeUnit.MILLISECONDS);
        ScheduledFuture<?> timeout = null;
        try {
            timeout = timer.schedule(
                    () -> bounded.completeExceptionally(Status.DEADLINE_EXCEEDED
                            .withDescription("routing refresh from the proxy at " + context.proxyAddress
                                    + " did not finish within the call's deadline")
                            .asRuntimeException()),
                    Math.max(0, remainingMs),
                    TimeUnit.MILLISECONDS);
        } catch (RejectedExecutionException closing) {
            bounded.completeExceptionally(closedStatus());
        }
        final ScheduledFuture<?> cancel = timeout;
        shared.whenComplete((value, failure) -> {
            if (cancel != null) {
                cancel.cancel(false);
            }
            if (failure != null) {
                bounded.completeExceptionally(unwrap(failure));
            } else {
                bounded.complete(value);
            }
        });
        return bounded;
    }

    private void refreshInBackground() {
        final long deadlineMs = Math.min(context.deadlineMs, context.routingRefreshMs);
        refreshRoutingAsync(Deadline.after(deadlineMs, TimeUnit.MILLISECONDS)).whenComplete((routing, failure) -> {
            // One line when the proxy stops answering and one when it is back, not one per period.
            if (failure != null && !closed.get() && refreshFailing.compareAndSet(false, true)) {
                LOG.warn("cannot refresh the routing table: {}", unwrap(failure).getMessage());
            }
        });
    }

    /** Takes {@code table} unless an equal or newer epoch is held; reports rollbacks it lists for the first time. */
    private Routing adopt(final RoutingTable table) {
        final Routing next = Routing.of(table);
        synchronized (routingLock) {
            if (next.epoch() >= routing.epoch()) {
                routing = next;
            }
        }
        reportRollbacks(table.getRollbacksList());
        return routing;
    }

    private void reportRollbacks(final List<RollbackEvent> listed) {
        final List<RollbackEvent> fresh = new ArrayList<>();
        final List<Consumer<RollbackEvent>> listeners;
        synchronized (rollbackLock) {
            long newest = lastRollbackId;
            for (final RollbackEvent event : listed) {
                newest = Math.max(newest, event.getId());
                // The first table (at connect) only sets the baseline: what happened before this client is not news.
                if (lastRollbackId >= 0 && event.getId() > lastRollbackId) {
                    fresh.add(event);
                }
            }
            lastRollbackId = Math.max(newest, 0);
            fresh.sort(java.util.Comparator.comparingLong(RollbackEvent::getId));
            rollbacks.addAll(fresh);
            listeners = List.copyOf(rollbackListeners);
        }
        for (final RollbackEvent event : fresh) {
            LOG.warn(describe(event));
            for (final Consumer<RollbackEvent> listener : listeners) {
                deliver(listener, event);
            }
        }
    }

    /** One line for an event, the same in the SDK's WARN, the example job's output and {@code psctl status}. */
    public static String describe(final RollbackEvent event) {
        final String taken = event.getCheckpointCreatedMillis() > 0
                ? " taken at " + Instant.ofEpochMilli(event.getCheckpointCreatedMillis())
                : "";
        final String source;
        if (event.getLossless() && event.getKeptRows()) {
            source = "given back to the shard that kept their rows, with every acknowledged push (nothing lost; the"
                    + " move's checkpoint " + event.getCheckpointId() + " could not be restored)";
        } else if (event.getLossless()) {
            source = "handed over through checkpoint " + event.getCheckpointId() + taken
                    + " with every acknowledged push (nothing lost)";
        } else if (event.getCheckpointId() == 0) {
            source = "no checkpoint existed: they start empty, every update to them is lost";
        } else {
            source = "restored from checkpoint " + event.getCheckpointId() + taken
                    + "; updates to them after that checkpoint are lost";
        }
        final String from = event.getFromShard().isEmpty() ? "" : " of shard " + event.getFromShard();
        return (event.getLossless() ? "hand-over " : "rollback ") + event.getId() + ": " + event.getSlotCount()
                + " slots" + from + " moved to " + event.getToShardsList() + ", " + source + "; reason: "
                + event.getReason();
    }

    private static void deliver(final Consumer<RollbackEvent> listener, final RollbackEvent event) {
        try {
            listener.accept(event);
        } catch (RuntimeException e) {
            LOG.warn("rollback listener {} failed on rollback {}", listener, event.getId(), e);
        }
    }

    private ProxyServiceGrpc.ProxyServiceBlockingStub proxy() {
        if (closed.get()) {
            throw closedStatus();
        }
        return proxy.withDeadlineAfter(context.deadlineMs, TimeUnit.MILLISECONDS);
    }

    /** The proxy's channel reconnects at its next call instead of after its backoff (a job's lease renewals). */
    void resetProxyBackoff() {
        proxyChannel.resetConnectBackoff();
    }

    private <T> T atProxy(final Supplier<T> call) {
        try {
            return call.get();
        } catch (StatusRuntimeException e) {
            throw atProxy(e);
        }
    }

    /** The failure with the proxy's address in front of its description; code, trailers and cause kept. */
    private StatusRuntimeException atProxy(final Throwable failure) {
        final StatusRuntimeException status = PsException.toStatus(unwrap(failure));
        if (status.getStatus().getCode() == Status.Code.CANCELLED && closed.get()) {
            return closedStatus();
        }
        return prefixed("proxy at " + context.proxyAddress, status);
    }

    static StatusRuntimeException prefixed(final String where, final StatusRuntimeException status) {
        final String description = status.getStatus().getDescription();
        // A transport failure ("io exception") says why only in its cause: a refused connection, a TLS handshake.
        final String cause =
                status.getStatus().getCode() == Status.Code.UNAVAILABLE ? PsException.causeOf(status.getStatus()) : "";
        return status.getStatus()
                .withDescription(
                        where + ": " + (description == null ? status.getStatus().getCode() : description) + cause)
                .asRuntimeException(status.getTrailers());
    }

    static Throwable unwrap(final Throwable failure) {
        Throwable cause = failure;
        while (cause instanceof CompletionException && cause.getCause() != null) {
            cause = cause.getCause();
        }
        return cause;
    }

    /**
     * Fails every pending call with CANCELLED "PsClient closed" and releases channels and threads. Requests already
     * sent may or may not have been applied. Idempotent.
     */
    @Override
    public void close() {
        if (closed.get()) {
            return;
        }
        final JobSession job = session;
        if (job != null) {
            job.leave(proxy);
        }
        if (!closed.compareAndSet(false, true)) {
            return;
        }
        for (final CompletableFuture<?> call : List.copyOf(pending)) {
            call.completeExceptionally(closedStatus());
        }
        final CompletableFuture<Routing> refresh = refreshInFlight.get();
        if (refresh != null) {
            refresh.completeExceptionally(closedStatus());
        }
        timer.shutdownNow();
        resends.shutdownNow();
        proxyChannel.shutdownNow();
        shardChannels.values().forEach(ManagedChannel::shutdownNow);
    }

    private static long randomNonZero() {
        final SecureRandom random = new SecureRandom();
        long id;
        do {
            id = random.nextLong();
        } while (id == 0);
        return id;
    }

    private static ThreadFactory daemon(final String name) {
        final AtomicLong count = new AtomicLong();
        return runnable -> {
            final Thread thread = new Thread(runnable, name + "-" + count.incrementAndGet());
            thread.setDaemon(true);
            return thread;
        };
    }

    /** Client settings, validated once by {@link PsClient#connect(Context)}. */
    public static final class Context {
        private String proxyAddress = "";
        private long deadlineMs = 30_000;
        private long attemptTimeoutMs = 10_000;
        private long maxBackoffMs = 1_000;
        private long routingRefreshMs = 5_000;
        private int maxMessageBytes = 256 << 20;
        private JobSpec job;
        private long joinTimeoutMs = 600_000;
        private Supplier<byte[]> checkpointState;
        private int rank;
        private io.pscluster.wire.Security security = io.pscluster.wire.Security.NONE;

        /**
         * TLS and the token for this client's calls to the proxy and the shards ({@link io.pscluster.wire.Security}: a
         * CA to trust, a client certificate if the cluster requires one, the token); none by default.
         */
        public Context security(final io.pscluster.wire.Security value) {
            security = java.util.Objects.requireNonNull(value, "security");
            return this;
        }

        /**
         * Makes this client a worker of a job (registered with this spec if it is not yet, identical otherwise):
         * connect joins it, waiting until the job's {@code expected_workers} have joined (at most
         * {@link #joinTimeoutMs}); close leaves it. The spec's mode says how pushes become visible (see UpdateMode).
         */
        public Context job(final JobSpec value) {
            job = value;
            return this;
        }

        /**
         * The worker's own state to keep in checkpoints (its step, data offsets, ...; at most 64 KiB): asked for on the
         * worker's thread inside {@code clock()} when the worker pauses for a checkpoint, so it matches the model the
         * checkpoint holds. A worker of a job restarted from that checkpoint gets it back from
         * {@link PsClient#restoredState()}. Default: none (empty).
         */
        public Context checkpointState(final Supplier<byte[]> value) {
            checkpointState = value;
            return this;
        }

        Supplier<byte[]> checkpointState() {
            return checkpointState;
        }

        /**
         * The rank (from 1) this worker asks for in its job, e.g. the one its launcher gave it; connect fails with
         * ALREADY_EXISTS while another member of the job holds it. Default 0: the lowest rank no member holds. A
         * checkpoint keeps each worker's {@link #checkpointState} by rank, and {@link PsClient#restoredState()} gives
         * a worker of a later run what the worker of its rank handed in.
         */
        public Context rank(final int value) {
            rank = value;
            return this;
        }

        int rank() {
            return rank;
        }

        /** How long connect waits for the job's other workers to join (default 10 minutes). */
        public Context joinTimeoutMs(final long value) {
            joinTimeoutMs = value;
            return this;
        }

        /** host:port of the proxy. Required. */
        public Context proxyAddress(final String value) {
            proxyAddress = value;
            return this;
        }

        /** Deadline of every call, retries and waiting out a failover included (default 30 s). */
        public Context deadlineMs(final long value) {
            deadlineMs = value;
            return this;
        }

        /**
         * Longest one attempt of a request may take (default 10 s): a shard that hangs costs this much of the call's
         * deadline, then the request is sent again (with the same push id).
         */
        public Context attemptTimeoutMs(final long value) {
            attemptTimeoutMs = value;
            return this;
        }

        /** Longest wait between retries of a refused request (default 1 s); waits are jittered below it. */
        public Context maxBackoffMs(final long value) {
            maxBackoffMs = value;
            return this;
        }

        /** Period of the background routing refresh (default 5 s), which is how a push-only client learns news. */
        public Context routingRefreshMs(final long value) {
            routingRefreshMs = value;
            return this;
        }

        long deadlineMs() {
            return deadlineMs;
        }

        long attemptTimeoutMs() {
            return attemptTimeoutMs;
        }

        long maxBackoffMs() {
            return maxBackoffMs;
        }

        void validate() {
            if (proxyAddress.isBlank()) {
                throw new IllegalArgumentException("proxyAddress is empty: give the proxy's host:port");
            }
            if (deadlineMs <= 0) {
                throw new IllegalArgumentException("deadlineMs=" + deadlineMs + " must be > 0");
            }
            if (attemptTimeoutMs <= 0) {
                throw new IllegalArgumentException("attemptTimeoutMs=" + attemptTimeoutMs + " must be > 0");
            }
            if (maxBackoffMs <= 0) {
                throw new IllegalArgumentException("maxBackoffMs=" + maxBackoffMs + " must be > 0");
            }
            if (job != null) {
                io.pscluster.wire.UpdateModes.validate(job);
            }
            if (rank < 0) {
                throw new IllegalArgumentException("rank=" + rank + " must be >= 1 (0: any)");
            }
            if (joinTimeoutMs <= 0) {
                throw new IllegalArgumentException("joinTimeoutMs=" + joinTimeoutMs + " must be > 0");
            }
            if (routingRefreshMs <= 0) {
                throw new IllegalArgumentException("routingRefreshMs=" + routingRefreshMs + " must be > 0");
            }
        }
    }
}
