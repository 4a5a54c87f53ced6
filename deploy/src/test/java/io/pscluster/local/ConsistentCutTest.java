package io.pscluster.local;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.pscluster.checkpoint.CheckpointInfo;
import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.Manifest;
import io.pscluster.checkpoint.RowFileReader;
import io.pscluster.proto.v1.JobCheckpointState;
import io.pscluster.proto.v1.JobSpec;
import io.pscluster.proto.v1.UpdateMode;
import io.pscluster.server.FaultPoints;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicLongArray;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * A checkpoint is one cut of the whole cluster at a step boundary of the running job: two workers (threads, each with
 * its own client, as processes would be) push +1 to the same 256 keys, spread over two shards, as fast as they can and
 * end a clock after each push (ASYNC: with the previous push still in flight); checkpoints are taken meanwhile. Each push reaches both shards as two requests, so a
 * cut shard by shard would now and then hold one half of a push and not the other. In every checkpoint every key must
 * hold the same count, and that count must be exactly the sum of the steps the workers handed in as their state when
 * they paused: every push acknowledged before the cut, none after. A later run of the job gets its workers' states
 * back from the latest checkpoint.
 */
@ExtendWith(FaultsAllowed.class)
class ConsistentCutTest {
    private static final int KEYS = 256;
    private static final int WORKERS = 2;
    private static final int CHECKPOINTS = 6;

    @TempDir
    static Path root;

    private static LocalCluster cluster;
    private static CheckpointStore store;

    @BeforeAll
    static void startCluster() throws Exception {
        cluster = LocalCluster.builder()
                .shards(2)
                .checkpointRoot(root.toUri().toString())
                .keepCheckpoints(0)
                .checkpointPauseMs(10_000)
                // The workers spin as fast as the shards let them: on a loaded 2-core machine a renewal can come late,
                // and a dropped worker is not what this test is about.
                .workerLeaseMs(15_000)
                .start();
        store = new CheckpointStore(root.toUri(), new Configuration());
    }

    @AfterAll
    static void stopCluster() throws InterruptedException {
        cluster.close();
    }

    @ParameterizedTest
    @EnumSource(
            value = UpdateMode.class,
            names = {"ASYNC", "SYNC"})
    void shouldCutEveryShardAtOneStepOfTheJob(final UpdateMode mode) throws Exception {
        runJobThroughCheckpoints("cut-" + mode.name().toLowerCase(java.util.Locale.ROOT), mode, CHECKPOINTS);
    }

    /**
     * Every push is held {@value FaultPoints#PUSH_DELAY_MS} ms before the shard takes it, so a worker ends its step
     * with a push in flight that is not on its shard yet: the worker must not pause before that push is answered, or
     * the cut misses a push its state counts.
     */
    @Test
    void shouldWaitForPushesInFlightBeforePausing() throws Exception {
        AdminCalls.injectFault(cluster, FaultPoints.DELAY_PUSHES, true, 0);
        try {
            runJobThroughCheckpoints("cut-slow", UpdateMode.ASYNC, 2);
        } finally {
            AdminCalls.injectFault(cluster, FaultPoints.DELAY_PUSHES, false, 0);
        }
    }

