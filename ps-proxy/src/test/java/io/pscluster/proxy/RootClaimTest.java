package io.pscluster.proxy;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.grpc.Status;
import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.proto.v1.ProxyStateRecord;
import io.pscluster.wire.PsException;
import io.pscluster.wire.Slots;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A proxy's claim on its checkpoint root ({@link RootClaim}), with real proxies on a real (local) filesystem: two
 * clusters' proxies never both run on one root, whatever the order they start in; a killed proxy's claim does not
 * keep the next one out.
 */
class RootClaimTest {
    private static final long RENEW_MS = 100;

    @TempDir
    Path dir;

    private final List<AutoCloseable> closeables = new ArrayList<>();

    @AfterEach
    void tearDown() throws Exception {
        for (int i = closeables.size() - 1; i >= 0; i--) {
            closeables.get(i).close();
        }
    }

    private ProxyServer.Context context(final Path root, final String stateDir) {
        return new ProxyServer.Context()
                .port(0)
                .checkpointRoot(root.toUri().toString())
                .stateDir(stateDir)
                .rootClaimRenewMs(RENEW_MS);
    }

    private ProxyServer start(final ProxyServer.Context context) throws IOException {
        final ProxyServer proxy = ProxyServer.start(context);
        closeables.add(proxy::close);
        return proxy;
    }

    /**
     * The proxy instances claiming {@code root} (a renewal briefly shows one instance under two names), and the names
     * under it with the prefix that are no claim's.
     */
    private static List<String> claims(final Path root) throws IOException {
        return new CheckpointStore(root.toUri(), new Configuration())
                .proxyClaimNames().stream()
                        .map(name -> RootClaim.Claim.parse(name)
                                .map(RootClaim.Claim::instance)
                                .orElse(name))
                        .distinct()
                        .toList();
    }

    /**
     * Renews the running claim of run {@code run} (text {@code text}) every {@link #RENEW_MS} as a proxy elsewhere
     * would (the next name, then the one two back deleted), counting renewals into {@code count}.
     */
    private static ScheduledExecutorService renewElsewhere(
            final CheckpointStore store, final String run, final String text, final AtomicLong count) {
        final ScheduledExecutorService renewals = Executors.newSingleThreadScheduledExecutor();
        renewals.scheduleWithFixedDelay(
                () -> {
                    final long n = count.incrementAndGet();
                    try {
                        store.createProxyClaim(CheckpointStore.PROXY_CLAIM_PREFIX + run + ".r" + n, text);
                        if (n > 2) {
                            store.deleteProxyClaim(CheckpointStore.PROXY_CLAIM_PREFIX + run + ".r" + (n - 2));
                        }
                    } catch (IOException e) {
                        throw new java.io.UncheckedIOException(e);
                    }
                },
                0,
                RENEW_MS,
                TimeUnit.MILLISECONDS);
        return renewals;
    }

    private static void assertRefusedAsInUse(final Throwable refused, final Path root) {
        assertThat(refused).isInstanceOf(PsException.class);
        assertThat(((PsException) refused).code()).isEqualTo(Status.Code.FAILED_PRECONDITION);
        assertThat(refused.getMessage())
                .contains("checkpoint root " + root.toUri().toString().replaceAll("/$", ""))
                .contains("is in use by")
                .contains("Give this proxy a --checkpoint-dir of its own");
    }

