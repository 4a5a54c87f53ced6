package io.pscluster.bench;

import io.grpc.ManagedChannel;
import io.grpc.StatusRuntimeException;
import io.pscluster.local.LocalCluster;
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
import java.io.PrintWriter;
import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Stream;

/**
 * Everything both sides of every workload run against, set up once per run: the cluster (a {@link LocalCluster} of
 * 1 shard with checkpoints in a temporary directory, or a running one reached through its proxy), an SDK client,
 * and the baseline's {@link RawGrpcServer} with its channel. Both servers live in this process when the cluster is
 * local, so both sides share the same machine, JVM and JIT state.
 */
final class BenchHarness implements AutoCloseable {
    private static final String TABLE_PREFIX = "psbench-";
    private static final float LEARNING_RATE = 0.01f;

    private final BenchSettings settings;
    private final PrintWriter progress;
    private final Path checkpointDir;
    private final LocalCluster cluster;
    private final PsClient client;
    private final RawGrpcServer rawServer;
    private final ManagedChannel rawChannel;

    private BenchHarness(
            final BenchSettings settings,
            final PrintWriter progress,
            final Path checkpointDir,
            final LocalCluster cluster,
            final PsClient client,
            final RawGrpcServer rawServer,
            final ManagedChannel rawChannel) {
        this.settings = settings;
        this.progress = progress;
        this.checkpointDir = checkpointDir;
        this.cluster = cluster;
        this.client = client;
        this.rawServer = rawServer;
        this.rawChannel = rawChannel;
    }

    /** Starts (or connects to) the cluster and the baseline server. */
    static BenchHarness start(final BenchSettings settings, final PrintWriter progress) throws Exception {
        Path checkpointDir = null;
        LocalCluster cluster = null;
        PsClient client = null;
        RawGrpcServer rawServer = null;
        try {
            final String proxyAddress;
            if (settings.localCluster()) {
                checkpointDir = Files.createTempDirectory("psbench-checkpoints-");
                cluster = LocalCluster.builder()
                        .shards(1)
                        .checkpointRoot(checkpointDir.toUri().toString())
                        // kv10m is one call; let the shard take it whole if the SDK sends it whole.
                        .maxKeysPerRequest(Math.max(4 << 20, settings.kvKeys()))
                        .start();
                proxyAddress = cluster.proxyAddress();
            } else {
                proxyAddress = settings.proxyAddress();
            }
            try {
                client = PsClient.connect(
                        new PsClient.Context().proxyAddress(proxyAddress).deadlineMs(settings.deadlineMs()));
            } catch (StatusRuntimeException e) {
                throw new IllegalStateException(
                        "cannot reach the proxy at " + proxyAddress + ": "
                                + e.getStatus().getCode() + " " + e.getStatus().getDescription(),
                        e);
            }
            rawServer = RawGrpcServer.start();
            return new BenchHarness(
                    settings,
                    progress,
                    checkpointDir,
                    cluster,
                    client,
                    rawServer,
                    RawGrpcTarget.channel(rawServer.address()));
        } catch (Exception | Error e) {
            closeQuietly(client, rawServer, cluster);
            deleteRecursively(checkpointDir);
            throw e;
        }
    }

    BenchSettings settings() {
        return settings;
    }

    /** host:port of the proxy the workloads' clients connect to (the local cluster's, or --proxy). */
    String proxyAddress() {
        return cluster != null ? cluster.proxyAddress() : settings.proxyAddress();
    }

    /** What "ours" and "baseline" are in this run, for the report's header. */
    String describe() {
        final String ours = cluster != null
                ? "PSCluster SDK -> proxy + 1 shard started in this JVM (LocalCluster, loopback)"
                : "PSCluster SDK -> the cluster behind proxy " + settings.proxyAddress()
                        + " (push times until acknowledged: the bench cannot wait for the apply backlog)";
        final double load = ManagementFactory.getOperatingSystemMXBean().getSystemLoadAverage();
        return String.format(
                        Locale.ROOT,
                        "machine:  %d cores, load average %.2f at start, Java %s, max heap %d MiB%n",
                        Runtime.getRuntime().availableProcessors(),
                        load,
                        Runtime.version(),
                        Runtime.getRuntime().maxMemory() >> 20)
                + "ours:     " + ours + System.lineSeparator()
                + "baseline: raw gRPC in this JVM (byte[] marshaller, no protobuf; channel and server built like the"
                + " SDK's and the shard's)";
    }

    /** Creates a fresh sparse SGD table for a workload (dropping one left by an earlier run). */
    PsTable createTable(final String workload, final int dim) {
        final String name = TABLE_PREFIX + workload;
        client.dropTable(name);
        return client.createTable(TableSchema.newBuilder()
                .setName(name)
                .setKind(TableKind.SPARSE)
                .setDim(dim)
                .setOptimizer(
                        OptimizerSpec.newBuilder().setKind(OptimizerKind.SGD).setLearningRate(LEARNING_RATE))
                .setInitializer(InitializerSpec.newBuilder().setKind(InitializerKind.ZEROS))
                .build());
    }

    void dropTable(final PsTable table) {
        client.dropTable(table.name());
    }

    SdkTarget ours(final PsTable table) {
        return new SdkTarget(table, this::awaitApplied);
    }

