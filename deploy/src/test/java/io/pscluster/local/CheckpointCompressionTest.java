package io.pscluster.local;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.checkpoint.CheckpointInfo;
import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.ChunkCodec;
import io.pscluster.checkpoint.Manifest;
import io.pscluster.checkpoint.RowFileInfo;
import io.pscluster.checkpoint.RowFileReader;
import io.pscluster.checkpoint.RowFileWriter;
import io.pscluster.proto.v1.InitializerKind;
import io.pscluster.proto.v1.InitializerSpec;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.net.URI;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.zip.CRC32C;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Compression on a trained model: an embedding table (dim 16, Adagrad, normal initialisation) trained by skewed
 * random pushes on real shards, checkpointed, then its rows written again with each codec and read back, on a local
 * disk and on HDFS (one DataNode), each in the same run. Prints size, ratio and write/read throughput against {@code none}; fails if a
 * codec is not bit-exact or does not make the files smaller.
 */
@Tag("slow")
class CheckpointCompressionTest {
    private static final int DIM = 16;
    private static final int KEYS = 400_000;
    private static final int STEPS = 40;
    private static final int BATCH = 16_384;
    private static final int ROUNDS = 3;

    @TempDir
    Path dir;

    @Test
    void shouldShrinkATrainedModelLosslesslyWithEveryCodec() throws Exception {
        final String root = dir.resolve("trained").toUri().toString();
        final List<SlotRows> rows = new ArrayList<>();
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(2)
                        .checkpointRoot(root)
                        .checkpointCodec("none")
                        .start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable table = client.createTable(TableSchema.newBuilder()
                    .setName("emb")
                    .setKind(TableKind.SPARSE)
                    .setDim(DIM)
                    .setOptimizer(OptimizerSpec.newBuilder()
                            .setKind(OptimizerKind.ADAGRAD)
                            .setLearningRate(0.05f))
                    .setInitializer(InitializerSpec.newBuilder()
                            .setKind(InitializerKind.NORMAL)
                            .setScale(0.01f)
                            .setSeed(1))
                    .build());
            final Random random = new Random(5);
            for (int step = 0; step < STEPS; step++) {
                // Skewed like real features: a few keys in most batches, most keys rarely.
                final Set<Long> batch = new LinkedHashSet<>();
                while (batch.size() < BATCH) {
                    final double u = random.nextDouble();
                    batch.add((long) (KEYS * u * u * u));
                }
                final long[] keys = batch.stream().mapToLong(Long::longValue).toArray();
                final float[] gradients = new float[keys.length * DIM];
                for (int i = 0; i < gradients.length; i++) {
                    gradients[i] = (float) (random.nextGaussian() * 0.1);
                }
                table.push(keys, gradients);
            }
            AdminCalls.checkpointNow(cluster.proxyAddress());
        }
        final CheckpointStore trained = new CheckpointStore(URI.create(root), new Configuration());
        final CheckpointInfo checkpoint = trained.latest().orElseThrow();
        for (final Manifest.FileEntry entry : checkpoint.manifest().files()) {
            RowFileReader.read(trained.fileSystem(), checkpoint.dir(), entry.file(), slot -> true, (slot, key, row) -> {
                if (rows.isEmpty() || rows.get(rows.size() - 1).slot != slot) {
                    rows.add(new SlotRows(slot));
                }
                rows.get(rows.size() - 1).add(key, row);
            });
        }
        // One file for all: the shards' slots are disjoint, and a file takes them in ascending order.
        rows.sort(java.util.Comparator.comparingInt(slot -> slot.slot));
        final int width = rows.get(0).width;
        final long rowCount = rows.stream().mapToLong(slot -> slot.keys.size()).sum();
        final long rawBytes = rowCount * (8L + 4L * width);