    /**
     * A second cluster's proxy (its own state) started on a root a running proxy uses refuses to start, naming the
     * running one and leaving no claim; a proxy that stops deletes its claim; a claim nobody renews (a proxy killed
     * without cleaning up) is deleted and the start goes on.
     */
    @Test
    void shouldRefuseToStartOnARootARunningProxyOfAnotherStateClaims() throws Exception {
        final Path root = dir.resolve("root");
        final ProxyServer running = start(context(root, dir.resolve("a").toString()));
        assertThat(claims(root)).hasSize(1);

        final Throwable refused = org.assertj.core.api.Assertions.catchThrowable(
                () -> start(context(root, dir.resolve("b").toString())));
        assertRefusedAsInUse(refused, root);
        assertThat(refused.getMessage())
                .contains("a running proxy")
                .contains("proxy process " + ProcessHandle.current().pid() + ", port " + running.port());
        assertThat(claims(root)).as("the refused proxy leaves no claim").hasSize(1);

        running.close();
        assertThat(claims(root)).as("a stopped proxy's claim is gone").isEmpty();

        final String killedInstance = "a-killed-proxy@0123456789abcdef";
        final String killed = CheckpointStore.PROXY_CLAIM_PREFIX + killedInstance + ".r7";
        final CheckpointStore store = new CheckpointStore(root.toUri(), new Configuration());
        store.createProxyClaim(killed, "host nowhere\nproxy\n");
        // A killed run leaves two names.
        store.createProxyClaim(killed.replace(".r7", ".r6"), "host nowhere\nproxy\n");
        start(context(root, dir.resolve("b").toString()));
        assertThat(claims(root))
                .as("the unrenewed claim is deleted, the new proxy's written")
                .doesNotContain(killedInstance)
                .hasSize(1);
    }

    /**
     * Two proxies of different states started at the same moment on one root, with and without a killed proxy's claim
     * there: exactly one of them runs, and the other is refused.
     */
    @Test
    void shouldLetExactlyOneOfTwoProxiesStartingTogetherRun() throws Exception {
        final ExecutorService starters = Executors.newFixedThreadPool(2);
        try {
            for (int round = 0; round < 4; round++) {
                final Path root = dir.resolve("together-" + round);
                if (round % 2 == 1) {
                    Files.createDirectories(root);
                    new CheckpointStore(root.toUri(), new Configuration())
                            .createProxyClaim(
                                    CheckpointStore.PROXY_CLAIM_PREFIX + "killed@fedcba9876543210.r3",
                                    "host nowhere\nproxy\n");
                }
                final List<CompletableFuture<ProxyServer>> starts = new ArrayList<>();
                for (final String state : new String[] {"x", "y"}) {
                    final ProxyServer.Context context =
                            context(root, dir.resolve(state + round).toString());
                    starts.add(CompletableFuture.supplyAsync(
                            () -> {
                                try {
                                    return ProxyServer.start(context);
                                } catch (IOException e) {
                                    throw new java.io.UncheckedIOException(e);
                                }
                            },
                            starters));
                }
                int started = 0;
                for (final CompletableFuture<ProxyServer> start : starts) {
                    try {
                        final ProxyServer proxy = start.get(60, TimeUnit.SECONDS);
                        closeables.add(proxy::close);
                        started++;
                    } catch (java.util.concurrent.ExecutionException e) {
                        assertRefusedAsInUse(e.getCause(), root);
                    }
                }
                assertThat(started)
                        .as("proxies running on one root, round %d", round)
                        .isEqualTo(1);
                assertThat(claims(root)).as("round %d", round).hasSize(1);
            }
        } finally {
            starters.shutdownNow();
        }
    }

