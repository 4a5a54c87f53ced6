package io.pscluster.server;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.RowFileReader;
import io.pscluster.proto.v1.CheckpointFile;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.server.table.ParameterTable;
import io.pscluster.server.table.ShardSnapshot;
import java.lang.management.ManagementFactory;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A checkpoint's part buffer is allocated as rows come, not whole up front: a small table's checkpoint allocated an
 * eighth of the heap per table at once, and the JVM's zeroing of such an array holds every thread that reaches a
 * safepoint meanwhile (see {@link CheckpointParts}).
 */
class CheckpointPartsTest {
    private static final int DIM = 16;
    private static final int ROWS = 1_000;

    @TempDir
    Path directory;

    /**
     * Rows cross segment boundaries and the buffer fills twice: 6,000 rows of 4,092 bytes (1,024 a segment) through a
     * buffer of 2.5 segments are three parts of 2,560, 2,560 and 880 rows, each in slot order, every row exact.
     */
    @Test
    void shouldWriteEveryRowOfSeveralPartsThatSpanSegmentsExactlyAndInSlotOrder() throws Exception {
        final int dim = 1021;
        final int rowBytes = 8 + 4 * dim;
        assertThat(Integer.highestOneBit(CheckpointParts.SEGMENT_BYTES / rowBytes))
                .isEqualTo(1024);
        final List<Integer> parts = checkpointAndReadBack(dim, 6_000, (long) 2_560 * (rowBytes + 8));
        assertThat(parts).containsExactly(2_560, 2_560, 880);
    }

    /**
     * Narrow rows: the first segment starts small and doubles until it is whole (262,144 rows of 12 bytes), then two
     * more segments, all in one part.
     */
    @Test
    void shouldGrowTheFirstSegmentAndAddWholeOnesWithEveryRowExact() throws Exception {
        final List<Integer> parts = checkpointAndReadBack(1, 600_000, 0);
        assertThat(parts).containsExactly(600_000);
    }

    /**
     * Pushes {@code rows} rows of {@code dim} (row of key k: k's number plus its column), checkpoints them with part
     * buffers of {@code partBytes} (0: the shard's default) and reads every part back: each row's slot is its key's,
     * slots ascend within a file, every value is exact and every key comes once. Returns the rows of each part.
     */
    private List<Integer> checkpointAndReadBack(final int dim, final int rows, final long partBytes) throws Exception {
        try (Shard shard = shardWithTable("parts", dim)) {
            if (partBytes > 0) {
                shard.tuneCheckpoints(ShardSnapshot.Limits.defaults(), partBytes);
            }
            final ParameterTable table = shard.table("emb");
            final int batch = 4_096;
            for (int from = 0; from < rows; from += batch) {
                final int n = Math.min(batch, rows - from);
                final long[] keys = new long[n];
                final float[] gradients = new float[n * dim];
                for (int i = 0; i < n; i++) {
                    keys[i] = keyOf(from + i);
                    for (int d = 0; d < dim; d++) {
                        gradients[i * dim + d] = -(from + i + d);
                    }
                }
                table.push(keys, gradients);
            }
            final Shard.WrittenCheckpoint written = shard.writeCheckpoint(directory.toUri(), 1);

            final CheckpointStore store = new CheckpointStore(directory.toUri(), new Configuration());
            final java.util.BitSet seen = new java.util.BitSet(rows);
            final Map<Long, Integer> numberOf = new HashMap<>();
            for (int i = 0; i < rows; i++) {
                numberOf.put(keyOf(i), i);
            }
            final List<Integer> parts = new ArrayList<>();
            for (final CheckpointFile file : written.files()) {
                final int[] last = {-1, 0};
                RowFileReader.read(
                        store.fileSystem(),
                        store.checkpointDir(1),
                        WrittenFiles.info(file),
                        slot -> true,
                        (slot, key, row) -> {
                            final Integer number = numberOf.get(key);
                            if (number == null || seen.get(number)) {
                                throw new AssertionError("key " + key + " unknown or read twice");
                            }
                            seen.set(number);
                            if (slot != table.slotOf(key) || slot < last[0]) {
                                throw new AssertionError("key " + key + " in slot " + slot + " after slot " + last[0]);
                            }
                            last[0] = slot;
                            last[1]++;
                            for (int d = 0; d < dim; d++) {
                                if (row[d] != number + d) {
                                    throw new AssertionError("key " + key + " value " + d + " is " + row[d]);
                                }
                            }
                        });
                parts.add(last[1]);
            }
            assertThat(seen.cardinality()).isEqualTo(rows);
            return parts;
        }
    }

    /**
     * A shard of 2 partitions serving every slot, with a sparse SGD table {@code emb} of {@code dim} at learning rate 1
     * (a row pushed once from zeros is minus its gradient, exactly).
     */
    static Shard shardWithTable(final String id, final int dim) throws Exception {
        final Shard shard = new Shard(id, 1 << 16, 2, 1024, new Configuration());
        TestRouting.serve(shard, TestRouting.allSlotsTo(id, 1));
        shard.createTable(TableSchema.newBuilder()
                .setName("emb")
                .setKind(TableKind.SPARSE)
                .setDim(dim)
                .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(1f))
                .build());
        return shard;
    }

    private static long keyOf(final int number) {
        return number * 0x9E3779B97F4A7C15L;
    }

    @Test
    void shouldAllocateAPartBufferAsRowsComeNotAnEighthOfTheHeapUpFront() throws Exception {
        final com.sun.management.ThreadMXBean threads =
                (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
        try (Shard shard = shardWithTable("parts", DIM)) {
            final ParameterTable table = shard.table("emb");
            final long[] keys = new long[ROWS];
            final float[] gradients = new float[ROWS * DIM];
            for (int i = 0; i < ROWS; i++) {
                keys[i] = i * 0x9E3779B97F4A7C15L;
                gradients[i * DIM] = -i;
            }
            table.push(keys, gradients);

            // The shard's default part buffer: an eighth of the heap for its one table.
            final long eighth = Runtime.getRuntime().maxMemory() / 8;
            assertThat(eighth).isGreaterThan(64L << 20);
            final long thread = Thread.currentThread().getId();
            final long before = threads.getThreadAllocatedBytes(thread);
            shard.writeCheckpoint(directory.toUri(), 1);
            final long allocated = threads.getThreadAllocatedBytes(thread) - before;
            // The part file's chunks and streams and the snapshot's batches, with the buffer's first segment (1,024
            // rows, 80 KiB): about 29 MB here; with the whole buffer allocated up front, 96 MB.
            assertThat(allocated)
                    .as("bytes this thread allocated to checkpoint %,d rows of %,d bytes", ROWS, 8 + 4 * DIM)
                    .isLessThan(eighth / 2);
        }
    }
}
