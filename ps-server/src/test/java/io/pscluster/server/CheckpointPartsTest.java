package io.pscluster.server;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.RowFileReader;
import io.pscluster.proto.v1.CheckpointFile;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.server.table.ParameterTable;
import java.lang.management.ManagementFactory;
import java.nio.file.Path;
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

    @Test
    void shouldAllocateAPartBufferAsRowsComeNotAnEighthOfTheHeapUpFront() throws Exception {
        final com.sun.management.ThreadMXBean threads =
                (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
        try (Shard shard = new Shard("parts", 1 << 16, 2, 1024, new Configuration())) {
            TestRouting.serve(shard, TestRouting.allSlotsTo("parts", 1));
            shard.createTable(TableSchema.newBuilder()
                    .setName("emb")
                    .setKind(TableKind.SPARSE)
                    .setDim(DIM)
                    .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(1f))
                    .build());
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
            final Shard.WrittenCheckpoint written = shard.writeCheckpoint(directory.toUri(), 1);
            final long allocated = threads.getThreadAllocatedBytes(thread) - before;
            // The chunks and streams of the part file, the snapshot's batches and the buffer's first segment: about
            // 31 MB here; with the whole buffer allocated up front, 96 MB.
            assertThat(allocated)
                    .as("bytes this thread allocated to checkpoint %,d rows of %,d bytes", ROWS, 8 + 4 * DIM)
                    .isLessThan(eighth / 2);

            // And the rows are all there, each with its value.
            final CheckpointStore store = new CheckpointStore(directory.toUri(), new Configuration());
            final long[] read = {0, 0};
            for (final CheckpointFile file : written.files()) {
                RowFileReader.read(
                        store.fileSystem(),
                        store.checkpointDir(1),
                        WrittenFiles.info(file),
                        slot -> true,
                        (slot, key, row) -> {
                            read[0]++;
                            read[1] += (long) row[0];
                        });
            }
            assertThat(read[0]).isEqualTo(ROWS);
            assertThat(read[1]).isEqualTo((long) ROWS * (ROWS - 1) / 2);
        }
    }
}
