package io.pscluster.local;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;
import static org.awaitility.Awaitility.await;

import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.pscluster.checkpoint.CheckpointInfo;
import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.Manifest;
import io.pscluster.proto.v1.InitializerKind;
import io.pscluster.proto.v1.InitializerSpec;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.RestoreCheckpointRequest;
import io.pscluster.proto.v1.ShardAdminServiceGrpc;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.server.Shard;
import io.pscluster.wire.Slots;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.net.URI;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.BitSet;
import java.util.concurrent.TimeUnit;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FileSystem;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A restore ordered straight at a shard (its admin RPC, as an operator tool or a test may call it, past the proxy's own
 * check) verifies the checkpoint before it touches a row: a damaged one is refused with DATA_LOSS naming it, and the
 * slots keep serving what they held instead of being left cleared and refusing requests. An intact one restores.
 */
class ShardRestoreVerificationTest {
    private static final int KEYS = 4_096;

    @TempDir
    Path dir;

    @Test
    void shouldRefuseADamagedCheckpointBeforeTouchingTheSlotsWhenARestoreIsOrderedAtAShard() throws Exception {
        final String root = dir.resolve("checkpoints").toUri().toString();
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(2)
                        .checkpointRoot(root)
                        .checkpointCodec("none")
                        .start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable table = createCounter(client);
            final long[] keys = keys();
            final float[] minusOne = new float[KEYS];
            Arrays.fill(minusOne, -1f);
            table.push(keys, minusOne);
            client.flush();
            final long previous = AdminCalls.checkpointNow(cluster.proxyAddress());
            table.push(keys, minusOne);
            client.flush();
            final long newest = AdminCalls.checkpointNow(cluster.proxyAddress());

            final Shard shard = cluster.shard(0).shard();
            final BitSet owned = shard.ownedSlots();
            final CheckpointStore store = new CheckpointStore(URI.create(root), new Configuration());
            final CheckpointInfo checkpoint = store.get(newest).orElseThrow();
            final Manifest.FileEntry damaged = checkpoint.manifest().files().stream()
                    .filter(entry -> entry.shardId().equals(shard.shardId()))
                    .findFirst()
                    .orElseThrow();
            final org.apache.hadoop.fs.Path file = checkpoint.resolve(damaged.file());
            flipByteOfFirstChunk(store.fileSystem(), file);

            final ManagedChannel channel = ManagedChannelBuilder.forTarget(
                            cluster.shard(0).address())
                    .usePlaintext()
                    .build();
            try {
                final StatusRuntimeException refused =
                        catchThrowableOfType(() -> restore(channel, root, newest, owned), StatusRuntimeException.class);
                assertThat(refused).isNotNull();
                assertThat(refused.getStatus().getCode()).isEqualTo(Status.Code.DATA_LOSS);
                assertThat(refused.getStatus().getDescription())
                        .contains("checkpoint " + newest + " is damaged")
                        .contains(file.toString());
                assertThat(shard.restoringSlotCount())
                        .as("slots left refusing requests")
                        .isZero();
                assertThat(store.damageMarks())
                        .as("the shard marks the checkpoint it found damaged")
                        .containsOnlyKeys(newest);
                assertThat(table.pull(keys))
                        .as("values after the refused restore")
                        .containsOnly(2f);

                assertThat(restore(channel, root, previous, owned)).isPositive();
            } finally {
                channel.shutdownNow();
            }
            final float[] values = table.pull(keys);
            final long hash = Slots.tableHash("counter");
            for (int i = 0; i < KEYS; i++) {
                assertThat(values[i]).as("key %d", keys[i]).isEqualTo(owned.get(Slots.slotOf(hash, keys[i])) ? 1f : 2f);
            }
        }
    }

    /**
     * A restore of the latest checkpoint passes over the two newest (their bytes damaged) for the oldest; the next
     * checkpoint's retention (keep 3) does not count the damaged two, so it keeps that intact one rather than deleting
     * it for them (all bases: no delta's chain keeps it by itself).
     */
    @Test
    void shouldKeepTheIntactCheckpointARestoreFellBackToWhenNewerOnesWereFoundDamaged() throws Exception {
        final String root = dir.resolve("checkpoints").toUri().toString();
        try (LocalCluster cluster = keepThree(root, dir.resolve("proxy-state").toString());
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable table = createCounter(client);
            final long[] keys = keys();
            final long[] ids = threeCheckpointsTheNewestTwoDamaged(cluster, client, table, root);
            final CheckpointStore store = new CheckpointStore(URI.create(root), new Configuration());

            assertThat(AdminCalls.restore(cluster.proxyAddress(), 0)).isEqualTo(KEYS);
            assertThat(table.pull(keys))
                    .as("the values of the oldest checkpoint")
                    .containsOnly(1f);
            final long next = AdminCalls.checkpointNow(cluster.proxyAddress());

            assertThat(store.list().stream().map(CheckpointInfo::id).toList())
                    .as("the intact checkpoint stays; the damaged ones are kept uncounted")
                    .containsExactly(next, ids[2], ids[1], ids[0]);
        }
    }

    /**
     * As above, with the proxy restarted between the restore that found the damage and the next checkpoint: the marks
     * in the damaged checkpoints' directories, not the proxy's memory, keep the intact one from being deleted for them.
     */
    @Test
    void shouldKeepTheIntactCheckpointWhenTheProxyRestartedAfterARestoreFoundNewerOnesDamaged() throws Exception {
        final String root = dir.resolve("checkpoints").toUri().toString();
        final String stateDir = dir.resolve("proxy-state").toString();
        final long[] keys = keys();
        final long[] ids = new long[3];
        try (LocalCluster cluster = keepThree(root, stateDir);
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable table = createCounter(client);
            System.arraycopy(threeCheckpointsTheNewestTwoDamaged(cluster, client, table, root), 0, ids, 0, 3);
            assertThat(AdminCalls.restore(cluster.proxyAddress(), 0)).isEqualTo(KEYS);
        }

        try (LocalCluster restarted = keepThree(root, stateDir);
                PsClient client = PsClient.connect(restarted.proxyAddress())) {
            restarted.awaitHealthy(60_000);
            // The new shard restores its slots (falling back past the damaged ones) before a checkpoint may be cut.
            assertThat(client.table("counter").pull(keys))
                    .as("the values of the intact checkpoint")
                    .containsOnly(1f);
            // The proxy hears that the restore ended with the shard's next heartbeat.
            final long next = await().atMost(Duration.ofSeconds(30))
                    .ignoreExceptionsMatching(e -> e instanceof StatusRuntimeException refused
                            && refused.getStatus().getCode() == Status.Code.FAILED_PRECONDITION
                            && refused.getMessage().contains("still being restored"))
                    .until(() -> AdminCalls.checkpointNow(restarted.proxyAddress()), id -> id > 0);

            final CheckpointStore store = new CheckpointStore(URI.create(root), new Configuration());
            assertThat(store.list().stream().map(CheckpointInfo::id).toList())
                    .as("the intact checkpoint stays after the restart; the damaged ones are kept uncounted")
                    .containsExactly(next, ids[2], ids[1], ids[0]);
        }
    }

    /**
     * Pushes 1 into every key and takes a checkpoint, three times (the values 1, 2 and 3), then flips a byte of the
     * newest two: returns their ids, oldest first.
     */
    private static long[] threeCheckpointsTheNewestTwoDamaged(
            final LocalCluster cluster, final PsClient client, final PsTable table, final String root)
            throws Exception {
        final float[] minusOne = new float[KEYS];
        Arrays.fill(minusOne, -1f);
        final long[] ids = new long[3];
        for (int c = 0; c < ids.length; c++) {
            table.push(keys(), minusOne);
            client.flush();
            ids[c] = AdminCalls.checkpointNow(cluster.proxyAddress());
        }
        final CheckpointStore store = new CheckpointStore(URI.create(root), new Configuration());
        for (final long damaged : new long[] {ids[1], ids[2]}) {
            final CheckpointInfo checkpoint = store.get(damaged).orElseThrow();
            flipByteOfFirstChunk(
                    store.fileSystem(),
                    checkpoint.resolve(checkpoint.manifest().files().get(0).file()));
        }
        return ids;
    }

    private static LocalCluster keepThree(final String root, final String stateDir) throws Exception {
        return LocalCluster.builder()
                .shards(1)
                .checkpointRoot(root)
                .stateDir(stateDir)
                .checkpointCodec("none")
                .deltasPerBase(0)
                .keepCheckpoints(3)
                .start();
    }

    /** A sparse table of dim 1, SGD with learning rate 1 from zeros: each push of -1 adds 1 to a key's value. */
    private static PsTable createCounter(final PsClient client) {
        return client.createTable(TableSchema.newBuilder()
                .setName("counter")
                .setKind(TableKind.SPARSE)
                .setDim(1)
                .setOptimizer(
                        OptimizerSpec.newBuilder().setKind(OptimizerKind.SGD).setLearningRate(1f))
                .setInitializer(InitializerSpec.newBuilder().setKind(InitializerKind.ZEROS))
                .build());
    }

    private static long[] keys() {
        final long[] keys = new long[KEYS];
        for (int i = 0; i < KEYS; i++) {
            keys[i] = i * 7_919L + 1;
        }
        return keys;
    }

    private static long restore(final ManagedChannel channel, final String root, final long id, final BitSet slots) {
        return ShardAdminServiceGrpc.newBlockingStub(channel)
                .withDeadlineAfter(30, TimeUnit.SECONDS)
                .restoreCheckpoint(RestoreCheckpointRequest.newBuilder()
                        .setCheckpointRoot(root)
                        .setCheckpointId(id)
                        .addAllSlots(slots.stream().boxed().toList())
                        .build())
                .getRowsRestored();
    }

    /** Rewrites {@code file} (through the filesystem, so its own checksums stay valid) with a row byte changed. */
    private static void flipByteOfFirstChunk(final FileSystem fs, final org.apache.hadoop.fs.Path file)
            throws Exception {
        final byte[] bytes;
        try (FSDataInputStream in = fs.open(file)) {
            bytes = in.readAllBytes();
        }
        assertThat(bytes.length).isGreaterThan(1_000);
        // Past the file's header and the first chunk's header: a key or value of one of the first rows.
        bytes[100] ^= 0x08;
        try (FSDataOutputStream out = fs.create(file, true)) {
            out.write(bytes);
        }
    }
}
