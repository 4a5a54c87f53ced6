package io.pscluster.server;

import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.Manifest;
import io.pscluster.proto.v1.CheckpointFile;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.wire.Slots;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.net.URI;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.apache.hadoop.conf.Configuration;

/**
 * Checkpoints of a counter table (SGD, lr 1, dim 1: each push of gradient -1 adds 1) under a local root, written by
 * a shard of their own and committed as the proxy would, so that restore tests know exactly what each holds.
 */
final class CounterCheckpoints implements AutoCloseable {
    static final String TABLE = "counter";
    static final String WRITER = "writer";
    static final TableSchema SCHEMA = TableSchema.newBuilder()
            .setName(TABLE)
            .setKind(TableKind.SPARSE)
            .setDim(1)
            .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(1f))
            .build();

    private final URI root;
    private final CheckpointStore store;
    private final Shard writer = new Shard(WRITER, 1 << 20, 2, 1024, new Configuration());

    CounterCheckpoints(final Path directory) throws IOException, InterruptedException {
        this.root = directory.toUri();
        this.store = new CheckpointStore(root, new Configuration());
        TestRouting.serve(writer, TestRouting.allSlotsTo(WRITER, 1));
        writer.createTable(SCHEMA);
    }

    CheckpointStore store() {
        return store;
    }

    URI root() {
        return root;
    }

    /** Adds 1 to every key, then commits checkpoint {@code id}, which holds the counters as they are then. */
    void countAndCommit(final long[] keys, final long id) throws IOException, InterruptedException {
        countAndCommit(keys, id, List.of());
    }

    /**
     * As {@link #countAndCommit(long[], long)}, the manifest also listing {@code rowlessTables} (tables of the catalog
     * of which the checkpoint holds no rows).
     */
    void countAndCommit(final long[] keys, final long id, final List<TableSchema> rowlessTables)
            throws IOException, InterruptedException {
        countAndCommit(keys, id, rowlessTables, Map.of());
    }

    /** As {@link #countAndCommit(long[], long, List)}, the manifest holding {@code properties} too. */
    void countAndCommit(
            final long[] keys,
            final long id,
            final List<TableSchema> rowlessTables,
            final Map<String, String> properties)
            throws IOException, InterruptedException {
        final float[] minusOnes = new float[keys.length];
        Arrays.fill(minusOnes, -1f);
        writer.push(TABLE, 1, 0, 0, keys, minusOnes);
        writer.awaitQuiescent();
        final List<Manifest.FileEntry> files = new ArrayList<>();
        for (final CheckpointFile file : writer.writeCheckpoint(root, id).files()) {
            files.add(WrittenFiles.entry(WRITER, file));
        }
        store.commit(new Manifest(
                id,
                System.currentTimeMillis(),
                Slots.SLOT_COUNT,
                Stream.concat(Stream.of(SCHEMA), rowlessTables.stream())
                        .map(schema -> new Manifest.TableEntry(schema.getName(), schema.toByteArray()))
                        .toList(),
                files,
                properties));
    }

    /** Flips one byte in the middle of checkpoint {@code id}'s row file. */
    void flipAByte(final long id) throws IOException {
        final Path file = Path.of(store.checkpointDir(id).toUri()).resolve(CheckpointStore.fileName(WRITER, TABLE, id));
        try (RandomAccessFile data = new RandomAccessFile(file.toFile(), "rw")) {
            final long middle = data.length() / 2;
            data.seek(middle);
            final int value = data.read();
            data.seek(middle);
            data.write(value ^ 0xff);
        }
    }

    @Override
    public void close() {
        writer.close();
    }
}
