package io.pscluster.local;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.server.FaultPoints;
import io.pscluster.server.Shard;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;

/**
 * The heap that pushes queued on a shard hold is bounded: past the shard's {@code maxQueuedPushBytes} a push is
 * refused for a while (the SDK sends it again after a backoff), not queued, and every push is applied once when the
 * writers catch up.
 */
@ExtendWith(FaultsAllowed.class)
class QueuedPushBytesTest {
    private static final int DIM = 64;
    private static final int KEYS = 4_000;
    /** What a queued push of {@link #KEYS} keys holds as the shard counts it: key, slot, place and row per key. */
    private static final long PUSH_BYTES = KEYS * (8L + 4 + 4 + 4L * DIM);

    @TempDir
    Path checkpoints;

    @Test
    void shouldRefusePushesPastTheQueuedBytesWhileTheWritersLagAndApplyEachOnceWhenTheyCatchUp() throws Exception {
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(1)
                        .maxQueuedPushBytes(2 * PUSH_BYTES + PUSH_BYTES / 2)
                        .checkpointRoot(checkpoints.toUri().toString())
                        .start();
                PsClient client = PsClient.connect(cluster.proxyAddress())) {
            final PsTable table = client.createTable(TableSchema.newBuilder()
                    .setName("queued")
                    .setKind(TableKind.SPARSE)
                    .setDim(DIM)
                    .setOptimizer(OptimizerSpec.newBuilder()
                            .setKind(OptimizerKind.SGD)
                            .setLearningRate(1f))
                    .build());
            final long[] keys = new long[KEYS];
            for (int i = 0; i < KEYS; i++) {
                keys[i] = 1_000_003L * i;
            }
            final float[] minusOne = new float[KEYS * DIM];
            Arrays.fill(minusOne, -1f);
            final Shard shard = cluster.shard(0).shard();
            final List<CompletableFuture<Void>> pushes = new ArrayList<>();
            AdminCalls.injectFault(cluster, FaultPoints.HOLD_WRITERS, true, 0);
            try {
                final long requestsBefore = shard.requestCount();
                // Six pushes of about 1 MiB each (one request each), where the shard queues two.
                for (int i = 0; i < 6; i++) {
                    pushes.add(table.pushAsync(keys, minusOne));
                }
                // Every push reached the shard and some came back after a refusal: the queue kept two.
                await().atMost(Duration.ofSeconds(30))
                        .until(() -> shard.requestCount() - requestsBefore >= 10
                                && pushes.stream()
                                                .filter(CompletableFuture::isDone)
                                                .count()
                                        == 2);
                assertThat(shard.applyQueueBytes()).isEqualTo(2 * PUSH_BYTES);
                assertThat(pushes.stream().filter(CompletableFuture::isDone).count())
                        .as("pushes acknowledged while the writers are held")
                        .isEqualTo(2);
            } finally {
                AdminCalls.injectFault(cluster, FaultPoints.HOLD_WRITERS, false, 0);
            }
            for (final CompletableFuture<Void> push : pushes) {
                push.get(60, TimeUnit.SECONDS);
            }
            shard.awaitQuiescent();
            assertThat(shard.applyQueueBytes())
                    .as("every part gave its bytes back")
                    .isZero();
            // Each of the six applied once: SGD with lr 1 from zeros, six gradients of -1.
            assertThat(table.pull(keys)).containsOnly(6f);
        }
    }
}
