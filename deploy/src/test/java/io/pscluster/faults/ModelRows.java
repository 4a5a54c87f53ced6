package io.pscluster.faults;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.pscluster.checkpoint.CheckpointInfo;
import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.Manifest;
import io.pscluster.checkpoint.RowFileReader;
import io.pscluster.proto.v1.InitializerKind;
import io.pscluster.proto.v1.InitializerSpec;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.worker.PsTable;
import java.io.IOException;
import java.time.Duration;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Map;
import java.util.Set;
import java.util.SplittableRandom;

/**
 * The model the checkpoint crash tests write: a sparse Adagrad table of {@link #ROWS} rows of dim {@link #DIM} (32
 * floats per row with the accumulators, so each shard's row file spans several ~1 MiB chunks and a writer stopped
 * after its first chunk is mid-file), changed by rounds of seeded random gradients, and compared bit for bit: pulled
 * values as raw float bits, and a checkpoint's rows (values and optimizer state) as read from its files.
 */
final class ModelRows {
    static final int ROWS = 20_000;
    static final int DIM = 16;
    private static final int KEYS_PER_PUSH = 2_000;

    private ModelRows() {}

    static TableSchema schema(final String name) {
        return TableSchema.newBuilder()
                .setName(name)
                .setKind(TableKind.SPARSE)
                .setDim(DIM)
                .setOptimizer(OptimizerSpec.newBuilder()
                        .setKind(OptimizerKind.ADAGRAD)
                        .setLearningRate(0.1f))
                .setInitializer(InitializerSpec.newBuilder().setKind(InitializerKind.ZEROS))
                .build();
    }

    static long[] keys() {
        final long[] keys = new long[ROWS];
        for (int i = 0; i < ROWS; i++) {
            keys[i] = i * 7_919L + 3;
        }
        return keys;
    }

    /**
     * Pushes one gradient row to every key (from {@code seed}) and waits until every key's values differ from
     * {@code before}, that is until the round is applied; returns the values then, as raw bits.
     */
    static int[] pushRound(final PsTable table, final long[] keys, final long seed, final int[] before) {
        final SplittableRandom random = new SplittableRandom(seed);
        for (int from = 0; from < keys.length; from += KEYS_PER_PUSH) {
            final long[] batch = Arrays.copyOfRange(keys, from, Math.min(keys.length, from + KEYS_PER_PUSH));
            final float[] gradients = new float[batch.length * DIM];
            for (int i = 0; i < gradients.length; i++) {
                // Never zero: every value of every row changes.
                gradients[i] = (float) ((0.1 + random.nextDouble()) * (random.nextBoolean() ? 1 : -1));
            }
            table.push(batch, gradients);
        }
        final int[][] applied = new int[1][];
        await().atMost(Duration.ofSeconds(60))
                .pollInterval(Duration.ofMillis(100))
                .until(() -> {
                    final int[] now = pull(table, keys);
                    for (int i = 0; i < now.length; i++) {
                        if (now[i] == before[i]) {
                            return false;
                        }
                    }
                    applied[0] = now;
                    return true;
                });
        return applied[0];
    }

    /** The values of every key, as raw float bits (so that -0.0 and NaN payloads compare exactly). */
    static int[] pull(final PsTable table, final long[] keys) {
        final float[] values = table.pull(keys);
        final int[] bits = new int[values.length];
        for (int i = 0; i < values.length; i++) {
            bits[i] = Float.floatToRawIntBits(values[i]);
        }
        return bits;
    }

    /**
     * Every row of checkpoint {@code id} (values and optimizer slots, raw bits) by key, read from the files of its
     * chain as a restore reads them: the base, then each delta's removed keys and rows, oldest first. A key is held
     * at most once by the row files of one checkpoint.
     */
    static Map<Long, int[]> rowsOf(final CheckpointStore store, final long id) throws IOException {
        final CheckpointInfo checkpoint = store.get(id).orElseThrow(() -> new AssertionError("no checkpoint " + id));
        final Map<Long, int[]> rows = new HashMap<>();
        for (final CheckpointInfo link : store.chain(checkpoint)) {
            for (final Manifest.FileEntry entry : link.manifest().files()) {
                if (entry.removedKeys()) {
                    RowFileReader.read(
                            store.fileSystem(),
                            link.dir(),
                            entry.file(),
                            slot -> true,
                            (slot, key, row) -> rows.remove(key));
                }
            }
            final Set<Long> inLink = new HashSet<>();
            for (final Manifest.FileEntry entry : link.manifest().files()) {
                if (entry.removedKeys()) {
                    continue;
                }
                RowFileReader.read(store.fileSystem(), link.dir(), entry.file(), slot -> true, (slot, key, row) -> {
                    final int[] bits = new int[row.length];
                    for (int i = 0; i < row.length; i++) {
                        bits[i] = Float.floatToRawIntBits(row[i]);
                    }
                    assertThat(inLink.add(key))
                            .as("key %d twice in checkpoint %d", key, link.id())
                            .isTrue();
                    rows.put(key, bits);
                });
            }
        }
        return rows;
    }

    /** The rows checkpoint {@code id} itself holds (a delta's: those changed since its parent). */
    static long ownRows(final CheckpointStore store, final long id) throws IOException {
        final Manifest manifest = store.get(id)
                .orElseThrow(() -> new AssertionError("no checkpoint " + id))
                .manifest();
        return manifest.files().stream()
                .filter(entry -> !entry.removedKeys())
                .mapToLong(entry -> entry.file().rows())
                .sum();
    }

    /** Same keys, and every row bit for bit the same; the message names the first row that differs. */
    static void assertSameRows(final Map<Long, int[]> actual, final Map<Long, int[]> expected, final String what) {
        assertThat(actual.keySet()).as("keys of %s", what).isEqualTo(expected.keySet());
        for (final Map.Entry<Long, int[]> row : expected.entrySet()) {
            assertThat(actual.get(row.getKey()))
                    .as("row %d of %s", row.getKey(), what)
                    .isEqualTo(row.getValue());
        }
    }
}
