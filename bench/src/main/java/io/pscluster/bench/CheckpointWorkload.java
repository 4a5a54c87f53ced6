package io.pscluster.bench;

import io.pscluster.checkpoint.CheckpointInfo;
import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.ChunkCodec;
import io.pscluster.checkpoint.Manifest;
import io.pscluster.checkpoint.RowFileInfo;
import io.pscluster.checkpoint.RowFileReader;
import io.pscluster.checkpoint.RowFileWriter;
import io.pscluster.local.LocalCluster;
import io.pscluster.proto.v1.CheckpointFile;
import io.pscluster.proto.v1.InitializerKind;
import io.pscluster.proto.v1.InitializerSpec;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.server.Shard;
import io.pscluster.wire.Slots;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.io.IOException;
import java.lang.management.CompilationMXBean;
import java.lang.management.ManagementFactory;
import java.net.URI;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.Comparator;
import java.util.Deque;
import java.util.EnumMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Stream;
import org.HdrHistogram.Histogram;
import org.agrona.BufferUtil;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.hdfs.MiniDFSCluster;

/**
 * checkpoint: what writing and restoring a checkpoint costs against plain Hadoop {@link FileSystem} I/O of the same
 * bytes, and what a running checkpoint does to push latency, all in one run on a cluster of its own (a proxy and 1
 * shard in this JVM, whatever {@code --proxy} says: the bench must reach the shard's checkpoint calls), with the
 * checkpoints on the local filesystem in a temporary directory.
 *
 * <p>The model: a sparse SGD table of {@code --checkpoint-rows} rows x dim {@value #DIM} with random 64-bit keys (so
 * rows are neither in key nor in slot order), trained by {@value #TRAIN_ROUNDS} rounds of SGD pushes of random
 * gradients through the SDK, so its floats look like a trained model's (mantissa noise), not like constants that
 * compress to nothing. Then:
 *
 * <ol>
 *   <li>write: the shard writes a checkpoint ({@link Shard#writeCheckpoint}, the call the proxy makes, then the
 *       manifest is committed as the proxy would) with each codec; baseline: the same number of files of the same
 *       lengths written through the same {@link FileSystem}, created as the row writer creates them, from one 1 MiB
 *       block of random bytes, {@code hsync}ed and closed. {@value #ROUNDS} rounds in ABBA order, the best of each
 *       side; bytes are the row files' bytes as stored;
 *   <li>push latency: one SDK client pushes {@value #PUSH_KEYS} random existing keys per call, back to back, while a
 *       zstd checkpoint is written, and for as long again with none; in the order checkpoint, quiet, quiet,
 *       checkpoint. Each push counts for the phase it started in. The shard's cut time ({@code snapshot_micros})
 *       and the time its writers held pushes back ({@code held_push_micros}) are the largest it reported;
 *   <li>restore: a fresh cluster (its own proxy and shard) loads each codec's checkpoint into its one shard
 *       ({@link Shard#restore}: verification, which on the local filesystem reads every file back, then the rows)
 *       into a table created by the restore; baseline: reading the same files through the same {@link FileSystem},
 *       rows per second of that time. {@value #ROUNDS} rounds, ABBA, best of each side;
 *   <li>delta: after {@value #DELTA_CHANGED_PERCENT}% of the rows changed (random keys), a zstd delta against its
 *       zstd base (target: at most {@value #DELTA_TARGET_PERCENT}% of it);
 *   <li>size: the row files' bytes with lz4 and zstd against codec none (ratio: the compression ratio), of this
 *       table and of a trained embedding table (Adagrad, skewed pushes, as {@code CheckpointCompressionTest}).
 * </ol>
 *
 * <p>The write and restore targets (ratio at least {@value #IO_TARGET}) and the push target (p99 at most twice the
 * quiet p99: ratio at least {@value #PUSH_P99_TARGET}) come from the checkpoint issue; a missed target is reported,
 * never an error.
 */
final class CheckpointWorkload implements Workload {
    static final String NAME = "checkpoint";
    /** The same workload with the checkpoints on HDFS: a MiniDFSCluster of 1 DataNode in this JVM. */
    static final String HDFS_NAME = "checkpoint-hdfs";

    static final int DEFAULT_ROWS = 2_000_000;
    static final int MIN_ROWS = 1_000;
    static final int MAX_ROWS = 50_000_000;
    static final int DIM = 16;
    static final int TRAIN_ROUNDS = 2;
    static final int ROUNDS = 2;
    static final int PUSH_KEYS = 1_000;
    static final double IO_TARGET = 0.8;
    static final double PUSH_P99_TARGET = 0.5;
    /** Share of the rows changed before a delta is written, in percent. */
    static final int DELTA_CHANGED_PERCENT = 1;
    /** The most a delta may take of its base, in percent (the checkpoint issue's target). */
    static final int DELTA_TARGET_PERCENT = 3;
    /** Keys of the trained model's key space (at most; fewer for small {@code --checkpoint-rows}). */
    static final int TRAINED_KEYS = 400_000;

