package io.pscluster.faults;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.pscluster.checkpoint.CheckpointInfo;
import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.PausePoints;
import io.pscluster.local.AdminCalls;
import io.pscluster.proto.v1.AdminServiceGrpc;
import io.pscluster.proto.v1.RestoreRequest;
import io.pscluster.proto.v1.RestoreResponse;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.net.URI;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
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
 * the same checkpoint root (and, for the proxy, the same state directory). The checkpoint that a restore of "the
 * latest" then loads must be the previous one when the kill came before the manifest's rename, the new one after it,
 * bit for bit (pulled values, and the rows of the next checkpoint with their Adagrad accumulators); the next
 * checkpoint commits and retention removes the killed one's orphaned files.
 */
@Tag("slow")
class CheckpointCrashTest {
    private static MiniDFSCluster hdfs;
    private static Configuration conf;
    private static Path hadoopConf;

    @TempDir
    Path dir;

    /** Where the writer is killed, which process that is, and which checkpoint must survive. */
    enum Crash {
        MID_ROW_FILE(PausePoints.MID_ROW_FILE, "s0", false),
        BEFORE_MANIFEST(PausePoints.BEFORE_MANIFEST, "proxy", false),
        BEFORE_RENAME(PausePoints.BEFORE_RENAME, "proxy", false),
        AFTER_RENAME(PausePoints.AFTER_RENAME, "proxy", true);

        final String point;
        final String victim;
        final boolean committed;

        Crash(final String point, final String victim, final boolean committed) {
            this.point = point;
            this.victim = victim;
            this.committed = committed;
        }
    }

    @BeforeAll
    static void startHdfs(@TempDir final Path confDir) throws Exception {
        final Configuration base = new Configuration();
        final File baseDir = new File("target/minidfs-" + CheckpointCrashTest.class.getSimpleName());
        base.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, baseDir.getAbsolutePath());
        hdfs = new MiniDFSCluster.Builder(base, baseDir).numDataNodes(1).build();
        hdfs.waitActive();
        conf = new Configuration(hdfs.getConfiguration(0));
        hadoopConf = writeHadoopConf(confDir, 1);
    }

    @AfterAll
    static void stopHdfs() {
        if (hdfs != null) {
            hdfs.shutdown();
        }
    }

    @ParameterizedTest(name = "kill -9 at {0}")
    @EnumSource(Crash.class)
    void shouldRestoreThePreviousCheckpointBeforeTheRenameAndTheNewOneAfterWhenTheWriterIsKilled(final Crash crash)
            throws Exception {
        final String root = hdfs.getURI() + "/crash/" + crash.name().toLowerCase();
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
                assertThat(ModelRows.pull(table, keys)).isEqualTo(previousValues);
                final int[] newValues = ModelRows.pushRound(table, keys, 2, previousValues);

                if (crash.victim.equals("proxy")) {
                    cluster.injectProxyFault(crash.point, true);
                } else {
                    cluster.injectFault(crash.victim, crash.point, true, 1);
                }
                final CompletableFuture<Long> killed =
                        CompletableFuture.supplyAsync(() -> AdminCalls.checkpointNow(cluster.proxyAddress()));
                final String where = cluster.awaitLine(
                                crash.victim,
                                Pattern.compile(Pattern.quote(PausePoints.MARKER + crash.point) + " at (.+)"),
                                60_000)
                        .group(1);
                final long crashed = previous + 1;
                assertStoppedAt(crash, store, crashed, where);
                cluster.kill9(crash.victim);
                assertThat(killed)
                        .as("the checkpoint call whose writer was killed")
                        .failsWithin(Duration.ofSeconds(60));

                if (crash.victim.equals("proxy")) {
                    startProxy(cluster);
                } else {
                    cluster.startShard(crash.victim, "--hadoop-conf", hadoopConf.toString());
                }
                await().atMost(Duration.ofSeconds(60)).until(cluster::allSlotsServed);
                final long expected = crash.committed ? crashed : previous;
                assertThat(store.list().stream().map(CheckpointInfo::id))
                        .as("complete checkpoints after the kill")
                        .containsExactlyElementsOf(crash.committed ? List.of(crashed, previous) : List.of(previous));
                assertThat(store.latest()).map(CheckpointInfo::id).contains(expected);
                if (crash == Crash.MID_ROW_FILE) {
                    // The killed shard's slots went to the other one, from the previous checkpoint, and it says so.
                    // Reported once the killed shard's lease has lapsed, which may come after its restart.
                    await().atMost(Duration.ofSeconds(60))
                            .untilAsserted(() -> assertThat(cluster.status().getRollbacksList())
                                    .as(cluster.logs())
                                    .anySatisfy(event ->
                                            assertThat(event.getCheckpointId()).isEqualTo(previous)));
                }

                final RestoreResponse restored = restoreLatest(cluster.proxyAddress());
                assertThat(restored.getCheckpoint().getId()).isEqualTo(expected);
                assertThat(restored.getRowsRestored()).isEqualTo(ModelRows.ROWS);
                assertThat(ModelRows.pull(table, keys))
                        .as("values after restoring the latest checkpoint\n%s", cluster.logs())
                        .isEqualTo(crash.committed ? newValues : previousValues);

                final long next = AdminCalls.checkpointNow(cluster.proxyAddress());
                assertThat(next).as("ids are never reused").isEqualTo(crashed + 1);
                ModelRows.assertSameRows(
                        ModelRows.rowsOf(store, next),
                        ModelRows.rowsOf(store, expected),
                        "checkpoint " + next + " against checkpoint " + expected);
                final FileSystem fs = store.fileSystem();
                assertThat(fs.exists(store.checkpointDir(crashed)))
                        .as("the directory of checkpoint %d after the next commit", crashed)
                        .isEqualTo(crash.committed);
                assertThat(store.list().stream().map(CheckpointInfo::id))
                        .containsExactlyElementsOf(
                                crash.committed ? List.of(next, crashed, previous) : List.of(next, previous));
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

                final long next = AdminCalls.checkpointNow(cluster.proxyAddress());
                assertThat(next).isEqualTo(crashed + 1);
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
        if (crash == Crash.MID_ROW_FILE) {
            // The other shard may or may not have its file yet; the stopped one's is there, half written.
            assertThat(fs.exists(new org.apache.hadoop.fs.Path(where)))
                    .as(where)
                    .isTrue();
            assertThat(dataFiles).as("%s: %s", crash, names).isBetween(1L, 2L);
        } else {
            assertThat(dataFiles).as("%s: %s", crash, names).isEqualTo(2);
        }
    }

    private static void startProxy(final ProcessCluster cluster) throws Exception {
        cluster.startProxy("--hadoop-conf", hadoopConf.toString());
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
