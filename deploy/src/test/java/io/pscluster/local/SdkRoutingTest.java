package io.pscluster.local;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.wire.Slots;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The SDK against a real proxy and shards: routing by slot, refresh-and-retry, async calls, deadlines. */
class SdkRoutingTest {
    @TempDir
    Path checkpoints;

    private static TableSchema sparse(final String name, final int dim) {
        return sparse(name, dim, OptimizerKind.SGD, 0.5f);
    }

    private static TableSchema sparse(
            final String name, final int dim, final OptimizerKind optimizer, final float learningRate) {
        return TableSchema.newBuilder()
                .setName(name)
                .setKind(TableKind.SPARSE)
                .setDim(dim)
                .setOptimizer(OptimizerSpec.newBuilder().setKind(optimizer).setLearningRate(learningRate))
                .build();
    }

    @Test
    void shouldRefreshRoutingAndRetryWhenCachedRoutingIsStale() throws Exception {
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(2)
                        .checkpointRoot(checkpoints.toUri().toString())
                        .start();
                PsClient stale = PsClient.connect(cluster.proxyAddress())) {
            final long staleEpoch = stale.routingEpoch();
            // With no table yet, a third shard takes a third of the slots: the client's table is now wrong.
            cluster.addShard();
            cluster.awaitHealthy(30_000);
            final PsTable table = stale.createTable(sparse("emb", 2));
            final long[] keys = new long[3_000];
            final float[] gradients = new float[keys.length * 2];
            for (int i = 0; i < keys.length; i++) {
                keys[i] = i * 7919L;
                gradients[2 * i] = 2;
                gradients[2 * i + 1] = -4;
            }
            table.push(keys, gradients);
            assertThat(stale.routingEpoch()).isGreaterThan(staleEpoch);
            for (int i = 0; i < 3; i++) {
                cluster.shard(i).shard().awaitQuiescent();
                assertThat(cluster.shard(i).shard().table("emb").rowCount()).isPositive();
            }
            final float[] values = table.pull(keys);
            for (int i = 0; i < keys.length; i++) {
                assertThat(values[2 * i]).isEqualTo(-1f);
                assertThat(values[2 * i + 1]).isEqualTo(2f);
            }
        }
    }

    @Test
    void shouldCompleteFuturesWhenPushingAndPullingAsynchronously() throws Exception {
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(2)
                        .checkpointRoot(checkpoints.toUri().toString())
                        .start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable table = client.createTable(sparse("async", 1));
            final long[] keys = {1, 2, 3, 1L << 40};
            final CompletableFuture<Void> pushed = table.pushAsync(keys, new float[] {1, 2, 3, 4});
            pushed.get();
            for (int i = 0; i < 2; i++) {
                cluster.shard(i).shard().awaitQuiescent();
            }
            assertThat(table.pullAsync(keys).get()).containsExactly(-0.5f, -1f, -1.5f, -2f);
            assertThatThrownBy(() -> table.pushAsync(keys, new float[3]))
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("4 keys need 4 gradient values, got 3");
        }
    }

    @Test
    void shouldFailWithDeadlineExceededNamingTheCauseWhenNoLiveShardOwnsTheSlots() throws Exception {
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(2)
                        .checkpointRoot(checkpoints.toUri().toString())
                        .leaseMs(1_000)
                        .heartbeatIntervalMs(200)
                        .start();
                PsClient setup = PsClient.connect(cluster.proxyAddress())) {
            setup.createTable(sparse("orphaned", 1));
            // With a live shard left, a lost shard's slots would go to it: crash both, so none is left.
            cluster.crashShard(0);
            cluster.crashShard(1);
            org.awaitility.Awaitility.await()
                    .atMost(java.time.Duration.ofSeconds(30))
                    .until(() -> AdminCalls.status(cluster.proxyAddress()).getUnownedSlots() == Slots.SLOT_COUNT);
            try (PsClient client = PsClient.connect(
                    new PsClient.Context().proxyAddress(cluster.proxyAddress()).deadlineMs(800))) {
                final PsTable table = client.table("orphaned");
                final long[] keys = new long[200];
                java.util.Arrays.setAll(keys, i -> i);
                assertThatThrownBy(() -> table.pull(keys))
                        .isInstanceOf(StatusRuntimeException.class)
                        .satisfies(e -> {
                            final Status status = ((StatusRuntimeException) e).getStatus();
                            assertThat(status.getCode()).isEqualTo(Status.Code.DEADLINE_EXCEEDED);
                            assertThat(status.getDescription()).contains("no live shard owns");
                        });
                assertThatThrownBy(() -> table.pullAsync(keys).join()).isInstanceOf(CompletionException.class);
            }
        }
    }

    @Test
    void shouldRefuseAPullTooLargeForAJavaArrayNamingItsSize() throws Exception {
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(1)
                        .checkpointRoot(checkpoints.toUri().toString())
                        .start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final int dim = io.pscluster.wire.TableSchemas.MAX_DIM;
            final PsTable table = client.createTable(sparse("wide", dim));
            final long[] keys = new long[Integer.MAX_VALUE / dim + 1];
            assertThatThrownBy(() -> table.pullAsync(keys))
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("a pull of 32768 keys of table 'wide' (dim 65536) needs 2147483648 floats");
            assertThat(table.pull(new long[] {7})).hasSize(dim);
        }
    }

    @Test
    void shouldDropTableOnEveryShardAndAnswerNotFoundAfterwards() throws Exception {
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(2)
                        .checkpointRoot(checkpoints.toUri().toString())
                        .start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            client.createTable(sparse("doomed", 1)).push(new long[] {1, 2, 3}, new float[] {1, 1, 1});
            assertThat(client.dropTable("doomed")).isTrue();
            assertThat(client.dropTable("doomed")).isFalse();
            for (int i = 0; i < 2; i++) {
                final io.pscluster.server.Shard shard = cluster.shard(i).shard();
                assertThatThrownBy(() -> shard.table("doomed"))
                        .isInstanceOf(io.pscluster.wire.PsException.class)
                        .hasMessageContaining("table 'doomed' does not exist");
            }
            assertThatThrownBy(() -> client.table("doomed"))
                    .isInstanceOf(StatusRuntimeException.class)
                    .hasMessageContaining("NOT_FOUND");
            // A dropped table stays dropped: heartbeats do not bring it back, and the name can be reused.
            cluster.awaitHealthy(10_000);
            assertThat(client.createTable(sparse("doomed", 3)).dim()).isEqualTo(3);
        }
    }

    @Test
    void shouldSplitLargeCallsIntoChunksAndSumRepeatedKeysBeforeTheShardSeesThem() throws Exception {
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(2)
                        .checkpointRoot(checkpoints.toUri().toString())
                        .start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable table = client.createTable(sparse("big", 4, OptimizerKind.ADAGRAD, 1f));
            // 400k keys x dim 4 is ~9 requests of 1 MiB per shard; every key appears twice.
            final int unique = 200_000;
            final long[] keys = new long[2 * unique];
            final float[] gradients = new float[keys.length * 4];
            for (int i = 0; i < keys.length; i++) {
                keys[i] = (i % unique) * 31L;
                java.util.Arrays.fill(gradients, i * 4, i * 4 + 4, 1f);
            }
            table.push(keys, gradients);
            for (int i = 0; i < 2; i++) {
                cluster.shard(i).shard().awaitQuiescent();
            }
            assertThat(cluster.shard(0).shard().table("big").rowCount()
                            + cluster.shard(1).shard().table("big").rowCount())
                    .isEqualTo(unique);
            // Adagrad applied once with g = 2 (the sum), not twice with g = 1: a = 0.1 + 4, w = -2 / sqrt(4.1).
            final float once = -1f * 2f / ((float) Math.sqrt(0.1f + 4f) + 1e-8f);
            final float[] values = table.pull(java.util.Arrays.copyOf(keys, unique));
            for (final float value : values) {
                assertThat(value).isEqualTo(once);
            }
        }
    }

    @Test
    void shouldPushASlotOfMoreDistinctKeysThanAShardTakesInOneRequestSummingEachKeysRepeatsOnce() throws Exception {
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(2)
                        .maxKeysPerRequest(5_000)
                        .checkpointRoot(checkpoints.toUri().toString())
                        .start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable table = client.createTable(sparse("crowded", 64, OptimizerKind.ADAGRAD, 1f));
            // 12,000 distinct keys of one slot (found by trying keys), each 1-3 times (one 6,000 times) in a shuffled
            // call: a slot of about 30,000 places, where a request of dim 64 holds about 4,000 and the shard takes
            // 5,000 keys.
            final long tableHash = Slots.tableHash("crowded");
            final int slot = Slots.slotOf(tableHash, 0L);
            final long[] distinct = new long[12_000];
            int found = 0;
            for (long key = 0; found < distinct.length; key++) {
                if (Slots.slotOf(tableHash, key) == slot) {
                    distinct[found++] = key;
                }
            }
            final SplittableRandom random = new SplittableRandom(5);
            final int[] repeats = new int[distinct.length];
            final java.util.List<Long> places = new java.util.ArrayList<>();
            for (int i = 0; i < distinct.length; i++) {
                // The first key is hot: its 6,000 places go in a request of their own, summed to one step.
                repeats[i] = i == 0 ? 6_000 : 1 + random.nextInt(3);
                for (int r = 0; r < repeats[i]; r++) {
                    places.add(distinct[i]);
                }
            }
            java.util.Collections.shuffle(places, new java.util.Random(6));
            final long[] keys = places.stream().mapToLong(Long::longValue).toArray();
            final float[] gradients = new float[keys.length * 64];
            java.util.Arrays.fill(gradients, 1f);

            table.push(keys, gradients);

            for (int i = 0; i < 2; i++) {
                cluster.shard(i).shard().awaitQuiescent();
            }
            assertThat(cluster.shard(0).shard().table("crowded").rowCount()
                            + cluster.shard(1).shard().table("crowded").rowCount())
                    .isEqualTo(distinct.length);
            // Each key's repeats summed in one request and applied once: g = repeats, w = -g / sqrt(0.1 + g^2).
            final float[] values = table.pull(distinct);
            for (int i = 0; i < distinct.length; i++) {
                final float g = repeats[i];
                final float once = -1f * g / ((float) Math.sqrt(0.1f + g * g) + 1e-8f);
                for (int d = 0; d < 64; d++) {
                    assertThat(values[i * 64 + d]).as("key %d", distinct[i]).isEqualTo(once);
                }
            }
        }
    }

    @Test
    void shouldApplyEachKeysOwnRowAndAnswerEachPositionWhenLargeCallsAreOrderedBySlotFirst() throws Exception {
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(2)
                        .checkpointRoot(checkpoints.toUri().toString())
                        .start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final int dim = 3;
            final PsTable table = client.createTable(sparse("ordered", dim));
            // 150k distinct keys in random order, each twice with rows of its own: calls this large (300k keys, past
            // SlotChunks.ORDER_MIN_KEYS) and this narrow are put in slot order before they are split, so every row
            // must travel with its key and every answer row back to its own position.
            final int unique = 150_000;
            final SplittableRandom random = new SplittableRandom(29);
            final long[] distinct = random.longs(unique).toArray();
            final long[] keys = new long[2 * unique];
            final float[] gradients = new float[keys.length * dim];
            for (int i = 0; i < keys.length; i++) {
                final int u = i % unique;
                keys[i] = distinct[u];
                for (int d = 0; d < dim; d++) {
                    // Small integers: their sums are exact in float32 in any order.
                    gradients[i * dim + d] = (u % 1_000) + d + (i < unique ? 0 : 2);
                }
            }
            shuffle(keys, gradients, dim, random);
            table.push(keys, gradients);
            // A pull in another order, with repeats: every position gets its own key's row.
            final long[] pulled = new long[2 * unique + 1_000];
            for (int i = 0; i < pulled.length; i++) {
                pulled[i] = distinct[(int) ((i * 7_919L) % unique)];
            }
            final Map<Long, Integer> indexOf = new HashMap<>();
            for (int u = 0; u < unique; u++) {
                indexOf.put(distinct[u], u);
            }
            final float[] values = table.pull(pulled);
            for (int i = 0; i < pulled.length; i++) {
                final int u = indexOf.get(pulled[i]);
                for (int d = 0; d < dim; d++) {
                    // SGD at rate 0.5 from zeros, once with the key's summed rows: (u % 1000 + d) * 2 + 2.
                    assertThat(values[i * dim + d])
                            .as("position %d (key %d), element %d", i, pulled[i], d)
                            .isEqualTo(-0.5f * ((u % 1_000 + d) * 2 + 2));
                }
            }
        }
    }

    /** Moves keys (with their rows) to random places. */
    private static void shuffle(final long[] keys, final float[] rows, final int dim, final SplittableRandom random) {
        for (int i = keys.length - 1; i > 0; i--) {
            final int j = random.nextInt(i + 1);
            final long key = keys[i];
            keys[i] = keys[j];
            keys[j] = key;
            for (int d = 0; d < dim; d++) {
                final float value = rows[i * dim + d];
                rows[i * dim + d] = rows[j * dim + d];
                rows[j * dim + d] = value;
            }
        }
    }
}