    /**
     * One worker, two threads pushing +1 to all 256 keys (over both shards): one steps (push, then {@code clock()}),
     * the other pushes on its own and never calls {@code clock()}. While the worker is paused, the second thread's
     * pushes wait at the worker's gate, so every checkpoint holds each of its pushes wholly or not at all, and only
     * those sent before the pause: every key counts the steps plus the second thread's pushes acknowledged by the
     * pause, or one more (a push answered whose thread had not counted it yet), never a push it started later.
     */
    @Test
    void shouldHoldAnotherThreadsPushesWhileTheWorkerIsPaused() throws Exception {
        final String job = "cut-threads";
        final String table = job + "-counts";
        try (PsClient admin = PsClient.connect(cluster.proxyAddress())) {
            admin.createTable(CounterTable.schema(table));
        }
        final long[] keys = new long[KEYS];
        final float[] plusOne = new float[KEYS];
        for (int i = 0; i < KEYS; i++) {
            keys[i] = i * 104_729L + 7;
            plusOne[i] = -1f;
        }
        final AtomicLong steps = new AtomicLong();
        final AtomicLong otherStarted = new AtomicLong();
        final AtomicLong otherAnswered = new AtomicLong();
        final AtomicBoolean stop = new AtomicBoolean();
        // At the pause (every push admitted before it answered, later ones held at the gate): the steps, then the
        // other thread's pushes answered, then those it started (answered first: both only grow).
        try (PsClient client = PsClient.connect(worker(job, UpdateMode.ASYNC, 1).checkpointState(() -> {
            final long answered = otherAnswered.get();
            return ByteBuffer.allocate(24)
                    .putLong(steps.get())
                    .putLong(answered)
                    .putLong(otherStarted.get())
                    .array();
        }))) {
            final PsTable counts = client.table(table);
            final CompletableFuture<Void> stepping = CompletableFuture.runAsync(() -> {
                while (!stop.get()) {
                    counts.push(keys, plusOne);
                    steps.incrementAndGet();
                    client.clock();
                }
            });
            final CompletableFuture<Void> other = CompletableFuture.runAsync(() -> {
                while (!stop.get()) {
                    otherStarted.incrementAndGet();
                    counts.push(keys, plusOne);
                    otherAnswered.incrementAndGet();
                }
            });
            try {
                await().atMost(Duration.ofSeconds(60)).until(() -> steps.get() > 5 && otherAnswered.get() > 5);
                for (int c = 0; c < 4; c++) {
                    final long id = AdminCalls.checkpointNow(cluster.proxyAddress());
                    final CheckpointInfo checkpoint = store.get(id).orElseThrow();
                    assertThat(checkpoint.manifest().properties().get("cut")).startsWith("workers paused");
                    final ByteBuffer state = ByteBuffer.wrap(
                            stateOf(checkpoint, job, 1).orElseThrow().getState().toByteArray());
                    final long stepped = state.getLong();
                    final long answered = state.getLong();
                    final long started = state.getLong();
                    final Map<Long, Float> rows = rowsOf(checkpoint, table);
                    assertThat(rows).as("keys in checkpoint %d", id).hasSize(KEYS);
                    assertThat(new java.util.HashSet<>(rows.values()))
                            .as("every key of checkpoint %d holds the same pushes", id)
                            .hasSize(1);
                    assertThat((double) rows.values().iterator().next())
                            .as(
                                    "pushes in checkpoint %d: %d steps, the other thread's %d answered, %d started",
                                    id, stepped, answered, started)
                            .isBetween((double) (stepped + answered), (double) (stepped + started));
                }
            } finally {
                stop.set(true);
            }
            stepping.get(60, TimeUnit.SECONDS);
            other.get(60, TimeUnit.SECONDS);
        }
    }

    /**
     * A push held at its shard (sent, not answered) when the worker reaches {@code clock()} for a pause: the worker
     * waits for it only until the proxy gives the pause up (its pause timeout, 10 s here), not for the 70 s a paused
     * worker may be held; the checkpoint is a per-shard cut that says so, and the push goes on once the shard takes it.
     */
    @Test
    void shouldWaitForAPushInFlightNoLongerThanThePauseTimeout() throws Exception {
        final String job = "cut-held";
        final String table = job + "-counts";
        try (PsClient admin = PsClient.connect(cluster.proxyAddress())) {
            admin.createTable(CounterTable.schema(table));
        }
        // The held push's deadline is well past the pause timeout plus the test's wait, so that it cannot end the
        // worker's wait for it by failing.
        try (PsClient client = PsClient.connect(worker(job, UpdateMode.ASYNC, 1).deadlineMs(120_000))) {
            final PsTable counts = client.table(table);
            counts.push(new long[] {1}, new float[] {-1f});
            final AtomicLong clocks = new AtomicLong();
            final AtomicBoolean stop = new AtomicBoolean();
            CompletableFuture<Void> held = null;
            CompletableFuture<Void> stepping = null;
            AdminCalls.injectFault(cluster, FaultPoints.HOLD_PUSHES, true, 0);
            try {
                held = counts.pushAsync(new long[] {1}, new float[] {-1f});
                stepping = CompletableFuture.runAsync(() -> {
                    while (!stop.get()) {
                        client.clock();
                        clocks.incrementAndGet();
                        // Paced: until a pause is asked for, an ASYNC clock() only counts.
                        java.util.concurrent.locks.LockSupport.parkNanos(TimeUnit.MILLISECONDS.toNanos(2));
                    }
                });
                final long id = AdminCalls.checkpointNow(cluster.proxyAddress());
                assertThat(store.get(id).orElseThrow().manifest().properties().get("cut"))
                        .startsWith("per shard: workers [" + job + "/")
                        .contains("did not pause");
                final long atCut = clocks.get();
                await().atMost(Duration.ofSeconds(15)).until(() -> clocks.get() > atCut);
                assertThat(held).as("the push is still held at its shard").isNotDone();
            } finally {
                stop.set(true);
                AdminCalls.injectFault(cluster, FaultPoints.HOLD_PUSHES, false, 0);
            }
            held.get(60, TimeUnit.SECONDS);
            stepping.get(60, TimeUnit.SECONDS);
        }
    }

