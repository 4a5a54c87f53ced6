package io.pscluster.faults;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.pscluster.checkpoint.CheckpointInfo;
import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.Manifest;
import io.pscluster.checkpoint.RowFileInfo;
import io.pscluster.local.AdminCalls;
import io.pscluster.local.CounterTable;
import io.pscluster.local.LocalCluster;
import io.pscluster.proto.v1.AdminServiceGrpc;
import io.pscluster.proto.v1.InjectFaultRequest;
import io.pscluster.proto.v1.RestoreRequest;
import io.pscluster.proto.v1.RollbackEvent;
import io.pscluster.proto.v1.ShardAdminServiceGrpc;
import io.pscluster.testing.MiniHdfs;
import io.pscluster.wire.Slots;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
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
 * A "stale file" (a well-formed file of the right length holding an older checkpoint's rows) passes every check the
 * loading makes; only verification against the manifest's CRC32C finds it, on takeover and on an explicit restore.
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
        hdfs = MiniHdfs.start(TakeoverDamageTest.class, 1);
        conf = new Configuration(hdfs.getConfiguration(0));
        // A block with no replica should be reported at once, not after the client's default retry windows.
        conf.setInt("dfs.client.max.block.acquire.failures", 0);
        conf.setInt("dfs.client.retry.window.base", 10);
    }

    @AfterAll
    static void stopHdfs() throws java.io.IOException {
        System.clearProperty("pscluster.faults");
        MiniHdfs.stop(hdfs);
    }

    @ParameterizedTest(name = "damage: {0}")
    @ValueSource(strings = {"flipped-byte", "missing-block", "stale-file"})
    void shouldRestoreThePreviousCheckpointAndNeverServeInitialValuesWhenTheNewestIsDamaged(final String damage)
            throws Exception {
        final String root = hdfs.getURI() + "/pscluster/" + damage;
        try (LocalCluster cluster = cluster(root, damage.equals("stale-file") ? "none" : "zstd");
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable table = client.createTable(CounterTable.schema("counter"));
            final long[] keys = allKeys();
            pushOnceEach(table, keys);
            awaitAll(table, keys, 1f);
            final long previous = AdminCalls.checkpointNow(cluster.proxyAddress());
            pushOnceEach(table, keys);
            awaitAll(table, keys, 2f);
            final long newest = AdminCalls.checkpointNow(cluster.proxyAddress());
            final BitSet lostSlots = cluster.shard(0).shard().ownedSlots();
            damage(root, previous, newest, damage, lostSlots);

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
            // A block no replica serves is not proven damage (its DataNode may come back): not marked.
            final java.util.Map<Long, String> marks = new CheckpointStore(URI.create(root), conf).damageMarks();
            if (damage.equals("missing-block")) {
                assertThat(marks)
                        .as("a checkpoint whose block is only unreadable")
                        .isEmpty();
            } else {
                assertThat(marks)
                        .as("the adopter marks the damaged checkpoint for retention")
                        .containsOnlyKeys(newest);
            }
        }
    }

    /**
     * A restore of a damaged checkpoint, asked for by id, is refused before any shard loads a row: the model stays as
     * it was. The damage is one the loading itself cannot see (a well-formed file of the right length and slots, with
     * the rows of an older checkpoint), so only the check against the manifest's CRC32C stands between the restore
     * and a model that mixes two checkpoints. A restore of "the latest" takes the previous, intact one.
     */
    @Test
    void shouldRefuseToRestoreACheckpointWithAStaleFileAndChangeNothing() throws Exception {
        final String root = hdfs.getURI() + "/pscluster/explicit-restore";
        try (LocalCluster cluster = cluster(root, "none");
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable table = client.createTable(CounterTable.schema("counter"));
            final long[] keys = allKeys();
            pushOnceEach(table, keys);
            awaitAll(table, keys, 1f);
            final long previous = AdminCalls.checkpointNow(cluster.proxyAddress());
            pushOnceEach(table, keys);
            awaitAll(table, keys, 2f);
            final long newest = AdminCalls.checkpointNow(cluster.proxyAddress());
            damage(
                    root,
                    previous,
                    newest,
                    "stale-file",
                    cluster.shard(0).shard().ownedSlots());

            assertThatThrownBy(() -> restore(cluster.proxyAddress(), newest))
                    .isInstanceOfSatisfying(
                            StatusRuntimeException.class,
                            e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.DATA_LOSS))
                    .hasMessageContaining("checkpoint " + newest + " is damaged");
            assertThat(table.pull(keys)).as("values after the refused restore").containsOnly(2f);

            assertThat(restore(cluster.proxyAddress(), 0)).isEqualTo(previous);
            assertThat(table.pull(keys)).containsOnly(1f);
        }
    }

    @Test
    void shouldRetryATransientRestoreFailureAndServeOnlyRestoredRows() throws Exception {
        final String root = hdfs.getURI() + "/pscluster/transient";
        try (LocalCluster cluster = cluster(root, "zstd");
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable table = client.createTable(CounterTable.schema("counter"));
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

    private LocalCluster cluster(final String root, final String codec) throws Exception {
        return LocalCluster.builder()
                .shards(2)
                .checkpointCodec(codec)
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

    /**
     * Damages a data file of checkpoint {@code id}: the first one with a flipped byte, or its block deleted on the
     * DataNode; or ("stale-file") the one holding {@code slots} overwritten with the bytes of the same shard's file in
     * checkpoint {@code previous}: well-formed, same length (codec none, same rows), other values.
     */
    private static void damage(
            final String root, final long previous, final long id, final String how, final BitSet slots)
            throws Exception {
        final CheckpointStore store = new CheckpointStore(URI.create(root), conf);
        final CheckpointInfo checkpoint = store.get(id).orElseThrow();
        final org.apache.hadoop.fs.Path file =
                checkpoint.resolve(checkpoint.manifest().files().get(0).file());
        final FileSystem fs = store.fileSystem();
        if (how.equals("stale-file")) {
            final CheckpointInfo older = store.get(previous).orElseThrow();
            final RowFileInfo target = fileHolding(checkpoint, slots);
            final RowFileInfo source = fileHolding(older, slots);
            assertThat(source.length()).as("lengths of the two files").isEqualTo(target.length());
            assertThat(source.crc32c()).isNotEqualTo(target.crc32c());
            final byte[] bytes;
            try (FSDataInputStream in = fs.open(older.resolve(source))) {
                bytes = in.readAllBytes();
            }
            try (FSDataOutputStream out = fs.create(checkpoint.resolve(target), true)) {
                out.write(bytes);
            }
            return;
        }
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

    private static RowFileInfo fileHolding(final CheckpointInfo checkpoint, final BitSet slots) {
        return checkpoint.manifest().files().stream()
                .map(Manifest.FileEntry::file)
                .filter(file -> java.util.Arrays.stream(file.slots()).anyMatch(slots::get))
                .findFirst()
                .orElseThrow();
    }

    /** Restores checkpoint {@code id} (0: the latest complete one); returns the id restored. */
    private static long restore(final String proxy, final long id) {
        final ManagedChannel channel =
                ManagedChannelBuilder.forTarget(proxy).usePlaintext().build();
        try {
            return AdminServiceGrpc.newBlockingStub(channel)
                    .withDeadlineAfter(60, TimeUnit.SECONDS)
                    .restore(RestoreRequest.newBuilder().setCheckpointId(id).build())
                    .getCheckpoint()
                    .getId();
        } finally {
            channel.shutdownNow();
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
