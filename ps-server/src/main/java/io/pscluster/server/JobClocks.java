package io.pscluster.server;

import io.pscluster.proto.v1.JobInfo;
import io.pscluster.proto.v1.JobWorker;
import io.pscluster.proto.v1.UpdateJobsRequest;
import io.pscluster.proto.v1.UpdateMode;
import io.pscluster.server.table.ParameterTable;
import io.pscluster.wire.PsException;
import io.pscluster.wire.Slots;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executor;
import java.util.function.Consumer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The jobs a shard knows from the proxy, and each job's clocks on this shard: which clock every live worker has
 * ended here, which clocks are applied, the gradients of SYNC clocks not yet applied, and the pulls waiting for a
 * clock.
 *
 * <p>Membership is the proxy's: a job's live workers are those its last {@link JobInfo} lists. A listed worker that
 * has not yet reported here (a Clock, or a tagged push or pull, which says it ended the clock before) holds every
 * clock back, so a clock is never applied without a worker that takes part in it. A worker's first report is its
 * join here: refused (not accepted) when this shard has already applied the clock the worker would start with, so it
 * starts later rather than miss a clock half-way. A worker the proxy dropped stops holding clocks back; its SYNC
 * gradients of clocks it ended still count (it is counted among their workers), those of a clock it never ended are
 * discarded. When a run ends (its last worker left, the job was registered anew, or the proxy no longer lists it), the
 * clocks its workers ended are applied in order before any clock of the next run, which counts from 0.
 *
 * <p>SYNC: a clock {@code c} is applied once every live worker has ended it: the gradients pushed for {@code c} are
 * combined per table by the {@link Applier} in a fixed order (worker id, then push sequence) and applied once; then
 * {@code applied = c}. SSP: pushes are applied as they come (the Shard flushes a worker's pushes before it reports its
 * clock), so {@code applied} is the lowest clock every live worker has ended. A worker at clock {@code t} may read
 * once {@code applied >= t - staleness - 1} (staleness 0 for SYNC).
 *
 * <p>Threads: every method takes this object's monitor briefly; applying and waking waiters run on the executor,
 * never under the monitor and never on a gRPC or writer thread. A waiting pull holds no thread.
 */
final class JobClocks {
    private static final Logger LOG = LoggerFactory.getLogger(JobClocks.class);

    /** Combines and applies one SYNC clock's gradients; completes once the writers have applied them. */
    @FunctionalInterface
    interface Applier {
        CompletableFuture<Void> apply(String jobId, long clock, ClockUpdates updates, int participants);
    }

    /**
     * The gradients pushed for one clock: per table, per worker id, summed as they arrive (one request never repeats
     * a key and a worker's requests for one clock reach a shard in the order it sent them unless it pushes
     * concurrently, so a key's rows are added in the order the worker pushed them).
     */
    static final class ClockUpdates {
        final Map<String, TreeMap<Integer, ClockSum>> byTable = new HashMap<>();
        /** Per table of {@link #byTable}: the new rows its pushes hold for the sum (see {@link NewRows}). */
        private final Map<String, ParameterTable.ClockRows> newRows = new HashMap<>();

        long bytes;

        /** The new rows {@code table}'s pushes hold, for the sum's push, or null; this holds none of them after. */
        ParameterTable.ClockRows takeRows(final String table) {
            return newRows.remove(table);
        }

        /** Gives back the new rows held for {@code table}: its pushes are dropped, or applied without them. */
        void releaseRows(final String table) {
            final ParameterTable.ClockRows rows = newRows.remove(table);
            if (rows != null) {
                rows.release();
            }
        }

        /** Gives back every new row still held (the clock could not be applied). */
        void releaseAllRows() {
            newRows.values().forEach(ParameterTable.ClockRows::release);
            newRows.clear();
        }

        /**
         * Adds a push; returns the bytes it added to what is held (for a worker's first push to the table, the whole
         * sum's, so that {@link #removeWorker} gives back exactly what was counted).
         */
        long add(final String table, final int worker, final int dim, final long[] keys, final float[] gradients) {
            final TreeMap<Integer, ClockSum> workers = byTable.computeIfAbsent(table, t -> new TreeMap<>());
            ClockSum sum = workers.get(worker);
            long before = 0;
            if (sum == null) {
                sum = new ClockSum(dim);
                workers.put(worker, sum);
            } else {
                before = sum.bytes();
            }
            sum.add(keys, gradients);
            final long added = sum.bytes() - before;
            bytes += added;
            return added;
        }

        /** Whether a worker's gradients are held here. */
        boolean holds(final int worker) {
            for (final TreeMap<Integer, ClockSum> workers : byTable.values()) {
                if (workers.containsKey(worker)) {
                    return true;
                }
            }
            return false;
        }