    /**
     * A worker's state is kept and given back by the rank the job gave it at its join, not by its place among the
     * workers: three workers join, the one of rank 1 leaves, the other two pause for a checkpoint (each hands in its
     * rank and step). In the next run the workers join in another order (ranks 3 and 2 asked for, in that order, then
     * one that takes any rank and gets 1): each gets back exactly what the worker of its rank handed in, rank 1
     * nothing.
     */
    @Test
    void shouldGiveEachRankBackTheStateItHandedIn() throws Exception {
        final String job = "cut-ranks";
        final String table = job + "-counts";
        try (PsClient admin = PsClient.connect(cluster.proxyAddress())) {
            admin.createTable(CounterTable.schema(table));
        }
        final int workers = 3;
        final Map<Integer, AtomicBoolean> stops = new java.util.concurrent.ConcurrentHashMap<>();
        final Map<Integer, AtomicLong> steps = new java.util.concurrent.ConcurrentHashMap<>();
        final ExecutorService threads = Executors.newFixedThreadPool(workers);
        final List<Future<?>> running = new ArrayList<>();
        try {
            for (int w = 0; w < workers; w++) {
                running.add(threads.submit(() -> {
                    final int[] rank = new int[1];
                    final long[] step = new long[1];
                    try (PsClient client = PsClient.connect(worker(job, UpdateMode.ASYNC, workers)
                            .checkpointState(() -> ("rank " + rank[0] + " step " + step[0])
                                    .getBytes(java.nio.charset.StandardCharsets.UTF_8)))) {
                        rank[0] = client.rank();
                        final AtomicBoolean stop = stops.computeIfAbsent(rank[0], r -> new AtomicBoolean());
                        final AtomicLong done = steps.computeIfAbsent(rank[0], r -> new AtomicLong());
                        final PsTable counts = client.table(table);
                        while (!stop.get()) {
                            counts.push(new long[] {rank[0]}, new float[] {-1f});
                            step[0]++;
                            done.set(step[0]);
                            client.clock();
                        }
                    }
                    return null;
                }));
            }
            await().atMost(Duration.ofSeconds(60))
                    .until(() -> steps.keySet().equals(java.util.Set.of(1, 2, 3))
                            && steps.values().stream().allMatch(done -> done.get() > 2));
            stops.get(1).set(true);
            await().atMost(Duration.ofSeconds(30)).until(() -> AdminCalls.workersOf(cluster.proxyAddress(), job) == 2);
            final long id = AdminCalls.checkpointNow(cluster.proxyAddress());
            final Map<String, String> properties =
                    store.get(id).orElseThrow().manifest().properties();
            assertThat(properties.get("cut")).startsWith("workers paused");
            final Map<Integer, JobCheckpointState> saved = new HashMap<>();
            for (int rank = 1; rank <= workers; rank++) {
                stateOf(store.get(id).orElseThrow(), job, rank)
                        .ifPresent(state -> saved.put(
                                Integer.parseInt(state.getState().toStringUtf8().split(" ")[1]), state));
            }
            assertThat(saved).as("states by the rank they hand in").containsOnlyKeys(2, 3);
            for (final Map.Entry<Integer, JobCheckpointState> entry : saved.entrySet()) {
                assertThat(stateOf(store.get(id).orElseThrow(), job, entry.getKey()))
                        .as("the state kept for rank %d", entry.getKey())
                        .contains(entry.getValue());
            }
            stops.values().forEach(stop -> stop.set(true));
            for (final Future<?> worker : running) {
                worker.get(60, TimeUnit.SECONDS);
            }
            await().atMost(Duration.ofSeconds(30)).until(() -> AdminCalls.workersOf(cluster.proxyAddress(), job) == 0);

            // The next run: rank 3 joins first, then rank 2, then a worker that takes the lowest rank free (1).
            final List<CompletableFuture<PsClient>> joined = new ArrayList<>();
            final int[] asked = {3, 2, 0};
            for (int i = 0; i < asked.length; i++) {
                final int rank = asked[i];
                joined.add(CompletableFuture.supplyAsync(
                        () -> PsClient.connect(
                                worker(job, UpdateMode.ASYNC, workers).rank(rank)),
                        threads));
                final int members = i + 1;
                await().atMost(Duration.ofSeconds(30))
                        .until(() -> AdminCalls.workersOf(cluster.proxyAddress(), job) == members);
            }
            final Map<Integer, Optional<JobCheckpointState>> restored = new HashMap<>();
            final List<PsClient> clients = new ArrayList<>();
            try {
                for (final CompletableFuture<PsClient> answer : joined) {
                    final PsClient client = answer.get(60, TimeUnit.SECONDS);
                    clients.add(client);
                    restored.put(client.rank(), client.restoredState());
                }
            } finally {
                clients.forEach(PsClient::close);
            }
            assertThat(clients).extracting(PsClient::rank).containsExactly(3, 2, 1);
            assertThat(restored.get(3)).contains(saved.get(3));
            assertThat(restored.get(2)).contains(saved.get(2));
            assertThat(restored.get(1)).as("rank 1 left before the checkpoint").isEmpty();
        } finally {
            stops.values().forEach(stop -> stop.set(true));
            threads.shutdownNow();
            threads.awaitTermination(30, TimeUnit.SECONDS);
        }
    }

