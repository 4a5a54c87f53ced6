package io.pscluster.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.server.table.ParameterTable;
import io.pscluster.wire.PsException;
import java.util.Arrays;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * The statuses a shard refuses requests with, as a client sees them: which refusals say "nothing was applied, send it
 * again" (a reject trailer) and which are final.
 */
class ShardRefusalStatusTest {
    private static final String TABLE = "refusals";
    private static final int PARTITIONS = 2;

    private Shard shard;
    private BlockedWriters blocked;

    @AfterEach
    void releaseAndClose() {
        if (blocked != null) {
            blocked.close();
        }
        if (shard != null) {
            shard.close();
        }
    }

    private Shard shard(final int maxKeysPerRequest, final int applyCapacity) throws InterruptedException {
        shard = new Shard("s", maxKeysPerRequest, PARTITIONS, applyCapacity, new Configuration());
        TestRouting.serve(shard, TestRouting.allSlotsTo("s", 1));
        return shard;
    }

    /** SGD with lr 1 from zeros. */
    private static TableSchema schema(final int dim, final long maxRowsPerShard) {
        return TableSchema.newBuilder()
                .setName(TABLE)
                .setKind(TableKind.SPARSE)
                .setDim(dim)
                .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(1f))
                .setMaxRowsPerShard(maxRowsPerShard)
                .build();
    }

    private static float[] ones(final int values) {
        final float[] gradients = new float[values];
        Arrays.fill(gradients, 1f);
        return gradients;
    }

    /** Two keys, one in each writer partition. */
    private static long[] keysInBothPartitions(final ParameterTable table) {
        final long first = 0;
        long second = 1;
        while (table.slotOf(second) % PARTITIONS == table.slotOf(first) % PARTITIONS) {
            second++;
        }
        return new long[] {first, second};
    }

    @Test
    void shouldRefuseWithABackpressureRejectWhenTheWritersHaveNoRoom() throws Exception {
        // Capacity 2: one push to both partitions fills it while the writers are blocked.
        final Shard shard = shard(1 << 20, PARTITIONS);
        shard.createTable(schema(1, 0));
        final ParameterTable table = shard.table(TABLE);
        final long[] keys = keysInBothPartitions(table);
        blocked = BlockedWriters.block(shard, PARTITIONS);
        assertThat(shard.push(TABLE, 1, 0, 0, keys, ones(keys.length)).accepted())
                .isEqualTo(keys.length);

        final PsException refused =
                catchThrowableOfType(PsException.class, () -> shard.push(TABLE, 1, 0, 0, keys, ones(keys.length)));

        assertThat(refused).as("a push with the writers full").isNotNull();
        final StatusRuntimeException status = PsException.toStatus(refused);
        assertThat(status.getStatus().getCode()).isEqualTo(Status.Code.RESOURCE_EXHAUSTED);
        assertThat(PsException.rejectOf(status))
                .as("reject trailer of a backpressure refusal")
                .isEqualTo(PsException.Reject.BACKPRESSURE);
        blocked.release();
        shard.awaitQuiescent();
        assertThat(table.pull(keys)).as("only the accepted push applied").containsOnly(-1f);
    }

    @Test
    void shouldRefuseWithoutARejectTrailerWhenAPushWouldPassTheRowCap() throws Exception {
        final Shard shard = shard(1 << 20, 1024);
        shard.createTable(schema(1, 1));
        shard.push(TABLE, 1, 0, 0, new long[] {0}, ones(1));
        shard.awaitQuiescent();

        final PsException refused =
                catchThrowableOfType(PsException.class, () -> shard.push(TABLE, 1, 0, 0, new long[] {1}, ones(1)));

        assertThat(refused).as("a push past the row cap").isNotNull();
        final StatusRuntimeException status = PsException.toStatus(refused);
        assertThat(status.getStatus().getCode()).isEqualTo(Status.Code.RESOURCE_EXHAUSTED);
        // Same code as backpressure, but final: a client must not send it again.
        assertThat(PsException.rejectOf(status))
                .as("reject trailer of a row-cap refusal")
                .isNull();
    }

    @Test
    void shouldRefuseWithInvalidArgumentNamingTheBytesWhenAPullWouldPassTheLargestResponse() throws Exception {
        final Shard shard = shard(1 << 20, 1024);
        shard.createTable(schema(1024, 0));
        // 600,000 keys x dim 1024 x 4 bytes = 2,457,600,000 bytes: past 2^31 (and past an int when multiplied as one).
        final long[] keys = new long[600_000];

        final PsException refused = catchThrowableOfType(PsException.class, () -> shard.pull(TABLE, 1, keys));

        assertThat(refused).as("a pull of %d bytes", 4L * keys.length * 1024).isNotNull();
        assertThat(refused.code()).isEqualTo(Status.Code.INVALID_ARGUMENT);
        assertThat(refused.getMessage()).contains("600000 keys", "dim 1024", "2457600000 bytes");
        assertThat(shard.pull(TABLE, 1, new long[] {1, 2}))
                .as("a pull of a sane size")
                .hasSize(2 * 1024 * 4);
    }
}
