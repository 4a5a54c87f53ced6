package io.pscluster.local;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.proto.v1.JobSpec;
import io.pscluster.proto.v1.RollbackEvent;
import io.pscluster.proto.v1.UpdateMode;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A shard stopped gracefully while it holds a SYNC clock's gradients that no worker has ended yet: those gradients
 * are in no checkpoint, so the hand-over is reported as a rollback naming them, never as lossless.
 */
class SyncDrainTest {
    @TempDir
    Path checkpoints;

    @Test
    void aDrainWithASyncClockNotEndedIsReportedAsARollback() throws Exception {
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(2)
                        .checkpointRoot(checkpoints.toUri().toString())
                        .start();
                PsClient worker = PsClient.connect(new PsClient.Context()
                        .proxyAddress(cluster.proxyAddress())
                        .job(JobSpec.newBuilder()
                                .setJobId("drained")
                                .setMode(UpdateMode.SYNC)
                                .setExpectedWorkers(1)
                                .build()))) {
            final PsTable table = worker.createTable(CounterTable.schema("drained_w"));
            final long[] keys = new long[256];
            for (int i = 0; i < keys.length; i++) {
                keys[i] = i * 131L;
            }
            final float[] minusOnes = new float[keys.length];
            Arrays.fill(minusOnes, -1f);
            table.push(keys, minusOnes);
            // The worker never ends clock 0: shard 0's part of it cannot be applied before the shard stops.
            cluster.stopShard(0);
            final List<RollbackEvent> events =
                    AdminCalls.status(cluster.proxyAddress()).getRollbacksList();
            assertThat(events).isNotEmpty();
            final RollbackEvent handOver = events.get(events.size() - 1);
            assertThat(handOver.getLossless()).as("hand-over: %s", handOver).isFalse();
            assertThat(handOver.getReason())
                    .contains("drained with sync gradients not applied")
                    .contains("job 'drained'");
        }
    }
}