        final FileSystem local = FileSystem.getLocal(new Configuration()).getRawFileSystem();
        report(
                "local disk",
                measure(
                        local,
                        new org.apache.hadoop.fs.Path(dir.resolve("codecs").toUri()),
                        rows,
                        width),
                rowCount,
                width,
                rawBytes);
        final Configuration conf = new Configuration();
        final java.io.File base = dir.resolve("hdfs").toFile();
        conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, base.getAbsolutePath());
        final MiniDFSCluster hdfs =
                new MiniDFSCluster.Builder(conf, base).numDataNodes(1).build();
        try {
            hdfs.waitActive();
            report(
                    "HDFS, 1 DataNode",
                    measure(hdfs.getFileSystem(), new org.apache.hadoop.fs.Path("/codecs"), rows, width),
                    rowCount,
                    width,
                    rawBytes);
        } finally {
            hdfs.shutdown();
        }
    }

    /** Writes and reads the rows with each codec, {@value #ROUNDS} rounds interleaved; the best time of each. */
    private static Map<ChunkCodec, long[]> measure(
            final FileSystem fs, final org.apache.hadoop.fs.Path out, final List<SlotRows> rows, final int width)
            throws java.io.IOException {
        final long expected = digest(rows);
        final Map<ChunkCodec, long[]> results = new EnumMap<>(ChunkCodec.class);
        int file = 0;
        for (int round = 0; round < ROUNDS; round++) {
            for (final ChunkCodec codec : ChunkCodec.values()) {
                final String name = codec + "-" + file++ + ".rows";
                final long writeStart = System.nanoTime();
                final RowFileInfo info;
                try (RowFileWriter writer = RowFileWriter.create(
                        fs, out, name, width, RowFileWriter.Options.defaults().withCodec(codec))) {
                    for (final SlotRows slot : rows) {
                        writer.beginSlot(slot.slot);
                        for (int i = 0; i < slot.keys.size(); i++) {
                            writer.writeRow(slot.keys.get(i), slot.values.get(i), 0);
                        }
                    }
                    info = writer.finish();
                }
                final long writeNanos = System.nanoTime() - writeStart;
                final CRC32C crc = new CRC32C();
                final long readStart = System.nanoTime();
                RowFileReader.read(fs, out, info, slot -> true, (slot, key, row) -> update(crc, slot, key, row));
                final long readNanos = System.nanoTime() - readStart;
                assertThat(crc.getValue()).as("%s reads back bit-exact", codec).isEqualTo(expected);
                final long[] best = results.computeIfAbsent(codec, c -> new long[] {0, Long.MAX_VALUE, Long.MAX_VALUE});
                best[0] = info.length();
                best[1] = Math.min(best[1], writeNanos);
                best[2] = Math.min(best[2], readNanos);
                fs.delete(new org.apache.hadoop.fs.Path(out, name), false);
            }
        }
        assertThat(results.get(ChunkCodec.ZSTD)[0]).isLessThan(results.get(ChunkCodec.NONE)[0]);
        assertThat(results.get(ChunkCodec.LZ4)[0]).isLessThan(results.get(ChunkCodec.NONE)[0]);
        return results;
    }

    private static void report(
            final String where,
            final Map<ChunkCodec, long[]> results,
            final long rowCount,
            final int width,
            final long rawBytes) {
        final long[] none = results.get(ChunkCodec.NONE);
        System.out.printf(
                Locale.ROOT,
                "%s: trained embedding table, %d rows of %d floats (dim %d + Adagrad), %.1f MiB raw%n",
                where,
                rowCount,
                width,
                DIM,
                rawBytes / 1048576.0);
        for (final ChunkCodec codec : ChunkCodec.values()) {
            final long[] r = results.get(codec);
            System.out.printf(
                    Locale.ROOT,
                    "%-5s %10d bytes  ratio %.3f  write %6.0f MB/s (%.2fx none)  read %6.0f MB/s (%.2fx none)%n",
                    codec,
                    r[0],
                    (double) rawBytes / r[0],
                    rawBytes / (r[1] / 1e3),
                    (double) none[1] / r[1],
                    rawBytes / (r[2] / 1e3),
                    (double) none[2] / r[2]);
        }
    }

    private static long digest(final List<SlotRows> rows) {
        final CRC32C crc = new CRC32C();
        for (final SlotRows slot : rows) {
            for (int i = 0; i < slot.keys.size(); i++) {
                update(crc, slot.slot, slot.keys.get(i), slot.values.get(i));
            }
        }
        return crc.getValue();
    }

    private static void update(final CRC32C crc, final int slot, final long key, final float[] row) {
        final java.nio.ByteBuffer bytes = java.nio.ByteBuffer.allocate(12 + 4 * row.length);
        bytes.putInt(slot).putLong(key);
        for (final float value : row) {
            bytes.putInt(Float.floatToRawIntBits(value));
        }
        crc.update(bytes.array());
    }

    private static final class SlotRows {
        final int slot;
        final List<Long> keys = new ArrayList<>();
        final List<float[]> values = new ArrayList<>();
        int width;

        SlotRows(final int slot) {
            this.slot = slot;
        }

        void add(final long key, final float[] row) {
            keys.add(key);
            values.add(row.clone());
            width = row.length;
        }
    }
}
