package io.pscluster.faults;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.pscluster.checkpoint.CheckpointInfo;
import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.local.AdminCalls;
import io.pscluster.local.LocalCluster;
import io.pscluster.proto.v1.InjectFaultRequest;
import io.pscluster.proto.v1.RollbackEvent;
import io.pscluster.proto.v1.ShardAdminServiceGrpc;
import io.pscluster.wire.Slots;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.io.File;
import java.net.URI;
import java.nio.file.Path;
import java.time.Duration;
import java.util.BitSet;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.hdfs.DFSTestUtil;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * A takeover whose newest checkpoint is damaged, on a real HDFS: the adopting shard must fall back to the previous
 * complete checkpoint and say so, and no slot may ever answer with initial values meanwhile (a reader pulls every key
 * throughout). A transient restore failure (injected) is retried until it succeeds, with the slots refused until then.
 */
@Tag("slow")
class TakeoverDamageTest {
    private static MiniDFSCluster hdfs;
    private static Configuration conf;

    @TempDir
    Path stateDir;

    @BeforeAll
    static void startHdfs() throws Exception {
        System.setProperty("pscluster.faults", "true");
        final Configuration base = new Configuration();
        final File dir = new File("target/minidfs-" + TakeoverDamageTest.class.getSimpleName());
        base.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, dir.getAbsolutePath());
        hdfs = new MiniDFSCluster.Builder(base, dir).numDataNodes(1).build();
        hdfs.waitActive();
        conf = new Configuration(hdfs.getConfiguration(0));
        // A block with no replica should be reported at once, not after the client's default retry windows.
        conf.setInt("dfs.client.max.block.acquire.failures", 0);
        conf.setInt("dfs.client.retry.window.base", 10);
    }

    @AfterAll
    static void stopHdfs() {
        System.clearProperty("pscluster.faults");
        if (hdfs != null) {
            hdfs.shutdown();
        }
    }

    @ParameterizedTest(name = "damage: {0}")
    @ValueSource(strings = {"flipped-byte", "missing-block"})
    void shouldRestoreThePreviousCheckpointAndNeverServeInitialValuesWhenTheNewestIsDamaged(final String damage)
            throws Exception {
        final String root = hdfs.getURI() + "/pscluster/" + damage;
        try (LocalCluster cluster = cluster(root);
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable table = client.createTable(CounterLoad.schema("counter"));
            final long[] keys = allKeys();
            pushOnceEach(table, keys);
            awaitAll(table, keys, 1f);
            final long previous = AdminCalls.checkpointNow(cluster.proxyAddress());
            pushOnceEach(table, keys);
            awaitAll(table, keys, 2f);
            final long newest = AdminCalls.checkpointNow(cluster.proxyAddress());
            damage(root, newest, damage);

            final BitSet lostSlots = cluster.shard(0).shard().ownedSlots();
            try (Reader reader = new Reader(table, keys)) {
                cluster.crashShard(0);
                cluster.awaitHealthy(60_000);
                await().atMost(Duration.ofSeconds(30)).until(() -> reader.rounds.get() > 3);
                reader.stop();
                assertThat(reader.bad)
                        .as("values served during and after the takeover")
                        .isEmpty();
            }
            final float[] values = table.pull(keys);
            final long hash = Slots.tableHash("counter");
            for (int i = 0; i < keys.length; i++) {
                final boolean rolledBack = lostSlots.get(Slots.slotOf(hash, keys[i]));
                assertThat(values[i])
                        .as("key %d (slot of the lost shard: %s)", keys[i], rolledBack)
                        .isEqualTo(rolledBack ? 1f : 2f);
            }
            // The adopter reports the fallback in its next heartbeat.
            await().atMost(Duration.ofSeconds(30))
                    .untilAsserted(() -> assertThat(
                                    AdminCalls.status(cluster.proxyAddress()).getRollbacksList())
                            .as("the fallback is reported")
                            .anySatisfy(event -> {
                                assertThat(event.getCheckpointId()).isEqualTo(previous);
                                assertThat(event.getReason()).contains("checkpoint " + newest + " damaged");
                            }));
        }
    }

    @Test
    void shouldRetryATransientRestoreFailureAndServeOnlyRestoredRows() throws Exception {
        final String root = hdfs.getURI() + "/pscluster/transient";
        try (LocalCluster cluster = cluster(root);
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable table = client.createTable(CounterLoad.schema("counter"));
            final long[] keys = allKeys();
            pushOnceEach(table, keys);
            awaitAll(table, keys, 1f);
            AdminCalls.checkpointNow(cluster.proxyAddress());
            final ManagedChannel adopter = ManagedChannelBuilder.forTarget(
                            cluster.shard(1).address())
                    .usePlaintext()
                    .build();
            try (Reader reader = new Reader(table, keys)) {
                ShardAdminServiceGrpc.newBlockingStub(adopter)
                        .withDeadlineAfter(10, TimeUnit.SECONDS)
                        .injectFault(InjectFaultRequest.newBuilder()
                                .setPoint("fail-restore")
                                .setEnabled(true)
                                .setTimes(2)
                                .build());
                cluster.crashShard(0);
                cluster.awaitHealthy(60_000);
                await().atMost(Duration.ofSeconds(30)).until(() -> reader.rounds.get() > 3);
                reader.stop();
                assertThat(reader.bad).isEmpty();
            } finally {
                adopter.shutdownNow();
            }
            assertThat(table.pull(keys)).containsOnly(1f);
            final List<RollbackEvent> rollbacks =
                    AdminCalls.status(cluster.proxyAddress()).getRollbacksList();
            assertThat(rollbacks).isNotEmpty();
        }
    }

    private LocalCluster cluster(final String root) throws Exception {
        return LocalCluster.builder()
                .shards(2)
                .checkpointRoot(root)
                .stateDir(stateDir.toString())
                .hadoopConf(conf)
                .start();
    }

    private static long[] allKeys() {
        final long[] keys = new long[CounterLoad.KEYS];
        for (int i = 0; i < keys.length; i++) {
            keys[i] = CounterLoad.key(i);
        }
        return keys;
    }

    private static void pushOnceEach(final PsTable table, final long[] keys) {
        final float[] gradients = new float[keys.length];
        java.util.Arrays.fill(gradients, -1f);
        table.push(keys, gradients);
    }

    private static void awaitAll(final PsTable table, final long[] keys, final float value) {
        await().atMost(Duration.ofSeconds(20))
                .untilAsserted(() -> assertThat(table.pull(keys)).containsOnly(value));
    }

    /** Damages the first data file of checkpoint {@code id}: a flipped byte, or its block deleted on the DataNode. */
    private static void damage(final String root, final long id, final String how) throws Exception {
        final CheckpointStore store = new CheckpointStore(URI.create(root), conf);
        final CheckpointInfo checkpoint = store.get(id).orElseThrow();
        final org.apache.hadoop.fs.Path file =
                checkpoint.resolve(checkpoint.manifest().files().get(0).file());
        final FileSystem fs = store.fileSystem();
        if (how.equals("missing-block")) {
            assertThat(hdfs.corruptBlockOnDataNodesByDeletingBlockFile(DFSTestUtil.getFirstBlock(fs, file)))
                    .isEqualTo(1);
            return;
        }
        final byte[] bytes;
        try (FSDataInputStream in = fs.open(file)) {
            bytes = in.readAllBytes();
        }
        bytes[bytes.length / 2] ^= 0x40;
        try (FSDataOutputStream out = fs.create(file, true)) {
            out.write(bytes);
        }
    }

    /** Pulls every key in a loop; records any value that is neither the older nor the newer counter value. */
    private static final class Reader implements AutoCloseable {
        final List<String> bad = new CopyOnWriteArrayList<>();
        final AtomicLong rounds = new AtomicLong();
        private final AtomicBoolean running = new AtomicBoolean(true);
        private final Thread thread;

        Reader(final PsTable table, final long[] keys) {
            thread = new Thread(() -> {
                while (running.get()) {
                    try {
                        final float[] values = table.pull(keys);
                        for (int i = 0; i < values.length && bad.size() < 10; i++) {
                            if (values[i] != 1f && values[i] != 2f) {
                                bad.add("key " + keys[i] + " read " + values[i]);
                            }
                        }
                        rounds.incrementAndGet();
                    } catch (RuntimeException refusedUntilDeadline) {
                        bad.add("pull failed: " + refusedUntilDeadline);
                    }
                }
            });
            thread.start();
        }

        void stop() throws InterruptedException {
            running.set(false);
            thread.join(60_000);
        }

        @Override
        public void close() throws InterruptedException {
            stop();
        }
    }
}