    static final int TRAINED_STEPS = 40;

    private static final List<ChunkCodec> CODECS = List.of(ChunkCodec.NONE, ChunkCodec.LZ4, ChunkCodec.ZSTD);
    private static final ChunkCodec PUSH_PHASE_CODEC = ChunkCodec.ZSTD;
    private static final String TABLE = "psbench-" + NAME;
    /** Keys per push while training: 1 MiB of gradients. */
    private static final int TRAIN_KEYS = 16_384;
    /** Training pushes in flight at once. */
    private static final int TRAIN_IN_FLIGHT = 4;
    /** Pushes before the push phases start, so that the first phase does not pay for warming up. */
    private static final int WARMUP_PUSHES = 100;
    /**
     * And for at least this long (at most the timed workloads' warm-up), with one checkpoint written meanwhile:
     * measured at once, the phases ran while the JIT compiled the push path (3,581 compilations in the first quiet
     * phase of a standalone run; 287 after this warm-up).
     */
    private static final long WARMUP_NANOS = TimeUnit.SECONDS.toNanos(5);
    /**
     * Then on, in rounds of one checkpoint and as long again without, until the JIT spent less than this share of a
     * round's time compiling (in percent; at most {@link #MAX_WARMUP_NANOS}, or 12 times the warm-up asked for if that is
     * less): on the 2-core machine the compilers still
     * took 2 s of CPU during the push phases after 5 s of warm-up (3,547 compilations, most in the first checkpoint
     * phase), so the first phase measured the JIT rather than the checkpoint.
     */
    private static final int WARM_COMPILE_PERCENT = 2;

    private static final long MAX_WARMUP_NANOS = TimeUnit.SECONDS.toNanos(60);
    /**
     * A checkpoint phase lasts at least this long and sees at least {@link #MIN_PHASE_PUSHES} pushes (a tiny table's
     * checkpoint is over in milliseconds: it is written again until then); a quiet phase lasts as long as the
     * checkpoint phase before it.
     */
    private static final long MIN_PHASE_NANOS = TimeUnit.MILLISECONDS.toNanos(300);

    private static final int MIN_PHASE_PUSHES = 20;
    private static final int IO_BLOCK_BYTES = 1 << 20;
    private static final long SEED = 0x5eed_c4ecL;

    private final String name;
    private final boolean onHdfs;

    private CheckpointWorkload(final String name, final boolean onHdfs) {
        this.name = name;
        this.onHdfs = onHdfs;
    }

    /** Checkpoints on the local filesystem, in a temporary directory. */
    static CheckpointWorkload local() {
        return new CheckpointWorkload(NAME, false);
    }

    /** Checkpoints on HDFS: a MiniDFSCluster of 1 DataNode started in this JVM, in a temporary directory. */
    static CheckpointWorkload hdfs() {
        return new CheckpointWorkload(HDFS_NAME, true);
    }

    @Override
    public String name() {
        return name;
    }

    @Override
    public String describe(final BenchSettings settings) {
        return String.format(
                Locale.ROOT,
                "its own proxy + 1 shard in this JVM, sparse SGD table of %,d random keys x dim %d trained by %d rounds"
                        + " of random gradients, checkpoints on %s: write (none, lz4, zstd) vs raw"
                        + " FileSystem writes of the same bytes; SDK push p50/p99 (%,d random keys) while a zstd"
                        + " checkpoint runs vs none; restore into a fresh cluster vs raw reads of the same files;"
                        + " a zstd delta after 1%% of rows changed vs its base; row file sizes vs none, also of a"
                        + " trained Adagrad embedding table",
                settings.checkpointRows(),
                DIM,
                TRAIN_ROUNDS,
                onHdfs ? "HDFS (a MiniDFSCluster of 1 DataNode in this JVM)" : "the local filesystem",
                PUSH_KEYS);
    }

