package io.pscluster.faults;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.pscluster.checkpoint.CheckpointInfo;
import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.Manifest;
import io.pscluster.checkpoint.PausePoints;
import io.pscluster.local.AdminCalls;
import io.pscluster.proto.v1.AdminServiceGrpc;
import io.pscluster.proto.v1.RestoreRequest;
import io.pscluster.proto.v1.RestoreResponse;
import io.pscluster.testing.MiniHdfs;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.net.URI;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.regex.Pattern;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.LocatedFileStatus;
import org.apache.hadoop.fs.RemoteIterator;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * Crash consistency of a checkpoint on HDFS: the process writing it is killed ({@code kill -9}) at each step of the
 * protocol, stopped there by a named pause point ({@link PausePoints}) rather than after a sleep, then restarted on
 * the same checkpoint root (and, for the proxy, the same state directory). The checkpoint killed is a delta (deltas
 * are on by default; the previous checkpoint is a delta too) and, once, a base with deltas off. The checkpoint that a
 * restore of "the latest" then loads must be the previous one when the kill came before the manifest's rename, the
 * new one after it, bit for bit (pulled values, and the rows of the next checkpoint with their Adagrad accumulators,
 * each checkpoint read through its chain); the next checkpoint commits with the next id, a delta of the checkpoint
 * restored that holds no row (nothing changed since the restore), and retention removes the killed one's orphaned
 * files.
 */
@Tag("slow")
class CheckpointCrashTest {
    private static MiniDFSCluster hdfs;
    private static Configuration conf;
    private static Path hadoopConf;

    @TempDir
    Path dir;

    /** Where the writer is killed, which process that is, which checkpoint must survive, and deltas on or off. */
    enum Crash {
        MID_BASE_FILE(PausePoints.MID_ROW_FILE, "s0", false, false),
        MID_DELTA_FILE(PausePoints.MID_ROW_FILE, "s0", false, true),
        BEFORE_MANIFEST(PausePoints.BEFORE_MANIFEST, "proxy", false, true),
        BEFORE_RENAME(PausePoints.BEFORE_RENAME, "proxy", false, true),
        AFTER_RENAME(PausePoints.AFTER_RENAME, "proxy", true, true);

        final String point;
        final String victim;
        final boolean committed;
        /** Deltas on (the default): the checkpoint killed is a delta of the previous one, itself a delta. */
        final boolean deltas;

        Crash(final String point, final String victim, final boolean committed, final boolean deltas) {
            this.point = point;
            this.victim = victim;
            this.committed = committed;
            this.deltas = deltas;
        }
    }

    @BeforeAll
    static void startHdfs(@TempDir final Path confDir) throws Exception {
        hdfs = MiniHdfs.start(CheckpointCrashTest.class, 1);
        conf = new Configuration(hdfs.getConfiguration(0));
        hadoopConf = writeHadoopConf(confDir, 1);
    }

    @AfterAll
    static void stopHdfs() throws java.io.IOException {
        MiniHdfs.stop(hdfs);
    }

