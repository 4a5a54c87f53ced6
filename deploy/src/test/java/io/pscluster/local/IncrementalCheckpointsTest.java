package io.pscluster.local;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.Manifest;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.proxy.ProxyServer;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.net.URI;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.TreeMap;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The proxy's choice of base or delta on a real cluster (two shards, deltas on with two per base): a base first, then
 * deltas of the latest checkpoint holding only the changed rows, a base once two deltas were taken, a small delta of
 * an older checkpoint an operator restored, and a base again when a shard cannot write a delta (its slots changed
 * when the other shard was lost). Restoring any checkpoint of a chain gives back every record (values and Adagrad
 * state) as it was.
 */
class IncrementalCheckpointsTest {
    private static final int KEYS = 5_000;
    private static final int DIM = 4;

    @TempDir
    Path dir;

    @Test
    void shouldTakeDeltasBetweenBasesAndRestoreEachExactly() throws Exception {
        final String root = dir.resolve("ckpt").toUri().toString();
        final CheckpointStore store = new CheckpointStore(URI.create(root), new Configuration());
        final Random random = new Random(11);
        final Map<Long, Map<Long, List<Integer>>> expected = new TreeMap<>();
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(2)
                        .checkpointRoot(root)
                        .deltasPerBase(2)
                        .keepCheckpoints(0)
                        .start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable table = client.createTable(TableSchema.newBuilder()
                    .setName("emb")
                    .setKind(TableKind.SPARSE)
                    .setDim(DIM)
                    .setOptimizer(OptimizerSpec.newBuilder()
                            .setKind(OptimizerKind.ADAGRAD)
                            .setLearningRate(0.05f))
                    .build());
            push(table, random, KEYS);
            final List<Long> ids = new ArrayList<>();
            for (int round = 0; round < 4; round++) {
                final long id = AdminCalls.checkpointNow(cluster.proxyAddress());
                ids.add(id);
                expected.put(id, bits(cluster.dumpTable("emb")));
                push(table, random, KEYS / 100); // 1% of the rows change before the next one
            }
            assertThat(kinds(store, ids))
                    .containsExactly("base", "delta of " + ids.get(0), "delta of " + ids.get(1), "base");
            final Manifest base = store.get(ids.get(0)).orElseThrow().manifest();
            final Manifest delta = store.get(ids.get(1)).orElseThrow().manifest();
            assertThat(delta.totalRows()).isLessThanOrEqualTo(KEYS / 100);
            assertThat(delta.totalBytes()).isLessThan(base.totalBytes() / 10);

            for (final long id : List.of(ids.get(2), ids.get(3), ids.get(1))) {
                AdminCalls.restore(cluster.proxyAddress(), id);
                assertThat(bits(cluster.dumpTable("emb")))
                        .as("records restored from checkpoint %d", id)
                        .isEqualTo(expected.get(id));
            }
            // After a restore of an older checkpoint, the next one is a small delta of it (no id skipped).
            push(table, random, KEYS / 100);
            final long branch = AdminCalls.checkpointNow(cluster.proxyAddress());
            final Map<Long, List<Integer>> atBranch = bits(cluster.dumpTable("emb"));
            assertThat(branch).isEqualTo(ids.get(3) + 1);
            assertThat(kinds(store, List.of(branch))).containsExactly("delta of " + ids.get(1));
            assertThat(store.get(branch).orElseThrow().manifest().totalRows()).isLessThanOrEqualTo(KEYS / 100);
            push(table, random, KEYS / 100);
            AdminCalls.restore(cluster.proxyAddress(), branch);
            assertThat(bits(cluster.dumpTable("emb")))
                    .as("records restored from checkpoint %d", branch)
                    .isEqualTo(atBranch);

            // Back to the base 4 (a delta of it is due next, not a base: its chain has no delta yet).
            AdminCalls.restore(cluster.proxyAddress(), ids.get(3));
            assertThat(bits(cluster.dumpTable("emb"))).isEqualTo(expected.get(ids.get(3)));

            // A shard whose slots changed since the latest checkpoint cannot write a delta of it: a base is taken.
            cluster.crashShard(0);
            cluster.awaitHealthy(60_000);
            // Refused (FAILED_PRECONDITION) while the survivor still restores the lost shard's slots.
            final long after = org.awaitility.Awaitility.await()
                    .atMost(java.time.Duration.ofSeconds(60))
                    .ignoreExceptions()
                    .until(() -> AdminCalls.checkpointNow(cluster.proxyAddress()), id -> id > 0);
            assertThat(store.get(after).orElseThrow().manifest().kind()).isEqualTo(Manifest.Kind.BASE);
            // The refused delta's id was skipped: never committed, its directory gone with the base's commit, and
            // nothing else minds the gap: the list holds every committed checkpoint, each chain verifies, and the
            // base restores.
            assertThat(after).as("the refused delta took an id").isGreaterThan(branch + 1);
            for (long skipped = branch + 1; skipped < after; skipped++) {
                assertThat(store.get(skipped)).as("checkpoint %d", skipped).isEmpty();
                assertThat(store.fileSystem().exists(store.checkpointDir(skipped)))
                        .as("directory of checkpoint %d after the next commit", skipped)
                        .isFalse();
            }
            final List<Long> committed = new ArrayList<>(ids);
            committed.add(branch);
            committed.add(after);
            committed.sort(java.util.Comparator.reverseOrder());
            assertThat(store.list().stream().map(io.pscluster.checkpoint.CheckpointInfo::id))
                    .containsExactlyElementsOf(committed);
            for (final io.pscluster.checkpoint.CheckpointInfo checkpoint : store.list()) {
                store.verify(checkpoint);
            }
            final Map<Long, List<Integer>> atAfter = bits(cluster.dumpTable("emb"));
            push(table, random, KEYS / 100);
            AdminCalls.restore(cluster.proxyAddress(), after);
            assertThat(bits(cluster.dumpTable("emb"))).isEqualTo(atAfter);
        }
    }

    /**
     * With the defaults (deltas on, {@value ProxyServer.Context#DEFAULT_DELTAS_PER_BASE} per base) and only the two
     * newest checkpoints kept by count: retention keeps every base and parent a kept delta needs and deletes the rest
     * once a new base makes them unneeded. The whole cluster is then restarted (new proxy state, new shards): it comes
     * back from the latest delta's chain exactly, and its first checkpoint after that restore, with 1% of the rows
     * changed, is a small delta of the checkpoint restored (not a delta holding every restored row), which restores
     * exactly in turn.
     */
    @Test
    void shouldKeepTheBasesOfKeptDeltasAndTakeASmallDeltaAfterARestartWithTheDefaults() throws Exception {
        final String root = dir.resolve("ckpt").toUri().toString();
        final CheckpointStore store = new CheckpointStore(URI.create(root), new Configuration());
        final Random random = new Random(13);
        final Map<Long, Map<Long, List<Integer>>> expected = new TreeMap<>();
        final List<Long> ids = new ArrayList<>();
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(2)
                        .checkpointRoot(root)
                        .stateDir(dir.resolve("state-1").toString())
                        .keepCheckpoints(2)
                        .start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable table = client.createTable(schema());
            push(table, random, KEYS);
            final List<List<Long>> kept = new ArrayList<>();
            for (int round = 0; round < 7; round++) {
                final long id = AdminCalls.checkpointNow(cluster.proxyAddress());
                ids.add(id);
                expected.put(id, bits(cluster.dumpTable("emb")));
                kept.add(store.list().stream()
                        .map(io.pscluster.checkpoint.CheckpointInfo::id)
                        .toList());
                push(table, random, KEYS / 100);
            }
            assertThat(kinds(store, ids.subList(5, 7))).containsExactly("base", "delta of " + ids.get(5));
            assertThat(ids).containsExactly(1L, 2L, 3L, 4L, 5L, 6L, 7L);
            // Checkpoints 1 to 5 are a base and four deltas: all stay while 5 is kept, and go once 7 (a delta of the
            // base 6) and 6 are the two newest.
            assertThat(kept)
                    .containsExactly(
                            List.of(1L),
                            List.of(2L, 1L),
                            List.of(3L, 2L, 1L),
                            List.of(4L, 3L, 2L, 1L),
                            List.of(5L, 4L, 3L, 2L, 1L),
                            List.of(6L, 5L, 4L, 3L, 2L, 1L),
                            List.of(7L, 6L));
        }

        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(2)
                        .checkpointRoot(root)
                        .stateDir(dir.resolve("state-2").toString())
                        .keepCheckpoints(2)
                        .start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            cluster.awaitHealthy(60_000);
            assertThat(bits(cluster.dumpTable("emb")))
                    .as("records after the restart (checkpoint 7, a delta of 6)")
                    .isEqualTo(expected.get(7L));
            push(client.table("emb"), random, KEYS / 100);
            // Refused (FAILED_PRECONDITION) until the proxy has heard from every shard that its restore is done.
            final long next = org.awaitility.Awaitility.await()
                    .atMost(java.time.Duration.ofSeconds(60))
                    .ignoreExceptions()
                    .until(() -> AdminCalls.checkpointNow(cluster.proxyAddress()), id -> id > 0);
            final Map<Long, List<Integer>> atNext = bits(cluster.dumpTable("emb"));
            assertThat(kinds(store, List.of(next))).containsExactly("delta of 7");
            final Manifest delta = store.get(next).orElseThrow().manifest();
            final Manifest base = store.get(6L).orElseThrow().manifest();
            System.out.printf(
                    "first delta after a restart: %d rows, %d bytes; base %d rows, %d bytes%n",
                    delta.totalRows(), delta.totalBytes(), base.totalRows(), base.totalBytes());
            assertThat(delta.totalRows())
                    .as("rows of the first delta after the restart")
                    .isLessThanOrEqualTo(KEYS / 100);
            assertThat(delta.totalBytes()).isLessThan(base.totalBytes() / 10);
            push(client.table("emb"), random, KEYS / 100);
            AdminCalls.restore(cluster.proxyAddress(), next);
            assertThat(bits(cluster.dumpTable("emb")))
                    .as("records restored from checkpoint %d", next)
                    .isEqualTo(atNext);
        }
    }

    private static TableSchema schema() {
        return TableSchema.newBuilder()
                .setName("emb")
                .setKind(TableKind.SPARSE)
                .setDim(DIM)
                .setOptimizer(OptimizerSpec.newBuilder()
                        .setKind(OptimizerKind.ADAGRAD)
                        .setLearningRate(0.05f))
                .build();
    }

    private static void push(final PsTable table, final Random random, final int count) {
        final long[] keys = new long[count];
        for (int i = 0; i < count; i++) {
            keys[i] = random.nextInt(KEYS) * 7919L;
        }
        final float[] gradients = new float[count * DIM];
        for (int i = 0; i < gradients.length; i++) {
            gradients[i] = (float) random.nextGaussian();
        }
        table.push(keys, gradients);
    }

    private static List<String> kinds(final CheckpointStore store, final List<Long> ids) throws Exception {
        final List<String> kinds = new ArrayList<>();
        for (final long id : ids) {
            final Manifest manifest = store.get(id).orElseThrow().manifest();
            kinds.add(manifest.kind() == Manifest.Kind.BASE ? "base" : "delta of " + manifest.parentId());
        }
        return kinds;
    }

    private static Map<Long, List<Integer>> bits(final Map<Long, float[]> records) {
        final Map<Long, List<Integer>> bits = new TreeMap<>();
        records.forEach((key, record) -> {
            final List<Integer> row = new ArrayList<>();
            for (final float value : record) {
                row.add(Float.floatToRawIntBits(value));
            }
            bits.put(key, row);
        });
        return bits;
    }
}