        /**
         * Drops a worker's gradients; returns the bytes freed. The new rows held for a table other workers pushed to
         * stay held (the writers give back those the sum does not create).
         */
        long removeWorker(final int worker) {
            long freed = 0;
            for (final Iterator<Map.Entry<String, TreeMap<Integer, ClockSum>>> it =
                            byTable.entrySet().iterator();
                    it.hasNext(); ) {
                final Map.Entry<String, TreeMap<Integer, ClockSum>> table = it.next();
                final ClockSum sum = table.getValue().remove(worker);
                if (sum != null) {
                    freed += sum.bytes();
                }
                if (table.getValue().isEmpty()) {
                    it.remove();
                    releaseRows(table.getKey());
                }
            }
            bytes -= freed;
            return freed;
        }

        /** Drops every worker's gradients of {@code table}; returns the bytes freed. */
        long removeTable(final String table) {
            releaseRows(table);
            final TreeMap<Integer, ClockSum> workers = byTable.remove(table);
            long freed = 0;
            if (workers != null) {
                for (final ClockSum sum : workers.values()) {
                    freed += sum.bytes();
                }
            }
            bytes -= freed;
            return freed;
        }
    }

    /**
     * What a SYNC push holds of the rows its clock's sum will create in its table, before it is acknowledged: see
     * {@link ParameterTable.ClockRows}.
     */
    @FunctionalInterface
    interface NewRows {
        /** Holds nothing: the sum creates its rows as it is applied (tests of the clocks alone). */
        NewRows NONE = held -> held;

        /**
         * Holds the push's new rows in {@code held}, what the clock holds for the table (null: the table's first push
         * of the clock), and returns what the clock holds now, or throws the push's refusal having held nothing more.
         */
        ParameterTable.ClockRows holdIn(ParameterTable.ClockRows held);
    }

    /** What a push of a job's worker is to do with its gradients. */
    enum Route {
        /** Apply as soon as accepted. */
        APPLY,
        /** Keep them for the clock they belong to ({@link #buffer}). */
        BUFFER
    }

    /** A pull waiting for a clock; {@link #cancel()} when its call ends first. */
    interface Wait {
        void cancel();
    }

    private final Executor executor;
    private final Applier applier;
    private final long maxBufferedBytes;
    private final Map<String, Job> jobs = new HashMap<>();
    // Read by heartbeats without the monitor.
    private volatile long version;
    // SYNC gradients held for clocks not yet applied, over every job.
    private long bufferedBytes;

    /** @param maxBufferedBytes the most SYNC gradient bytes the shard holds for clocks not yet applied. */
    JobClocks(final Executor executor, final Applier applier, final long maxBufferedBytes) {
        this.executor = executor;
        this.applier = applier;
        this.maxBufferedBytes = maxBufferedBytes;
    }

    // ---- the proxy's list

    /**
     * Replaces the job list with the proxy's, unless the shard already holds that version or a newer one (an
     * UpdateJobs call that arrives after a later one). {@code authoritative}: a heartbeat answer, which the proxy sends
     * exactly when its version differs from the shard's: taken whatever its version (a proxy that lost its state
     * counts again from 1).
     */
    void update(final UpdateJobsRequest request, final boolean authoritative) {
        final List<Runnable> wake = new ArrayList<>();
        synchronized (this) {
            if (request.getJobsVersion() <= version && !(authoritative && request.getJobsVersion() != version)) {
                return;
            }
            version = request.getJobsVersion();
            final Set<String> listed = new HashSet<>();
            for (final JobInfo info : request.getJobsList()) {
                listed.add(info.getSpec().getJobId());
                final Job job = jobs.computeIfAbsent(info.getSpec().getJobId(), Job::new);
                job.listed = true;
                job.take(info, authoritative);
                job.advance(wake);
            }
            for (final Iterator<Job> it = jobs.values().iterator(); it.hasNext(); ) {
                final Job job = it.next();
                if (!listed.contains(job.id) && job.listed) {
                    job.end(wake);
                }
                // Kept while the clocks its workers ended are applied: unapplied() names them, and a job listed again
                // starts its run after them.
                if (!job.listed && job.drained()) {
                    it.remove();
                }
            }
        }
        wake.forEach(executor::execute);
    }

    long version() {
        return version;
    }

    // ---- requests

    /**
     * Checks that a push to {@code table} from {@code jobId} (empty: a client outside any job) may update it, and
     * says how. Refuses a push from outside the SYNC/SSP job that holds the table, and one from a job that does not
     * hold it when that job is SYNC or SSP.
     *
     * @throws PsException FAILED_PRECONDITION (mixing modes, a worker no longer a member, a clock already applied)
     *     or job-pending (the proxy's news has not reached this shard yet).
     */
    Route route(final String table, final String jobId, final int worker, final long clock) {
        final List<Runnable> wake = new ArrayList<>();
        final Route route;
        synchronized (this) {
            route = routeLocked(table, jobId, worker, clock, wake);
        }
        wake.forEach(executor::execute);
        return route;
    }

