package io.pscluster.server;

import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.pscluster.proto.v1.DeregisterShardRequest;
import io.pscluster.proto.v1.DrainShardRequest;
import io.pscluster.proto.v1.DrainShardResponse;
import io.pscluster.proto.v1.HeartbeatRequest;
import io.pscluster.proto.v1.HeartbeatResponse;
import io.pscluster.proto.v1.ProxyServiceGrpc;
import io.pscluster.proto.v1.RegisterShardRequest;
import io.pscluster.proto.v1.RegisterShardResponse;
import io.pscluster.proto.v1.RestoreDirective;
import io.pscluster.proto.v1.RestoreReport;
import io.pscluster.proto.v1.RoutingTable;
import io.pscluster.proto.v1.ShardLoad;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.server.table.ParameterTable;
import io.pscluster.wire.Backoff;
import io.pscluster.wire.Slots;
import java.io.IOException;
import java.net.URI;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentSkipListMap;
import java.util.concurrent.Executors;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The shard's side of discovery: registers with the proxy, heartbeats its load, and carries out what the proxy
 * answers. If the proxy forgets the shard (a restarted proxy) the next heartbeat re-registers it with its rows still
 * in memory, claiming what it holds (routing epoch, slots with their generations, tables).
 *
 * <p>The lease: before each RegisterShard or Heartbeat call the link notes {@code sent = System.nanoTime()}; on
 * success it first applies the answer (tables, restore orders, routing), and only then extends the shard's lease to
 * {@code sent + lease_millis}. The proxy counts the same lease from when it received the call, plus a margin, so the
 * shard stops serving before the proxy can give its slots to anyone else.
 *
 * <p>Restore orders are durable on the proxy and repeated in every answer until reported done. The link keeps every
 * order it knows by order id: a new one marks its slots restoring at once (before the routing in the same answer is
 * applied) and is carried out in the background, retried with backoff (0.5 s doubling to 30 s, with jitter) until it
 * succeeds; a failure never ends the restoring mark. Each heartbeat reports every known order; an order is forgotten
 * once it is done and the proxy no longer sends it.
 *
 * <p>Failures to reach the proxy are logged once per outage (with the proxy's address), and once when it answers
 * again, not once per heartbeat.
 */
final class ProxyLink implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(ProxyLink.class);
    private static final long CALL_DEADLINE_MS = 5_000;
    static final long FIRST_RETRY_MS = 500;
    static final long MAX_RETRY_MS = 30_000;

    private final Shard shard;
    private final ManagedChannel channel;
    private final String address;
    private final String proxyAddress;
    /**
     * This shard's run, in each of its registrations (RegisterShardRequest.process_id): one repeated because its
     * answer was lost is not a restart. Per link, not per JVM: several shards may run in one JVM (psctl local, tests).
     */
    private final String processId = java.util.UUID.randomUUID().toString();

    private final FaultPoints faults;
    private final ProxyServiceGrpc.ProxyServiceBlockingStub proxy;
    private final ScheduledExecutorService heartbeats;
    // Restores read whole checkpoints; they must not hold up heartbeats.
    private final ScheduledExecutorService restores;
    private final AtomicBoolean refreshQueued = new AtomicBoolean();
    private final Map<Long, RestoreOrder> orders = new ConcurrentSkipListMap<>();
    // Calls to the proxy that failed in a row; the first is logged, the rest are not until one succeeds.
    private final AtomicInteger failedCalls = new AtomicInteger();
    private volatile boolean freshStart = true;
    private volatile boolean registered;
    private volatile boolean closing;
    private volatile boolean warnedNoLease;
    private volatile long lastRequests;
    private volatile long lastBeatNanos = System.nanoTime();
    // The end of the lease the proxy's last answer granted (also while draining, when the shard takes none).
    private volatile long leaseFromProxyNanos = System.nanoTime();
    // When the heartbeat whose answer was followed last was sent.
    private volatile long lastFollowedSentNanos = System.nanoTime();
    private volatile URI checkpointRoot;

    ProxyLink(
            final Shard shard,
            final ManagedChannel channel,
            final String advertisedAddress,
            final String proxyAddress,
            final FaultPoints faults) {
        this.shard = shard;
        this.channel = channel;
        this.address = advertisedAddress;
        this.proxyAddress = proxyAddress;
        this.faults = faults;
        this.proxy = ProxyServiceGrpc.newBlockingStub(channel);
        this.heartbeats = Executors.newSingleThreadScheduledExecutor(daemon("ps-heartbeat"));
        this.restores = Executors.newSingleThreadScheduledExecutor(daemon("ps-restore"));
    }

    /**
     * Registers, retrying for up to {@code timeoutMs} while the proxy is unreachable or slow to answer, or still holds
     * this shard's id for a previous process whose lease has not lapsed yet (ALREADY_EXISTS: a shard restarted with its
     * {@code --id}); then heartbeats. Any other refusal, or one that outlasts the timeout, is thrown and leaves the link
     * unregistered, so that closing it deregisters nobody.
     */
    void register(final long timeoutMs) throws InterruptedException {
        final long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMs);
        RegisterShardResponse response;
        boolean told = false;
        while (true) {
            try {
                response = registerOnce();
                break;
            } catch (StatusRuntimeException e) {
                final Status.Code code = e.getStatus().getCode();
                // DEADLINE_EXCEEDED: no answer in time (a loaded machine); the proxy may have registered this shard,
                // and registers a given id again; without one, the id it assigned lapses like a lost shard's.
                if ((code != Status.Code.UNAVAILABLE
                                && code != Status.Code.ALREADY_EXISTS
                                && code != Status.Code.DEADLINE_EXCEEDED)
                        || System.nanoTime() > deadline) {
                    throw e;
                }
                if (code == Status.Code.ALREADY_EXISTS && !told) {
                    told = true;
                    LOG.warn(
                            "proxy at {} refuses the id for now ({}); retrying for up to {} ms",
                            proxyAddress,
                            e.getStatus().getDescription(),
                            timeoutMs);
                }
                if (code != Status.Code.ALREADY_EXISTS) {
                    channel.resetConnectBackoff();
                }
                TimeUnit.MILLISECONDS.sleep(200);
            }
        }
        final long interval = Math.max(50, response.getHeartbeatIntervalMillis());
        heartbeats.scheduleWithFixedDelay(this::heartbeatQuietly, interval, interval, TimeUnit.MILLISECONDS);
    }

    private RegisterShardResponse registerOnce() throws InterruptedException {
        final RegisterShardRequest.Builder request = RegisterShardRequest.newBuilder()
                .setShardId(shard.shardId())
                .setAddress(address)
                .setFreshStart(freshStart)
                .setProtocolVersion(io.pscluster.wire.Protocol.VERSION)
                .setProcessId(processId)
                .setDraining(shard.isDraining());
        if (!freshStart) {
            // Rows still in memory: claim them, so that a proxy that lost its state keeps them here.
            final BitSet held = shard.ownedSlots();
            request.setRoutingEpoch(shard.routingEpoch());
            for (int slot = held.nextSetBit(0); slot >= 0; slot = held.nextSetBit(slot + 1)) {
                request.addHeldSlots(slot);
            }
            for (final long generation : shard.ownedGenerations()) {
                request.addHeldGenerations(generation);
            }
            request.addAllTables(shard.tableStats());
        }
        // Before the call: a table dropped here after it left may postdate the answer's orders (see acceptOrders).
        final Map<String, Long> dropsBefore = shard.tableDrops();
        final long sent = System.nanoTime();
        final RegisterShardResponse response = call(() ->
                proxy.withDeadlineAfter(CALL_DEADLINE_MS, TimeUnit.MILLISECONDS).registerShard(request.build()));
        registered = true;
        shard.assignId(response.getShardId());
        freshStart = false;
        if (!response.getCheckpointRoot().isEmpty()) {
            checkpointRoot = ShardAdminGrpcService.root(response.getCheckpointRoot());
        }
        LOG.info("shard {} registered at {}", response.getShardId(), address);
        follow(response.getTablesList(), response.getRestoreOrdersList(), response.getRouting(), dropsBefore);
        extendLease(sent, response.getLeaseMillis());
        return response;
    }

    /** Asks for a heartbeat now, for instance when a client routed with a newer epoch than ours. */
    void refreshSoon() {
        if (refreshQueued.compareAndSet(false, true)) {
            try {
                heartbeats.execute(this::heartbeatQuietly);
            } catch (RejectedExecutionException closed) {
                // Closing: no more heartbeats.
            }
        }
    }

    private void heartbeatQuietly() {
        refreshQueued.set(false);
        if (closing || faults.fire(FaultPoints.DROP_HEARTBEATS)) {
            return;
        }
        try {
            try {
                heartbeat();
            } catch (StatusRuntimeException e) {
                if (e.getStatus().getCode() != Status.Code.NOT_FOUND) {
                    throw e;
                }
                LOG.warn("proxy at {} does not know shard {}; registering again", proxyAddress, shard.shardId());
                registerOnce();
            }
        } catch (StatusRuntimeException e) {
            // Logged by call(), once per outage. A proxy that restarts must hear from its shards within its grace
            // period (one lease plus margin): without this, gRPC's reconnect backoff (which grows to minutes) would
            // keep the channel idle for seconds after the proxy is back, and the proxy would count the shard as gone.
            if (e.getStatus().getCode() == Status.Code.UNAVAILABLE) {
                channel.resetConnectBackoff();
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } catch (RuntimeException e) {
            LOG.error("heartbeat handling failed", e);
        }
    }

    private void heartbeat() throws InterruptedException {
        final long now = System.nanoTime();
        final long requests = shard.requestCount();
        final double seconds = Math.max(1e-3, (now - lastBeatNanos) / 1e9);
        final double rate = (requests - lastRequests) / seconds;
        lastRequests = requests;
        lastBeatNanos = now;
        final Runtime runtime = Runtime.getRuntime();
        long rows = 0;
        long bytes = 0;
        long droppedRows = 0;
        final var stats = shard.tableStats();
        for (final var table : stats) {
            rows += table.getRows();
            bytes += table.getBytes();
            droppedRows += table.getDroppedRows();
        }
        final HeartbeatRequest request = HeartbeatRequest.newBuilder()
                .setShardId(shard.shardId())
                .setRoutingEpoch(shard.routingEpoch())
                .setProtocolVersion(io.pscluster.wire.Protocol.VERSION)
                .setLoad(ShardLoad.newBuilder()
                        .setRows(rows)
                        .setBytes(bytes)
                        .setRequestsPerSecond(rate)
                        .setApplyQueueDepth(shard.applyQueueDepth())
                        .setHeapUsedBytes(runtime.totalMemory() - runtime.freeMemory())
                        .setHeapMaxBytes(runtime.maxMemory())
                        .setDroppedRows(droppedRows)
                        .setOffheapHeldBytes(ParameterTable.offHeapLimit() - ParameterTable.offHeapAvailable())
                        .setOffheapLimitBytes(ParameterTable.offHeapLimit())
                        .setFencedSlots(shard.fencedSlotCount())
                        .setFenceRemainingMillis(shard.fenceRemainingMillis())
                        .setKeptMovedSlots(shard.keptMovedSlotCount()))
                .addAllTables(stats)
                .addAllRestores(restoreReports())
                .setJobsVersion(shard.jobsVersion())
                .setDraining(shard.isDraining())
                .build();
        final Map<String, Long> dropsBefore = shard.tableDrops();
        final long sent = System.nanoTime();
        final HeartbeatResponse response = call(() ->
                proxy.withDeadlineAfter(CALL_DEADLINE_MS, TimeUnit.MILLISECONDS).heartbeat(request));
        for (final String dropped : response.getDroppedTablesList()) {
            if (shard.dropTable(dropped)) {
                LOG.info("shard {} dropped table {}: the proxy holds a tombstone for it", shard.shardId(), dropped);
            }
        }
        follow(
                response.getTablesList(),
                response.getRestoreOrdersList(),
                response.hasRouting() ? response.getRouting() : null,
                dropsBefore);
        // After the routing: a move the earlier proxy committed takes its slots away first (their fence goes with
        // them), so no write to them is accepted here in between.
        shard.unfenceMadeBefore(response.getLiftFencesBeforeMillis());
        shard.keepMovedSlots(response.getKeepMovedSlotsList());
        if (response.hasJobs()) {
            // The proxy's job list differed from ours (a delivery missed us, or we just registered). Taken whatever its
            // version, unless an UpdateJobs call brought a list while the heartbeat was under way: that one may be
            // newer than the answer, which then only counts if it is newer still.
            if (shard.jobsVersion() == request.getJobsVersion()) {
                shard.updateJobsFromHeartbeat(response.getJobs());
            } else {
                shard.updateJobs(response.getJobs());
            }
        }
        extendLease(sent, response.getLeaseMillis());
        lastFollowedSentNanos = sent;
    }

    /** Whether the answer to a heartbeat sent after {@code nanos} (System.nanoTime) has been followed. */
    boolean followedAnswerSentAfter(final long nanos) {
        return lastFollowedSentNanos - nanos > 0;
    }

    /** Makes a call to the proxy, logging the first failure of an outage and the recovery. */
    private <T> T call(final java.util.function.Supplier<T> rpc) {
        final T answer;
        try {
            answer = rpc.get();
        } catch (StatusRuntimeException e) {
            final Status.Code code = e.getStatus().getCode();
            if (code == Status.Code.NOT_FOUND) {
                // An answer (the proxy forgot this shard): the caller registers again.
                throw e;
            }
            if (failedCalls.getAndIncrement() == 0) {
                if (code == Status.Code.UNAVAILABLE || code == Status.Code.DEADLINE_EXCEEDED) {
                    LOG.warn("cannot reach the proxy at {}: {}", proxyAddress, describe(e.getStatus()));
                } else {
                    LOG.warn(
                            "the proxy at {} refused shard {}: {}",
                            proxyAddress,
                            shard.shardId(),
                            describe(e.getStatus()));
                }
            }
            throw e;
        }
        final int failed = failedCalls.getAndSet(0);
        if (failed > 0) {
            LOG.info("proxy at {} reachable again after {} failed heartbeats", proxyAddress, failed);
        }
        return answer;
    }

    static String describe(final Status status) {
        final StringBuilder text = new StringBuilder(status.getCode().toString());
        if (status.getDescription() != null) {
            text.append(": ").append(status.getDescription());
        }
        if (status.getCause() != null && status.getCause().getMessage() != null) {
            text.append(" (").append(status.getCause().getMessage()).append(')');
        }
        return text.toString();
    }

    private void extendLease(final long sent, final long leaseMillis) {
        if (leaseMillis <= 0) {
            if (!warnedNoLease) {
                warnedNoLease = true;
                LOG.warn(
                        "proxy at {} granted shard {} no lease (lease_millis={}): it refuses requests until one is",
                        proxyAddress,
                        shard.shardId(),
                        leaseMillis);
            }
            return;
        }
        leaseFromProxyNanos = sent + TimeUnit.MILLISECONDS.toNanos(leaseMillis);
        shard.grantLeaseUntil(leaseFromProxyNanos);
    }

    /**
     * Whether the proxy's last heartbeat answer is within its lease: past it, the proxy counts this shard gone (or
     * soon will), and no longer counts on what it keeps.
     */
    boolean heardWithinLease() {
        return System.nanoTime() - leaseFromProxyNanos < 0;
    }

    /**
     * Carries out the proxy's answer in the order that keeps requests safe: tables first, then the slots of new
     * restore orders are marked (refused until loaded) before the routing table that hands them over is applied.
     * The caller extends the lease only after this returns.
     */
    private void follow(
            final List<TableSchema> tables,
            final List<RestoreDirective> restoreOrders,
            final RoutingTable routing,
            final Map<String, Long> dropsBefore)
            throws InterruptedException {
        createTables(tables);
        acceptOrders(restoreOrders, dropsBefore);
        if (routing != null) {
            shard.applyRouting(routing);
        }
        forgetDoneOrders(restoreOrders);
    }

    private void createTables(final List<TableSchema> schemas) throws InterruptedException {
        for (final TableSchema schema : schemas) {
            try {
                shard.createTable(schema);
            } catch (RuntimeException e) {
                LOG.error(
                        "shard {} cannot create table {} the proxy holds: {}",
                        shard.shardId(),
                        schema.getName(),
                        e.getMessage());
            }
        }
    }

    /**
     * Marks the slots of every order not seen before restoring at once, then loads them in the background. A table
     * dropped here since {@code dropsBefore} (taken before the request whose answer brought the orders) may have been
     * dropped after the proxy wrote the orders' table times: the load clears its rows (RestoreOrder.droppedSince).
     */
    private void acceptOrders(final List<RestoreDirective> directives, final Map<String, Long> dropsBefore) {
        for (final RestoreDirective directive : directives) {
            final RestoreOrder known = orders.get(directive.getOrderId());
            if (known != null) {
                // The proxy clears giver_keeps_rows of an order whose giver is gone (its next attempt may fall back),
                // and sends new table times when the catalog changes (the load clears a table they say was dropped).
                known.update(directive);
                continue;
            }
            final RestoreOrder order = new RestoreOrder(directive, dropsBefore);
            if (directive.getTakeBackKeptRows()) {
                // Slots given back that this shard never heard were given away still hold their rows as they were.
                shard.keepStillOwned(order.slots);
            }
            shard.markRestoring(order.slots);
            orders.put(directive.getOrderId(), order);
            LOG.info(
                    "shard {} takes restore order {}: {} slots from checkpoint {} ({})",
                    shard.shardId(),
                    directive.getOrderId(),
                    order.slots.cardinality(),
                    directive.getCheckpointId(),
                    directive.getReason());
            schedule(order, 0);
        }
    }

    /**
     * Forgets the orders the proxy no longer sends that are done, or none of whose slots is this shard's to restore
     * through them any more: gone from here (a move undone hands them back to their giver), or restored by an order
     * the proxy sends now (the slots came back to this shard through a new order while it missed the answer that took
     * them away: the proxy never has two orders for one slot). Those are not attempted again, and their slots refuse
     * requests as another's, or wait for the new order. An unsent order some of whose slots are still this shard's and
     * in no other order goes on (a proxy restarted without its saved orders sends none: the slots must not serve before
     * they are restored).
     */
    private void forgetDoneOrders(final List<RestoreDirective> stillSent) {
        final Set<Long> sent = new HashSet<>();
        stillSent.forEach(directive -> sent.add(directive.getOrderId()));
        final BitSet sentSlots = new BitSet(Slots.SLOT_COUNT);
        for (final RestoreDirective directive : stillSent) {
            final RestoreOrder order = orders.get(directive.getOrderId());
            if (order != null) {
                sentSlots.or(order.slots);
            }
        }
        final BitSet owned = shard.ownedSlots();
        final BitSet toServe = new BitSet(Slots.SLOT_COUNT);
        final BitSet toAbandon = new BitSet(Slots.SLOT_COUNT);
        orders.values().removeIf(order -> {
            if (sent.contains(order.directive().getOrderId())) {
                return false;
            }
            if (order.isDone()) {
                if (order.heldUntilAcknowledged()) {
                    // A move's slots, loaded: the proxy has heard it is done (their giver drops its rows), so they
                    // serve now. Had this shard been lost before, the proxy would have handed them back to the giver.
                    toServe.or(order.slots);
                }
                return true;
            }
            final BitSet ownSlots = (BitSet) order.slots.clone();
            ownSlots.and(owned);
            final boolean superseded = !ownSlots.isEmpty();
            ownSlots.andNot(sentSlots);
            if (!ownSlots.isEmpty()) {
                return false;
            }
            order.cancel();
            toAbandon.or(order.slots);
            LOG.warn(
                    "shard {} drops restore order {}: the proxy gave its {} slots to another shard{}",
                    shard.shardId(),
                    order.directive().getOrderId(),
                    order.slots.cardinality(),
                    superseded ? ", or to this one again with a new order" : "");
            return true;
        });
        // Slots another order still loads stay refused until that one is done.
        for (final RestoreOrder order : orders.values()) {
            toServe.andNot(order.slots);
            toAbandon.andNot(order.slots);
        }
        if (!toServe.isEmpty()) {
            serveRestored(toServe);
        }
        if (!toAbandon.isEmpty()) {
            abandon(toAbandon);
        }
    }

    private void schedule(final RestoreOrder order, final long delayMs) {
        try {
            restores.schedule(() -> attempt(order), delayMs, TimeUnit.MILLISECONDS);
        } catch (RejectedExecutionException closed) {
            // Closing: the order is not carried out here.
        }
    }

    private void attempt(final RestoreOrder order) {
        if (closing || order.isCancelled()) {
            return;
        }
        final RestoreDirective directive = order.directive();
        try {
            if (faults.fire(FaultPoints.FAIL_RESTORE)) {
                throw new IOException("injected fault " + FaultPoints.FAIL_RESTORE);
            }
            if (directive.getTakeBackKeptRows() && shard.takeBackKeptRows(order.slots)) {
                order.succeeded(new Shard.RestoreOutcome(
                        directive.getCheckpointId(), 0, 0, "the shard kept these rows since the move was undone"));
                return;
            }
            final URI root = directive.getCheckpointId() == 0 ? null : rootOf(directive);
            // A move's order (its giver keeps the rows) neither falls back nor serves before its proxy heard it done.
            final boolean move = directive.getGiverKeepsRows();
            final Shard.RestoreOutcome outcome = shard.restoreOrder(
                    root,
                    directive.getCheckpointId(),
                    order.slots,
                    directive.getTableCreatedMillisMap(),
                    !move,
                    (loaded, checkpointMillis) -> order.droppedSince(loaded, checkpointMillis, shard.tableDrops()),
                    !move);
            order.succeeded(outcome, move);
            if (order.isCancelled()) {
                // Taken back while it ran: what it loaded is not this shard's.
                abandon(order);
            }
        } catch (Shard.MoveCheckpointDamagedException damaged) {
            // The giver kept the rows: the proxy hands the slots back to it, or lets this order fall back.
            order.damaged();
            retryLater(order, damaged);
        } catch (InterruptedException e) {
            // Only close() interrupts the restore thread; anything else is retried like any failure.
            if (closing) {
                Thread.currentThread().interrupt();
                return;
            }
            retryLater(order, e);
        } catch (Exception | StackOverflowError | OutOfMemoryError e) {
            // An Error must not vanish inside the scheduled task: the slots would stay refused with nobody told.
            retryLater(order, e);
        }
    }

    private void serveRestored(final BitSet slots) {
        try {
            shard.serveRestored(slots);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private void abandon(final RestoreOrder order) {
        abandon(order.slots);
    }

    private void abandon(final BitSet slots) {
        try {
            shard.abandonRestore(slots);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private void retryLater(final RestoreOrder order, final Throwable failure) {
        if (order.isCancelled()) {
            abandon(order);
            return;
        }
        final RestoreDirective directive = order.directive();
        final long delay = order.failed(failure);
        shard.restoreFailed(
                order.slots,
                "attempt " + order.attempts + " of restore order " + directive.getOrderId() + " (checkpoint "
                        + directive.getCheckpointId() + ") failed, retrying in " + delay + " ms: " + failure);
        if (order.attempts == 1) {
            LOG.warn(
                    "shard {} failed to restore order {} ({} slots from checkpoint {}): {}; retrying until done",
                    shard.shardId(),
                    directive.getOrderId(),
                    order.slots.cardinality(),
                    directive.getCheckpointId(),
                    failure.toString());
        }
        schedule(order, delay);
    }

    private URI rootOf(final RestoreDirective directive) throws IOException {
        if (!directive.getCheckpointRoot().isEmpty()) {
            return ShardAdminGrpcService.root(directive.getCheckpointRoot());
        }
        final URI root = checkpointRoot;
        if (root == null) {
            throw new IOException("restore order " + directive.getOrderId() + " names no checkpoint root");
        }
        return root;
    }

    /** Sends a heartbeat now and waits for its answer to be followed (a failure is logged, as any heartbeat's). */
    void heartbeatNow() throws InterruptedException {
        try {
            heartbeats.submit(this::heartbeatQuietly).get(CALL_DEADLINE_MS, TimeUnit.MILLISECONDS);
        } catch (java.util.concurrent.ExecutionException
                | java.util.concurrent.TimeoutException
                | java.util.concurrent.RejectedExecutionException e) {
            // Not answered: the next scheduled heartbeat tries again.
        }
    }

    /** A report on every order the link knows, for the next heartbeat. */
    List<RestoreReport> restoreReports() {
        final List<RestoreReport> reports = new ArrayList<>(orders.size());
        for (final RestoreOrder order : orders.values()) {
            reports.add(order.report());
        }
        return reports;
    }

    URI checkpointRoot() {
        return checkpointRoot;
    }

    boolean registered() {
        return registered;
    }

    /**
     * Asks the proxy to take this shard's slots over, for up to {@code timeoutMs}. The proxy refuses
     * (FAILED_PRECONDITION) while any restore in the cluster is outstanding, this shard's own included (one that
     * finished but is not yet reported): so a heartbeat is sent first, and the request repeated with a backoff until
     * the restores are done or the time is up.
     */
    DrainShardResponse drain(final long timeoutMs, final String unapplied) throws InterruptedException {
        final long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMs);
        long backoffMs = 100;
        while (true) {
            // The drain call below says whether the proxy can be reached.
            heartbeatNow();
            final long leftMs = TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime());
            try {
                return proxy.withDeadlineAfter(Math.max(1, leftMs), TimeUnit.MILLISECONDS)
                        .drainShard(DrainShardRequest.newBuilder()
                                .setShardId(shard.shardId())
                                .setUnapplied(unapplied)
                                .build());
            } catch (StatusRuntimeException e) {
                final Status.Code code = e.getStatus().getCode();
                final boolean retryable = code == Status.Code.FAILED_PRECONDITION || code == Status.Code.UNAVAILABLE;
                if (!retryable || System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(backoffMs) > deadline) {
                    throw e;
                }
                LOG.info(
                        "shard {}: the proxy cannot take its slots yet ({}); asking again",
                        shard.shardId(),
                        describe(e.getStatus()));
                TimeUnit.MILLISECONDS.sleep(backoffMs);
                backoffMs = Math.min(5_000, backoffMs * 2);
            }
        }
    }

    /**
     * Stops heartbeating (so a leaving shard never re-registers), then, if this shard registered, tells the proxy it
     * is leaving. A shard whose registration was refused deregisters nobody: its id may be another shard's.
     */
    @Override
    public void close() throws InterruptedException {
        close(true);
    }

    /**
     * As {@link #close()}; with {@code deregister} false the proxy is not told, as when the process dies: it finds out
     * when the lease lapses (in-process crash tests).
     */
    void close(final boolean deregister) throws InterruptedException {
        closing = true;
        heartbeats.shutdownNow();
        restores.shutdownNow();
        heartbeats.awaitTermination(5, TimeUnit.SECONDS);
        if (registered && deregister) {
            try {
                proxy.withDeadlineAfter(CALL_DEADLINE_MS, TimeUnit.MILLISECONDS)
                        .deregisterShard(DeregisterShardRequest.newBuilder()
                                .setShardId(shard.shardId())
                                .build());
            } catch (StatusRuntimeException e) {
                LOG.warn(
                        "deregistration of shard {} at the proxy at {} failed: {}",
                        shard.shardId(),
                        proxyAddress,
                        describe(e.getStatus()));
            }
        }
        channel.shutdown();
        if (!channel.awaitTermination(5, TimeUnit.SECONDS)) {
            channel.shutdownNow();
        }
    }

    static java.util.concurrent.ThreadFactory daemon(final String name) {
        return runnable -> {
            final Thread thread = new Thread(runnable, name);
            thread.setDaemon(true);
            return thread;
        };
    }

    /** One restore order and what became of it. Its state is guarded by its monitor. */
    private static final class RestoreOrder {
        /** As last sent by the proxy (it may clear giver_keeps_rows, or send new table times). */
        private RestoreDirective directive;

        final BitSet slots = new BitSet(Slots.SLOT_COUNT);
        // Only the restore thread touches it.
        int attempts;
        private boolean done;
        private long checkpointId;
        private long createdMillis;
        private long rows;
        private String note = "";
        private boolean damaged;
        private boolean cancelled;
        /** Loaded but not serving until the proxy stops sending the order (a move's). */
        private boolean held;
        /** How often each table was dropped on the shard before the request whose answer brought the order left. */
        private final Map<String, Long> dropsAtAccept;

        RestoreOrder(final RestoreDirective directive, final Map<String, Long> tableDrops) {
            this.directive = directive;
            this.dropsAtAccept = tableDrops;
            for (final int slot : directive.getSlotsList()) {
                if (slot >= 0 && slot < Slots.SLOT_COUNT) {
                    slots.set(slot);
                }
            }
        }

        synchronized RestoreDirective directive() {
            return directive;
        }

        synchronized void update(final RestoreDirective sent) {
            directive = sent;
        }

        synchronized void succeeded(final Shard.RestoreOutcome outcome, final boolean heldForTheProxy) {
            held = heldForTheProxy;
            succeeded(outcome);
        }

        synchronized boolean heldUntilAcknowledged() {
            return held;
        }

        /**
         * Of the tables an attempt {@code loaded} from a checkpoint taken at {@code checkpointMillis}, those dropped
         * since the order was issued: by the times the proxy sent last (a table dropped, or created anew after the
         * checkpoint), or dropped here since the request that brought the order left ({@code dropsNow}; the proxy's
         * times follow a heartbeat later).
         */
        java.util.Set<String> droppedSince(
                final java.util.Set<String> loaded, final long checkpointMillis, final Map<String, Long> dropsNow) {
            final Map<String, Long> times = directive().getTableCreatedMillisMap();
            final java.util.Set<String> dropped = new java.util.HashSet<>();
            for (final String name : loaded) {
                if (times.getOrDefault(name, Long.MIN_VALUE) > checkpointMillis
                        || !java.util.Objects.equals(dropsNow.get(name), dropsAtAccept.get(name))) {
                    dropped.add(name);
                }
            }
            return dropped;
        }

        synchronized void succeeded(final Shard.RestoreOutcome outcome) {
            checkpointId = outcome.checkpointId();
            createdMillis = outcome.createdMillis();
            rows = outcome.rows();
            note = outcome.note();
            done = true;
        }

        /** Records the failure; returns the delay before the next attempt. */
        synchronized long failed(final Throwable failure) {
            attempts++;
            note = "attempt " + attempts + " failed: " + failure;
            return Backoff.jitteredMs(FIRST_RETRY_MS, MAX_RETRY_MS, attempts - 1);
        }

        synchronized boolean isDone() {
            return done;
        }

        /** The ordered checkpoint is damaged and the order forbids a fallback: reported until done. */
        synchronized void damaged() {
            damaged = true;
        }

        /** The proxy took the order back: no attempt is made any more. */
        synchronized void cancel() {
            cancelled = true;
        }

        synchronized boolean isCancelled() {
            return cancelled;
        }

        synchronized RestoreReport report() {
            return RestoreReport.newBuilder()
                    .setOrderId(directive.getOrderId())
                    .setDone(done)
                    .setCheckpointId(checkpointId)
                    .setCheckpointCreatedMillis(createdMillis)
                    .setRows(rows)
                    .setNote(note)
                    .setDamaged(damaged && !done)
                    .setHeld(done && held)
                    .build();
        }
    }
}