    @Override
    public List<BenchResult> run(final BenchHarness harness) throws Exception {
        final int rows = harness.settings().checkpointRows();
        final java.nio.file.Path base = Files.createTempDirectory("psbench-" + name + "-");
        MiniDFSCluster hdfs = null;
        try {
            final CheckpointStore store;
            if (onHdfs) {
                harness.progress("%s: starting HDFS (a NameNode and 1 DataNode in this JVM)", name);
                final Configuration conf = new Configuration();
                conf.set(
                        MiniDFSCluster.HDFS_MINIDFS_BASEDIR,
                        base.resolve("hdfs").toString());
                hdfs = new MiniDFSCluster.Builder(conf, base.resolve("hdfs").toFile())
                        .numDataNodes(1)
                        .build();
                hdfs.waitActive();
                store = new CheckpointStore(URI.create(hdfs.getURI() + "/psbench/checkpoints"), conf);
            } else {
                final java.nio.file.Path checkpoints = Files.createDirectories(base.resolve("checkpoints"));
                store = new CheckpointStore(checkpoints.toUri(), new Configuration());
            }
            final List<BenchResult> results = new ArrayList<>();
            final long[] keys = randomKeys(rows);
            final Map<ChunkCodec, Written> written;
            TableSchema schema;
            try (LocalCluster cluster = startCluster(base.resolve("cluster"));
                    PsClient client = connect(harness, cluster)) {
                final PsTable table = client.createTable(schema());
                schema = table.schema();
                final Shard shard = cluster.shard(0).shard();
                harness.progress(
                        "%s: training %,d rows x dim %d (%d rounds of random gradients)",
                        name, rows, DIM, TRAIN_ROUNDS);
                train(table, keys);
                shard.awaitQuiescent();
                written = measureWrites(harness, shard, store, schema, results);
                measurePushes(harness, shard, store, table, keys, results);
                measureDelta(harness, shard, store, table, keys, results);
            }
            measureRestores(harness, base.resolve("fresh-cluster"), store, schema.getName(), written, results);
            measureTrainedModel(harness, base.resolve("trained-cluster"), store, rows, results);
            final Written plain = written.get(ChunkCodec.NONE);
            for (final ChunkCodec codec : List.of(ChunkCodec.LZ4, ChunkCodec.ZSTD)) {
                results.add(BenchResult.time(
                        name,
                        "size_mb " + codec.optionName(),
                        written.get(codec).bytes() / 1e6,
                        plain.bytes() / 1e6,
                        String.format(
                                Locale.ROOT,
                                "MB of row files for %,d rows (baseline: codec none; ratio: the compression ratio)",
                                plain.rows())));
            }
            return results;
        } finally {
            if (hdfs != null) {
                hdfs.shutdown();
            }
            deleteRecursively(base);
        }
    }

    private static TableSchema schema() {
        return TableSchema.newBuilder()
                .setName(TABLE)
                .setKind(TableKind.SPARSE)
                .setDim(DIM)
                .setOptimizer(
                        OptimizerSpec.newBuilder().setKind(OptimizerKind.SGD).setLearningRate(0.01f))
                .setInitializer(InitializerSpec.newBuilder().setKind(InitializerKind.ZEROS))
                .build();
    }

    private static LocalCluster startCluster(final java.nio.file.Path root) throws Exception {
        return LocalCluster.builder()
                .shards(1)
                .checkpointRoot(Files.createDirectories(root).toUri().toString())
                .start();
    }

    private static PsClient connect(final BenchHarness harness, final LocalCluster cluster) {
        return PsClient.connect(new PsClient.Context()
                .proxyAddress(cluster.proxyAddress())
                .deadlineMs(harness.settings().deadlineMs()));
    }

    /** Random 64-bit keys: spread over every slot, in no order the table or the files could exploit. */
    static long[] randomKeys(final int count) {
        final SplittableRandom random = new SplittableRandom(SEED);
        final long[] keys = new long[count];
        for (int i = 0; i < count; i++) {
            keys[i] = random.nextLong();
        }
        return keys;
    }

    /** Gradients uniform in [-1, 1): after SGD the weights are sums of random steps, like a trained model's. */
    private static float[] randomGradients(final SplittableRandom random, final int count) {
        final float[] gradients = new float[count];
        for (int i = 0; i < count; i++) {
            gradients[i] = (float) (random.nextDouble() * 2 - 1);
        }
        return gradients;
    }

    private static void train(final PsTable table, final long[] keys) {
        final SplittableRandom random = new SplittableRandom(SEED + 1);
        final Deque<CompletableFuture<Void>> inFlight = new ArrayDeque<>();
        for (int round = 0; round < TRAIN_ROUNDS; round++) {
            for (int from = 0; from < keys.length; from += TRAIN_KEYS) {
                final long[] chunk = Arrays.copyOfRange(keys, from, Math.min(keys.length, from + TRAIN_KEYS));
                inFlight.add(table.pushAsync(chunk, randomGradients(random, chunk.length * DIM)));
                if (inFlight.size() >= TRAIN_IN_FLIGHT) {
                    inFlight.remove().join();
                }
            }
        }
        inFlight.forEach(CompletableFuture::join);
    }

    /** One checkpoint written by the shard (and committed, when it is to be restored). */
    private record Written(
            ChunkCodec codec,
            long id,
            long nanos,
            long bytes,
            long rows,
            long[] fileLengths,
            List<Path> files,
            long snapshotMicros,
            long heldPushMicros) {}

    private static Written write(
            final Shard shard,
            final CheckpointStore store,
            final TableSchema schema,
            final ChunkCodec codec,
            final boolean commit)
            throws IOException, InterruptedException {
        return write(shard, store, schema, codec, commit, 0);
    }