    private Route routeLocked(
            final String table, final String jobId, final int worker, final long clock, final List<Runnable> wake) {
        final Job holder = holderOf(table);
        if (holder != null && !holder.id.equals(jobId)) {
            throw mixing(table, holder, jobId);
        }
        if (jobId.isEmpty()) {
            return Route.APPLY;
        }
        final Job job = known(jobId);
        if (job.mode == UpdateMode.ASYNC) {
            return Route.APPLY;
        }
        if (!job.tables.contains(table)) {
            throw PsException.jobPending(
                    "table '" + table + "' is not yet attached to job '" + jobId + "' on this shard", 0);
        }
        final Member member = job.tagged(worker, clock, "pushed", wake);
        if (clock <= job.applied) {
            throw PsException.failedPrecondition("job '" + jobId + "': worker " + worker + " pushed for clock " + clock
                    + ", which this shard has already applied (applied through " + job.applied + ")");
        }
        if (clock <= member.ended) {
            throw PsException.failedPrecondition("job '" + jobId + "': worker " + worker + " pushed for clock " + clock
                    + " after it ended that clock (ended " + member.ended + ")");
        }
        return job.mode == UpdateMode.SYNC ? Route.BUFFER : Route.APPLY;
    }

    /**
     * Keeps a SYNC push for its clock (after {@link #route} said BUFFER, under the push's sequence window), added to
     * what the worker pushed for that clock before; NOT_FOUND when {@code tableLive} says the table was dropped since
     * the push found it. The push's new rows are held for the clock by {@code newRows} first ({@link NewRows#NONE}
     * when it creates none).
     *
     * @throws PsException RESOURCE_EXHAUSTED (final) when the shard holds its limit of gradients waiting for clocks,
     *     or as {@code newRows} refuses the push (nothing kept)
     */
    synchronized void buffer(
            final String table,
            final java.util.function.BooleanSupplier tableLive,
            final String jobId,
            final int worker,
            final long clock,
            final int dim,
            final long[] keys,
            final float[] gradients,
            final NewRows newRows) {
        if (!tableLive.getAsBoolean()) {
            // Checked under the monitor that tableDropped takes after the table left: held now, it would outlive the
            // drop and go to a table created again under the name.
            throw PsException.notFound("table '" + table + "' was dropped while the push was checked");
        }
        final Job job = known(jobId);
        final Member member = job.member(worker);
        if (clock <= job.applied || clock <= member.ended) {
            throw PsException.failedPrecondition("job '" + jobId + "': clock " + clock + " of worker " + worker
                    + " was applied or ended while its push was checked; push again for the current clock");
        }
        final long upTo = ClockSum.bytesFor(keys.length, dim);
        if (bufferedBytes + upTo > maxBufferedBytes) {
            throw PsException.resourceExhausted("job '" + jobId + "': this shard holds " + (bufferedBytes >> 20)
                    + " MiB of sync gradients waiting for their clocks, and " + (upTo >> 10) + " KiB more would pass"
                    + " its limit of " + (maxBufferedBytes >> 20) + " MiB; end clocks more often (fewer keys per"
                    + " clock) or give the shard more heap");
        }
        final ClockUpdates pending = job.pending.get(clock);
        final ClockUpdates updates = pending != null ? pending : new ClockUpdates();
        final ParameterTable.ClockRows held = newRows.holdIn(updates.newRows.get(table));
        if (held != null) {
            updates.newRows.put(table, held);
        }
        if (pending == null) {
            job.pending.put(clock, updates);
        }
        bufferedBytes += updates.add(table, worker, dim, keys, gradients);
    }

    /**
     * Forgets the gradients held for {@code table}'s clocks, in every job: the table was dropped, and a table created
     * again under its name must not get them (nor a sum of another dim). Returns the bytes freed.
     */
    synchronized long tableDropped(final String table) {
        long freed = 0;
        for (final Job job : jobs.values()) {
            for (final ClockUpdates updates : job.pending.values()) {
                freed += updates.removeTable(table);
            }
            for (final Retired retired : job.retired) {
                freed += retired.updates().removeTable(table);
            }
        }
        bufferedBytes -= freed;
        return freed;
    }

    /** The SYNC clocks whose gradients are held and not yet applied, in words ("" when none). */
    synchronized String unapplied() {
        final StringBuilder text = new StringBuilder();
        for (final Job job : jobs.values()) {
            if (!job.pending.isEmpty() || job.applying || !job.retired.isEmpty()) {
                text.append(text.length() == 0 ? "" : "; ")
                        .append("job '")
                        .append(job.id)
                        .append("' clocks ")
                        .append(job.applying ? "being applied and " : "")
                        .append(
                                job.retired.isEmpty()
                                        ? ""
                                        : job.retired.size() + " of an ended run waiting to be applied and ")
                        .append(job.pending.keySet())
                        .append(" not ended by every worker");
            }
        }
        return text.toString();
    }

