package io.pscluster.local;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.proto.v1.InitializerKind;
import io.pscluster.proto.v1.InitializerSpec;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.server.ShardServer;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.stream.Stream;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * Issue 9, item 9: a checkpoint written by N shards restores into M shards with every row and every optimizer slot
 * bit-exact. Adam and FTRL tables, sparse and dense, are trained on N shards, dumped (values, optimizer slots and
 * counters), checkpointed, and pushed once more; the same checkpoint is then restored into M shards, dumped and
 * compared bit for bit, and the same extra push applied there must give the same records as on the original cluster
 * (a wrong moment, accumulator or step count shows in that push's result even where the values match).
 *
 * <p>Two ways to a different shard count: the whole cluster restarted on the same root with M shards (the proxy's
 * state kept, or lost so that it starts from the manifest; the old shards' slot groups are handed to the new shards
 * and each loads its slots from whichever files hold them), and a restore ordered into a running cluster of M shards
 * whose slots are spread evenly (every new shard then reads its slots out of files written by several old ones).
 */
class ReshardRestoreTest {
    private static final int SPARSE_KEYS = 6_000;
    private static final int DENSE_ROWS = 2_000;

    @TempDir
    Path dir;

    @ParameterizedTest(name = "{0} -> {1} shards by {2}")
    @CsvSource({"4, 3, restart-state-kept", "2, 5, restart-state-lost", "2, 5, restore-into-running"})
    void shouldRestoreEveryRowAndOptimizerSlotBitExactWhenTheShardCountChanges(
            final int written, final int restored, final String how) throws Exception {
        final String root = dir.resolve("checkpoints").toUri().toString();
        final Map<String, Map<Long, float[]>> checkpointed = new LinkedHashMap<>();
        final Map<String, Map<Long, float[]>> pushedOnce = new LinkedHashMap<>();
        final long checkpointId;
        final BitSet[] writerSlots = new BitSet[written];
        try (LocalCluster cluster = cluster(written, root, "state-a");
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            for (final TableSchema schema : schemas()) {
                client.createTable(schema);
            }
            for (int round = 0; round < 3; round++) {
                pushRound(client, round);
            }
            client.flush();
            long rows = 0;
            for (final TableSchema schema : schemas()) {
                checkpointed.put(schema.getName(), cluster.dumpTable(schema.getName()));
                rows += checkpointed.get(schema.getName()).size();
            }
            assertThat(checkpointed.get("dense")).hasSize(DENSE_ROWS);
            assertThat(checkpointed.get("emb")).hasSizeGreaterThan(SPARSE_KEYS / 2);
            checkpointId = AdminCalls.checkpointNow(cluster.proxyAddress());
            assertThat(AdminCalls.checkpoints(cluster.proxyAddress()).get(0).getRows())
                    .isEqualTo(rows);
            for (int i = 0; i < written; i++) {
                writerSlots[i] = cluster.shard(i).shard().ownedSlots();
            }
            // The reference for the step after the restore: the same push on the original cluster.
            pushRound(client, 3);
            client.flush();
            for (final TableSchema schema : schemas()) {
                pushedOnce.put(schema.getName(), cluster.dumpTable(schema.getName()));
            }
        }

        final boolean restart = how.startsWith("restart");
        final String rootAfter =
                restart ? root : dir.resolve("other-cluster").toUri().toString();
        final String stateAfter = how.equals("restart-state-kept") ? "state-a" : "state-b";
        try (LocalCluster cluster = cluster(restored, rootAfter, stateAfter);
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            if (!restart) {
                // A cluster without tables spreads the slots evenly; then the checkpoint is brought in and restored.
                copyCheckpoint(dir.resolve("checkpoints"), dir.resolve("other-cluster"), checkpointId);
                final long rows = AdminCalls.restore(cluster.proxyAddress(), checkpointId);
                assertThat(rows)
                        .isEqualTo(checkpointed.values().stream()
                                .mapToLong(Map::size)
                                .sum());
                cluster.awaitHealthy(60_000);
            }
            final List<String> layout = layout(cluster, writerSlots);
            if (how.equals("restore-into-running")) {
                // Each old shard's slots now live on several new shards: each of those reads a part of its files.
                assertThat(layout).allSatisfy(line -> assertThat(line).doesNotEndWith(" 1 shards"));
            } else if (written > restored) {
                // One old group at least is split over the new shards (the others may go whole to one each).
                assertThat(layout).anySatisfy(line -> assertThat(line).doesNotEndWith(" 1 shards"));
            }
            for (final TableSchema schema : schemas()) {
                final String table = schema.getName();
                assertThat(differences(checkpointed.get(table), cluster.dumpTable(table)))
                        .as(
                                "table %s after restoring checkpoint %d into %d shards (%s)",
                                table, checkpointId, restored, layout)
                        .isEmpty();
            }
            pushRound(client, 3);
            client.flush();
            for (final TableSchema schema : schemas()) {
                final String table = schema.getName();
                assertThat(differences(pushedOnce.get(table), cluster.dumpTable(table)))
                        .as("table %s after one more identical push on the restored cluster", table)
                        .isEmpty();
                final long[] keys = pushedOnce.get(table).keySet().stream()
                        .mapToLong(Long::longValue)
                        .toArray();
                assertThat(client.table(table).pull(keys))
                        .as("pulled values of table %s", table)
                        .containsExactly(valuesOf(pushedOnce.get(table), keys, schema.getDim()));
            }
        }
    }

    private LocalCluster cluster(final int shards, final String root, final String state) throws Exception {
        return LocalCluster.builder()
                .shards(shards)
                .checkpointRoot(root)
                .stateDir(dir.resolve(state).toString())
                .leaseMs(1_000)
                .leaseMarginMs(300)
                .heartbeatIntervalMs(200)
                .start();
    }

    private static List<TableSchema> schemas() {
        return List.of(
                TableSchema.newBuilder()
                        .setName("emb")
                        .setKind(TableKind.SPARSE)
                        .setDim(4)
                        .setOptimizer(OptimizerSpec.newBuilder()
                                .setKind(OptimizerKind.ADAM)
                                .setLearningRate(0.01f))
                        .setInitializer(InitializerSpec.newBuilder()
                                .setKind(InitializerKind.NORMAL)
                                .setScale(0.1f)
                                .setSeed(7))
                        .build(),
                TableSchema.newBuilder()
                        .setName("ftrl")
                        .setKind(TableKind.SPARSE)
                        .setDim(3)
                        .setOptimizer(OptimizerSpec.newBuilder()
                                .setKind(OptimizerKind.FTRL)
                                .setLearningRate(0.1f)
                                .setL1(0.01f)
                                .setL2(0.001f))
                        .setInitializer(InitializerSpec.newBuilder().setKind(InitializerKind.ZEROS))
                        .build(),
                TableSchema.newBuilder()
                        .setName("dense")
                        .setKind(TableKind.DENSE)
                        .setRows(DENSE_ROWS)
                        .setDim(2)
                        .setOptimizer(OptimizerSpec.newBuilder()
                                .setKind(OptimizerKind.ADAM)
                                .setLearningRate(0.05f))
                        .setInitializer(InitializerSpec.newBuilder()
                                .setKind(InitializerKind.UNIFORM)
                                .setScale(0.5f)
                                .setSeed(3))
                        .build());
    }

    /**
     * One training round: in each table a seeded subset of the keys (about two in three, so that rows differ in
     * their step counts) gets seeded gradients, one push per table.
     */
    private static void pushRound(final PsClient client, final int round) {
        for (final TableSchema schema : schemas()) {
            final SplittableRandom random =
                    new SplittableRandom(31L * round + schema.getName().hashCode());
            final int universe = schema.getKind() == TableKind.DENSE ? DENSE_ROWS : SPARSE_KEYS;
            final List<Long> chosen = new ArrayList<>();
            for (int i = 0; i < universe; i++) {
                if (random.nextInt(3) != 0) {
                    chosen.add(schema.getKind() == TableKind.DENSE ? i : sparseKey(i));
                }
            }
            final long[] keys = chosen.stream().mapToLong(Long::longValue).toArray();
            final float[] gradients = new float[keys.length * schema.getDim()];
            for (int i = 0; i < gradients.length; i++) {
                gradients[i] = (float) (random.nextDouble() * 2 - 1);
            }
            final PsTable table = client.table(schema.getName());
            table.push(keys, gradients);
        }
    }

    /** Distinct keys spread over the whole 64-bit range (an odd multiplier is a bijection). */
    private static long sparseKey(final int i) {
        return (i + 1) * 0x9E3779B97F4A7C15L;
    }

    /** Keys whose records differ in any bit, or exist on one side only (at most 10 named). */
    private static List<String> differences(final Map<Long, float[]> expected, final Map<Long, float[]> actual) {
        final List<String> found = new ArrayList<>();
        int count = 0;
        for (final Map.Entry<Long, float[]> row : expected.entrySet()) {
            final float[] other = actual.get(row.getKey());
            final String why = other == null ? "missing" : differ(row.getValue(), other);
            if (why != null && count++ < 10) {
                found.add("key " + row.getKey() + ": " + why);
            }
        }
        for (final Long key : actual.keySet()) {
            if (!expected.containsKey(key) && count++ < 10) {
                found.add("key " + key + ": not in the reference");
            }
        }
        if (count > 10) {
            found.add("... " + (count - 10) + " more of " + expected.size() + " rows");
        }
        return found;
    }

    private static String differ(final float[] expected, final float[] actual) {
        if (expected.length != actual.length) {
            return "record of " + actual.length + " floats, expected " + expected.length;
        }
        for (int i = 0; i < expected.length; i++) {
            if (Float.floatToRawIntBits(expected[i]) != Float.floatToRawIntBits(actual[i])) {
                return "element " + i + " is " + actual[i] + ", expected " + expected[i];
            }
        }
        return null;
    }

    private static float[] valuesOf(final Map<Long, float[]> records, final long[] keys, final int dim) {
        final float[] values = new float[keys.length * dim];
        for (int i = 0; i < keys.length; i++) {
            System.arraycopy(records.get(keys[i]), 0, values, i * dim, dim);
        }
        return values;
    }

    /** Per writing shard: over how many of the running shards its slots are spread now. */
    private static List<String> layout(final LocalCluster cluster, final BitSet[] writerSlots) {
        final List<String> lines = new ArrayList<>();
        for (int w = 0; w < writerSlots.length; w++) {
            int holders = 0;
            for (int i = 0; i < cluster.shardCount(); i++) {
                final ShardServer server = cluster.shard(i);
                if (server != null && server.shard().ownedSlots().intersects(writerSlots[w])) {
                    holders++;
                }
            }
            lines.add("writer " + w + " (" + writerSlots[w].cardinality() + " slots) -> " + holders + " shards");
        }
        return lines;
    }

    private static void copyCheckpoint(final Path fromRoot, final Path toRoot, final long id) throws IOException {
        final Path from = fromRoot.resolve(String.format("ckpt-%012d", id));
        final Path to = toRoot.resolve(from.getFileName());
        Files.createDirectories(toRoot);
        try (Stream<Path> files = Files.walk(from)) {
            for (final Path file : (Iterable<Path>) files::iterator) {
                Files.copy(file, to.resolve(from.relativize(file).toString()), StandardCopyOption.COPY_ATTRIBUTES);
            }
        }
    }
}
