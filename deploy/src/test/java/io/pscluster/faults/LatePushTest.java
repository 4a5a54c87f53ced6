package io.pscluster.faults;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;
import static org.awaitility.Awaitility.await;

import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.pscluster.local.AdminCalls;
import io.pscluster.local.CounterTable;
import io.pscluster.local.LocalCluster;
import io.pscluster.server.FaultPoints;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.nio.file.Path;
import java.time.Duration;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A push that reaches the shard but is not taken before its call's deadline (a stalled handler; here a fault point
 * holds it): the SDK's final failure says the outcome is unknown, and the shard, taking it after the call ended, applies
 * nothing of it, so that it never changes the table after its caller heard it failed.
 */
class LatePushTest {
    private static final long[] KEY = {42};

    @TempDir
    Path dir;

    @BeforeAll
    static void allowFaults() {
        System.setProperty("pscluster.faults", "true");
    }

    @AfterAll
    static void disallowFaults() {
        System.clearProperty("pscluster.faults");
    }

    @Test
    void shouldSayTheOutcomeIsUnknownAndNeverApplyAPushTakenAfterItsCallEnded() throws Exception {
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(1)
                        .checkpointRoot(dir.toUri().toString())
                        .start();
                PsClient client = PsClient.connect(new PsClient.Context()
                        .proxyAddress(cluster.proxyAddress())
                        .deadlineMs(2_000)
                        .attemptTimeoutMs(600))) {
            final PsTable table = client.createTable(CounterTable.schema("late"));
            table.push(KEY, new float[] {-1f});
            client.flush();
            final FaultPoints faults = cluster.shard(0).faults();

            AdminCalls.injectFault(cluster, FaultPoints.HOLD_PUSHES, true, 0);
            final StatusRuntimeException failed =
                    catchThrowableOfType(StatusRuntimeException.class, () -> table.push(KEY, new float[] {-1f}));
            final int held = faults.heldPushes();
            final int takenBefore = faults.heldPushesTaken();
            AdminCalls.injectFault(cluster, FaultPoints.HOLD_PUSHES, false, 0);

            assertThat(failed).as("the held push's failure").isNotNull();
            assertThat(failed.getStatus().getCode()).isEqualTo(Status.Code.DEADLINE_EXCEEDED);
            assertThat(PsTable.outcomeUnknown(failed)).isTrue();
            assertThat(failed.getMessage()).contains("outcome is unknown", "may have applied");
            assertThat(held).as("attempts the shard held").isPositive();
            await().atMost(Duration.ofSeconds(20)).until(() -> faults.heldPushesTaken() - takenBefore == held);
            client.flush();
            assertThat(table.pull(KEY)).as("the one push acknowledged").containsExactly(1f);

            table.push(KEY, new float[] {-1f});
            client.flush();
            assertThat(table.pull(KEY)).containsExactly(2f);
        }
    }
}
