package io.pscluster.local;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;
import static org.awaitility.Awaitility.await;

import io.grpc.Status;
import io.pscluster.checkpoint.CheckpointInfo;
import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.proto.v1.JobCheckpointState;
import io.pscluster.proto.v1.JobSpec;
import io.pscluster.proto.v1.UpdateMode;
import io.pscluster.wire.PsException;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Which checkpoint a new run of a job gets its workers' states back from, on a real cluster (proxy and two shards on
 * loopback): the one the cluster's data was last brought to, i.e. the latest committed, or the one an operator
 * restored since; and a join that cannot read them fails instead of starting the worker with none.
 */
class JobStateRestoreTest {
    private static final int WORKERS = 2;

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
                .workerLeaseMs(15_000)
                .start();
        store = new CheckpointStore(root.toUri(), new Configuration());
    }

    @AfterAll
    static void stopCluster() throws InterruptedException {
        cluster.close();
    }

    /**
     * Checkpoint A, then B, each with the job's states; the job stops and the operator restores A: the next run's
     * workers get A's states back, each its own rank's, not B's.
     */
    @Test
    void shouldGiveBackTheStatesOfTheCheckpointTheOperatorRestored() throws Exception {
        final String job = "restored";
        final long a;
        final long b;
        try (Run run = new Run(job)) {
            run.awaitSteps(3);
            a = AdminCalls.checkpointNow(cluster.proxyAddress());
            final long stepsAtA = run.minSteps();
            run.awaitSteps(stepsAtA + 3);
            b = AdminCalls.checkpointNow(cluster.proxyAddress());
        }
        await().atMost(Duration.ofSeconds(30)).until(() -> AdminCalls.workersOf(cluster.proxyAddress(), job) == 0);
        for (int rank = 1; rank <= WORKERS; rank++) {
            assertThat(stateOf(a, job, rank)).isPresent();
            assertThat(stateOf(b, job, rank)).isPresent().isNotEqualTo(stateOf(a, job, rank));
        }

        AdminCalls.restore(cluster.proxyAddress(), a);

        final Map<Integer, Optional<JobCheckpointState>> restored = rejoin(job);
        for (int rank = 1; rank <= WORKERS; rank++) {
            assertThat(restored.get(rank)).as("rank %d", rank).isEqualTo(stateOf(a, job, rank));
        }
    }

    /**
     * A checkpoint taken while the job is down (between two runs) carries the states its workers last handed in over
     * from the checkpoint before, so that the next run still gets them back.
     */
    @Test
    void shouldCarryTheStatesOfAJobThatIsDownIntoTheNextCheckpoint() throws Exception {
        final String job = "between-runs";
        final long a;
        try (Run run = new Run(job)) {
            run.awaitSteps(3);
            a = AdminCalls.checkpointNow(cluster.proxyAddress());
        }
        await().atMost(Duration.ofSeconds(30)).until(() -> AdminCalls.workersOf(cluster.proxyAddress(), job) == 0);

        final long b = AdminCalls.checkpointNow(cluster.proxyAddress());

        final Map<Integer, Optional<JobCheckpointState>> restored = rejoin(job);
        for (int rank = 1; rank <= WORKERS; rank++) {
            final JobCheckpointState saved = stateOf(a, job, rank).orElseThrow();
            assertThat(stateOf(b, job, rank))
                    .contains(saved.toBuilder()
                            .setCheckpointId(b)
                            .setCreatedMillis(
                                    store.get(b).orElseThrow().manifest().createdMillis())
                            .build());
            assertThat(restored.get(rank)).as("rank %d", rank).isEqualTo(stateOf(b, job, rank));
        }
    }

    /**
     * A worker that joins a run already started takes the job where it is, also while the run is in its first clock
     * (so it is told clock 0): it gets no state back, even for a rank whose state the checkpoint holds.
     */
    @Test
    void shouldGiveNoStateToAWorkerJoiningARunAlreadyStarted() throws Exception {
        final String job = "joins-running";
        final long a;
        try (Run run = new Run(job)) {
            run.awaitSteps(3);
            a = AdminCalls.checkpointNow(cluster.proxyAddress());
        }
        await().atMost(Duration.ofSeconds(30)).until(() -> AdminCalls.workersOf(cluster.proxyAddress(), job) == 0);
        assertThat(stateOf(a, job, 1)).isPresent();

        final ExecutorService threads = Executors.newFixedThreadPool(WORKERS);
        try {
            final CompletableFuture<PsClient> one = CompletableFuture.supplyAsync(
                    () -> PsClient.connect(worker(job).rank(1)), threads);
            final CompletableFuture<PsClient> two = CompletableFuture.supplyAsync(
                    () -> PsClient.connect(worker(job).rank(2)), threads);
            try (PsClient second = two.get(60, TimeUnit.SECONDS)) {
                try (PsClient first = one.get(60, TimeUnit.SECONDS)) {
                    assertThat(first.restoredState())
                            .as("rank 1 at the run's start")
                            .isEqualTo(stateOf(a, job, 1));
                    assertThat(second.currentClock()).isZero();
                }
                await().atMost(Duration.ofSeconds(30))
                        .until(() -> AdminCalls.workersOf(cluster.proxyAddress(), job) == 1);
                try (PsClient late = PsClient.connect(worker(job).rank(1))) {
                    assertThat(late.currentClock()).isZero();
                    assertThat(late.restoredState())
                            .as("rank 1 joining the started run")
                            .isEmpty();
                }
            }
        } finally {
            threads.shutdownNow();
            threads.awaitTermination(30, TimeUnit.SECONDS);
        }
    }

    /**
     * The manifest of the checkpoint the data is at is damaged when a new run's workers join: they join (a damaged
     * file must not stop every job), and {@code restoredState()} throws DATA_LOSS naming the checkpoint and the cause
     * instead of giving an empty state. A checkpoint taken meanwhile (the job down) records that the idle jobs' states
     * were lost, so joins after it say so too, even once the old manifest reads again; a restore of the old checkpoint
     * gives the states back.
     */
    @Test
    void shouldJoinButReportTheStatesLostWhenTheManifestIsDamaged() throws Exception {
        final String job = "unreadable";
        final long id;
        try (Run run = new Run(job)) {
            run.awaitSteps(3);
            id = AdminCalls.checkpointNow(cluster.proxyAddress());
        }
        await().atMost(Duration.ofSeconds(30)).until(() -> AdminCalls.workersOf(cluster.proxyAddress(), job) == 0);
        final Map<Integer, Optional<JobCheckpointState>> saved = new java.util.HashMap<>();
        for (int rank = 1; rank <= WORKERS; rank++) {
            saved.put(rank, stateOf(id, job, rank));
            assertThat(saved.get(rank)).isPresent();
        }
        final Path manifest = Path.of(store.checkpointDir(id).toUri()).resolve(CheckpointStore.MANIFEST);
        final byte[] whole = Files.readAllBytes(manifest);
        final long next;
        Files.write(manifest, java.util.Arrays.copyOf(whole, whole.length / 2));
        try {
            assertThat(rejoinReportingLoss(job))
                    .as("each rank's restoredState()")
                    .hasSize(WORKERS)
                    .allSatisfy(lost -> assertThat(lost)
                            .contains("checkpoint " + id)
                            .contains(CheckpointStore.MANIFEST)
                            .contains("damaged"));
            next = AdminCalls.checkpointNow(cluster.proxyAddress());
        } finally {
            Files.write(manifest, whole);
        }
        assertThat(store.get(next).orElseThrow().manifest().properties()).containsKey("job-states-lost/" + job);
        assertThat(rejoinReportingLoss(job))
                .as("after a checkpoint that could not carry the states over")
                .hasSize(WORKERS)
                .allSatisfy(lost -> assertThat(lost).contains("checkpoint " + id));
        assertThat(rejoin("new-after-loss"))
                .as("a job that had no state then has nothing lost")
                .hasSize(WORKERS)
                .allSatisfy((rank, restored) -> assertThat(restored).isEmpty());

        AdminCalls.restore(cluster.proxyAddress(), id);
        assertThat(rejoin(job)).isEqualTo(saved);
    }

    /** Joins the workers of a new run of {@code job}; what each one's {@code restoredState()} threw (DATA_LOSS). */
    private static java.util.Collection<String> rejoinReportingLoss(final String job) throws Exception {
        return rejoin(job, client -> {
                    final PsException thrown = catchThrowableOfType(client::restoredState, PsException.class);
                    assertThat(thrown)
                            .as("rank %d's restoredState()", client.rank())
                            .isNotNull();
                    assertThat(thrown.code()).isEqualTo(Status.Code.DATA_LOSS);
                    return thrown.getMessage();
                })
                .values();
    }

    /** Joins {@value #WORKERS} workers of a new run of {@code job}; their restored states by rank. Leaves again. */
    private static Map<Integer, Optional<JobCheckpointState>> rejoin(final String job) throws Exception {
        return rejoin(job, PsClient::restoredState);
    }

    /** Joins {@value #WORKERS} workers of a new run of {@code job}; what {@code read} gives of each, by rank. */
    private static <T> Map<Integer, T> rejoin(final String job, final java.util.function.Function<PsClient, T> read)
            throws Exception {
        final ExecutorService threads = Executors.newFixedThreadPool(WORKERS);
        final List<PsClient> clients = new ArrayList<>();
        try {
            final List<CompletableFuture<PsClient>> joined = new ArrayList<>();
            for (int w = 0; w < WORKERS; w++) {
                joined.add(CompletableFuture.supplyAsync(() -> PsClient.connect(worker(job)), threads));
            }
            final Map<Integer, T> restored = new ConcurrentHashMap<>();
            for (final CompletableFuture<PsClient> answer : joined) {
                final PsClient client = answer.get(60, TimeUnit.SECONDS);
                clients.add(client);
                restored.put(client.rank(), read.apply(client));
            }
            return restored;
        } finally {
            clients.forEach(PsClient::close);
            threads.shutdownNow();
            threads.awaitTermination(30, TimeUnit.SECONDS);
        }
    }

    private static PsClient.Context worker(final String job) {
        return new PsClient.Context()
                .proxyAddress(cluster.proxyAddress())
                .deadlineMs(30_000)
                .job(JobSpec.newBuilder()
                        .setJobId(job)
                        .setMode(UpdateMode.ASYNC)
                        .setExpectedWorkers(WORKERS)
                        .build());
    }

    /** The state checkpoint {@code id} holds for one rank of a job, as a join hands it out. */
    private static Optional<JobCheckpointState> stateOf(final long id, final String job, final int rank)
            throws Exception {
        final CheckpointInfo checkpoint = store.get(id).orElseThrow();
        final String value = checkpoint.manifest().properties().get("job-state/" + job + "/" + rank);
        if (value == null) {
            return Optional.empty();
        }
        final int colon = value.indexOf(':');
        return Optional.of(JobCheckpointState.newBuilder()
                .setCheckpointId(id)
                .setCreatedMillis(checkpoint.manifest().createdMillis())
                .setClock(Long.parseLong(value.substring(0, colon)))
                .setState(com.google.protobuf.ByteString.copyFrom(
                        Base64.getDecoder().decode(value.substring(colon + 1))))
                .build());
    }

    /**
     * A run of a job: {@value #WORKERS} workers (threads, each with its own client) push to their own key and end a
     * clock after each push; each hands in "rank R step S" when it pauses. Closing stops them and leaves the job.
     */
    private static final class Run implements AutoCloseable {
        private final AtomicBoolean stop = new AtomicBoolean();
        private final Map<Integer, AtomicLong> steps = new ConcurrentHashMap<>();
        private final ExecutorService threads = Executors.newFixedThreadPool(WORKERS);
        private final List<Future<?>> workers = new ArrayList<>();

        Run(final String job) {
            final String table = job + "-counts";
            try (PsClient admin = PsClient.connect(cluster.proxyAddress())) {
                admin.createTable(CounterTable.schema(table));
            }
            for (int w = 0; w < WORKERS; w++) {
                workers.add(threads.submit(() -> {
                    final int[] rank = new int[1];
                    final long[] step = new long[1];
                    try (PsClient client = PsClient.connect(worker(job)
                            .checkpointState(
                                    () -> ("rank " + rank[0] + " step " + step[0]).getBytes(StandardCharsets.UTF_8)))) {
                        rank[0] = client.rank();
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
        }

        void awaitSteps(final long atLeast) {
            await().atMost(Duration.ofSeconds(60)).until(() -> steps.size() == WORKERS && minSteps() >= atLeast);
        }

        long minSteps() {
            return steps.values().stream().mapToLong(AtomicLong::get).min().orElse(0);
        }

        @Override
        public void close() throws Exception {
            stop.set(true);
            try {
                for (final Future<?> worker : workers) {
                    worker.get(60, TimeUnit.SECONDS);
                }
            } finally {
                threads.shutdownNow();
                threads.awaitTermination(30, TimeUnit.SECONDS);
            }
        }
    }
}
