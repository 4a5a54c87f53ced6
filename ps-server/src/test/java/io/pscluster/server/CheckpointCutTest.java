package io.pscluster.server;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.RowFileInfo;
import io.pscluster.checkpoint.RowFileReader;
import io.pscluster.proto.v1.CheckpointFile;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.server.table.ParameterTable;
import java.net.URI;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A checkpoint's cut falls between whole pushes: every push adds one to the same keys, spread over all eight
 * partitions, so a checkpoint holds them all at one count; a cut landing in the middle of a push (some partitions
 * after it, some before) would show two counts. Pushes run from two threads throughout the checkpoints.
 */
class CheckpointCutTest {
    private static final int PARTITIONS = 8;
    private static final int CHECKPOINTS = 12;

    @TempDir
    Path directory;

    @Test
    void shouldCutBetweenWholePushesInEveryPartition() throws Exception {
        final URI root = directory.toUri();
        try (Shard shard = new Shard("cut", 1 << 16, PARTITIONS, 1 << 14, new Configuration());
                CheckpointStore store = new CheckpointStore(root, new Configuration())) {
            TestRouting.serve(shard, TestRouting.allSlotsTo("cut", 1));
            shard.createTable(TableSchema.newBuilder()
                    .setName("counts")
                    .setKind(TableKind.SPARSE)
                    .setDim(1)
                    .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(1f))
                    .build());
            final ParameterTable table = shard.table("counts");
            final long[] keys = keysInEveryPartition(table, 4);
            final float[] minusOne = new float[keys.length];
            Arrays.fill(minusOne, -1f); // SGD with rate 1: each push adds one to every key

            final AtomicBoolean stop = new AtomicBoolean();
            final AtomicLong pushes = new AtomicLong();
            final Runnable pusher = () -> {
                while (!stop.get()) {
                    try {
                        shard.push("counts", 1, 0, 0, keys, minusOne);
                        pushes.incrementAndGet();
                    } catch (io.pscluster.wire.PsException backpressure) {
                        Thread.onSpinWait();
                    }
                }
            };
            final CompletableFuture<Void> first = CompletableFuture.runAsync(pusher);
            final CompletableFuture<Void> second = CompletableFuture.runAsync(pusher);
            try {
                long lastCount = -1;
                for (long id = 1; id <= CHECKPOINTS; id++) {
                    final long before = pushes.get();
                    final Shard.WrittenCheckpoint written = shard.writeCheckpoint(root, id);
                    final Map<Long, Float> values = read(store, id, written);
                    assertThat(values.keySet()).as("checkpoint %d keys", id).hasSize(keys.length);
                    assertThat(values.values().stream().distinct())
                            .as("counts in checkpoint %d (one per cut)", id)
                            .hasSize(1);
                    final long count = values.values().iterator().next().longValue();
                    assertThat(count).as("count at cut %d", id).isGreaterThanOrEqualTo(lastCount);
                    lastCount = count;
                    assertThat(pushes.get())
                            .as("pushes while checkpoint %d ran", id)
                            .isGreaterThan(before);
                }
            } finally {
                stop.set(true);
                first.get(30, TimeUnit.SECONDS);
                second.get(30, TimeUnit.SECONDS);
            }
        }
    }

    private static Map<Long, Float> read(
            final CheckpointStore store, final long id, final Shard.WrittenCheckpoint written) throws Exception {
        final Map<Long, Float> values = new HashMap<>();
        for (final CheckpointFile file : written.files()) {
            final RowFileInfo info = WrittenFiles.info(file);
            RowFileReader.read(
                    store.fileSystem(),
                    store.checkpointDir(id),
                    info,
                    slot -> true,
                    (slot, key, row) -> values.put(key, row[0]));
        }
        return values;
    }

    /** {@code perPartition} keys in each partition of the shard. */
    private static long[] keysInEveryPartition(final ParameterTable table, final int perPartition) {
        final long[] keys = new long[PARTITIONS * perPartition];
        final int[] found = new int[PARTITIONS];
        int n = 0;
        for (long key = 0; n < keys.length; key++) {
            final int partition = table.slotOf(key) % PARTITIONS;
            if (found[partition] < perPartition) {
                found[partition]++;
                keys[n++] = key;
            }
        }
        return keys;
    }
}
