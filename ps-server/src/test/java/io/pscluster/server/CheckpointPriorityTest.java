package io.pscluster.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import java.io.IOException;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.Stream;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A checkpoint's rows are encoded and written by threads of lower CPU priority than those that serve (Linux
 * niceness, read back from {@code /proc}); the cut itself is taken on the caller's thread; a caller interrupted while
 * the rows stream stops the streaming before it returns.
 */
class CheckpointPriorityTest {
    private static final int ROWS = 20_000;
    private static final int DIM = 16;

    @TempDir
    Path directory;

    @BeforeAll
    static void onLinux() {
        assumeTrue(Files.isSymbolicLink(Path.of("/proc/thread-self")), "needs Linux's /proc/thread-self");
    }

    /** Checkpoint threads of shards closed earlier in this JVM end before a test reads the threads' priorities. */
    @BeforeEach
    void noCheckpointThreadLeft() throws Exception {
        final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (!nicenessOf("ps-checkpoint").isEmpty()
                || !nicenessOf("ps-checkpoint-o").isEmpty()) {
            assertThat(System.nanoTime())
                    .as("checkpoint threads of closed shards ended")
                    .isLessThan(deadline);
            Thread.sleep(10);
        }
    }

    @Test
    void shouldWriteCheckpointsFromLowerPriorityThreadsAndServeFromNormalOnes() throws Exception {
        try (Shard shard = shardWithRows()) {
            shard.writeCheckpoint(directory.toUri(), 1);

            assertThat(nicenessOf("ps-checkpoint")).as("the streaming thread").containsExactly(10);
            assertThat(nicenessOf("ps-checkpoint-o")).as("the output thread").containsExactly(10);
            assertThat(nicenessOf("ps-clock"))
                    .as("the clock threads")
                    .isNotEmpty()
                    .containsOnly(0);
            assertThat(nicenessOf("ps-clock-apply"))
                    .as("the clock apply thread")
                    .isNotEmpty()
                    .containsOnly(0);
            assertThat(nicenessOf("ps-writer-p0"))
                    .as("a partition writer")
                    .isNotEmpty()
                    .containsOnly(0);
            assertThat(ownNiceness()).as("the caller's thread").isZero();
        }
    }

    @Test
    void shouldLeaveTheCheckpointThreadsAtNormalPriorityWhenAskedTo() throws Exception {
        try (Shard shard = shardWithRows()) {
            shard.checkpointNiceness(0);
            shard.writeCheckpoint(directory.toUri(), 1);

            assertThat(nicenessOf("ps-checkpoint")).containsExactly(0);
        }
    }

    @Test
    void shouldRefuseANicenessLinuxDoesNotHave() throws Exception {
        try (Shard shard = new Shard("nice", 1 << 16, 2, 1 << 10, new Configuration())) {
            assertThatThrownBy(() -> shard.checkpointNiceness(20))
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("0 (normal priority) to 19; got 20");
            assertThatThrownBy(() -> shard.checkpointNiceness(-1)).isInstanceOf(IllegalArgumentException.class);
        }
        assertThatThrownBy(() -> new ShardServer.Context()
                        .proxyAddress("127.0.0.1:1")
                        .checkpointNiceness(25)
                        .validate())
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("got 25");
    }

    @Test
    void shouldStopStreamingBeforeAnInterruptedCallerReturnsAndCheckpointAgainAfter() throws Exception {
        try (Shard shard = shardWithRows()) {
            shard.slowCheckpoints(TimeUnit.MILLISECONDS.toNanos(200));
            final URI root = directory.toUri();
            final AtomicReference<Thread> caller = new AtomicReference<>();
            final CompletableFuture<Void> interrupted = CompletableFuture.runAsync(() -> {
                caller.set(Thread.currentThread());
                try {
                    shard.writeCheckpoint(root, 1);
                    throw new AssertionError("the checkpoint was not interrupted");
                } catch (InterruptedException expected) {
                    // The streaming must be over by now.
                    if (streamingThreadIsInStreamRows()) {
                        throw new AssertionError("writeCheckpoint returned while its rows were still streaming");
                    }
                } catch (IOException e) {
                    throw new AssertionError(e);
                }
            });
            final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (!streamingThreadIsInStreamRows()) {
                assertThat(System.nanoTime()).as("streaming started").isLessThan(deadline);
                assertThat(interrupted).isNotDone();
                Thread.sleep(5);
            }
            caller.get().interrupt();
            try {
                interrupted.get(30, TimeUnit.SECONDS);
            } catch (ExecutionException e) {
                throw new AssertionError(e.getCause());
            }

            shard.slowCheckpoints(0);
            assertThat(shard.writeCheckpoint(root, 2).files()).isNotEmpty();
        }
    }

    private Shard shardWithRows() throws Exception {
        final Shard shard = new Shard("nice", 1 << 16, 2, 1 << 10, new Configuration());
        TestRouting.serve(shard, TestRouting.allSlotsTo("nice", 1));
        shard.createTable(TableSchema.newBuilder()
                .setName("rows")
                .setKind(TableKind.SPARSE)
                .setDim(DIM)
                .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(0.1f))
                .build());
        final long[] keys = new long[ROWS];
        for (int i = 0; i < ROWS; i++) {
            keys[i] = i * 7919L;
        }
        final float[] gradients = new float[ROWS * DIM];
        Arrays.fill(gradients, 1f);
        shard.table("rows").push(keys, gradients);
        return shard;
    }

    private static boolean streamingThreadIsInStreamRows() {
        return Thread.getAllStackTraces().entrySet().stream()
                .filter(e -> e.getKey().getName().equals("ps-checkpoint"))
                .flatMap(e -> Arrays.stream(e.getValue()))
                .anyMatch(frame -> frame.getMethodName().equals("streamRows"));
    }

    /** The niceness of each thread of this JVM whose kernel name is {@code comm} (15 characters at most). */
    private static List<Integer> nicenessOf(final String comm) throws IOException {
        final List<Integer> found = new ArrayList<>();
        try (Stream<Path> tasks = Files.list(Path.of("/proc/self/task"))) {
            for (final Path task : (Iterable<Path>) tasks::iterator) {
                try {
                    if (Files.readString(task.resolve("comm"), StandardCharsets.UTF_8)
                            .strip()
                            .equals(comm)) {
                        found.add(niceness(task));
                    }
                } catch (java.nio.file.NoSuchFileException gone) {
                    // A thread that ended meanwhile.
                }
            }
        }
        return found;
    }

    private static int ownNiceness() throws IOException {
        return niceness(Path.of("/proc/thread-self"));
    }

    /** Field 19 of {@code stat}: the fields after the name (which may hold spaces) start with field 3. */
    private static int niceness(final Path task) throws IOException {
        final String stat = Files.readString(task.resolve("stat"), StandardCharsets.UTF_8);
        final String[] fields = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
        return Integer.parseInt(fields[19 - 3]);
    }
}