    /**
     * A copy of a proxy's state running on another machine (its claim renewed there, under the same state id) keeps a
     * proxy of that state here from starting; a claim of the same state written here before is of an earlier run of
     * this proxy and does not.
     */
    @Test
    void shouldRefuseWhenACopyOfItsStateRunsOnAnotherHost() throws Exception {
        final Path root = dir.resolve("copied");
        Files.createDirectories(root);
        final ProxyStateRecord.Builder record =
                ProxyStateRecord.newBuilder().setEpoch(1).setStateId("copied-state");
        for (int i = 0; i < Slots.SLOT_COUNT; i++) {
            record.addSlotOwner("").addSlotGeneration(0);
        }
        final MemoryStateStore state = new MemoryStateStore();
        state.save(record.build());
        final CheckpointStore store = new CheckpointStore(root.toUri(), new Configuration());
        final AtomicLong count = new AtomicLong();
        final ScheduledExecutorService elsewhere = renewElsewhere(
                store, "copied-state@00000000000000aa", "host another-machine\nproxy process 1, port 7070\n", count);
        try {
            // The copy runs (has renewed its claim) before this proxy starts.
            org.awaitility.Awaitility.await()
                    .atMost(java.time.Duration.ofSeconds(10))
                    .until(() -> count.get() >= 2);
            final Throwable refused = org.assertj.core.api.Assertions.catchThrowable(
                    () -> start(context(root, "").stateStore(state)));
            assertRefusedAsInUse(refused, root);
            assertThat(refused.getMessage()).contains("host another-machine");
        } finally {
            elsewhere.shutdownNow();
            elsewhere.awaitTermination(10, TimeUnit.SECONDS);
        }
        for (final String name : store.proxyClaimNames()) {
            store.deleteProxyClaim(name);
        }

        final String earlierRun = CheckpointStore.PROXY_CLAIM_PREFIX + "copied-state@00000000000000bb.r9";
        final String here = "host " + java.net.InetAddress.getLocalHost().getHostName() + "\nproxy\n";
        store.createProxyClaim(earlierRun, here);
        // A killed run leaves two names.
        store.createProxyClaim(earlierRun.replace(".r9", ".r8"), here);
        final long began = System.nanoTime();
        start(context(root, "").stateStore(state));
        assertThat(claims(root)).doesNotContain("copied-state@00000000000000bb").hasSize(1);
        assertThat(TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - began))
                .as("no wait for an earlier run's claim")
                .isLessThan(2 * RENEW_MS + RootClaim.START_SLACK_MS);
    }

    /**
     * A proxy that has decided to run (past its wait, not yet serving) keeps a later starter out whatever their run
     * ids: its claim says it runs from that moment.
     */
    @Test
    void shouldKeepALaterStarterOutOnceItDecidedToRunEvenBeforeItServes() throws Exception {
        final Path root = dir.resolve("decided");
        Files.createDirectories(root);
        final CheckpointStore store = new CheckpointStore(root.toUri(), new Configuration());
        final RootClaim first = RootClaim.take(store, "zz-state", "h", "first", RENEW_MS);
        try {
            final Throwable refused = org.assertj.core.api.Assertions.catchThrowable(() ->
                    RootClaim.take(store, "aa-state", "h", "second", RENEW_MS).release());
            assertRefusedAsInUse(refused, root);
            assertThat(refused.getMessage()).contains("a running proxy").contains("first");
        } finally {
            first.release();
        }
        assertThat(claims(root)).isEmpty();
    }

    /**
     * A running proxy whose claim another deleted (it took this one for stopped while it was paused or cut off) has
     * lost the root for good.
     */
    @Test
    void shouldKnowItLostTheRootOnceAnotherProxyDeletedItsClaim() throws Exception {
        final Path root = dir.resolve("taken");
        Files.createDirectories(root);
        final CheckpointStore store = new CheckpointStore(root.toUri(), new Configuration());
        // A renewal a second away: the deletion below does not race one.
        final RootClaim claim = RootClaim.take(store, "paused-state", "h", "paused", 1_000);
        try {
            assertThat(claim.trouble()).isEmpty();
            for (final String name : store.proxyClaimNames()) {
                store.deleteProxyClaim(name);
            }
            org.awaitility.Awaitility.await()
                    .atMost(java.time.Duration.ofSeconds(10))
                    .until(() -> claim.trouble().contains("another proxy deleted this proxy's claim"));
            // It renews on, so the other sees it.
            org.awaitility.Awaitility.await()
                    .atMost(java.time.Duration.ofSeconds(10))
                    .until(() -> claims(root).size() == 1);
        } finally {
            claim.release();
        }
    }

    /**
     * Two running proxies on one root (one started while the other was paused past a start's wait): each sees the
     * other's claim renewed and refuses checkpoints, saying why, until one stops.
     */
    @Test
    void shouldRefuseCheckpointsWhileAnotherRunningProxyRenewsItsClaim() throws Exception {
        final Path root = dir.resolve("shared");
        final ProxyServer proxy = start(context(root, dir.resolve("t").toString()));
        final CheckpointStore store = new CheckpointStore(root.toUri(), new Configuration());
        final io.grpc.ManagedChannel channel = io.grpc.ManagedChannelBuilder.forAddress("localhost", proxy.port())
                .usePlaintext()
                .build();
        closeables.add(channel::shutdownNow);
        final var admin = io.pscluster.proto.v1.AdminServiceGrpc.newBlockingStub(channel);
        final ScheduledExecutorService other = renewElsewhere(
                store,
                "other-state@00000000000000cc",
                "host elsewhere\nproxy process 2, port 7070\n",
                new AtomicLong());
        try {
            org.awaitility.Awaitility.await()
                    .atMost(java.time.Duration.ofSeconds(10))
                    .untilAsserted(() -> assertThatThrownBy(() -> admin.checkpointNow(
                                    io.pscluster.proto.v1.CheckpointNowRequest.getDefaultInstance()))
                            .isInstanceOfSatisfying(io.grpc.StatusRuntimeException.class, e -> {
                                assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.FAILED_PRECONDITION);
                                assertThat(e.getStatus().getDescription())
                                        .contains("no checkpoint: another running proxy (other-state@")
                                        .contains("host elsewhere");
                            }));
        } finally {
            other.shutdownNow();
            other.awaitTermination(10, TimeUnit.SECONDS);
        }
        assertThat(store.list()).as("no checkpoint taken").isEmpty();
    }

    /** Files under the root with the claim prefix whose names are no claim's are named in a WARN and left alone. */
    @Test
    void shouldIgnoreFilesWithThePrefixThatAreNoClaims() throws Exception {
        final Path root = dir.resolve("odd");
        Files.createDirectories(root);
        Files.writeString(root.resolve("_PROXY-"), "x");
        Files.writeString(root.resolve("_PROXY-old copy"), "x");
        Files.createDirectories(root.resolve("_PROXY-a-directory"));
        start(context(root, dir.resolve("s").toString()));
        assertThat(claims(root)).contains("_PROXY-", "_PROXY-old copy").hasSize(3);
    }

    /**
     * A renewal's failure counts as the NameNode's safe mode as the client receives it: a {@code SafeModeException}
     * from the NameNode, or (an HA NameNode in its startup safe mode) a {@code RetriableException} naming it, alone
     * or as the cause of another; nothing else does. (A NameNode in safe mode, end to end: SafeModeCheckpointTest.)
     */
    @Test
    void shouldTellTheNameNodesSafeModeFromOtherFailures() {
        final String safeMode = "org.apache.hadoop.hdfs.server.namenode.SafeModeException: Cannot create file"
                + " /ckpt/_PROXY.tmp-1. Name node is in safe mode.";
        assertThat(RootClaim.isSafeMode(new org.apache.hadoop.ipc.RemoteException(
                        "org.apache.hadoop.hdfs.server.namenode.SafeModeException", "Name node is in safe mode.")))
                .isTrue();
        assertThat(RootClaim.isSafeMode(new org.apache.hadoop.ipc.RemoteException(
                        "org.apache.hadoop.ipc.RetriableException", safeMode)))
                .isTrue();
        assertThat(RootClaim.isSafeMode(
                        new IOException("renewal failed", new org.apache.hadoop.ipc.RetriableException(safeMode))))
                .isTrue();
        assertThat(RootClaim.isSafeMode(new org.apache.hadoop.ipc.RemoteException(
                        "org.apache.hadoop.ipc.RetriableException",
                        "org.apache.hadoop.hdfs.server.namenode.LeaseExpiredException: no lease")))
                .isFalse();
        assertThat(RootClaim.isSafeMode(new org.apache.hadoop.ipc.RemoteException(
                        "org.apache.hadoop.security.AccessControlException", "Permission denied: safe mode? no")))
                .isFalse();
        assertThat(RootClaim.isSafeMode(new java.net.ConnectException("Connection refused")))
                .isFalse();
    }
}