    /** A base when {@code sinceId} is 0, else a delta of checkpoint {@code sinceId} (which this shard wrote last). */
    private static Written write(
            final Shard shard,
            final CheckpointStore store,
            final TableSchema schema,
            final ChunkCodec codec,
            final boolean commit,
            final long sinceId)
            throws IOException, InterruptedException {
        final long id = store.nextId();
        final Path dir = store.checkpointDir(id);
        store.fileSystem().mkdirs(dir);
        final long start = System.nanoTime();
        // A base (no checkpoint to be a delta of) holds every row, as the proxy's first checkpoint writes.
        final Shard.WrittenCheckpoint checkpoint = shard.writeCheckpoint(
                store.root(), id, RowFileWriter.Options.defaults().withCodec(codec), null, sinceId, sinceId > 0);
        final long nanos = System.nanoTime() - start;
        long bytes = 0;
        long rows = 0;
        final long[] lengths = new long[checkpoint.files().size()];
        final List<Path> files = new ArrayList<>();
        final List<Manifest.FileEntry> entries = new ArrayList<>();
        for (int i = 0; i < lengths.length; i++) {
            final CheckpointFile file = checkpoint.files().get(i);
            lengths[i] = file.getLength();
            bytes += file.getLength();
            rows += file.getRows();
            files.add(new Path(dir, file.getPath()));
            entries.add(new Manifest.FileEntry(
                    file.getTable(),
                    shard.shardId(),
                    new RowFileInfo(
                            file.getPath(),
                            file.getLength(),
                            file.getCrc32C(),
                            file.getRows(),
                            file.getSlotsList().stream()
                                    .mapToInt(Integer::intValue)
                                    .toArray(),
                            ChunkCodec.fromProto(file.getCodec()).orElse(ChunkCodec.NONE),
                            file.getUncompressedBytes())));
        }
        if (commit) {
            // As the proxy's coordinator commits: the files it listed, then the manifest, whose rename is the commit.
            store.commit(new Manifest(
                    id,
                    System.currentTimeMillis(),
                    Slots.SLOT_COUNT,
                    List.of(new Manifest.TableEntry(schema.getName(), schema.toByteArray())),
                    entries,
                    Map.of()));
        }
        return new Written(
                codec,
                id,
                nanos,
                bytes,
                rows,
                lengths,
                files,
                checkpoint.snapshotMicros(),
                checkpoint.heldPushMicros());
    }

    /**
     * Each codec's checkpoint against raw writes of its files' lengths, {@link #ROUNDS} rounds in ABBA order (the raw
     * side of a round that starts with it writes the previous round's lengths: the table has not changed, so they
     * differ only where the part files split, by a fraction of a percent). Returns the last round's checkpoints,
     * committed, for the restores.
     */
    private Map<ChunkCodec, Written> measureWrites(
            final BenchHarness harness,
            final Shard shard,
            final CheckpointStore store,
            final TableSchema schema,
            final List<BenchResult> results)
            throws IOException, InterruptedException {
        final FileSystem fs = store.fileSystem();
        final byte[] block = new byte[IO_BLOCK_BYTES];
        new SplittableRandom(SEED + 2).nextBytes(block);
        final Map<ChunkCodec, Written> last = new EnumMap<>(ChunkCodec.class);
        final Map<ChunkCodec, long[]> best = new EnumMap<>(ChunkCodec.class);
        for (int round = 0; round < ROUNDS; round++) {
            harness.progress(
                    "%s: write round %d of %d (none, lz4, zstd; each against raw writes)", name, round + 1, ROUNDS);
            for (final ChunkCodec codec : CODECS) {
                final Path rawDir = new Path(store.root().toString(), "raw-writes");
                final long[] times = best.computeIfAbsent(codec, c -> new long[] {Long.MAX_VALUE, Long.MAX_VALUE});
                final Written previous = last.get(codec);
                if (round % 2 == 1) {
                    times[1] = Math.min(times[1], rawWrite(fs, rawDir, previous.fileLengths(), block));
                }
                final Written checkpoint = write(shard, store, schema, codec, true);
                times[0] = Math.min(times[0], checkpoint.nanos());
                harness.progress(
                        "%s: %s checkpoint: %,d bytes in %.2f s (cut %d us)",
                        name,
                        codec.optionName(),
                        checkpoint.bytes(),
                        checkpoint.nanos() / 1e9,
                        checkpoint.snapshotMicros());
                if (round % 2 == 0) {
                    times[1] = Math.min(times[1], rawWrite(fs, rawDir, checkpoint.fileLengths(), block));
                }
                if (previous != null) {
                    fs.delete(store.checkpointDir(previous.id()), true);
                }
                last.put(codec, checkpoint);
            }
        }
        for (final ChunkCodec codec : CODECS) {
            final Written checkpoint = last.get(codec);
            final long[] times = best.get(codec);
            results.add(BenchResult.rate(
                            name,
                            "write_mb_per_s " + codec.optionName(),
                            checkpoint.bytes() / 1e6 * 1e9 / times[0],
                            checkpoint.bytes() / 1e6 * 1e9 / times[1],
                            "MB/s of row files as stored, " + checkpoint.files().size()
                                    + " file(s), hsync'd (baseline: raw FileSystem writes of the same lengths)")
                    .withTarget(IO_TARGET));
        }
        return last;
    }

