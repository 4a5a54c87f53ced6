package io.pscluster.server;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.RowFileInfo;
import io.pscluster.checkpoint.RowFileReader;
import io.pscluster.proto.v1.CheckpointFile;
import io.pscluster.server.table.ChildJvm;
import io.pscluster.server.table.ParameterTable;
import java.nio.file.Path;
import java.util.List;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A shard checkpoints a table about three times larger than its heap: the rows stream to part files in bounded
 * buffers (a copy of the rows on the heap, as checkpoints were taken before, fails with an OutOfMemoryError here).
 * Runs the shard in a child JVM with a 64 MiB heap; the child reads every part back and checks every row.
 */
@Tag("slow")
class CheckpointBeyondHeapTest {
    private static final int ROWS = 293 * 4096; // 1,200,128: whole pushes of 4096 rows
    private static final int DIM = 32;

    @TempDir
    Path directory;

    @Test
    void shouldCheckpointATableLargerThanTheHeap() throws Exception {
        final ChildJvm.Run run = ChildJvm.run(
                Child.class,
                List.of("-Xmx64m", "-XX:MaxDirectMemorySize=640m"),
                300,
                directory.toUri().toString());
        final String[] fields = run.result();
        final long rows = Long.parseLong(fields[0]);
        final int files = Integer.parseInt(fields[1]);
        final boolean exact = Boolean.parseBoolean(fields[2]);
        final long offHeap = Long.parseLong(fields[3]);
        final long heap = Long.parseLong(fields[4]);
        assertThat(offHeap).as("bytes of rows").isGreaterThan(2 * heap);
        assertThat(rows).as("rows written and read back").isEqualTo(ROWS);
        assertThat(exact).as("every row read back as pushed").isTrue();
        assertThat(files).as("part files").isGreaterThan(1);
        assertThat(run.exitValue()).isZero();
    }

    /** A shard in this JVM: fills the table, checkpoints it, reads every part back. */
    public static final class Child {
        public static void main(final String[] args) throws Exception {
            final java.net.URI root = java.net.URI.create(args[0]);
            try (Shard shard = CheckpointPartsTest.shardWithTable("big", DIM)) {
                final ParameterTable table = shard.table("emb");
                final int batch = 4096;
                final long[] keys = new long[batch];
                final float[] gradients = new float[batch * DIM];
                long expected = 0;
                for (int from = 0; from < ROWS; from += batch) {
                    for (int i = 0; i < batch; i++) {
                        keys[i] = (from + i) * 0x9E3779B97F4A7C15L;
                        for (int d = 0; d < DIM; d++) {
                            // SGD with rate 1 from zeros: the row becomes minus the gradient, exactly.
                            gradients[i * DIM + d] = -value(keys[i], d);
                        }
                        expected += rowHash(keys[i], gradients, i * DIM, -1f);
                    }
                    table.push(keys, gradients);
                }
                final Shard.WrittenCheckpoint written = shard.writeCheckpoint(root, 1);

                final CheckpointStore store = new CheckpointStore(root, new Configuration());
                final FileSystem fs = store.fileSystem();
                final org.apache.hadoop.fs.Path dir = store.checkpointDir(1);
                final long[] read = {0, 0};
                for (final CheckpointFile file : written.files()) {
                    final RowFileInfo info = WrittenFiles.info(file);
                    RowFileReader.read(fs, dir, info, slot -> true, (slot, key, row) -> {
                        read[0]++;
                        read[1] += rowHash(key, row, 0, 1f);
                    });
                }
                System.out.println("RESULT " + read[0] + " " + written.files().size() + " " + (read[1] == expected)
                        + " " + table.bytes() + " " + Runtime.getRuntime().maxMemory());
            }
        }

        private static float value(final long key, final int d) {
            return (float) (Math.floorMod(key, 1000) + d);
        }

        /** An order-independent digest term of one row: its key and every value's bits. */
        private static long rowHash(final long key, final float[] row, final int from, final float sign) {
            long h = key;
            for (int d = 0; d < DIM; d++) {
                h = h * 31 + Float.floatToRawIntBits(sign * row[from + d]);
            }
            h ^= h >>> 33;
            h *= 0xff51afd7ed558ccdL;
            return h ^ (h >>> 33);
        }
    }
}