    /**
     * The SYNC clocks whose held gradients touch {@code slots}, in words ("" when none); a clock being applied counts
     * (its keys are with the applier). A move of those slots must wait for them: they are applied after its cut.
     */
    synchronized String heldIn(final BitSet slots) {
        final StringBuilder text = new StringBuilder();
        for (final Job job : jobs.values()) {
            final List<Long> clocks = new ArrayList<>();
            for (final Map.Entry<Long, ClockUpdates> pending : job.pending.entrySet()) {
                if (touches(pending.getValue(), slots)) {
                    clocks.add(pending.getKey());
                }
            }
            for (final Retired retired : job.retired) {
                if (touches(retired.updates(), slots)) {
                    clocks.add(retired.clock());
                }
            }
            if (job.applying || !clocks.isEmpty()) {
                text.append(text.length() == 0 ? "" : "; ")
                        .append("job '")
                        .append(job.id)
                        .append("'")
                        .append(job.applying ? " has a clock being applied" : "")
                        .append(clocks.isEmpty() ? "" : " holds gradients of clocks " + clocks + " not applied yet");
            }
        }
        return text.toString();
    }

    /**
     * For each started SYNC job, the last clock whose gradients may be held here or still come from a worker that has
     * not ended it: the next to apply, or the newest holding gradients. A move's fence takes SYNC pushes up to it, so
     * that those clocks can end (every worker pushes its part, then ends them) and be applied before the move's cut.
     */
    synchronized Map<String, Long> openSyncClocks() {
        final Map<String, Long> open = new HashMap<>();
        for (final Job job : jobs.values()) {
            if (job.started && job.mode == UpdateMode.SYNC) {
                open.put(job.id, Math.max(job.applied + 1, job.pending.isEmpty() ? -1 : job.pending.lastKey()));
            }
        }
        return open;
    }

    /**
     * The SYNC jobs of {@code open} ({@link #openSyncClocks}) still running whose clocks up to the one named are not
     * all applied here, in words ("" when none).
     */
    synchronized String notAppliedUpTo(final Map<String, Long> open) {
        final StringBuilder text = new StringBuilder();
        open.forEach((jobId, clock) -> {
            final Job job = jobs.get(jobId);
            if (job != null && job.started && job.mode == UpdateMode.SYNC && job.applied < clock) {
                text.append(text.length() == 0 ? "" : "; ")
                        .append("job '")
                        .append(jobId)
                        .append("' has applied clock ")
                        .append(job.applied)
                        .append(", not yet ")
                        .append(clock);
            }
        });
        return text.toString();
    }

    private static boolean touches(final ClockUpdates updates, final BitSet slots) {
        for (final Map.Entry<String, TreeMap<Integer, ClockSum>> table : updates.byTable.entrySet()) {
            final long tableHash = Slots.tableHash(table.getKey());
            for (final ClockSum sum : table.getValue().values()) {
                for (final long key : sum.keys()) {
                    if (slots.get(Slots.slotOf(tableHash, key))) {
                        return true;
                    }
                }
            }
        }
        return false;
    }

    /** SYNC gradient bytes held for clocks not yet applied (tests, status). */
    synchronized long bufferedBytes() {
        return bufferedBytes;
    }

    /** Refuses clocks no worker can be at: the first is -1 ("about to start clock 0"). */
    private static void checkClock(final String jobId, final int worker, final long clock) {
        if (clock < 0) {
            throw PsException.invalidArgument(
                    "job '" + jobId + "': worker " + worker + " sent clock " + clock + "; clocks start at 0");
        }
    }

    /** What a Clock call was answered. */
    record Reported(boolean accepted, long applied) {}

    /**
     * A worker ended {@code ended} (-1: it is about to start clock 0). Its first report here is its join: not
     * accepted when this shard has applied past {@code ended}.
     */
    Reported report(final String jobId, final int worker, final long ended, final boolean join) {
        return report(jobId, worker, ended, join, false);
    }

