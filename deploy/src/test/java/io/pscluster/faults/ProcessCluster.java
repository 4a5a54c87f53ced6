package io.pscluster.faults;

import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.pscluster.proto.v1.AdminServiceGrpc;
import io.pscluster.proto.v1.InjectFaultRequest;
import io.pscluster.proto.v1.ListShardsRequest;
import io.pscluster.proto.v1.ListShardsResponse;
import io.pscluster.proto.v1.ShardAdminServiceGrpc;
import io.pscluster.proto.v1.ShardStatus;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A proxy, shards and jobs as separate JVM processes ({@code psctl} on the test classpath), for the tests that are
 * about a process dying: {@link #kill9} sends SIGKILL, {@link #terminate} SIGTERM. Each process writes its output to
 * its own log file; {@link #logs()} returns the tail of each, for failure messages. The proxy listens on a port
 * fixed at construction, so that a restarted proxy is found where the shards and jobs expect it.
 */
final class ProcessCluster implements AutoCloseable {
    private static final Pattern SHARD_LINE = Pattern.compile("shard (\\S+) serving at (\\S+)");

    private final Path dir;
    private final int proxyPort;
    private final long leaseMs;
    private final long leaseMarginMs;
    private final long heartbeatMs;
    private final Map<String, Process> processes = new LinkedHashMap<>();
    private final Map<String, Path> logFiles = new LinkedHashMap<>();
    private final Map<String, String> shardIds = new LinkedHashMap<>();
    private final Map<String, String> shardAddresses = new LinkedHashMap<>();
    private final List<ManagedChannel> channels = new ArrayList<>();
    private ManagedChannel proxyChannel;
    private String checkpointRoot;

    ProcessCluster(final Path dir, final long leaseMs, final long leaseMarginMs, final long heartbeatMs)
            throws IOException {
        this.dir = dir;
        this.leaseMs = leaseMs;
        this.leaseMarginMs = leaseMarginMs;
        this.heartbeatMs = heartbeatMs;
        try (ServerSocket socket = new ServerSocket(0)) {
            this.proxyPort = socket.getLocalPort();
        }
        Files.createDirectories(dir.resolve("logs"));
        this.checkpointRoot = dir.resolve("checkpoints").toUri().toString();
    }

    String proxyAddress() {
        return "127.0.0.1:" + proxyPort;
    }

    String checkpointRoot() {
        return checkpointRoot;
    }

    /** The proxy started next checkpoints under {@code uri} (e.g. an {@code hdfs://} one) instead of the local dir. */
    void checkpointRoot(final String uri) {
        this.checkpointRoot = uri;
    }

    long leaseMs() {
        return leaseMs;
    }

    long leaseMarginMs() {
        return leaseMarginMs;
    }

    /** Starts (or restarts, under the same name) the proxy process and waits until it listens. */
    void startProxy(final String... extra) throws IOException, InterruptedException, TimeoutException {
        final List<String> args = new ArrayList<>(List.of(
                "proxy",
                "--port",
                Integer.toString(proxyPort),
                "--checkpoint-dir",
                checkpointRoot(),
                "--state-dir",
                dir.resolve("proxy-state").toString(),
                "--lease-ms",
                Long.toString(leaseMs),
                "--lease-margin-ms",
                Long.toString(leaseMarginMs),
                "--heartbeat-ms",
                Long.toString(heartbeatMs)));
        args.addAll(List.of(extra));
        launch("proxy", args);
        awaitLine("proxy", Pattern.compile("proxy listening on port"), 60_000);
        if (proxyChannel == null) {
            proxyChannel = channel(proxyAddress());
        }
    }

    /** Starts a shard process named {@code name} (no --id: the proxy assigns one); returns the id it got. */
    String startShard(final String name, final String... extra)
            throws IOException, InterruptedException, TimeoutException {
        final List<String> args = new ArrayList<>(List.of("shard", "--proxy", proxyAddress(), "--port", "0"));
        args.addAll(List.of(extra));
        launch(name, args);
        final Matcher serving = awaitLine(name, SHARD_LINE, 60_000);
        shardIds.put(name, serving.group(1));
        shardAddresses.put(name, serving.group(2));
        return serving.group(1);
    }

    /** Deletes the proxy's state directory (the proxy must be stopped): a proxy that lost its disk. */
    void deleteProxyState() throws IOException {
        final Path state = dir.resolve("proxy-state");
        if (Files.exists(state)) {
            try (var files = Files.walk(state)) {
                for (final Path path :
                        files.sorted(java.util.Comparator.reverseOrder()).toList()) {
                    Files.delete(path);
                }
            }
        }
    }

    /** Starts {@code psctl <args>} as a job process; see {@link #awaitExit}. */
    void startJob(final String name, final String... args) throws IOException {
        launch(name, List.of(args));
    }

    String shardId(final String name) {
        return shardIds.get(name);
    }

    String shardAddress(final String name) {
        return shardAddresses.get(name);
    }

    /** SIGKILL: the process gets no chance to deregister, flush or hand anything over. */
    void kill9(final String name) throws InterruptedException {
        final Process process = processes.get(name);
        process.destroyForcibly();
        process.waitFor(30, TimeUnit.SECONDS);
    }

    /**
     * SIGSTOP ({@code resume} sends SIGCONT): the process stops as in a long collection or a frozen VM; its sockets stay
     * open, so what peers send waits in them.
     */
    void pause(final String name) throws IOException, InterruptedException {
        signal(name, "-STOP");
    }

    void resume(final String name) throws IOException, InterruptedException {
        signal(name, "-CONT");
    }

    private void signal(final String name, final String signal) throws IOException, InterruptedException {
        final Process kill = new ProcessBuilder(
                        "kill", signal, Long.toString(processes.get(name).pid()))
                .inheritIO()
                .start();
        if (!kill.waitFor(30, TimeUnit.SECONDS) || kill.exitValue() != 0) {
            throw new IllegalStateException("kill " + signal + " of " + name + " failed");
        }
    }

    /** SIGTERM: the process runs its shutdown hook (a shard drains). Does not wait. */
    void terminate(final String name) {
        processes.get(name).destroy();
    }

    int awaitExit(final String name, final long timeoutMs) throws InterruptedException, TimeoutException {
        final Process process = processes.get(name);
        if (!process.waitFor(timeoutMs, TimeUnit.MILLISECONDS)) {
            throw new TimeoutException(name + " still running after " + timeoutMs + " ms\n" + logs());
        }
        return process.exitValue();
    }

    boolean isAlive(final String name) {
        return processes.get(name).isAlive();
    }

    String log(final String name) {
        try {
            return Files.readString(logFiles.get(name), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** Waits for a line of {@code name}'s output matching {@code pattern}; returns the match. */
    Matcher awaitLine(final String name, final Pattern pattern, final long timeoutMs)
            throws InterruptedException, TimeoutException {
        final long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMs);
        while (true) {
            final Matcher matcher = pattern.matcher(log(name));
            if (matcher.find()) {
                return matcher;
            }
            final Process process = processes.get(name);
            if (!process.isAlive()) {
                throw new IllegalStateException(
                        name + " exited with " + process.exitValue() + " before printing " + pattern + "\n" + logs());
            }
            if (System.nanoTime() > deadline) {
                throw new TimeoutException(name + " did not print " + pattern + " in " + timeoutMs + " ms\n" + logs());
            }
            TimeUnit.MILLISECONDS.sleep(50);
        }
    }

    ListShardsResponse status() {
        return AdminServiceGrpc.newBlockingStub(proxyChannel)
                .withDeadlineAfter(10, TimeUnit.SECONDS)
                .listShards(ListShardsRequest.getDefaultInstance());
    }

    /** True when every slot has a live owner and no shard is restoring. */
    boolean allSlotsServed() {
        final ListShardsResponse status = status();
        if (status.getUnownedSlots() > 0 || status.getPendingRestoresCount() > 0) {
            return false;
        }
        for (final ShardStatus shard : status.getShardsList()) {
            if (shard.getSlotsRestoring() > 0) {
                return false;
            }
        }
        return true;
    }

    void injectFault(final String shardName, final String point, final boolean enabled, final int times) {
        ShardAdminServiceGrpc.newBlockingStub(channel(shardAddresses.get(shardName)))
                .withDeadlineAfter(10, TimeUnit.SECONDS)
                .injectFault(InjectFaultRequest.newBuilder()
                        .setPoint(point)
                        .setEnabled(enabled)
                        .setTimes(times)
                        .build());
    }

    /** Arms ({@code enabled}) or disarms one of the proxy's fault points (a checkpoint commit's pause points). */
    void injectProxyFault(final String point, final boolean enabled) {
        AdminServiceGrpc.newBlockingStub(proxyChannel)
                .withDeadlineAfter(10, TimeUnit.SECONDS)
                .injectFault(InjectFaultRequest.newBuilder()
                        .setPoint(point)
                        .setEnabled(enabled)
                        .build());
    }

    /** The last 60 lines of every process's log. */
    String logs() {
        final StringBuilder text = new StringBuilder();
        for (final String name : logFiles.keySet()) {
            final String[] lines = log(name).split("\n");
            text.append("---- ")
                    .append(name)
                    .append(" (")
                    .append(logFiles.get(name))
                    .append(")\n");
            for (int i = Math.max(0, lines.length - 60); i < lines.length; i++) {
                text.append(lines[i]).append('\n');
            }
        }
        return text.toString();
    }

    /** Starts {@code main} (a class on the test classpath) with {@code args} as a process named {@code name}. */
    void startMain(final String name, final Class<?> main, final String... args) throws IOException {
        launch(name, main.getName(), List.of(args));
    }

    private void launch(final String name, final List<String> psctlArgs) throws IOException {
        launch(name, "io.pscluster.cli.Psctl", psctlArgs);
    }

    private void launch(final String name, final String mainClass, final List<String> psctlArgs) throws IOException {
        final Process old = processes.get(name);
        if (old != null && old.isAlive()) {
            throw new IllegalStateException(name + " is still running");
        }
        final Path log = dir.resolve("logs").resolve(name + ".log");
        if (old != null) {
            Files.move(
                    log,
                    dir.resolve("logs").resolve(name + "." + System.nanoTime() + ".log"),
                    java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        }
        final List<String> command = new ArrayList<>(List.of(
                Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-XX:MaxDirectMemorySize=1g",
                "--add-exports",
                "java.base/jdk.internal.misc=ALL-UNNAMED",
                "--add-modules",
                "jdk.incubator.vector",
                "-Dpscluster.faults=true",
                "-cp",
                System.getProperty("java.class.path"),
                mainClass));
        command.addAll(psctlArgs);
        final Process process = new ProcessBuilder(command)
                .redirectErrorStream(true)
                .redirectOutput(log.toFile())
                .start();
        processes.put(name, process);
        logFiles.put(name, log);
    }

    private ManagedChannel channel(final String address) {
        final ManagedChannel channel =
                ManagedChannelBuilder.forTarget(address).usePlaintext().build();
        channels.add(channel);
        return channel;
    }

    @Override
    public void close() throws InterruptedException {
        for (final Process process : processes.values()) {
            process.destroyForcibly();
        }
        for (final Process process : processes.values()) {
            process.waitFor(30, TimeUnit.SECONDS);
        }
        channels.forEach(ManagedChannel::shutdownNow);
    }
}
