package io.pscluster.proxy;

import io.grpc.StatusRuntimeException;
import io.pscluster.proto.v1.JobInfo;
import io.pscluster.proto.v1.JobSpec;
import io.pscluster.proto.v1.JobWorker;
import io.pscluster.proto.v1.JoinJobResponse;
import io.pscluster.proto.v1.RenewWorkerResponse;
import io.pscluster.proto.v1.ShardAdminServiceGrpc;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.proto.v1.UpdateJobsRequest;
import io.pscluster.proto.v1.UpdateMode;
import io.pscluster.wire.PsException;
import io.pscluster.wire.UpdateModes;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executor;
import java.util.concurrent.RejectedExecutionException;
import java.util.function.LongSupplier;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The training jobs and their workers' leases (DESIGN.md, "Update modes"). A job is registered with a {@link JobSpec};
 * its workers join it, renew their leases with the clock they are at, and leave. The whole list of jobs is versioned
 * by one counter ({@code jobs_version}) that grows with every change of any job; a changed job's
 * {@link JobInfo#getVersion() version} is the counter's value at its last change.
 *
 * <p><b>Workers</b> are {@link WorkerState#JOINING joining} from their JoinJob call until it is answered: the call
 * holds no thread (its answer is a future completed later) and the worker holds no lease, and a call that is cancelled
 * or whose deadline passes takes its worker out of the job again. A job starts once {@code expected_workers} have
 * joined (the first, when it expects at most one): every one of them starts at clock 0. A worker joining a started job
 * starts at the highest clock its live workers reported. A joining worker is answered once the job has started and
 * every live shard was sent a job list that holds it. Answered workers are {@link WorkerState#LIVE live} and are
 * dropped {@code workerLeaseMillis} after their last renewal <i>arrived</i> (the proxy's monotonic clock), or at once
 * when they leave. A job without workers records since when it is idle and is removed after
 * {@code forgetAfterMillis}.
 *
 * <p><b>Tables.</b> A job lists the tables it updates. While a job has workers its tables are bound to its mode: no
 * other job with workers may list one of them unless both jobs are ASYNC (a SYNC or SSP table belongs to one job at a
 * time). AttachTable checks it, and so does the first worker to join a job that had none (its tables were free).
 * A table dropped from the catalog leaves every job's list.
 *
 * <p><b>Durable before visible.</b> A change builds the new list, saves it through {@link ClusterState#saveJobs}
 * (with the rest of the proxy's record), and only then becomes the registry's state; a failed save changes nothing
 * and the call fails UNAVAILABLE. The clocks workers report are not a change of their job (no version, no delivery):
 * they are saved with the next change, or at most once every {@link #CLOCK_SAVE_INTERVAL_MS} by the periodic check.
 * After a restart the jobs come back with their tables and workers, whose leases count from the restart (the proxy
 * heard from none of them while it was down); the workers of jobs that had not started are dropped, since their
 * JoinJob calls ended with the old process.
 *
 * <p><b>Delivery.</b> After every change the list is sent to every live shard at once (ShardAdmin.UpdateJobs, with a
 * short deadline, on the onward-call pool); a shard that misses it is logged, not an error: its next heartbeat reports
 * an older {@code jobs_version} and the answer carries the list ({@link #published}).
 *
 * <p>Threads: one monitor guards the registry. It may take {@link ClusterState}'s monitor while holding its own, never
 * the reverse; no shard is called while it is held.
 */
final class JobRegistry {
    private static final Logger LOG = LoggerFactory.getLogger(JobRegistry.class);

    /** How long a delivery of the job list waits for a shard; a slower one gets the list with its next heartbeat. */
    static final long DELIVERY_DEADLINE_MS = 1_000;
    /** How often the proxy looks for lapsed leases and idle jobs. */
    static final long CHECK_INTERVAL_MS = 100;
    /** A worker resumed when the proxy restarted has this much more than its lease to renew first. */
    static final long RESTART_GRACE_MS = 15_000;
    /** Reported clocks are saved at most this often (a renewal is not worth an fsync). */
    static final long CLOCK_SAVE_INTERVAL_MS = 1_000;
    /** Departures remembered per job, so that a late renewal hears why its worker is no longer a member. */
    private static final int DEPARTURES_KEPT = 256;

    /** Settings fixed for the life of the registry. */
    record Settings(long workerLeaseMillis, long forgetAfterMillis) {}

    /** A JoinJob call in progress: the worker id it got, and its answer, completed once the worker may run. */
    record Joining(int workerId, CompletableFuture<JoinJobResponse> answer) {}

    /** A member's place in its life cycle; a worker that left or lapsed is no longer a member. */
    enum WorkerState {
        /** Its JoinJob call waits for the job to start and the shards to know it; no lease runs. */
        JOINING,
        /** Answered; its lease runs from its last renewal. */
        LIVE
    }

    private static final class Lease {
        WorkerState state = WorkerState.JOINING;
        long renewedNanos;
        /** Time since {@link #renewedNanos} not counted against the lease: the proxy's own pauses. */
        long creditNanos;
        /**
         * More time before the lease lapses, until the next renewal: a worker resumed from the record when the proxy
         * restarted ({@link #startLeases}), whose SDK may take a while to reach the proxy again.
         */
        long graceNanos;
        /** The version of the job list the shards must have been sent before the join is answered (none yet). */
        long answerAtVersion = Long.MAX_VALUE;
        /** The worker joined a run already started (see JoinJobResponse.joined_running). */
        boolean joinedRunning;

        final CompletableFuture<JoinJobResponse> answer = new CompletableFuture<>();

        Lease(final long now) {
            renewedNanos = now;
        }
    }

    private record Departure(String why, long atNanos) {}

    private final ClusterState state;
    private final Settings settings;
    private final ShardFanOut fanOut;
    private final Executor executor;
    private final LongSupplier nanoClock;
    /** How late check runs (see detectOwnPauses). */
    private final OwnPauses ownPauses = new OwnPauses();

    private final LongSupplier wallClock;
    private final long leaseNanos;

    /** The jobs by id, in registration order; the values are what the record holds, plus the clocks reported since. */
    private final Map<String, JobInfo> jobs = new LinkedHashMap<>();

    private final Map<String, Map<Integer, Lease>> leases = new HashMap<>();
    private final Map<String, LinkedHashMap<Integer, Departure>> departures = new HashMap<>();
    private long version;
    private boolean clocksDirty;
    private long clocksSavedNanos;
    private boolean closed;
    /** The list as of the last change, for deliveries and heartbeat answers (read without the monitor). */
    private volatile UpdateJobsRequest published;

    private JobRegistry(
            final ClusterState state,
            final Settings settings,
            final ShardFanOut fanOut,
            final Executor executor,
            final LongSupplier nanoClock,
            final LongSupplier wallClock) {
        this.state = state;
        this.settings = settings;
        this.fanOut = fanOut;
        this.executor = executor;
        this.nanoClock = nanoClock;
        this.wallClock = wallClock;
        this.leaseNanos = settings.workerLeaseMillis() * 1_000_000L;
    }

    /**
     * Opens the registry on the jobs {@code state} holds: every worker of a started job is live with a lease from now;
     * the workers of jobs not started are dropped (saved at once).
     *
     * @param fanOut delivers job lists (its deadline should be short, {@link #DELIVERY_DEADLINE_MS}).
     * @param executor runs deliveries and the clean-up of cancelled joins.
     * @throws PsException UNAVAILABLE when dropping the workers of unstarted jobs cannot be saved.
     */
    static JobRegistry open(
            final ClusterState state,
            final Settings settings,
            final ShardFanOut fanOut,
            final Executor executor,
            final LongSupplier nanoClock,
            final LongSupplier wallClock) {
        final JobRegistry registry = new JobRegistry(state, settings, fanOut, executor, nanoClock, wallClock);
        registry.resume(state.savedJobs());
        return registry;
    }

    private synchronized void resume(final ClusterState.SavedJobs saved) {
        saved.jobs().forEach(job -> jobs.put(job.getSpec().getJobId(), job));
        version = saved.version();
        publish();
        final long now = nanoClock.getAsLong();
        clocksSavedNanos = now;
        final Map<String, JobInfo.Builder> edits = new LinkedHashMap<>();
        for (final JobInfo job : jobs.values()) {
            if (!job.getStarted() && job.getWorkersCount() > 0) {
                edits.put(job.getSpec().getJobId(), without(job, idsOf(job)));
            }
        }
        if (!edits.isEmpty()) {
            change("drop the workers waiting for jobs " + edits.keySet() + " to start when the proxy stopped", edits);
            LOG.info("jobs {} had not started: their waiting workers were dropped and join again", edits.keySet());
        }
        for (final JobInfo job : List.copyOf(jobs.values())) {
            final JobInfo ranked = ranked(job);
            if (ranked != job) {
                // A record written before workers had ranks: they get theirs now, saved with the next change.
                jobs.put(job.getSpec().getJobId(), ranked);
                clocksDirty = true;
            }
        }
        for (final JobInfo job : jobs.values()) {
            for (final JobWorker worker : job.getWorkersList()) {
                final Lease lease = new Lease(now);
                lease.state = WorkerState.LIVE;
                leasesOf(job.getSpec().getJobId()).put(worker.getWorkerId(), lease);
            }
        }
        if (!jobs.isEmpty()) {
            LOG.info("resumed {} jobs (job list version {}); their workers' leases run from now", jobs.size(), version);
        }
    }

    /**
     * Restarts every live worker's lease now, with {@link #RESTART_GRACE_MS} more until its first renewal: called once
     * the proxy accepts calls. A worker's SDK reconnects to a proxy that was down on gRPC's backoff (attempts 1, 1.6,
     * 2.6, 4.1, 6.6 ... s apart), so its first renewal can come seconds after the proxy is back; without the grace a
     * restart of the proxy dropped every running job's workers (found by a hostile review).
     */
    synchronized void startLeases() {
        final long now = nanoClock.getAsLong();
        leases.values()
                .forEach(byWorker -> byWorker.values().forEach(lease -> {
                    lease.renewedNanos = now;
                    lease.creditNanos = 0;
                    lease.graceNanos = java.util.concurrent.TimeUnit.MILLISECONDS.toNanos(RESTART_GRACE_MS);
                }));
    }

    // ---- calls

    /**
     * Registers a job, or answers the registered one when the spec is identical. A job without workers may be
     * registered again with another spec: it replaces the old one and has to start again.
     *
     * @throws PsException INVALID_ARGUMENT naming the field; FAILED_PRECONDITION when the job has workers under
     *     another spec.
     */
    JobInfo register(final JobSpec requested) {
        final JobSpec spec;
        try {
            spec = UpdateModes.validate(requested);
        } catch (IllegalArgumentException e) {
            throw PsException.invalidArgument("register job: " + e.getMessage());
        }
        final String id = spec.getJobId();
        final JobInfo registered;
        synchronized (this) {
            refuseIfClosed("register job '" + id + "'");
            final JobInfo existing = jobs.get(id);
            if (existing != null && existing.getSpec().equals(spec)) {
                return existing;
            }
            if (existing != null && existing.getWorkersCount() > 0) {
                throw PsException.failedPrecondition("job '" + id + "' has " + existing.getWorkersCount()
                        + " live workers under spec {" + describe(existing.getSpec()) + "}; spec {" + describe(spec)
                        + "} is refused until they leave or their leases lapse (or use another job id)");
            }
            final long wall = wallClock.getAsLong();
            final JobInfo.Builder job = existing == null
                    ? JobInfo.newBuilder().setCreatedMillis(wall).setIdleSinceMillis(wall)
                    : existing.toBuilder().setStarted(false);
            job.setSpec(spec);
            change((existing == null ? "register" : "re-register") + " job '" + id + "'", id, job);
            registered = jobs.get(id);
            if (existing == null) {
                LOG.info("job '{}' registered: {}", id, describe(spec));
            } else {
                LOG.info("job '{}' registered again: {} (was {})", id, describe(spec), describe(existing.getSpec()));
            }
        }
        deliver("job '" + id + "' registered");
        return registered;
    }

    /**
     * Adds a worker to a job. The answer completes once the job has started and the live shards were sent a list
     * that holds the worker; until then the call holds no thread, and if {@code caller} is cancelled (the client gave
     * up, or its deadline passed) the worker leaves the job again.
     *
     * @throws PsException NOT_FOUND for an unknown job; FAILED_PRECONDITION when the job had no worker and one of its
     *     tables is now bound to another job.
     */
    Joining join(final String jobId, final String host, final io.grpc.Context caller) {
        return join(jobId, host, 0, caller);
    }

    /**
     * Adds a worker to a job at a rank: {@code rank} when it is above 0, else the lowest rank (from 1) no member of
     * the job holds. A member holds its rank until it leaves or lapses, so the ranks of a run's members are distinct;
     * the job's next run gives them out again.
     *
     * @throws PsException INVALID_ARGUMENT for a negative rank; ALREADY_EXISTS when another member holds {@code rank}
     *     (until it leaves or its lease lapses).
     */
    Joining join(final String jobId, final String host, final int rank, final io.grpc.Context caller) {
        if (rank < 0) {
            throw PsException.invalidArgument("join job '" + jobId + "': rank " + rank + " must be >= 1 (0: any)");
        }
        final int workerId;
        final Lease lease;
        final boolean running;
        synchronized (this) {
            refuseIfClosed("join job '" + jobId + "'");
            final JobInfo job = jobOrNotFound(jobId, "join");
            final Set<Integer> held = new HashSet<>();
            for (final JobWorker member : job.getWorkersList()) {
                if (rank > 0 && member.getRank() == rank) {
                    throw PsException.alreadyExists("join job '" + jobId + "' at rank " + rank + ": worker "
                            + member.getWorkerId() + " (" + member.getHost() + ") holds that rank until it leaves"
                            + " or its lease lapses");
                }
                held.add(member.getRank());
            }
            int given = rank;
            if (given == 0) {
                given = 1;
                while (held.contains(given)) {
                    given++;
                }
            }
            if (job.getWorkersCount() == 0) {
                for (final String table : job.getTablesList()) {
                    conflict(jobId, job.getSpec(), table).ifPresent(message -> {
                        throw PsException.failedPrecondition("join job '" + jobId + "': " + message);
                    });
                }
            }
            workerId = job.getNextWorkerId();
            final boolean started = job.getStarted();
            final long startClock = started ? highestClock(job) : 0;
            final JobInfo.Builder edit = job.toBuilder()
                    .setNextWorkerId(workerId + 1)
                    .setIdleSinceMillis(0)
                    .addWorkers(JobWorker.newBuilder()
                            .setWorkerId(workerId)
                            .setRank(given)
                            .setStartClock(startClock)
                            .setClock(startClock)
                            .setHost(host));
            final boolean starts = !started
                    && edit.getWorkersCount() >= Math.max(1, job.getSpec().getExpectedWorkers());
            if (starts) {
                edit.setStarted(true).setRun(job.getRun() + 1);
            }
            final long changed = change("worker " + workerId + " joins job '" + jobId + "'", jobId, edit);
            lease = new Lease(nanoClock.getAsLong());
            lease.joinedRunning = started;
            leasesOf(jobId).put(workerId, lease);
            running = started || starts;
            if (running) {
                for (final Lease joining : leasesOf(jobId).values()) {
                    if (joining.state == WorkerState.JOINING) {
                        joining.answerAtVersion = Math.min(joining.answerAtVersion, changed);
                    }
                }
            }
            if (starts) {
                LOG.info(
                        "job '{}' starts: worker {} ({}) is worker {} of {} expected",
                        jobId,
                        workerId,
                        host,
                        edit.getWorkersCount(),
                        Math.max(1, job.getSpec().getExpectedWorkers()));
            } else if (started) {
                LOG.info("worker {} ({}) joins running job '{}' at clock {}", workerId, host, jobId, startClock);
            } else {
                LOG.info(
                        "worker {} ({}) joins job '{}' and waits: {} of {} expected workers",
                        workerId,
                        host,
                        jobId,
                        edit.getWorkersCount(),
                        job.getSpec().getExpectedWorkers());
            }
        }
        caller.addListener(context -> abandonJoin(jobId, workerId, lease), executor);
        if (running) {
            deliver("worker " + workerId + " joined job '" + jobId + "'");
        }
        return new Joining(workerId, lease.answer);
    }

    /**
     * Renews a worker's lease and records the clock it is at.
     *
     * @throws PsException NOT_FOUND for an unknown job; FAILED_PRECONDITION when the worker is not a member (it
     *     lapsed or left: it must join again).
     */
    synchronized RenewWorkerResponse renew(final String jobId, final int workerId, final long clock) {
        final JobInfo job = jobOrNotFound(jobId, "renew");
        final Lease lease = leasesOf(jobId).get(workerId);
        if (lease == null) {
            throw PsException.failedPrecondition(notMember(job, workerId));
        }
        final long now = nanoClock.getAsLong();
        ownPauses.heard(now);
        lease.renewedNanos = now;
        lease.creditNanos = 0;
        lease.graceNanos = 0;
        final int index = indexOf(job, workerId);
        if (job.getWorkers(index).getClock() != clock) {
            jobs.put(
                    jobId,
                    job.toBuilder()
                            .setWorkers(index, job.getWorkers(index).toBuilder().setClock(clock))
                            .build());
            clocksDirty = true;
        }
        return RenewWorkerResponse.newBuilder()
                .setLeaseMillis(settings.workerLeaseMillis())
                .setJob(withRenewals(jobs.get(jobId), now))
                .build();
    }

    /**
     * Takes a worker out of its job at once; nothing happens when it is not a member. Completes once the live shards
     * were sent the list without it.
     */
    CompletableFuture<Void> leave(final String jobId, final int workerId) {
        final Lease lease;
        synchronized (this) {
            refuseIfClosed("leave job '" + jobId + "'");
            final JobInfo job = jobs.get(jobId);
            lease = job == null ? null : leasesOf(jobId).get(workerId);
            if (lease == null) {
                return CompletableFuture.completedFuture(null);
            }
            change("worker " + workerId + " leaves job '" + jobId + "'", jobId, without(job, Set.of(workerId)));
            leasesOf(jobId).remove(workerId);
            depart(jobId, workerId, "it left", nanoClock.getAsLong());
            LOG.info("worker {} left job '{}'", workerId, jobId);
        }
        lease.answer.completeExceptionally(PsException.failedPrecondition("worker " + workerId + " left"));
        return deliver("worker " + workerId + " left job '" + jobId + "'").thenApply(sent -> null);
    }

    /**
     * Binds a table of the catalog to a job. Completes once the live shards were sent the new list.
     *
     * @throws PsException NOT_FOUND for an unknown job or table; FAILED_PRECONDITION when another job with workers
     *     lists the table and the two are not both ASYNC.
     */
    CompletableFuture<Void> attach(final String jobId, final String table) {
        synchronized (this) {
            refuseIfClosed("attach table '" + table + "' to job '" + jobId + "'");
            if (table.isEmpty()) {
                throw PsException.invalidArgument("attach table to job '" + jobId + "': table is empty");
            }
            final JobInfo job = jobOrNotFound(jobId, "attach table '" + table + "'");
            if (!state.hasTable(table)) {
                throw PsException.notFound("attach table '" + table + "' to job '" + jobId
                        + "': the catalog has no such table (create it first)");
            }
            if (job.getTablesList().contains(table)) {
                return CompletableFuture.completedFuture(null);
            }
            conflict(jobId, job.getSpec(), table).ifPresent(message -> {
                throw PsException.failedPrecondition(message);
            });
            change(
                    "attach table '" + table + "' to job '" + jobId + "'",
                    jobId,
                    job.toBuilder().addTables(table));
            LOG.info("table '{}' is updated by job '{}' ({})", table, jobId, UpdateModes.describe(job.getSpec()));
        }
        return deliver("table '" + table + "' attached to job '" + jobId + "'").thenApply(sent -> null);
    }

    /** Every job, each worker with the milliseconds since its last renewal arrived. */
    synchronized List<JobInfo> list() {
        final long now = nanoClock.getAsLong();
        final List<JobInfo> list = new ArrayList<>(jobs.size());
        jobs.values().forEach(job -> list.add(withRenewals(job, now)));
        return list;
    }

    /** The list every shard should hold, as of the last change (what a heartbeat answer carries when it differs). */
    UpdateJobsRequest published() {
        return published;
    }

    // ---- duties

    /**
     * From now on {@link #check} does not count against any worker's lease the time by which it ran later than every
     * {@code intervalNanos}, when that passes {@code thresholdNanos}: this process was paused and read no renewal (see
     * {@code ClusterState.detectOwnPauses}). Off until called.
     */
    synchronized void detectOwnPauses(final long intervalNanos, final long thresholdNanos) {
        ownPauses.start(intervalNanos, thresholdNanos, nanoClock.getAsLong());
    }

    private void creditOwnPause(final long now) {
        final long excess = ownPauses.lateBy(now);
        if (excess == 0) {
            return;
        }
        for (final Map<Integer, Lease> byWorker : leases.values()) {
            for (final Lease lease : byWorker.values()) {
                lease.creditNanos = Math.min(now - lease.renewedNanos, lease.creditNanos + excess);
            }
        }
        LOG.warn(
                "the job check ran {} ms late (this process was paused or starved): that time is not counted against"
                        + " any worker's lease",
                excess / 1_000_000);
    }

    /**
     * The timer's duty: drops live workers whose lease lapsed, removes jobs idle for {@code forgetAfterMillis} and
     * tables the catalog no longer holds, and saves reported clocks when they are due; sends the list if it changed.
     *
     * @throws PsException UNAVAILABLE when the change cannot be saved (nothing changed; the next check tries again).
     */
    void check() {
        final String what;
        synchronized (this) {
            if (closed) {
                return;
            }
            final long now = nanoClock.getAsLong();
            creditOwnPause(now);
            final long wall = wallClock.getAsLong();
            final Set<String> catalog = catalog();
            final Map<String, JobInfo.Builder> edits = new LinkedHashMap<>();
            final Map<String, Set<Integer>> lapsed = new LinkedHashMap<>();
            for (final JobInfo job : jobs.values()) {
                final String id = job.getSpec().getJobId();
                final Set<Integer> gone = new TreeSet<>();
                leasesOf(id).forEach((workerId, lease) -> {
                    if (lease.state == WorkerState.LIVE
                            && now - lease.renewedNanos - lease.creditNanos - lease.graceNanos > leaseNanos) {
                        gone.add(workerId);
                    }
                });
                if (job.getWorkersCount() == 0
                        && wall - job.getIdleSinceMillis() >= settings.forgetAfterMillis()
                        && job.getIdleSinceMillis() > 0) {
                    edits.put(id, null);
                    continue;
                }
                final boolean unknownTables = !catalog.containsAll(job.getTablesList());
                if (gone.isEmpty() && !unknownTables) {
                    continue;
                }
                final JobInfo.Builder edit = gone.isEmpty() ? job.toBuilder() : without(job, gone);
                if (unknownTables) {
                    edit.clearTables();
                    job.getTablesList().stream().filter(catalog::contains).forEach(edit::addTables);
                }
                edits.put(id, edit);
                if (!gone.isEmpty()) {
                    lapsed.put(id, gone);
                }
            }
            if (edits.isEmpty()) {
                saveClocksIfDue(now);
                return;
            }
            change("job check", edits);
            lapsed.forEach((id, gone) -> gone.forEach(workerId -> {
                final Lease lease = leasesOf(id).remove(workerId);
                depart(id, workerId, "its lease lapsed", lease.renewedNanos + leaseNanos);
                LOG.warn(
                        "worker {} of job '{}' missed its lease: {} ms since its last renewal arrived; dropped",
                        workerId,
                        id,
                        (now - lease.renewedNanos) / 1_000_000);
            }));
            edits.forEach((id, edit) -> {
                if (edit == null) {
                    leases.remove(id);
                    departures.remove(id);
                    LOG.info("job '{}' removed: no worker for {} ms", id, settings.forgetAfterMillis());
                }
            });
            what = lapsed.isEmpty()
                    ? "jobs " + edits.keySet() + " changed"
                    : "workers lapsed in jobs " + lapsed.keySet();
        }
        deliver(what);
    }

    /**
     * Drops tables the catalog no longer holds from every job (called once a table is dropped; the periodic
     * {@link #check} does the same should this fail).
     */
    void pruneTables() {
        final List<String> changed = new ArrayList<>();
        synchronized (this) {
            final Set<String> catalog = catalog();
            final Map<String, JobInfo.Builder> edits = new LinkedHashMap<>();
            for (final JobInfo job : jobs.values()) {
                if (!catalog.containsAll(job.getTablesList())) {
                    final JobInfo.Builder edit = job.toBuilder().clearTables();
                    job.getTablesList().stream().filter(catalog::contains).forEach(edit::addTables);
                    edits.put(job.getSpec().getJobId(), edit);
                    changed.add(job.getSpec().getJobId());
                }
            }
            if (edits.isEmpty()) {
                return;
            }
            change("remove dropped tables from jobs " + changed, edits);
        }
        deliver("dropped tables removed from jobs " + changed);
    }

    /**
     * Saves clocks reported since the last save, then fails every join still waiting (UNAVAILABLE): the proxy stops.
     * Later calls that would change a job fail.
     */
    void close() {
        final List<Lease> waiting = new ArrayList<>();
        synchronized (this) {
            if (closed) {
                return;
            }
            if (clocksDirty) {
                try {
                    state.saveJobs(
                            "save the workers' clocks",
                            new ClusterState.SavedJobs(List.copyOf(jobs.values()), version));
                } catch (RuntimeException e) {
                    LOG.warn("the workers' latest clocks are not saved: {}", e.getMessage());
                }
            }
            closed = true;
            leases.values()
                    .forEach(byWorker -> byWorker.values().forEach(lease -> {
                        if (lease.state == WorkerState.JOINING) {
                            waiting.add(lease);
                        }
                    }));
        }
        waiting.forEach(lease -> lease.answer.completeExceptionally(
                PsException.unavailable("the proxy is stopping; join again once it is back")));
    }

    // ---- the change protocol

    private long change(final String what, final String jobId, final JobInfo.Builder edit) {
        final Map<String, JobInfo.Builder> edits = new HashMap<>();
        edits.put(jobId, edit);
        return change(what, edits);
    }

    /**
     * Saves the list with {@code edits} applied (a null edit removes the job), every edited job at the next version,
     * then makes it the registry's list and publishes it.
     *
     * @return the new version.
     * @throws PsException UNAVAILABLE when the save fails: nothing changed.
     */
    private long change(final String what, final Map<String, JobInfo.Builder> edits) {
        final long next = version + 1;
        final Map<String, JobInfo> after = new LinkedHashMap<>(jobs);
        edits.forEach((id, edit) -> {
            if (edit == null) {
                after.remove(id);
            } else {
                after.put(id, edit.setVersion(next).build());
            }
        });
        state.saveJobs(what, new ClusterState.SavedJobs(List.copyOf(after.values()), next));
        jobs.clear();
        jobs.putAll(after);
        version = next;
        clocksDirty = false;
        clocksSavedNanos = nanoClock.getAsLong();
        publish();
        return next;
    }

    private void publish() {
        published = UpdateJobsRequest.newBuilder()
                .addAllJobs(jobs.values())
                .setJobsVersion(version)
                .build();
    }

    private void saveClocksIfDue(final long now) {
        if (!clocksDirty || now - clocksSavedNanos < CLOCK_SAVE_INTERVAL_MS * 1_000_000L) {
            return;
        }
        state.saveJobs("save the workers' clocks", new ClusterState.SavedJobs(List.copyOf(jobs.values()), version));
        clocksDirty = false;
        clocksSavedNanos = now;
    }

    private void refuseIfClosed(final String what) {
        if (closed) {
            throw PsException.unavailable(what + ": the proxy is stopping");
        }
    }

    /** A join call ended before it was answered: its worker leaves the job (nothing happens once it was answered). */
    private void abandonJoin(final String jobId, final int workerId, final Lease lease) {
        synchronized (this) {
            if (closed || lease.state != WorkerState.JOINING || leasesOf(jobId).get(workerId) != lease) {
                // Answered already, or the proxy stops (the record keeps the worker: a restart drops it if its job
                // had not started, else its fresh lease lapses).
                return;
            }
            final JobInfo job = jobs.get(jobId);
            if (job == null) {
                leasesOf(jobId).remove(workerId);
                return;
            }
            try {
                change(
                        "worker " + workerId + " of job '" + jobId + "' gave up joining",
                        jobId,
                        without(job, Set.of(workerId)));
            } catch (RuntimeException e) {
                // Not saved: the worker stays a member, as if answered, and lapses like any silent worker.
                lease.state = WorkerState.LIVE;
                lease.renewedNanos = nanoClock.getAsLong();
                lease.creditNanos = 0;
                LOG.warn(
                        "worker {} of job '{}' gave up joining but cannot be removed now ({}); its lease will lapse",
                        workerId,
                        jobId,
                        e.getMessage());
                return;
            }
            leasesOf(jobId).remove(workerId);
            depart(jobId, workerId, "its JoinJob call ended before it was answered", nanoClock.getAsLong());
            LOG.info(
                    "worker {} of job '{}' gave up joining (its call was cancelled or its deadline passed)",
                    workerId,
                    jobId);
        }
        lease.answer.completeExceptionally(PsException.unavailable("the join was cancelled"));
        deliver("worker " + workerId + " gave up joining job '" + jobId + "'");
    }

    // ---- delivery

    /**
     * Sends the current list to every live shard at once, off the caller's thread; completes (never exceptionally)
     * with the version sent, once every shard answered or failed, after answering the joins that waited for it.
     */
    private CompletableFuture<Long> deliver(final String why) {
        final CompletableFuture<Long> sent;
        try {
            sent = CompletableFuture.supplyAsync(() -> send(why), executor);
        } catch (RejectedExecutionException e) {
            // The proxy is stopping; close() has failed the joins.
            return CompletableFuture.completedFuture(0L);
        }
        return sent.thenApply(delivered -> {
            answerJoins(delivered);
            return delivered;
        });
    }

    private long send(final String why) {
        final UpdateJobsRequest list = published;
        try {
            fanOut.callAll(
                    "send the job list (" + why + ")",
                    state.liveShards(),
                    (index, channel, deadline) -> ShardAdminServiceGrpc.newBlockingStub(channel)
                            .withDeadline(deadline)
                            .updateJobs(list));
        } catch (StatusRuntimeException e) {
            LOG.warn(
                    "{}; the shard gets job list version {} with its next heartbeat",
                    e.getStatus().getDescription(),
                    list.getJobsVersion());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        return list.getJobsVersion();
    }

    /** Answers the joins of started jobs whose worker is in the list the shards were sent. */
    private void answerJoins(final long delivered) {
        final List<Lease> answered = new ArrayList<>();
        final List<JoinJobResponse> answers = new ArrayList<>();
        synchronized (this) {
            final long now = nanoClock.getAsLong();
            leases.forEach((jobId, byWorker) -> byWorker.forEach((workerId, lease) -> {
                if (lease.state != WorkerState.JOINING || lease.answerAtVersion > delivered) {
                    return;
                }
                final JobInfo job = jobs.get(jobId);
                lease.state = WorkerState.LIVE;
                lease.renewedNanos = now;
                lease.creditNanos = 0;
                answered.add(lease);
                answers.add(JoinJobResponse.newBuilder()
                        .setWorkerId(workerId)
                        .setRank(job.getWorkers(indexOf(job, workerId)).getRank())
                        .setStartClock(job.getWorkers(indexOf(job, workerId)).getStartClock())
                        .setLeaseMillis(settings.workerLeaseMillis())
                        .setJob(withRenewals(job, now))
                        .setJoinedRunning(lease.joinedRunning)
                        .build());
            }));
        }
        for (int i = 0; i < answered.size(); i++) {
            answered.get(i).answer.complete(answers.get(i));
        }
    }

    // ---- helpers

    private JobInfo jobOrNotFound(final String jobId, final String what) {
        final JobInfo job = jobs.get(jobId);
        if (job == null) {
            throw PsException.notFound(
                    what + ": job '" + jobId + "' is not registered" + (jobId.isEmpty() ? " (job_id is empty)" : ""));
        }
        return job;
    }

    private Map<Integer, Lease> leasesOf(final String jobId) {
        return leases.computeIfAbsent(jobId, id -> new HashMap<>());
    }

    private void depart(final String jobId, final int workerId, final String why, final long atNanos) {
        final LinkedHashMap<Integer, Departure> gone = departures.computeIfAbsent(jobId, id -> new LinkedHashMap<>());
        gone.put(workerId, new Departure(why, atNanos));
        if (gone.size() > DEPARTURES_KEPT) {
            gone.remove(gone.keySet().iterator().next());
        }
    }

    private String notMember(final JobInfo job, final int workerId) {
        final String jobId = job.getSpec().getJobId();
        final Departure departure =
                departures.getOrDefault(jobId, new LinkedHashMap<>()).get(workerId);
        final String why;
        if (departure != null) {
            why = departure.why() + " " + Math.max(0, (nanoClock.getAsLong() - departure.atNanos()) / 1_000_000)
                    + " ms ago";
        } else if (workerId >= 0 && workerId < job.getNextWorkerId()) {
            why = "it left or its lease lapsed earlier";
        } else {
            why = "the proxy never gave out that id";
        }
        return "worker " + workerId + " of job '" + jobId + "' is no longer a member (" + why + "); join again";
    }

    /**
     * Why {@code jobId} (in mode {@code spec}) may not update {@code table}: another job with workers lists it and the
     * two are not both ASYNC.
     */
    private Optional<String> conflict(final String jobId, final JobSpec spec, final String table) {
        for (final JobInfo other : jobs.values()) {
            final String otherId = other.getSpec().getJobId();
            if (otherId.equals(jobId)
                    || other.getWorkersCount() == 0
                    || !other.getTablesList().contains(table)) {
                continue;
            }
            if (other.getSpec().getMode() == UpdateMode.ASYNC && spec.getMode() == UpdateMode.ASYNC) {
                continue;
            }
            final String theirs = UpdateModes.describe(other.getSpec());
            final String ours = UpdateModes.describe(spec);
            return Optional.of("table '" + table + "' is updated by job '" + otherId + "' in " + theirs + " mode; job '"
                    + jobId + "' asks for " + ours
                    + (theirs.equals(ours)
                            ? " too: a sync or ssp table belongs to one job at a time"
                            : ": a table takes one update mode at a time"));
        }
        return Optional.empty();
    }

    private static String describe(final JobSpec spec) {
        return UpdateModes.describe(spec) + ", " + spec.getExpectedWorkers() + " expected workers";
    }

    private static long highestClock(final JobInfo job) {
        long highest = 0;
        for (final JobWorker worker : job.getWorkersList()) {
            highest = Math.max(highest, worker.getClock());
        }
        return highest;
    }

    private static int indexOf(final JobInfo job, final int workerId) {
        for (int i = 0; i < job.getWorkersCount(); i++) {
            if (job.getWorkers(i).getWorkerId() == workerId) {
                return i;
            }
        }
        throw new IllegalStateException(
                "worker " + workerId + " is not in job " + job.getSpec().getJobId());
    }

    /** The job with each worker without a rank (0) given the lowest rank no other member holds; itself if none. */
    private static JobInfo ranked(final JobInfo job) {
        final Set<Integer> held = new HashSet<>();
        job.getWorkersList().forEach(worker -> held.add(worker.getRank()));
        if (!held.contains(0)) {
            return job;
        }
        final JobInfo.Builder edit = job.toBuilder();
        int next = 1;
        for (int i = 0; i < edit.getWorkersCount(); i++) {
            if (edit.getWorkers(i).getRank() == 0) {
                while (held.contains(next)) {
                    next++;
                }
                held.add(next);
                edit.setWorkers(i, edit.getWorkers(i).toBuilder().setRank(next));
            }
        }
        return edit.build();
    }

    private static Set<Integer> idsOf(final JobInfo job) {
        final Set<Integer> ids = new HashSet<>();
        job.getWorkersList().forEach(worker -> ids.add(worker.getWorkerId()));
        return ids;
    }

    /** The job without those workers; idle, and no longer started, from now when none is left. */
    private JobInfo.Builder without(final JobInfo job, final Set<Integer> workerIds) {
        final JobInfo.Builder edit = job.toBuilder().clearWorkers();
        job.getWorkersList().stream()
                .filter(worker -> !workerIds.contains(worker.getWorkerId()))
                .forEach(edit::addWorkers);
        if (edit.getWorkersCount() == 0) {
            // A job with no worker left has ended its run: the next run waits for its expected workers again and
            // starts at clock 0 (the shards reset its clocks when they see it not started).
            edit.setIdleSinceMillis(wallClock.getAsLong()).setStarted(false);
        }
        return edit;
    }

    private JobInfo withRenewals(final JobInfo job, final long now) {
        final Map<Integer, Lease> byWorker = leasesOf(job.getSpec().getJobId());
        final JobInfo.Builder info = job.toBuilder();
        for (int i = 0; i < info.getWorkersCount(); i++) {
            final Lease lease = byWorker.get(info.getWorkers(i).getWorkerId());
            if (lease != null) {
                info.setWorkers(
                        i,
                        info.getWorkers(i).toBuilder().setMillisSinceRenewal((now - lease.renewedNanos) / 1_000_000));
            }
        }
        return info.build();
    }

    /** The names of the catalog's tables. */
    private Set<String> catalog() {
        final Set<String> names = new HashSet<>();
        for (final TableSchema schema : state.tables()) {
            names.add(schema.getName());
        }
        return names;
    }
}