    private static void runJobThroughCheckpoints(final String job, final UpdateMode mode, final int checkpoints)
            throws Exception {
        final String table = job + "-counts";
        try (PsClient admin = PsClient.connect(cluster.proxyAddress())) {
            admin.createTable(CounterTable.schema(table));
        }
        final long[] keys = new long[KEYS];
        final float[] plusOne = new float[KEYS];
        for (int i = 0; i < KEYS; i++) {
            keys[i] = i * 104_729L + 11;
            plusOne[i] = -1f;
        }
        final AtomicLongArray steps = new AtomicLongArray(WORKERS);
        final AtomicBoolean stop = new AtomicBoolean();
        final ExecutorService threads = Executors.newFixedThreadPool(WORKERS);
        final List<Future<?>> workers = new ArrayList<>();
        for (int w = 0; w < WORKERS; w++) {
            workers.add(threads.submit(() -> {
                final long[] mine = new long[1];
                try (PsClient client = PsClient.connect(worker(job, mode)
                        .checkpointState(
                                () -> ByteBuffer.allocate(8).putLong(mine[0]).array()))) {
                    final PsTable counts = client.table(table);
                    final int index = client.workerId() % WORKERS;
                    // ASYNC: each step ends (clock()) with its push still in flight; the pause must wait for it.
                    while (!stop.get()) {
                        final CompletableFuture<Void> sent = mode == UpdateMode.ASYNC
                                ? counts.pushAsync(keys, plusOne)
                                : CompletableFuture.runAsync(() -> counts.push(keys, plusOne), Runnable::run);
                        mine[0]++;
                        steps.set(index, mine[0]);
                        client.clock();
                        sent.join();
                    }
                }
                return null;
            }));
        }
        try {
            await().atMost(Duration.ofSeconds(60)).until(() -> steps.get(0) > 5 && steps.get(1) > 5);
            long lastId = 0;
            for (int c = 0; c < checkpoints; c++) {
                final long id = AdminCalls.checkpointNow(cluster.proxyAddress());
                assertThat(workers).noneMatch(Future::isDone);
                final CheckpointInfo checkpoint = store.get(id).orElseThrow();
                final Map<String, String> properties = checkpoint.manifest().properties();
                assertThat(properties.get("cut")).as("cut of checkpoint %d", id).startsWith("workers paused");
                final List<JobCheckpointState> states = statesOf(checkpoint, job);
                assertThat(states).as("worker states in checkpoint %d", id).hasSize(WORKERS);
                long handedIn = 0;
                for (final JobCheckpointState state : states) {
                    handedIn += ByteBuffer.wrap(state.getState().toByteArray()).getLong();
                    if (mode == UpdateMode.SYNC) {
                        // One push per clock: a SYNC worker's steps are its clocks.
                        assertThat(ByteBuffer.wrap(state.getState().toByteArray())
                                        .getLong())
                                .isEqualTo(state.getClock());
                    }
                }
                final Map<Long, Float> counts = rowsOf(checkpoint, table);
                assertThat(counts).as("keys in checkpoint %d", id).hasSize(KEYS);
                assertThat(counts.values())
                        .as("every key of checkpoint %d counts the steps the workers had taken at the cut", id)
                        .containsOnly((float) handedIn);
                lastId = id;
            }
            stop.set(true);
            for (final Future<?> worker : workers) {
                worker.get(60, TimeUnit.SECONDS);
            }
            // A new run of the job gets each rank's state from the latest checkpoint.
            final List<JobCheckpointState> expected = statesOf(store.get(lastId).orElseThrow(), job);
            final List<CompletableFuture<Optional<JobCheckpointState>>> rejoined = new ArrayList<>();
            final List<PsClient> clients = new ArrayList<>();
            for (int w = 0; w < WORKERS; w++) {
                rejoined.add(CompletableFuture.supplyAsync(
                        () -> {
                            final PsClient client = PsClient.connect(worker(job, mode));
                            synchronized (clients) {
                                clients.add(client);
                            }
                            return client.restoredState();
                        },
                        threads));
            }
            final List<JobCheckpointState> restored = new ArrayList<>();
            for (final CompletableFuture<Optional<JobCheckpointState>> answer : rejoined) {
                restored.add(answer.get(60, TimeUnit.SECONDS).orElseThrow());
            }
            clients.forEach(PsClient::close);
            assertThat(restored).extracting(JobCheckpointState::getCheckpointId).containsOnly(lastId);
            assertThat(restored).containsExactlyInAnyOrderElementsOf(expected);
        } finally {
            stop.set(true);
            threads.shutdownNow();
            threads.awaitTermination(30, TimeUnit.SECONDS);
        }
    }