    /**
     * As {@link #report(String, int, long, boolean)}; {@code ownsNothing}: this shard owns no slots now, so gradients
     * it holds for clocks the worker ended elsewhere are of slots it lost (their loss was reported with the failover
     * that moved them), and are dropped rather than refusing the worker.
     */
    Reported report(
            final String jobId, final int worker, final long ended, final boolean join, final boolean ownsNothing) {
        final List<Runnable> wake = new ArrayList<>();
        final Reported reported;
        synchronized (this) {
            final Job job = known(jobId);
            if (ended < -1) {
                throw PsException.invalidArgument("job '" + jobId + "': worker " + worker + " ended clock " + ended
                        + "; the first clock is 0 (-1: about to start it)");
            }
            final Member member = job.member(worker);
            if (!member.reported) {
                if (ended < job.applied) {
                    return new Reported(false, job.applied);
                }
                member.join(ended);
            } else if (join) {
                // It moves its start past a clock another shard had applied, before it pushed anything.
                if (ended < job.applied) {
                    return new Reported(false, job.applied);
                }
                if (ended > member.ended) {
                    final long pushedFor = job.pushedFor(member.id);
                    if (pushedFor >= 0) {
                        // Its accepted gradients would be dropped: a join comes before a worker's first push.
                        throw PsException.failedPrecondition("job '" + jobId + "': worker " + worker + " asked to"
                                + " start after clock " + ended + " but has pushed gradients for clock " + pushedFor
                                + " here, which would be dropped; a worker moves its start only before it pushes"
                                + " (join the job again as a new worker)");
                    }
                    member.join(ended);
                }
            } else if (ended == member.ended + 1) {
                member.ended = ended;
            } else if (ended > member.ended + 1 && (ownsNothing || !job.holdsBetween(member.id, member.ended, ended))) {
                // The worker ended clocks without this shard (it was cut off or frozen, left the routing table, and
                // came back): it pushed nothing here for them, so they ended empty here, or what it pushed is of slots
                // this shard lost since. Refusing would end the job.
                bufferedBytes -= job.dropBetween(member.id, member.ended, ended);
                member.ended = ended;
            } else if (ended > member.ended + 1) {
                throw PsException.failedPrecondition("job '" + jobId + "': worker " + worker + " ended clock " + ended
                        + " but is at clock " + (member.ended + 1) + " on this shard; clocks end one at a time");
            }
            job.advance(wake);
            reported = new Reported(true, job.applied);
        }
        wake.forEach(executor::execute);
        return reported;
    }

    /** The mode of a job this shard knows (job-pending when it does not know it yet). */
    synchronized UpdateMode modeOf(final String jobId) {
        return known(jobId).mode;
    }

    /**
     * Runs {@code ready} on the executor once worker {@code worker} of {@code jobId}, at clock {@code clock}, may
     * read: at once (on the caller's thread, returning null) when it may now. Otherwise returns the wait, which ends
     * by running {@code ready} or {@code failed} (the job ended, the worker was dropped) on the executor, or by
     * {@link Wait#cancel()}.
     */
    Wait whenReadable(
            final String jobId,
            final int worker,
            final long clock,
            final Runnable ready,
            final Consumer<Throwable> failed) {
        final List<Runnable> wake = new ArrayList<>();
        final Waiter waiter;
        synchronized (this) {
            final Job job = known(jobId);
            if (job.mode == UpdateMode.ASYNC) {
                waiter = null;
            } else {
                waiter = waitIfNeeded(job, worker, clock, ready, failed, wake);
            }
        }
        wake.forEach(executor::execute);
        if (waiter == null) {
            // The pull is answered outside the monitor.
            ready.run();
        }
        return waiter;
    }

    /** The wait of a SYNC/SSP pull at {@code clock}, registered; null when it may read now. */
    private Waiter waitIfNeeded(
            final Job job,
            final int worker,
            final long clock,
            final Runnable ready,
            final Consumer<Throwable> failed,
            final List<Runnable> wake) {
        job.tagged(worker, clock, "reads", wake);
        final long needed = clock - job.staleness - 1;
        if (job.applied >= needed) {
            return null;
        }
        final Waiter waiter = new Waiter(job, worker, needed, ready, failed);
        job.waiters.add(waiter);
        return waiter;
    }

    /**
     * Completes once every clock up to {@code clock} of the job is applied here: at once when it is, or when the job
     * is unknown here (nothing of it to wait for); fails when the job ends first. A caller that stops waiting (its
     * timeout) cancels the future, which forgets the wait.
     */
    CompletableFuture<Void> whenApplied(final String jobId, final long clock) {
        final CompletableFuture<Void> applied = new CompletableFuture<>();
        final Waiter waiter;
        synchronized (this) {
            final Job job = jobs.get(jobId);
            if (job == null || !job.listed || job.applied >= clock) {
                waiter = null;
            } else {
                waiter = new Waiter(job, -1, clock, () -> applied.complete(null), applied::completeExceptionally);
                job.waiters.add(waiter);
            }
        }
        if (waiter == null) {
            applied.complete(null);
        } else {
            applied.whenComplete((done, failure) -> {
                if (failure instanceof java.util.concurrent.CancellationException) {
                    waiter.cancel();
                }
            });
        }
        return applied;
    }

    /** A job's clocks on this shard (tests, status). */
    record Snapshot(long applied, Map<Integer, Long> ended, int pendingClocks, int waiters) {}

