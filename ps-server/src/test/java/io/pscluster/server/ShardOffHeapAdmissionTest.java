package io.pscluster.server;

import static org.assertj.core.api.Assertions.assertThat;

import io.grpc.Status;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.server.table.ChildJvm;
import io.pscluster.server.table.ParameterTable;
import io.pscluster.wire.PsException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.Test;

/**
 * A shard whose off-heap memory runs out refuses the push that has no room for its new rows, before acknowledging it,
 * with {@code RESOURCE_EXHAUSTED} naming the memory; every push it acknowledged has all its rows once applied. Runs the
 * shard in a child JVM with a small {@code -XX:MaxDirectMemorySize} (the JVM's own budget, as in production), its
 * writers held so that the acknowledged pushes are all still queued when the last one is admitted.
 */
class ShardOffHeapAdmissionTest {
    private static final String TABLE = "wide";
    private static final int DIM = 64;
    private static final int KEYS_PER_PUSH = 2_000;

    @Test
    void shouldRefuseThePushThatHasNoMemoryForItsRowsAndCreateEveryRowItAcknowledged() throws Exception {
        final ChildJvm.Run run = ChildJvm.run(
                Child.class, List.of("-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:MaxDirectMemorySize=72m"), 120);
        final String out = run.output();
        final Map<String, String> result = run.results();
        assertThat(result).as("the child's results:\n%s", out).containsKeys("acknowledged", "code", "message");

        final int acknowledged = Integer.parseInt(result.get("acknowledged"));
        // 8 MiB for rows (72 MiB less 64 for gRPC) hold about 30,000 rows of 272 bytes.
        assertThat(acknowledged).as("pushes acknowledged").isBetween(5, 20);
        assertThat(result.get("code")).isEqualTo(Status.Code.RESOURCE_EXHAUSTED.name());
        assertThat(result.get("message")).contains("'" + TABLE + "'", "off-heap", "MaxDirectMemorySize");
        assertThat(result.get("retryable"))
                .as("to retry while pushes are queued")
                .isEqualTo("true");
        assertThat(result.get("absent"))
                .as("acknowledged rows missing once applied")
                .isEqualTo("0");
        assertThat(result.get("dropped")).as("dropped rows").isEqualTo("0");
        assertThat(result.get("value"))
                .as("a row of the last push acknowledged")
                .isEqualTo("-1.0");
        assertThat(result.get("again"))
                .as("the same push once the queue is applied")
                .isEqualTo("RESOURCE_EXHAUSTED");
        assertThat(result.get("againRetryable")).isEqualTo("false");
        assertThat(result.get("existing"))
                .as("a push of rows that exist, memory full")
                .isEqualTo("accepted");
    }

    /** Pushes new keys into a shard with its writers held until one is refused, then reports. */
    public static final class Child {
        public static void main(final String[] args) throws Exception {
            final Shard shard = new Shard("s", 1 << 20, 2, 1024, new Configuration());
            TestRouting.serve(shard, TestRouting.allSlotsTo("s", 1));
            shard.createTable(TableSchema.newBuilder()
                    .setName(TABLE)
                    .setKind(TableKind.SPARSE)
                    .setDim(DIM)
                    .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(1f))
                    .build());
            final ParameterTable table = shard.table(TABLE);
            final float[] gradients = new float[KEYS_PER_PUSH * DIM];
            Arrays.fill(gradients, 1f);
            final List<long[]> acknowledged = new ArrayList<>();
            long[] refused = null;
            try (BlockedWriters blocked = BlockedWriters.block(shard, 2)) {
                for (int push = 0; push < 100 && refused == null; push++) {
                    final long[] keys = new long[KEYS_PER_PUSH];
                    for (int i = 0; i < keys.length; i++) {
                        keys[i] = 1_000_000L * (push + 1) + i;
                    }
                    try {
                        shard.push(TABLE, 1, 0, 0, keys, gradients);
                        acknowledged.add(keys);
                    } catch (PsException e) {
                        refused = keys;
                        report("code", e.code().name());
                        report("message", e.getMessage());
                        report("retryable", PsException.rejectOf(PsException.toStatus(e)) != null);
                    }
                }
            }
            shard.awaitQuiescent();
            report("acknowledged", acknowledged.size());
            long absent = 0;
            for (final long[] keys : acknowledged) {
                absent += table.countAbsent(keys, table.slotsOf(keys));
            }
            report("absent", absent);
            report("dropped", table.droppedRows());
            report("value", table.pull(new long[] {acknowledged.get(acknowledged.size() - 1)[0]})[0]);
            if (refused != null) {
                try {
                    shard.push(TABLE, 1, 0, 0, refused, gradients);
                    report("again", "accepted");
                } catch (PsException e) {
                    report("again", e.code().name());
                    report("againRetryable", PsException.rejectOf(PsException.toStatus(e)) != null);
                }
            }
            try {
                shard.push(TABLE, 1, 0, 0, acknowledged.get(0), gradients);
                report("existing", "accepted");
            } catch (PsException e) {
                report("existing", e.code() + ": " + e.getMessage());
            }
            shard.close();
            System.exit(0);
        }

        private static void report(final String name, final Object value) {
            System.out.println("RESULT " + name + "=" + value);
        }
    }
}