    /** Writes files of {@code lengths} as the row writer creates them, from {@code block}; returns the nanoseconds. */
    private static long rawWrite(final FileSystem fs, final Path dir, final long[] lengths, final byte[] block)
            throws IOException {
        fs.mkdirs(dir);
        final long start = System.nanoTime();
        for (int i = 0; i < lengths.length; i++) {
            try (FSDataOutputStream out =
                    RowFileWriter.createDurable(fs, new Path(dir, "raw-" + i), RowFileWriter.Options.defaults())) {
                for (long left = lengths[i]; left > 0; ) {
                    final int length = (int) Math.min(left, block.length);
                    out.write(block, 0, length);
                    left -= length;
                }
                out.hsync();
            }
        }
        final long nanos = System.nanoTime() - start;
        fs.delete(dir, true);
        return nanos;
    }

    /** Reads {@code files} whole through {@code fs}; returns the nanoseconds. */
    private static long rawRead(final FileSystem fs, final List<Path> files, final byte[] buffer) throws IOException {
        final long start = System.nanoTime();
        for (final Path file : files) {
            try (FSDataInputStream in = fs.open(file)) {
                while (in.read(buffer) >= 0) {
                    // Read to the end; the bytes themselves are not needed.
                }
            }
        }
        return System.nanoTime() - start;
    }

    private static final int QUIET = 0;
    private static final int CHECKPOINT = 1;
    private static final int BETWEEN = 2;