    synchronized Snapshot snapshot(final String jobId) {
        final Job job = jobs.get(jobId);
        if (job == null) {
            return null;
        }
        final Map<Integer, Long> ended = new TreeMap<>();
        job.members.forEach((id, member) -> ended.put(id, member.reported ? member.ended : null));
        return new Snapshot(job.applied, ended, job.pending.size(), job.waiters.size());
    }

    /** Pulls waiting for a clock, over every job (tests: a waiting pull holds no thread but is counted here). */
    synchronized int waiting() {
        return jobs.values().stream().mapToInt(job -> job.waiters.size()).sum();
    }

    // ---- internals, under the monitor

    /** Drops a worker's gradients from every pending clock after {@code kept}. */
    private void freed(final TreeMap<Long, ClockUpdates> pending, final int worker, final long kept) {
        for (final Map.Entry<Long, ClockUpdates> entry : pending.entrySet()) {
            if (entry.getKey() > kept) {
                bufferedBytes -= entry.getValue().removeWorker(worker);
            }
        }
    }

    private Job known(final String jobId) {
        final Job job = jobs.get(jobId);
        if (job == null || !job.started) {
            throw PsException.jobPending(
                    "job '" + jobId + "' is not known to this shard yet (or has not started); the proxy tells it", 0);
        }
        return job;
    }

    /** The SYNC/SSP job with live workers that lists {@code table}, or null. */
    private Job holderOf(final String table) {
        for (final Job job : jobs.values()) {
            if (job.mode != UpdateMode.ASYNC && !job.members.isEmpty() && job.tables.contains(table)) {
                return job;
            }
        }
        return null;
    }

    private static PsException mixing(final String table, final Job holder, final String jobId) {
        return PsException.failedPrecondition("table '" + table + "' is updated by job '" + holder.id + "' in "
                + holder.describeMode() + " mode; "
                + (jobId.isEmpty()
                        ? "this push comes from a client outside any job"
                        : "job '" + jobId + "' pushes to it")
                + ": a table takes one update mode at a time");
    }

    private final class Job {
        final String id;
        final TreeMap<Integer, Member> members = new TreeMap<>();
        final TreeMap<Long, ClockUpdates> pending = new TreeMap<>();
        final List<Waiter> waiters = new ArrayList<>();
        final Set<String> tables = new HashSet<>();
        UpdateMode mode = UpdateMode.ASYNC;
        int staleness;
        boolean started;
        int nextWorkerId;
        long infoVersion = -1;
        // Every clock up to this one is applied here (SSP: ended by every live worker, its pushes applied).
        long applied = -1;
        // A SYNC clock's gradients are with the applier (of this run or, from retired, of one that ended).
        boolean applying;
        // In the proxy's last list; a job no longer listed stays (not started) until its ended run is applied.
        boolean listed;
        // Counts the runs here: an apply of an ended run's clock leaves the next run's clocks alone.
        long generation;
        // The proxy's count of the job's runs (JobInfo.run), 0 when unknown.
        long run;
        // Workers that left, as (start, ended), while clocks they ended are not applied: counted by participants.
        final List<long[]> departed = new ArrayList<>();
        // Clocks of ended runs that hold gradients, applied in order before any clock of the next run.
        final java.util.ArrayDeque<Retired> retired = new java.util.ArrayDeque<>();

        Job(final String id) {
            this.id = id;
        }

        String describeMode() {
            return mode == UpdateMode.SSP ? "ssp:" + staleness : mode.name().toLowerCase(java.util.Locale.ROOT);
        }

        void take(final JobInfo info, final boolean authoritative) {
            if (info.getVersion() <= infoVersion && !authoritative) {
                return;
            }
            infoVersion = info.getVersion();
            final boolean anotherRun = info.getRun() != 0 && run != 0 && info.getRun() != run;
            if ((mode != info.getSpec().getMode() || !info.getStarted() || anotherRun)
                    && (started || !pending.isEmpty())) {
                // The run ended (no worker left) or the job was registered anew in another mode: the next run starts
                // at clock 0 with the workers it waits for, once the clocks this one's workers ended are applied.
                retire();
            }
            mode = info.getSpec().getMode();
            run = info.getRun();
            staleness = mode == UpdateMode.SSP ? info.getSpec().getStaleness() : 0;
            started = info.getStarted();
            nextWorkerId = info.getNextWorkerId();
            tables.clear();
            tables.addAll(info.getTablesList());
            final Set<Integer> live = new HashSet<>();
            for (final JobWorker worker : info.getWorkersList()) {
                live.add(worker.getWorkerId());
                members.computeIfAbsent(worker.getWorkerId(), Member::new);
            }
            for (final Iterator<Member> it = members.values().iterator(); it.hasNext(); ) {
                final Member member = it.next();
                if (!live.contains(member.id)) {
                    it.remove();
                    depart(member);
                    failWaitersOf(member.id, "worker " + member.id + " of job '" + id + "' is no longer a member");
                    LOG.info("job {}: worker {} left or lapsed; clocks no longer wait for it", id, member.id);
                }
            }
        }