    @ParameterizedTest(name = "kill -9 at {0}")
    @EnumSource(Crash.class)
    void shouldRestoreThePreviousCheckpointBeforeTheRenameAndTheNewOneAfterWhenTheWriterIsKilled(final Crash crash)
            throws Exception {
        final String root = hdfs.getURI() + "/crash/" + crash.name().toLowerCase();
        final CheckpointStore store = new CheckpointStore(URI.create(root), conf);
        final String[] deltas = crash.deltas ? new String[0] : new String[] {"--deltas-per-base", "0"};
        try (ProcessCluster cluster = new ProcessCluster(dir, 3_000, 500, 300)) {
            cluster.checkpointRoot(root);
            startProxy(cluster, deltas);
            cluster.startShard("s0", "--hadoop-conf", hadoopConf.toString());
            cluster.startShard("s1", "--hadoop-conf", hadoopConf.toString());
            await().atMost(Duration.ofSeconds(30)).until(cluster::allSlotsServed);
            final long[] keys = ModelRows.keys();
            try (PsClient client = PsClient.connect(
                    new PsClient.Context().proxyAddress(cluster.proxyAddress()).deadlineMs(60_000))) {
                final PsTable table = client.createTable(ModelRows.schema("emb"));
                int[] previousValues = ModelRows.pushRound(table, keys, 1, ModelRows.pull(table, keys));
                final long base = AdminCalls.checkpointNow(cluster.proxyAddress());
                long previous = base;
                final List<Long> before = new ArrayList<>(List.of(base));
                if (crash.deltas) {
                    // A tenth of the rows change: a small delta of the base, which the killed one is a delta of.
                    final long[] some = Arrays.copyOf(keys, keys.length / 10);
                    ModelRows.pushRound(table, some, 2, ModelRows.pull(table, some));
                    previousValues = ModelRows.pull(table, keys);
                    previous = AdminCalls.checkpointNow(cluster.proxyAddress());
                    assertThat(kind(store, previous)).isEqualTo("delta of " + base);
                    assertThat(ModelRows.ownRows(store, previous)).isEqualTo(some.length);
                    before.add(0, previous);
                }
                assertThat(ModelRows.pull(table, keys)).isEqualTo(previousValues);
                final int[] newValues = ModelRows.pushRound(table, keys, 3, previousValues);

                if (crash.victim.equals("proxy")) {
                    cluster.injectProxyFault(crash.point, true);
                } else {
                    cluster.injectFault(crash.victim, crash.point, true, 1);
                }
                final CompletableFuture<Long> killed =
                        CompletableFuture.supplyAsync(() -> AdminCalls.checkpointNow(cluster.proxyAddress()));
                final long crashed = previous + 1;
                cluster.awaitLine(
                        "proxy",
                        Pattern.compile("checkpoint " + crashed + " begins: "
                                + (crash.deltas ? "a delta of checkpoint " + previous : "a base")),
                        60_000);
                final String where = cluster.awaitLine(
                                crash.victim,
                                Pattern.compile(Pattern.quote(PausePoints.MARKER + crash.point) + " at (.+)"),
                                60_000)
                        .group(1);
                assertStoppedAt(crash, store, crashed, where);
                cluster.kill9(crash.victim);
                assertThat(killed)
                        .as("the checkpoint call whose writer was killed")
                        .failsWithin(Duration.ofSeconds(60));

                if (crash.victim.equals("proxy")) {
                    startProxy(cluster, deltas);
                    if (crash.committed) {
                        // Killed after the commit, before its state named it: the restarted proxy adopts it, so a
                        // lost shard's slots would come back from it, not from the one before.
                        assertThat(cluster.log("proxy"))
                                .contains("checkpoint " + crashed + " was committed by this proxy but its state"
                                        + " records " + previous + " as the latest");
                    }
                } else {
                    cluster.startShard(crash.victim, "--hadoop-conf", hadoopConf.toString());
                }
                await().atMost(Duration.ofSeconds(60)).until(cluster::allSlotsServed);
                final long expected = crash.committed ? crashed : previous;
                assertThat(store.list().stream().map(CheckpointInfo::id))
                        .as("complete checkpoints after the kill")
                        .containsExactlyElementsOf(crash.committed ? with(crashed, before) : before);
                assertThat(store.latest()).map(CheckpointInfo::id).contains(expected);
                if (crash.victim.equals("s0")) {
                    // The killed shard's slots went to the other one, from the previous checkpoint, and it says so.
                    // Reported once the killed shard's lease has lapsed, which may come after its restart.
                    await().atMost(Duration.ofSeconds(60))
                            .untilAsserted(() -> assertThat(cluster.status().getRollbacksList())
                                    .as(cluster.logs())
                                    .anySatisfy(event ->
                                            assertThat(event.getCheckpointId()).isEqualTo(expected)));
                }

                final RestoreResponse restored = restoreLatest(cluster.proxyAddress());
                assertThat(restored.getCheckpoint().getId()).isEqualTo(expected);
                assertThat(restored.getRowsRestored()).isEqualTo(ModelRows.ROWS);
                assertThat(ModelRows.pull(table, keys))
                        .as("values after restoring the latest checkpoint\n%s", cluster.logs())
                        .isEqualTo(crash.committed ? newValues : previousValues);

                final long next = AdminCalls.checkpointNow(cluster.proxyAddress());
                assertThat(next)
                        .as("ids are never reused, and none is skipped\n%s", cluster.logs())
                        .isEqualTo(crashed + 1);
                if (crash.deltas && !crash.committed) {
                    // The shards took the restore as the cut of the checkpoint restored: nothing changed since.
                    assertThat(kind(store, next)).as(cluster.logs()).isEqualTo("delta of " + expected);
                    assertThat(ModelRows.ownRows(store, next)).isZero();
                } else {
                    if (crash.deltas) {
                        // The crashed delta committed, holding every row: its chain's deltas outgrew half the base.
                        final List<CheckpointInfo> chain =
                                store.chain(store.get(expected).orElseThrow());
                        final long deltaBytes = chain.subList(1, chain.size()).stream()
                                .mapToLong(link -> link.manifest().totalBytes())
                                .sum();
                        assertThat(deltaBytes)
                                .isGreaterThan(chain.get(0).manifest().totalBytes() / 2);
                    }
                    assertThat(kind(store, next)).as(cluster.logs()).isEqualTo("base");
                }
                ModelRows.assertSameRows(
                        ModelRows.rowsOf(store, next),
                        ModelRows.rowsOf(store, expected),
                        "checkpoint " + next + " against checkpoint " + expected);
                final FileSystem fs = store.fileSystem();
                assertThat(fs.exists(store.checkpointDir(crashed)))
                        .as("the directory of checkpoint %d after the next commit", crashed)
                        .isEqualTo(crash.committed);
                assertThat(store.list().stream().map(CheckpointInfo::id))
                        .containsExactlyElementsOf(with(next, crash.committed ? with(crashed, before) : before));
            }
        }
    }