    private static PsClient.Context worker(final String job, final UpdateMode mode) {
        return worker(job, mode, WORKERS);
    }

    private static PsClient.Context worker(final String job, final UpdateMode mode, final int expected) {
        return new PsClient.Context()
                .proxyAddress(cluster.proxyAddress())
                .deadlineMs(30_000)
                .job(JobSpec.newBuilder()
                        .setJobId(job)
                        .setMode(mode)
                        .setExpectedWorkers(expected)
                        .build());
    }

    /** The state a checkpoint holds for one rank of a job. */
    private static Optional<JobCheckpointState> stateOf(
            final CheckpointInfo checkpoint, final String job, final int rank) {
        final String value = checkpoint.manifest().properties().get("job-state/" + job + "/" + rank);
        if (value == null) {
            return Optional.empty();
        }
        final int colon = value.indexOf(':');
        return Optional.of(JobCheckpointState.newBuilder()
                .setCheckpointId(checkpoint.id())
                .setCreatedMillis(checkpoint.manifest().createdMillis())
                .setClock(Long.parseLong(value.substring(0, colon)))
                .setState(com.google.protobuf.ByteString.copyFrom(
                        Base64.getDecoder().decode(value.substring(colon + 1))))
                .build());
    }

    /** The job's worker states in a checkpoint's manifest, by rank. */
    private static List<JobCheckpointState> statesOf(final CheckpointInfo checkpoint, final String job) {
        final List<JobCheckpointState> states = new ArrayList<>();
        for (int rank = 1; ; rank++) {
            final String value = checkpoint.manifest().properties().get("job-state/" + job + "/" + rank);
            if (value == null) {
                return states;
            }
            final int colon = value.indexOf(':');
            states.add(JobCheckpointState.newBuilder()
                    .setCheckpointId(checkpoint.id())
                    .setCreatedMillis(checkpoint.manifest().createdMillis())
                    .setClock(Long.parseLong(value.substring(0, colon)))
                    .setState(com.google.protobuf.ByteString.copyFrom(
                            Base64.getDecoder().decode(value.substring(colon + 1))))
                    .build());
        }
    }

    /** Every row of one table in a checkpoint, read from its files. */
    private static Map<Long, Float> rowsOf(final CheckpointInfo checkpoint, final String table) throws IOException {
        final Map<Long, Float> rows = new HashMap<>();
        for (final Manifest.FileEntry entry : checkpoint.manifest().files()) {
            if (!entry.table().equals(table)) {
                continue;
            }
            RowFileReader.read(store.fileSystem(), checkpoint.dir(), entry.file(), slot -> true, (slot, key, row) -> {
                assertThat(rows.put(key, row[0])).as("key %d twice", key).isNull();
            });
        }
        return rows;
    }
}