        Member member(final int worker) {
            final Member member = members.get(worker);
            if (member != null) {
                return member;
            }
            if (worker < nextWorkerId) {
                throw PsException.failedPrecondition("worker " + worker + " of job '" + id
                        + "' is no longer a member (it left or its lease lapsed); join the job again");
            }
            throw PsException.jobPending(
                    "worker " + worker + " of job '" + id + "' is not known to this shard yet; the proxy tells it", 0);
        }

        /**
         * A push or pull of {@code worker} tagged with its clock: the clock is checked, taken as the worker's join here
         * (it ended {@code clock - 1}) if it had not reported, and refused when it is ahead of the worker.
         */
        Member tagged(final int worker, final long clock, final String doing, final List<Runnable> wake) {
            checkClock(id, worker, clock);
            final Member member = member(worker);
            if (!member.reported && clock - 1 >= applied) {
                member.join(clock - 1);
            }
            advance(wake);
            if (member.reported && clock > member.ended + 1) {
                throw PsException.failedPrecondition("job '" + id + "': worker " + worker + " " + doing + " at clock "
                        + clock + " but is at clock " + (member.ended + 1) + " on this shard (it ended " + member.ended
                        + "); a worker's pushes and pulls belong to its current clock: end the clock first");
            }
            return member;
        }

        /** Applies (SYNC) or marks (SSP) every clock all live workers have ended; collects the pulls it frees. */
        void advance(final List<Runnable> wake) {
            if (!started || members.isEmpty()) {
                return;
            }
            long lowest = Long.MAX_VALUE;
            for (final Member member : members.values()) {
                if (!member.reported) {
                    return;
                }
                lowest = Math.min(lowest, member.ended);
            }
            if (mode != UpdateMode.SYNC) {
                applied = Math.max(applied, lowest);
            } else {
                // Clocks without gradients here are applied at once, however many: the loop runs per pending clock.
                while (!applying && applied < lowest) {
                    final Map.Entry<Long, ClockUpdates> next = pending.firstEntry();
                    if (next == null || next.getKey() > lowest) {
                        applied = lowest;
                        break;
                    }
                    pending.pollFirstEntry();
                    final long clock = next.getKey();
                    final ClockUpdates updates = next.getValue();
                    if (updates.byTable.isEmpty()) {
                        applied = clock;
                        continue;
                    }
                    applied = clock - 1;
                    startApplying(generation, clock, updates, participants(clock), wake);
                }
            }
            for (final Iterator<Waiter> it = waiters.iterator(); it.hasNext(); ) {
                final Waiter waiter = it.next();
                if (applied >= waiter.needed) {
                    it.remove();
                    wake.add(waiter.ready);
                }
            }
        }

        /** The lowest clock not yet applied for which {@code worker}'s gradients are held, or -1. */
        /** Whether gradients of {@code worker} for a clock after {@code from} and before {@code to} are held. */
        boolean holdsBetween(final int worker, final long from, final long to) {
            for (final Map.Entry<Long, ClockUpdates> entry :
                    pending.subMap(from, false, to, false).entrySet()) {
                if (entry.getValue().holds(worker)) {
                    return true;
                }
            }
            return false;
        }

        /** Drops {@code worker}'s gradients for the clocks after {@code from} and before {@code to}; the bytes freed. */
        long dropBetween(final int worker, final long from, final long to) {
            long freed = 0;
            for (final ClockUpdates updates :
                    pending.subMap(from, false, to, false).values()) {
                freed += updates.removeWorker(worker);
            }
            return freed;
        }

        long pushedFor(final int worker) {
            for (final Map.Entry<Long, ClockUpdates> entry : pending.entrySet()) {
                if (entry.getValue().holds(worker)) {
                    return entry.getKey();
                }
            }
            return -1;
        }

        /** The workers that take part in {@code clock}: members that started by then, and departed ones that ended it. */
        private int participants(final long clock) {
            int count = 0;
            for (final Member member : members.values()) {
                if (member.start <= clock) {
                    count++;
                }
            }
            for (final long[] range : departed) {
                if (range[0] <= clock && clock <= range[1]) {
                    count++;
                }
            }
            return Math.max(1, count);
        }

        /**
         * A member leaves: what it pushed for clocks it ended still counts, and it is counted among their workers
         * (MEAN); what it pushed for a clock it never finished is dropped.
         */
        private void depart(final Member member) {
            freed(pending, member.id, member.reported ? member.ended : Long.MIN_VALUE);
            if (member.reported && member.ended > applied && member.ended >= member.start) {
                departed.add(new long[] {member.start, member.ended});
            }
        }