    RawGrpcTarget baseline(final int dim) {
        return new RawGrpcTarget(rawChannel, dim, settings.deadlineMs());
    }

    /** Whether {@link SdkTarget#awaitApplied()} really waits (the shards are in this process). */
    boolean seesApplyBacklog() {
        return cluster != null;
    }

    private void awaitApplied() throws Exception {
        if (cluster == null) {
            return;
        }
        for (int i = 0; i < cluster.shardCount(); i++) {
            final ShardServer shard = cluster.shard(i);
            if (shard != null) {
                shard.shard().awaitQuiescent();
            }
        }
    }

    /** One side's share of a timed workload: runs it for about {@code nanos}, recording only when measured. */
    @FunctionalInterface
    interface Phase {
        void run(long nanos, boolean measured) throws Exception;
    }

    /**
     * Warms up each side, then measures them in turn, slice by slice, starting with ours and then with the baseline
     * alternately (ABBA...), so that a change in the machine's state in between falls on both sides alike.
     */
    CpuTime alternate(final String label, final Phase ours, final Phase baseline) throws Exception {
        return alternate(label, 1, ours, baseline);
    }

    /**
     * {@link #alternate(String, Phase, Phase)} in {@code 1 / share} of the warm-up and measuring times. Returns the CPU
     * time this JVM used while each side was measured.
     */
    CpuTime alternate(final String label, final int share, final Phase ours, final Phase baseline) throws Exception {
        final long warmup = settings.warmupNanos() / share;
        progress("%s: warm-up %.1f s per side", label, warmup / 1e9);
        ours.run(warmup, false);
        baseline.run(warmup, false);
        final long slice = settings.measureNanos() / share / settings.slices();
        progress("%s: measuring %d x %.2f s per side", label, settings.slices(), slice / 1e9);
        final long[] cpu = new long[2];
        for (int i = 0; i < settings.slices(); i++) {
            final boolean oursFirst = i % 2 == 0;
            cpu[oursFirst ? 0 : 1] += measuredCpu((oursFirst ? ours : baseline), slice);
            cpu[oursFirst ? 1 : 0] += measuredCpu((oursFirst ? baseline : ours), slice);
        }
        return new CpuTime(cpu[0], cpu[1]);
    }

    /**
     * CPU time of this JVM (all its threads: with the embedded cluster, both sides' servers and clients) while each
     * side of a timed workload was measured. On a shared, noisy machine, the CPU a call costs moves less than the
     * wall-clock rate; it is only the work of the call when the cluster runs in this JVM ({@link #seesApplyBacklog}).
     */
    record CpuTime(long oursNanos, long baselineNanos) {}

    private static long measuredCpu(final Phase phase, final long slice) throws Exception {
        final long before = processCpuNanos();
        phase.run(slice, true);
        return processCpuNanos() - before;
    }

    private static long processCpuNanos() {
        return ((com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean())
                .getProcessCpuTime();
    }

    /**
     * The result "{@code cpu_us_per_<operation>}": this JVM's CPU per operation on each side, or none when the cluster
     * is not in this JVM (its shards' CPU would be missing from ours).
     */
    List<BenchResult> cpuPerOperation(
            final String workload,
            final String operation,
            final CpuTime cpu,
            final long oursOperations,
            final long baselineOperations) {
        if (!seesApplyBacklog() || oursOperations == 0 || baselineOperations == 0) {
            return List.of();
        }
        return List.of(BenchResult.time(
                workload,
                "cpu_us_per_" + operation,
                cpu.oursNanos() / 1e3 / oursOperations,
                cpu.baselineNanos() / 1e3 / baselineOperations,
                "us of CPU per " + operation + ", every thread of this JVM (the embedded cluster's shard and proxy,"
                        + " the raw server and both clients)"));
    }

    void progress(final String format, final Object... args) {
        progress.println("psbench: " + String.format(Locale.ROOT, format, args));
        progress.flush();
    }

    static ThreadFactory daemonThreads(final String name) {
        final AtomicInteger next = new AtomicInteger();
        return runnable -> {
            final Thread thread = new Thread(runnable, name + "-" + next.getAndIncrement());
            thread.setDaemon(true);
            return thread;
        };
    }

    @Override
    public void close() throws Exception {
        rawChannel.shutdownNow();
        rawChannel.awaitTermination(5, TimeUnit.SECONDS);
        closeQuietly(client, rawServer, cluster);
        deleteRecursively(checkpointDir);
    }

    private static void closeQuietly(final AutoCloseable... closeables) throws InterruptedException {
        for (final AutoCloseable closeable : closeables) {
            if (closeable == null) {
                continue;
            }
            try {
                closeable.close();
            } catch (InterruptedException e) {
                throw e;
            } catch (Exception e) {
                // Closing one part must not leave the others running; the run's own outcome is what matters.
            }
        }
    }

    private static void deleteRecursively(final Path root) {
        if (root == null || !Files.exists(root)) {
            return;
        }
        try (Stream<Path> paths = Files.walk(root)) {
            for (final Path path : paths.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(path);
            }
        } catch (IOException e) {
            // A temporary directory left behind is harmless; failing the benchmark for it is not.
        }
    }
}
