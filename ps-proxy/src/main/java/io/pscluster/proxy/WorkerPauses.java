package io.pscluster.proxy;

import com.google.protobuf.ByteString;
import io.pscluster.proto.v1.AwaitPauseResponse;
import io.pscluster.proto.v1.JobInfo;
import io.pscluster.proto.v1.JobWorker;
import io.pscluster.proto.v1.PausedRequest;
import io.pscluster.proto.v1.PausedResponse;
import io.pscluster.proto.v1.UpdateMode;
import io.pscluster.wire.PsException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Pauses the workers of every running job at a step boundary so that a checkpoint is one cut of the whole cluster:
 * each worker's SDK keeps a long poll ({@link #await}) open; a pause answers it; the worker, at its next
 * {@code clock()}, holds new pushes, waits for its sent pushes to be acknowledged (so they are queued on their
 * shards, before any cut queued later), and reports {@link #paused} with its own state. Once every live worker has
 * paused the checkpoint cuts every shard, then {@link Pause#end} lets the workers go on. A worker that does not pause
 * within the limit (it is not calling {@code clock()}, or is stuck) does not hold the checkpoint: the pause is given
 * up and the checkpoint is cut per shard, which its manifest says.
 *
 * <p>One pause at a time (the coordinator takes one checkpoint at a time). Polls and paused calls hold no thread.
 */
final class WorkerPauses {
    private static final Logger LOG = LoggerFactory.getLogger(WorkerPauses.class);
    /** An open poll is answered "nothing new" after this long, so that it never outlives its caller's deadline. */
    static final long POLL_MILLIS = 20_000;
    /** The most a worker's state may take (it goes into the manifest). */
    static final int MAX_STATE_BYTES = 64 * 1024;

    /** A worker of a job. */
    record Worker(String jobId, int workerId) implements Comparable<Worker> {
        @Override
        public int compareTo(final Worker other) {
            final int byJob = jobId.compareTo(other.jobId);
            return byJob != 0 ? byJob : Integer.compare(workerId, other.workerId);
        }

        @Override
        public String toString() {
            return jobId + "/" + workerId;
        }
    }

    /** A worker asked to pause: its job's mode, and its rank in the job as the job gave it at its join. */
    record Asked(UpdateMode mode, int rank) {}

    /** A paused worker: its rank in the job, the clock it starts next and the state it handed in. */
    record Held(int rank, long clock, ByteString state) {}

    private final Supplier<List<JobInfo>> jobs;
    private final ScheduledExecutorService timers;
    private final Map<Long, List<Poll>> polls = new HashMap<>();
    // Pause ids grow across proxy restarts too (workers ignore a pause id not above the last they saw): from the
    // wall clock, in microseconds, then one by one.
    private long lastPauseId = System.currentTimeMillis() * 1_000;
    private Pause current;

    private record Poll(long after, CompletableFuture<AwaitPauseResponse> answer) {}

    /**
     * @param jobs the jobs as the registry holds them now (read at each pause and while it waits).
     * @param timers ends open polls after {@link #POLL_MILLIS}.
     */
    WorkerPauses(final Supplier<List<JobInfo>> jobs, final ScheduledExecutorService timers) {
        this.jobs = jobs;
        this.timers = timers;
    }

    /** A pause in force, until {@link #end}. */
    final class Pause {
        final long id;
        final long timeoutMillis;
        final long holdMillis;
        final Map<Worker, Asked> expected = new TreeMap<>();
        final Map<Worker, Held> paused = new TreeMap<>();
        final Map<Worker, CompletableFuture<PausedResponse>> answers = new HashMap<>();
        // A paused worker whose call ended before the pause did (it went on by itself): the cut is not one cut.
        String broken;

        private Pause(final long id, final long timeoutMillis, final long holdMillis) {
            this.id = id;
            this.timeoutMillis = timeoutMillis;
            this.holdMillis = holdMillis;
        }

        /** What a worker's poll is answered with while this pause is in force. */
        private AwaitPauseResponse asked() {
            return AwaitPauseResponse.newBuilder()
                    .setPauseId(id)
                    .setHoldMillis(holdMillis)
                    .setPauseTimeoutMillis(timeoutMillis)
                    .build();
        }

        /**
         * Waits until every worker of a running job has paused, or left or lapsed, for at most {@code timeoutMs}.
         * Returns the workers that did not pause (empty: the whole cluster is paused).
         */
        List<Worker> awaitAll(final long timeoutMs) throws InterruptedException {
            final long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMs);
            synchronized (WorkerPauses.this) {
                while (true) {
                    final List<Worker> missing = missing();
                    final long left = deadline - System.nanoTime();
                    if (missing.isEmpty() || left <= 0) {
                        return missing;
                    }
                    // Woken by each paused report; a worker that leaves or lapses is seen at the next look.
                    TimeUnit.NANOSECONDS.timedWait(
                            WorkerPauses.this, Math.min(left, TimeUnit.MILLISECONDS.toNanos(50)));
                }
            }
        }

        /** The expected workers still live and not paused. Under the monitor. */
        private List<Worker> missing() {
            final Set<Worker> live = new HashSet<>();
            for (final JobInfo job : jobs.get()) {
                for (final JobWorker worker : job.getWorkersList()) {
                    live.add(new Worker(job.getSpec().getJobId(), worker.getWorkerId()));
                }
            }
            final List<Worker> missing = new ArrayList<>();
            for (final Worker worker : expected.keySet()) {
                if (live.contains(worker) && !paused.containsKey(worker)) {
                    missing.add(worker);
                }
            }
            return missing;
        }

        /** The paused workers, by job. */
        Map<Worker, Held> pausedWorkers() {
            synchronized (WorkerPauses.this) {
                return new TreeMap<>(paused);
            }
        }

        /**
         * Per SYNC job, the clock every paused worker has ended (they pause at one clock: see {@link #paused}); the
         * checkpoint is cut on each shard once it has applied that clock.
         */
        Map<String, Long> syncClocks() {
            synchronized (WorkerPauses.this) {
                final Map<String, Long> clocks = new LinkedHashMap<>();
                paused.forEach((worker, held) -> {
                    if (expected.get(worker).mode() == UpdateMode.SYNC) {
                        clocks.merge(worker.jobId(), held.clock() - 1, Math::min);
                    }
                });
                return clocks;
            }
        }

        /** Why the workers are not all paused any more before the pause ended (a worker went on); null: they are. */
        String broken() {
            synchronized (WorkerPauses.this) {
                return broken;
            }
        }

        /** Lets the paused workers (and those still to report this pause) go on; {@code checkpointId} 0: no cut. */
        void end(final long checkpointId) {
            final List<CompletableFuture<PausedResponse>> waiting;
            synchronized (WorkerPauses.this) {
                if (current == this) {
                    current = null;
                }
                waiting = new ArrayList<>(answers.values());
                answers.clear();
            }
            final PausedResponse over =
                    PausedResponse.newBuilder().setCheckpointId(checkpointId).build();
            waiting.forEach(answer -> answer.complete(over));
        }
    }

    /**
     * Asks every worker of every running job to pause. Returns null when no job is running (nothing to pause).
     *
     * @param timeoutMillis how long the caller waits for every worker to pause ({@link Pause#awaitAll}); a worker
     *     still waiting for its pushes in flight then goes on without pausing.
     * @param holdMillis the longest a worker should stay paused before it goes on by itself.
     */
    Pause begin(final long timeoutMillis, final long holdMillis) {
        final List<CompletableFuture<AwaitPauseResponse>> wake = new ArrayList<>();
        final Pause pause;
        final AwaitPauseResponse asked;
        synchronized (this) {
            if (current != null) {
                throw new IllegalStateException("pause " + current.id + " is still in force");
            }
            final Map<Worker, Asked> expected = new TreeMap<>();
            for (final JobInfo job : jobs.get()) {
                if (!job.getStarted()) {
                    continue;
                }
                for (final JobWorker worker : job.getWorkersList()) {
                    expected.put(
                            new Worker(job.getSpec().getJobId(), worker.getWorkerId()),
                            new Asked(job.getSpec().getMode(), worker.getRank()));
                }
            }
            if (expected.isEmpty()) {
                return null;
            }
            pause = new Pause(++lastPauseId, timeoutMillis, holdMillis);
            pause.expected.putAll(expected);
            current = pause;
            asked = pause.asked();
            for (final Iterator<Map.Entry<Long, List<Poll>>> it =
                            polls.entrySet().iterator();
                    it.hasNext(); ) {
                final Map.Entry<Long, List<Poll>> entry = it.next();
                entry.getValue().removeIf(poll -> {
                    if (poll.after() < pause.id) {
                        wake.add(poll.answer());
                        return true;
                    }
                    return false;
                });
                if (entry.getValue().isEmpty()) {
                    it.remove();
                }
            }
            LOG.info("pause {}: asking {} workers to pause for a checkpoint", pause.id, expected.size());
        }
        wake.forEach(answer -> answer.complete(asked));
        return pause;
    }

    /**
     * A worker's poll: answered at once when a pause newer than {@code after} is in force, else when one begins, or
     * with pause id 0 after {@link #POLL_MILLIS}.
     */
    CompletableFuture<AwaitPauseResponse> await(final long after) {
        final CompletableFuture<AwaitPauseResponse> answer = new CompletableFuture<>();
        synchronized (this) {
            if (current != null && current.id > after) {
                answer.complete(current.asked());
                return answer;
            }
            final Poll poll = new Poll(after, answer);
            polls.computeIfAbsent(after, key -> new ArrayList<>()).add(poll);
            timers.schedule(
                    () -> {
                        synchronized (WorkerPauses.this) {
                            final List<Poll> waiting = polls.get(after);
                            if (waiting != null && waiting.remove(poll) && waiting.isEmpty()) {
                                polls.remove(after);
                            }
                        }
                        answer.complete(AwaitPauseResponse.getDefaultInstance());
                    },
                    POLL_MILLIS,
                    TimeUnit.MILLISECONDS);
        }
        return answer;
    }

    /**
     * A worker has paused: records its clock and state and answers when the pause ends (at once, with no checkpoint,
     * when that pause is over already or never asked this worker). A SYNC job's workers must pause at one clock, since
     * a shard holds a clock's pushes until every worker has ended it: a worker behind another one of its job is told
     * to run on to that clock (at once, or when the other one pauses) and pauses again there.
     *
     * @throws PsException INVALID_ARGUMENT for a state larger than {@link #MAX_STATE_BYTES}.
     */
    CompletableFuture<PausedResponse> paused(final PausedRequest request) {
        if (request.getState().size() > MAX_STATE_BYTES) {
            throw PsException.invalidArgument("worker " + request.getWorkerId() + " of job '" + request.getJobId()
                    + "': its checkpoint state takes " + request.getState().size() + " bytes, more than the "
                    + MAX_STATE_BYTES + " a checkpoint keeps per worker");
        }
        final Worker worker = new Worker(request.getJobId(), request.getWorkerId());
        synchronized (this) {
            final Pause pause = current;
            if (pause == null || pause.id != request.getPauseId() || !pause.expected.containsKey(worker)) {
                return CompletableFuture.completedFuture(PausedResponse.getDefaultInstance());
            }
            final Asked asked = pause.expected.get(worker);
            if (asked.mode() == UpdateMode.SYNC) {
                long ahead = request.getClock();
                for (final Map.Entry<Worker, Held> other : pause.paused.entrySet()) {
                    if (other.getKey().jobId().equals(worker.jobId())) {
                        ahead = Math.max(ahead, other.getValue().clock());
                    }
                }
                if (ahead > request.getClock()) {
                    return CompletableFuture.completedFuture(
                            PausedResponse.newBuilder().setRunToClock(ahead).build());
                }
                final PausedResponse goOn = PausedResponse.newBuilder()
                        .setRunToClock(request.getClock())
                        .build();
                for (final Iterator<Map.Entry<Worker, Held>> it =
                                pause.paused.entrySet().iterator();
                        it.hasNext(); ) {
                    final Map.Entry<Worker, Held> other = it.next();
                    if (other.getKey().jobId().equals(worker.jobId())
                            && other.getValue().clock() < request.getClock()) {
                        it.remove();
                        final CompletableFuture<PausedResponse> behind = pause.answers.remove(other.getKey());
                        if (behind != null) {
                            // Completed under the monitor: its callback only sends the answer.
                            behind.complete(goOn);
                        }
                    }
                }
            }
            pause.paused.put(worker, new Held(asked.rank(), request.getClock(), request.getState()));
            final CompletableFuture<PausedResponse> answer = new CompletableFuture<>();
            final CompletableFuture<PausedResponse> earlier = pause.answers.put(worker, answer);
            if (earlier != null) {
                // The same worker again (a retried call): the earlier call goes on at once.
                earlier.complete(PausedResponse.getDefaultInstance());
            }
            notifyAll();
            return answer;
        }
    }

    /**
     * A worker's paused call ended before the pause did (its deadline, a broken connection, the worker closed): it may
     * be pushing again, so a cut taken now is no longer one cut of the job.
     */
    void abandoned(final PausedRequest request) {
        final Worker worker = new Worker(request.getJobId(), request.getWorkerId());
        synchronized (this) {
            final Pause pause = current;
            if (pause != null
                    && pause.id == request.getPauseId()
                    && pause.answers.containsKey(worker)
                    && !pause.answers.get(worker).isDone()
                    && pause.broken == null) {
                pause.broken = "worker " + worker + " went on before every shard had cut (its paused call ended)";
                LOG.warn("pause {}: {}", pause.id, pause.broken);
            }
        }
    }

    /** Why the pause in force is no longer one cut (see {@link Pause#broken}); empty when none is, or it is whole. */
    synchronized java.util.Optional<String> brokenNow() {
        return current == null ? java.util.Optional.empty() : java.util.Optional.ofNullable(current.broken);
    }

    /** The jobs that have workers now (joining or live), running or waiting to start. */
    /** Every job the registry knows, with workers or not. */
    Set<String> knownJobs() {
        final Set<String> known = new HashSet<>();
        for (final JobInfo job : jobs.get()) {
            known.add(job.getSpec().getJobId());
        }
        return known;
    }

    Set<String> jobsWithWorkers() {
        final Set<String> withWorkers = new HashSet<>();
        for (final JobInfo job : jobs.get()) {
            if (job.getWorkersCount() > 0) {
                withWorkers.add(job.getSpec().getJobId());
            }
        }
        return withWorkers;
    }

    /** Answers every open poll (the proxy stops): the workers poll again, elsewhere or later. */
    void close() {
        final List<CompletableFuture<AwaitPauseResponse>> open = new ArrayList<>();
        final Pause pause;
        synchronized (this) {
            polls.values().forEach(list -> list.forEach(poll -> open.add(poll.answer())));
            polls.clear();
            pause = current;
        }
        open.forEach(answer -> answer.complete(AwaitPauseResponse.getDefaultInstance()));
        if (pause != null) {
            pause.end(0);
        }
    }
}