        /**
         * Ends the run: every member departs, the clocks they ended that hold gradients are set aside to be applied
         * in order (after a clock being applied now, before any clock of the next run), and the next run counts from
         * clock 0.
         */
        private void retire() {
            for (final Member member : members.values()) {
                depart(member);
            }
            members.clear();
            // Pulls of its workers and checkpoint cuts waiting for one of its clocks: clocks of the next run have the
            // same numbers and are other clocks.
            for (final Waiter waiter : waiters) {
                final Consumer<Throwable> failed = waiter.failed;
                executor.execute(() -> failed.accept(PsException.failedPrecondition(
                        "the run of job '" + id + "' ended while a pull or a checkpoint's cut waited for a clock")));
            }
            waiters.clear();
            for (final Map.Entry<Long, ClockUpdates> entry : pending.entrySet()) {
                if (!entry.getValue().byTable.isEmpty()) {
                    retired.add(
                            new Retired(generation, entry.getKey(), entry.getValue(), participants(entry.getKey())));
                }
            }
            pending.clear();
            departed.clear();
            applied = -1;
            generation++;
            if (!applying) {
                final List<Runnable> wake = new ArrayList<>();
                applyNextRetired(wake);
                wake.forEach(executor::execute);
            }
        }

        /** Starts applying the next clock of an ended run, if any; true if it did. */
        private boolean applyNextRetired(final List<Runnable> wake) {
            final Retired next = retired.poll();
            if (next == null) {
                return false;
            }
            startApplying(next.generation, next.clock, next.updates, next.participants, wake);
            return true;
        }

        private void startApplying(
                final long ofGeneration,
                final long clock,
                final ClockUpdates updates,
                final int participants,
                final List<Runnable> wake) {
            applying = true;
            wake.add(() -> {
                CompletableFuture<Void> done;
                try {
                    done = applier.apply(id, clock, updates, participants);
                } catch (Throwable failure) {
                    done = CompletableFuture.failedFuture(failure);
                }
                done.whenComplete((ok, failure) -> applied(ofGeneration, clock, updates, failure));
            });
        }

        private void applied(
                final long ofGeneration, final long clock, final ClockUpdates updates, final Throwable failure) {
            if (failure != null) {
                LOG.error("job {}: applying clock {} failed; its gradients are lost", id, clock, failure);
            }
            final List<Runnable> wake = new ArrayList<>();
            synchronized (JobClocks.this) {
                updates.releaseAllRows();
                bufferedBytes -= updates.bytes;
                applying = false;
                if (ofGeneration == generation) {
                    // A clock of an ended run moves nothing of the next run.
                    applied = Math.max(applied, clock);
                    departed.removeIf(range -> range[1] <= applied);
                }
                if (!applyNextRetired(wake)) {
                    advance(wake);
                    if (!listed && drained()) {
                        jobs.remove(id, this);
                    }
                }
            }
            wake.forEach(executor::execute);
        }

        private void failWaitersOf(final int worker, final String why) {
            for (final Iterator<Waiter> it = waiters.iterator(); it.hasNext(); ) {
                final Waiter waiter = it.next();
                if (waiter.worker == worker) {
                    it.remove();
                    final Consumer<Throwable> failed = waiter.failed;
                    executor.execute(() -> failed.accept(PsException.failedPrecondition(why)));
                }
            }
        }

        /** The proxy no longer lists the job: its run ends (see {@link #retire}), and it is unknown to requests. */
        void end(final List<Runnable> wake) {
            listed = false;
            retire();
            started = false;
            // A job registered again may count its versions from the start.
            infoVersion = -1;
        }

        /** Nothing of an ended run is left to apply. */
        boolean drained() {
            return !applying && retired.isEmpty();
        }
    }

    /** A clock of an ended run, set aside to be applied with the workers it had. */
    private record Retired(long generation, long clock, ClockUpdates updates, int participants) {}

    private static final class Member {
        final int id;
        boolean reported;
        long ended;
        // The first clock it takes part in here.
        long start;

        Member(final int id) {
            this.id = id;
        }

        void join(final long endedClock) {
            reported = true;
            ended = endedClock;
            start = endedClock + 1;
        }
    }

    private final class Waiter implements Wait {
        final Job job;
        final int worker;
        final long needed;
        final Runnable ready;
        final Consumer<Throwable> failed;

        Waiter(final Job job, final int worker, final long needed, final Runnable ready, final Consumer<Throwable> f) {
            this.job = job;
            this.worker = worker;
            this.needed = needed;
            this.ready = ready;
            this.failed = f;
        }

        @Override
        public void cancel() {
            synchronized (JobClocks.this) {
                job.waiters.remove(this);
            }
        }
    }
}