    /**
     * Push latency with and without a checkpoint running, in the order checkpoint, quiet, quiet, checkpoint, from one
     * client pushing back to back throughout; each push counts for the phase it started in.
     */
    private void measurePushes(
            final BenchHarness harness,
            final Shard shard,
            final CheckpointStore store,
            final PsTable table,
            final long[] keys,
            final List<BenchResult> results)
            throws Exception {
        final Histogram[] latencies = {Meter.newHistogram(), Meter.newHistogram(), Meter.newHistogram()};
        final AtomicLong checkpointPushes = new AtomicLong();
        final CountDownLatch warm = new CountDownLatch(WARMUP_PUSHES);
        final AtomicInteger phase = new AtomicInteger(BETWEEN);
        final AtomicBoolean stop = new AtomicBoolean();
        final ExecutorService pusher = Executors.newSingleThreadExecutor(BenchHarness.daemonThreads(name + "-push"));
        final Future<?> pushing = pusher.submit(() -> {
            final SplittableRandom random = new SplittableRandom(SEED + 3);
            final long[] batch = new long[PUSH_KEYS];
            while (!stop.get()) {
                for (int i = 0; i < batch.length; i++) {
                    batch[i] = keys[random.nextInt(keys.length)];
                }
                final float[] gradients = randomGradients(random, PUSH_KEYS * DIM);
                final int at = phase.get();
                final long start = System.nanoTime();
                table.push(batch, gradients);
                latencies[at].recordValue(System.nanoTime() - start);
                if (at == CHECKPOINT) {
                    checkpointPushes.incrementAndGet();
                }
                warm.countDown();
            }
            return null;
        });
        long snapshotMicros = 0;
        long heldMicros = 0;
        int checkpoints = 0;
        try {
            final long minWarmNanos = Math.min(WARMUP_NANOS, harness.settings().warmupNanos());
            final long warmUntil = System.nanoTime() + minWarmNanos;
            // A quick run (a short --warmup-seconds) does not wait for the JIT much longer than it asked.
            final long maxWarmNanos = Math.min(MAX_WARMUP_NANOS, 12 * minWarmNanos);
            while (!warm.await(100, TimeUnit.MILLISECONDS)) {
                checkStillPushing(pushing);
            }
            harness.progress("%s: warming up pushes with and without a checkpoint running", name);
            final CompilationMXBean jit = ManagementFactory.getCompilationMXBean();
            final long warmStart = System.nanoTime();
            long compiledMillis = jit.getTotalCompilationTime();
            long lastRoundCompileMillis;
            long lastRoundMillis;
            do {
                // A checkpoint, then as long again without one: both paths get compiled, as the phases will run.
                final long roundStart = System.nanoTime();
                final Written warmup = write(shard, store, table.schema(), PUSH_PHASE_CODEC, false);
                store.fileSystem().delete(store.checkpointDir(warmup.id()), true);
                checkStillPushing(pushing);
                TimeUnit.NANOSECONDS.sleep(Math.max(MIN_PHASE_NANOS, System.nanoTime() - roundStart));
                lastRoundMillis = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - roundStart);
                final long compiled = jit.getTotalCompilationTime();
                lastRoundCompileMillis = compiled - compiledMillis;
                compiledMillis = compiled;
            } while (System.nanoTime() - warmUntil < 0
                    || (lastRoundCompileMillis * 100 > lastRoundMillis * WARM_COMPILE_PERCENT
                            && System.nanoTime() - warmStart < maxWarmNanos));
            harness.progress(
                    "%s: warmed up for %.1f s; the JIT compiled for %d ms in its last %d ms",
                    name, (System.nanoTime() - warmStart) / 1e9, lastRoundCompileMillis, lastRoundMillis);
            long checkpointNanos = 0;
            for (final int step : new int[] {CHECKPOINT, QUIET, QUIET, CHECKPOINT}) {
                final long start = System.nanoTime();
                phase.set(step);
                if (step == CHECKPOINT) {
                    harness.progress("%s: pushes while a %s checkpoint runs", name, PUSH_PHASE_CODEC.optionName());
                    final long pushesBefore = checkpointPushes.get();
                    do {
                        final Written checkpoint = write(shard, store, table.schema(), PUSH_PHASE_CODEC, false);
                        store.fileSystem().delete(store.checkpointDir(checkpoint.id()), true);
                        snapshotMicros = Math.max(snapshotMicros, checkpoint.snapshotMicros());
                        heldMicros = Math.max(heldMicros, checkpoint.heldPushMicros());
                        checkpoints++;
                    } while (System.nanoTime() - start < MIN_PHASE_NANOS
                            || checkpointPushes.get() - pushesBefore < MIN_PHASE_PUSHES);
                    checkpointNanos = System.nanoTime() - start;
                } else {
                    harness.progress("%s: the same pushes, no checkpoint, %.1f s", name, checkpointNanos / 1e9);
                    TimeUnit.NANOSECONDS.sleep(checkpointNanos);
                }
                phase.set(BETWEEN);
                checkStillPushing(pushing);
            }
        } finally {
            stop.set(true);
            pusher.shutdown();
        }
        // Its last push ends within a deadline; after get() returns, what it recorded is visible here.
        pushing.get(harness.settings().deadlineMs(), TimeUnit.MILLISECONDS);
        final Histogram during = latencies[CHECKPOINT];
        final Histogram quiet = latencies[QUIET];
        final String unit = String.format(
                Locale.ROOT,
                "us, SDK push of %,d random keys x dim %d while %d %s checkpoint(s) ran, %,d pushes (baseline: the"
                        + " same pushes, no checkpoint, %,d pushes)",
                PUSH_KEYS,
                DIM,
                checkpoints,
                PUSH_PHASE_CODEC.optionName(),
                during.getTotalCount(),
                quiet.getTotalCount());
        results.add(BenchResult.time(name, "push_p50_us", micros(during, 50), micros(quiet, 50), unit));
        results.add(BenchResult.time(name, "push_p99_us", micros(during, 99), micros(quiet, 99), unit)
                .withTarget(PUSH_P99_TARGET));
        results.add(BenchResult.time(
                name,
                "snapshot_micros",
                snapshotMicros,
                Double.NaN,
                "us, the longest cut of those checkpoints: from offering it to the writers until each has marked it"
                        + " (pushes wait only while it is offered, not for the writers; no baseline)"));
        results.add(BenchResult.time(
                name,
                "held_push_micros",
                heldMicros,
                Double.NaN,
                "us, the most time those checkpoints' writers held pushes back while the copy lagged (summed over"
                        + " partitions; no baseline)"));
    }

    /**
     * The size of a delta after {@value #DELTA_CHANGED_PERCENT}% of the rows changed, against its base: a zstd base,
     * then SGD pushes of random gradients to that share of the keys (drawn at random, each once), then a zstd delta
     * of the base. Neither is committed; both are deleted.
     */
    private void measureDelta(
            final BenchHarness harness,
            final Shard shard,
            final CheckpointStore store,
            final PsTable table,
            final long[] keys,
            final List<BenchResult> results)
            throws IOException, InterruptedException {
        final int changed = Math.max(1, keys.length / (100 / DELTA_CHANGED_PERCENT));
        harness.progress(
                "%s: a %s delta after %,d rows (%d%%) changed",
                name, PUSH_PHASE_CODEC.optionName(), changed, DELTA_CHANGED_PERCENT);
        final Written base = write(shard, store, table.schema(), PUSH_PHASE_CODEC, false);
        final SplittableRandom random = new SplittableRandom(SEED + 4);
        final BitSet picked = new BitSet(keys.length);
        final long[] chunk = new long[Math.min(TRAIN_KEYS, changed)];
        int filled = 0;
        for (int left = changed; left > 0; ) {
            final int index = random.nextInt(keys.length);
            if (picked.get(index)) {
                continue;
            }
            picked.set(index);
            chunk[filled++] = keys[index];
            left--;
            if (filled == chunk.length || left == 0) {
                table.push(Arrays.copyOf(chunk, filled), randomGradients(random, filled * DIM));
                filled = 0;
            }
        }
        shard.awaitQuiescent();
        final Written delta = write(shard, store, table.schema(), PUSH_PHASE_CODEC, false, base.id());
        for (final Written checkpoint : List.of(base, delta)) {
            store.fileSystem().delete(store.checkpointDir(checkpoint.id()), true);
        }
        if (delta.rows() != changed) {
            throw new IllegalStateException(
                    "the delta holds " + delta.rows() + " rows; " + changed + " were changed since its base");
        }
        results.add(BenchResult.time(
                        name,
                        "delta_size_mb " + PUSH_PHASE_CODEC.optionName(),
                        delta.bytes() / 1e6,
                        base.bytes() / 1e6,
                        String.format(
                                Locale.ROOT,
                                "MB of a delta holding the %,d rows (%d%% of %,d) changed since its base (baseline:"
                                        + " the base; ratio: base / delta, so >= %.1f is a delta <= %d%% of the base)",
                                changed,
                                DELTA_CHANGED_PERCENT,
                                base.rows(),
                                100.0 / DELTA_TARGET_PERCENT,
                                DELTA_TARGET_PERCENT))
                .withTarget(100.0 / DELTA_TARGET_PERCENT));
    }

    /**
     * Compression of a trained model, as {@code CheckpointCompressionTest} trains one: an embedding table of dim
     * {@value #DIM} with Adagrad and a normal initialisation, trained by {@value #TRAINED_STEPS} pushes of Gaussian
     * gradients to keys drawn with a skew (a few keys in most pushes, most keys rarely), in a cluster of its own; its
     * checkpoint written with each codec. The sizes as stored against codec none: the ratio is the compression ratio.
     */
    private void measureTrainedModel(
            final BenchHarness harness,
            final java.nio.file.Path clusterRoot,
            final CheckpointStore store,
            final int rows,
            final List<BenchResult> results)
            throws Exception {
        final int keySpace = Math.max(MIN_ROWS, Math.min(TRAINED_KEYS, rows / 5));
        final int batch = Math.min(TRAIN_KEYS, keySpace / 4);
        final Map<ChunkCodec, Written> sizes = new EnumMap<>(ChunkCodec.class);
        try (LocalCluster cluster = startCluster(clusterRoot);
                PsClient client = connect(harness, cluster)) {
            final PsTable table = client.createTable(TableSchema.newBuilder()
                    .setName(TABLE + "-trained")
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
            harness.progress(
                    "%s: training an Adagrad embedding table by %d skewed pushes of %,d of %,d keys",
                    name, TRAINED_STEPS, batch, keySpace);
            final java.util.Random random = new java.util.Random(SEED + 5);
            for (int step = 0; step < TRAINED_STEPS; step++) {
                final java.util.Set<Long> picked = new java.util.LinkedHashSet<>();
                while (picked.size() < batch) {
                    final double u = random.nextDouble();
                    picked.add((long) (keySpace * u * u * u));
                }
                final long[] stepKeys =
                        picked.stream().mapToLong(Long::longValue).toArray();
                final float[] gradients = new float[stepKeys.length * DIM];
                for (int i = 0; i < gradients.length; i++) {
                    gradients[i] = (float) (random.nextGaussian() * 0.1);
                }
                table.push(stepKeys, gradients);
            }
            final Shard shard = cluster.shard(0).shard();
            shard.awaitQuiescent();
            for (final ChunkCodec codec : CODECS) {
                final Written checkpoint = write(shard, store, table.schema(), codec, false);
                store.fileSystem().delete(store.checkpointDir(checkpoint.id()), true);
                sizes.put(codec, checkpoint);
            }
        }
        final Written plain = sizes.get(ChunkCodec.NONE);
        for (final ChunkCodec codec : List.of(ChunkCodec.LZ4, ChunkCodec.ZSTD)) {
            results.add(BenchResult.time(
                    name,
                    "trained_size_mb " + codec.optionName(),
                    sizes.get(codec).bytes() / 1e6,
                    plain.bytes() / 1e6,
                    String.format(
                            Locale.ROOT,
                            "MB of row files of a trained embedding table (dim %d, Adagrad, %,d rows of %d floats;"
                                    + " baseline: codec none; ratio: the compression ratio)",
                            DIM,
                            plain.rows(),
                            DIM * 2)));
        }
    }

    /** Throws what stopped the pushing thread, if it stopped: its latencies would not cover the phase. */
    private static void checkStillPushing(final Future<?> pushing) throws Exception {
        if (pushing.isDone()) {
            pushing.get();
            throw new IllegalStateException("the pushing thread stopped early");
        }
    }

    private static double micros(final Histogram histogram, final double percentile) {
        return histogram.getValueAtPercentile(percentile) / 1_000.0;
    }

    /**
     * Each codec's checkpoint restored into the one shard of a fresh cluster (into a table the restore creates)
     * against reading its files, {@link #ROUNDS} rounds in ABBA order.
     */
    private void measureRestores(
            final BenchHarness harness,
            final java.nio.file.Path clusterRoot,
            final CheckpointStore store,
            final String table,
            final Map<ChunkCodec, Written> written,
            final List<BenchResult> results)
            throws Exception {
        final byte[] buffer = new byte[IO_BLOCK_BYTES];
        final Map<ChunkCodec, long[]> best = new EnumMap<>(ChunkCodec.class);
        final Map<ChunkCodec, Long> restoredRows = new EnumMap<>(ChunkCodec.class);
        try (LocalCluster fresh = startCluster(clusterRoot)) {
            final Shard shard = fresh.shard(0).shard();
            final BitSet slots = shard.ownedSlots();
            for (int round = 0; round < ROUNDS; round++) {
                harness.progress(
                        "%s: restore round %d of %d into a fresh cluster (none, lz4, zstd; each against raw reads)",
                        name, round + 1, ROUNDS);
                for (final ChunkCodec codec : CODECS) {
                    final Written checkpoint = written.get(codec);
                    final long[] times = best.computeIfAbsent(codec, c -> new long[] {Long.MAX_VALUE, Long.MAX_VALUE});
                    final boolean oursFirst = round % 2 == 0;
                    if (!oursFirst) {
                        times[1] = Math.min(times[1], rawRead(store.fileSystem(), checkpoint.files(), buffer));
                    }
                    shard.dropTable(table);
                    final long start = System.nanoTime();
                    final long rows = shard.restore(store.root(), checkpoint.id(), slots);
                    shard.awaitQuiescent();
                    times[0] = Math.min(times[0], System.nanoTime() - start);
                    if (rows != checkpoint.rows()) {
                        throw new IllegalStateException("the restore of checkpoint " + checkpoint.id() + " (" + codec
                                + ") loaded " + rows + " rows; its files hold " + checkpoint.rows());
                    }
                    restoredRows.put(codec, rows);
                    if (oursFirst) {
                        times[1] = Math.min(times[1], rawRead(store.fileSystem(), checkpoint.files(), buffer));
                    }
                }
            }
        }
        explainRestore(harness, store, written.get(ChunkCodec.ZSTD), best.get(ChunkCodec.ZSTD)[0]);
        for (final ChunkCodec codec : CODECS) {
            final long rows = restoredRows.get(codec);
            final long[] times = best.get(codec);
            results.add(BenchResult.rate(
                            name,
                            "restore_rows_per_s " + codec.optionName(),
                            rows * 1e9 / times[0],
                            rows * 1e9 / times[1],
                            "rows/s into a fresh cluster's shard, verification included (baseline: raw FileSystem"
                                    + " reads of the same files)")
                    .withTarget(IO_TARGET));
        }
    }

    /**
     * Where a restore's time goes, on stderr: the checkpoint's verification and the reading and decoding of its rows,
     * each timed alone here through the checkpoint module; the rest of the restore is the table taking the rows.
     */
    private void explainRestore(
            final BenchHarness harness, final CheckpointStore store, final Written checkpoint, final long restoreNanos)
            throws IOException {
        final CheckpointInfo info = store.get(checkpoint.id())
                .orElseThrow(() -> new IllegalStateException("checkpoint " + checkpoint.id() + " has no manifest"));
        final long verifyStart = System.nanoTime();
        store.verify(info);
        final long verifyNanos = System.nanoTime() - verifyStart;
        final long readStart = System.nanoTime();
        for (final Manifest.FileEntry entry : info.manifest().files()) {
            // As the restore reads them: decoded, checked, handed out as stored.
            RowFileReader.readRuns(
                    store.fileSystem(), info.dir(), entry.file(), slot -> true, (slot, rows, at, n, width) -> {});
        }
        final long readNanos = System.nanoTime() - readStart;
        final long memoryNanos = touchFreshMemory(checkpoint.rows() * (16L + 4L * DIM));
        harness.progress(
                "%s: restore of the %s checkpoint took %.2f s; alone, its verification takes %.2f s, reading and"
                        + " decoding its rows %.2f s, and allocating and writing fresh off-heap memory for its records"
                        + " %.2f s (the rest is the table taking them)",
                name,
                checkpoint.codec().optionName(),
                restoreNanos / 1e9,
                verifyNanos / 1e9,
                readNanos / 1e9,
                memoryNanos / 1e9);
    }

    /**
     * Nanoseconds to allocate {@code bytes} of direct memory in chunks as a partition allocates its records (320 KiB
     * here: 4,096 records of a dim-16 SGD row) and write every page once, as a restore does; freed at once. On a VM
     * whose memory is backed on first touch this is most of a restore's cost, and the raw reads, into one reused
     * buffer, never pay it.
     */
    private static long touchFreshMemory(final long bytes) {
        final int chunk = 4_096 * (16 + 4 * DIM);
        final List<ByteBuffer> chunks = new ArrayList<>();
        final long start = System.nanoTime();
        for (long left = bytes; left > 0; left -= chunk) {
            final ByteBuffer buffer = ByteBuffer.allocateDirect(chunk);
            for (int at = 0; at < chunk; at += 4_096) {
                buffer.put(at, (byte) 1);
            }
            chunks.add(buffer);
        }
        final long nanos = System.nanoTime() - start;
        chunks.forEach(BufferUtil::free);
        return nanos;
    }

    private static void deleteRecursively(final java.nio.file.Path root) {
        try (Stream<java.nio.file.Path> paths = Files.walk(root)) {
            for (final java.nio.file.Path path :
                    paths.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(path);
            }
        } catch (IOException e) {
            // A temporary directory left behind is harmless; failing the benchmark for it is not.
        }
    }
}