    /**
     * The NameNode restarts while a shard is in the middle of a data file; the shard then goes on. The checkpoint
     * either commits or fails (a NameNode restart may fail the file's close), but it is never half visible: committed
     * means it is the latest, verifies and restores the newer values bit for bit; failed means the previous one is the
     * latest and the orphan goes with the next commit. The older checkpoint loads either way.
     */
    @Test
    void shouldCommitOrFailButNeverShowHalfACheckpointWhenTheNameNodeRestartsMidWrite() throws Exception {
        final String root = hdfs.getURI() + "/crash/namenode-restart";
        final CheckpointStore store = new CheckpointStore(URI.create(root), conf);
        try (ProcessCluster cluster = new ProcessCluster(dir, 3_000, 500, 300)) {
            cluster.checkpointRoot(root);
            startProxy(cluster);
            cluster.startShard("s0", "--hadoop-conf", hadoopConf.toString());
            cluster.startShard("s1", "--hadoop-conf", hadoopConf.toString());
            await().atMost(Duration.ofSeconds(30)).until(cluster::allSlotsServed);
            final long[] keys = ModelRows.keys();
            try (PsClient client = PsClient.connect(
                    new PsClient.Context().proxyAddress(cluster.proxyAddress()).deadlineMs(60_000))) {
                final PsTable table = client.createTable(ModelRows.schema("emb"));
                final int[] previousValues = ModelRows.pushRound(table, keys, 1, ModelRows.pull(table, keys));
                final long previous = AdminCalls.checkpointNow(cluster.proxyAddress());
                final int[] newValues = ModelRows.pushRound(table, keys, 2, previousValues);

                cluster.injectFault("s0", PausePoints.MID_ROW_FILE, true, 1);
                final CompletableFuture<Long> checkpoint =
                        CompletableFuture.supplyAsync(() -> AdminCalls.checkpointNow(cluster.proxyAddress()));
                cluster.awaitLine(
                        "s0", Pattern.compile(Pattern.quote(PausePoints.MARKER + PausePoints.MID_ROW_FILE)), 60_000);
                final URI before = hdfs.getURI();
                final long restartStart = System.nanoTime();
                hdfs.restartNameNode(true);
                final long restartMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - restartStart);
                assertThat(hdfs.getURI()).isEqualTo(before);
                cluster.injectFault("s0", PausePoints.MID_ROW_FILE, false, 0);

                final long crashed = previous + 1;
                String outcome;
                try {
                    assertThat(checkpoint.get(90, TimeUnit.SECONDS)).isEqualTo(crashed);
                    outcome = "committed";
                } catch (java.util.concurrent.ExecutionException failed) {
                    outcome = "failed: " + failed.getCause();
                }
                final boolean committed = outcome.equals("committed");
                // A failure is the I/O failure it is, not what closing the broken stream threw over it.
                assertThat(outcome).doesNotContain("Self-suppression").doesNotContain("INVALID_ARGUMENT");
                System.out.printf(
                        "NameNode restart (%d ms) mid data file: checkpoint %d %s%n", restartMs, crashed, outcome);
                assertThat(store.list().stream().map(CheckpointInfo::id))
                        .as(outcome)
                        .containsExactlyElementsOf(committed ? List.of(crashed, previous) : List.of(previous));
                final long latest = committed ? crashed : previous;
                assertThat(store.latest()).map(CheckpointInfo::id).contains(latest);

                final RestoreResponse restoredLatest = restoreLatest(cluster.proxyAddress());
                assertThat(restoredLatest.getCheckpoint().getId()).isEqualTo(latest);
                assertThat(ModelRows.pull(table, keys)).isEqualTo(committed ? newValues : previousValues);
                final RestoreResponse restoredOlder = restore(cluster.proxyAddress(), previous);
                assertThat(restoredOlder.getRowsRestored()).isEqualTo(ModelRows.ROWS);
                assertThat(ModelRows.pull(table, keys))
                        .as("the older checkpoint after the restart")
                        .isEqualTo(previousValues);

                // The restarted NameNode stays in safe mode until the DataNode has reported its blocks (reads go on):
                // the proxy cannot renew its claim on the root meanwhile and refuses a checkpoint, saying so. An
                // operator waits for it; so does the test (CI saw the safe mode last past the claim's 12 s).
                final long next = await().atMost(Duration.ofSeconds(90))
                        .pollInterval(Duration.ofMillis(500))
                        .ignoreExceptionsMatching(refused -> refused instanceof io.grpc.StatusRuntimeException status
                                && status.getStatus().getCode() == io.grpc.Status.Code.FAILED_PRECONDITION
                                && status.getMessage().contains("has not renewed its claim"))
                        .until(() -> AdminCalls.checkpointNow(cluster.proxyAddress()), id -> true);
                assertThat(next).isEqualTo(crashed + 1);
                // A delta of the checkpoint restored last (a branch beside the crashed one if that one committed).
                assertThat(kind(store, next)).isEqualTo("delta of " + previous);
                assertThat(ModelRows.ownRows(store, next)).isZero();
                ModelRows.assertSameRows(
                        ModelRows.rowsOf(store, next),
                        ModelRows.rowsOf(store, previous),
                        "checkpoint " + next + " against checkpoint " + previous);
                assertThat(store.fileSystem().exists(store.checkpointDir(crashed)))
                        .as("checkpoint %d's directory after the next commit (%s)", crashed, outcome)
                        .isEqualTo(committed);
            }
        }
    }

    /** What the checkpoint directory holds while the writer is stopped: proof that it is stopped where it should be. */
    private static void assertStoppedAt(
            final Crash crash, final CheckpointStore store, final long id, final String where) throws IOException {
        final FileSystem fs = store.fileSystem();
        final List<String> names = new ArrayList<>();
        final RemoteIterator<LocatedFileStatus> files = fs.listFiles(store.checkpointDir(id), true);
        while (files.hasNext()) {
            names.add(files.next().getPath().getName());
        }
        final long dataFiles =
                names.stream().filter(name -> name.endsWith(".rows")).count();
        assertThat(names.contains(CheckpointStore.MANIFEST))
                .as("%s: %s", crash, names)
                .isEqualTo(crash.committed);
        assertThat(names.stream().anyMatch(name -> name.startsWith(CheckpointStore.MANIFEST + ".tmp-")))
                .as("%s: %s", crash, names)
                .isEqualTo(crash == Crash.BEFORE_RENAME);
        if (crash.point.equals(PausePoints.MID_ROW_FILE)) {
            // The other shard may or may not have its file yet; the stopped one's is there, half written.
            assertThat(fs.exists(new org.apache.hadoop.fs.Path(where)))
                    .as(where)
                    .isTrue();
            assertThat(dataFiles).as("%s: %s", crash, names).isBetween(1L, 2L);
        } else {
            assertThat(dataFiles).as("%s: %s", crash, names).isEqualTo(2);
        }
    }

    private static void startProxy(final ProcessCluster cluster, final String... extra) throws Exception {
        final List<String> args = new ArrayList<>(List.of("--hadoop-conf", hadoopConf.toString()));
        args.addAll(List.of(extra));
        cluster.startProxy(args.toArray(new String[0]));
    }

    /** "base", or "delta of <parent>". */
    static String kind(final CheckpointStore store, final long id) throws IOException {
        final Manifest manifest = store.get(id).orElseThrow().manifest();
        return manifest.kind() == Manifest.Kind.BASE ? "base" : "delta of " + manifest.parentId();
    }

    /** {@code newest}, then {@code older}. */
    private static List<Long> with(final long newest, final List<Long> older) {
        final List<Long> ids = new ArrayList<>(List.of(newest));
        ids.addAll(older);
        return ids;
    }

    /**
     * Restores the latest complete checkpoint into every shard. Retried until it succeeds: a restarted proxy refuses
     * cluster operations until its shards are back.
     */
    static RestoreResponse restoreLatest(final String proxy) {
        return restore(proxy, 0);
    }

    /** Restores checkpoint {@code id} (0: the latest complete one), retried as {@link #restoreLatest} is. */
    static RestoreResponse restore(final String proxy, final long id) {
        final RestoreResponse[] response = new RestoreResponse[1];
        await().atMost(Duration.ofSeconds(60))
                .pollInterval(Duration.ofMillis(500))
                .ignoreExceptions()
                .until(() -> {
                    final ManagedChannel channel = ManagedChannelBuilder.forTarget(proxy)
                            .usePlaintext()
                            .build();
                    try {
                        response[0] = AdminServiceGrpc.newBlockingStub(channel)
                                .withDeadlineAfter(60, TimeUnit.SECONDS)
                                .restore(RestoreRequest.newBuilder()
                                        .setCheckpointId(id)
                                        .build());
                        return true;
                    } finally {
                        channel.shutdownNow();
                    }
                });
        return response[0];
    }

    /** The site file the child processes read with {@code --hadoop-conf}: replication for this many DataNodes. */
    static Path writeHadoopConf(final Path confDir, final int replication) throws IOException {
        final Configuration site = new Configuration(false);
        site.setInt("dfs.replication", replication);
        Files.createDirectories(confDir);
        try (OutputStream out =
                new FileOutputStream(confDir.resolve("hdfs-site.xml").toFile())) {
            site.writeXml(out);
        }
        return confDir;
    }
}
