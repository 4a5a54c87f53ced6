package io.pscluster.local;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.google.protobuf.ByteString;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.health.v1.HealthCheckRequest;
import io.grpc.health.v1.HealthCheckResponse;
import io.grpc.health.v1.HealthGrpc;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.PullRequest;
import io.pscluster.proto.v1.PushRequest;
import io.pscluster.proto.v1.ShardServiceGrpc;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.server.ShardServer;
import io.pscluster.wire.LittleEndian;
import io.pscluster.wire.PsException;
import io.pscluster.wire.Slots;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Bad requests sent straight to a real shard get a precise status, change nothing, and leave the shard serving.
 */
class BadInputTest {
    private static final String TABLE = "dense";
    private static final int DIM = 4;
    private static final int ROWS = 100;
    private static final int MAX_KEYS = 1_000;

    @TempDir
    static Path checkpoints;

    private static LocalCluster cluster;
    private static PsClient client;
    private static PsTable table;
    private static ManagedChannel channel;
    private static ShardServiceGrpc.ShardServiceBlockingStub shard0;
    private static long keyOnShard0;
    private static long keyOnShard1;

    @BeforeAll
    static void start() throws Exception {
        cluster = LocalCluster.builder()
                .shards(2)
                .checkpointRoot(checkpoints.toUri().toString())
                .maxKeysPerRequest(MAX_KEYS)
                .start();
        client = PsClient.connect(cluster.proxyAddress());
        table = client.createTable(TableSchema.newBuilder()
                .setName(TABLE)
                .setKind(TableKind.DENSE)
                .setDim(DIM)
                .setRows(ROWS)
                .setOptimizer(
                        OptimizerSpec.newBuilder().setKind(OptimizerKind.SGD).setLearningRate(1f))
                .build());
        final ShardServer first = cluster.shard(0);
        channel =
                ManagedChannelBuilder.forTarget(first.address()).usePlaintext().build();
        shard0 = ShardServiceGrpc.newBlockingStub(channel);
        final long hash = Slots.tableHash(TABLE);
        keyOnShard0 = -1;
        keyOnShard1 = -1;
        for (long key = 0; key < ROWS; key++) {
            final boolean onFirst = first.shard().ownedSlots().get(Slots.slotOf(hash, key));
            if (onFirst && keyOnShard0 < 0) {
                keyOnShard0 = key;
            } else if (!onFirst && keyOnShard1 < 0) {
                keyOnShard1 = key;
            }
        }
        assertThat(keyOnShard0).isNotNegative();
        assertThat(keyOnShard1).isNotNegative();
    }

    @AfterAll
    static void stop() throws Exception {
        channel.shutdownNow();
        client.close();
        cluster.close();
    }

    @AfterEach
    void shardStillServesAndNothingWasApplied() throws Exception {
        cluster.shard(0).shard().awaitQuiescent();
        assertThat(table.pull(new long[] {keyOnShard0})).containsExactly(0f, 0f, 0f, 0f);
        final HealthCheckResponse health = HealthGrpc.newBlockingStub(channel)
                .withDeadlineAfter(5, TimeUnit.SECONDS)
                .check(HealthCheckRequest.getDefaultInstance());
        assertThat(health.getStatus()).isEqualTo(HealthCheckResponse.ServingStatus.SERVING);
    }

    @Test
    void shouldAnswerNotFoundWhenTableIsUnknown() {
        assertThatThrownBy(() -> shard0().push(push("no_such_table", new long[] {keyOnShard0}, new float[DIM])))
                .satisfies(e -> assertStatus(e, Status.Code.NOT_FOUND, "table 'no_such_table' does not exist"));
        assertThatThrownBy(() -> shard0().pull(PullRequest.newBuilder()
                        .setRoutingEpoch(client.routingEpoch())
                        .setTable("no_such_table")
                        .setKeys(LittleEndian.encodeLongs(new long[] {keyOnShard0}))
                        .build()))
                .satisfies(e -> assertStatus(e, Status.Code.NOT_FOUND, "no_such_table"));
    }

    @Test
    void shouldAnswerInvalidArgumentWhenGradientDimensionIsWrong() {
        assertThatThrownBy(() -> shard0().push(push(TABLE, new long[] {keyOnShard0}, new float[DIM - 1])))
                .satisfies(e -> assertStatus(
                        e,
                        Status.Code.INVALID_ARGUMENT,
                        "table 'dense' has dim=4: 1 keys need 4 gradient values, got 3"));
    }

    @Test
    void shouldRejectTheWholePushWhenAnyGradientIsNotFinite() {
        final long[] keys = {keyOnShard0, keyOnShard0};
        final float[] gradients = {1, 1, 1, 1, 1, Float.NaN, 1, 1};
        assertThatThrownBy(() -> shard0().push(push(TABLE, keys, gradients)))
                .satisfies(e -> assertStatus(e, Status.Code.INVALID_ARGUMENT, "non-finite gradient NaN"));
        gradients[5] = Float.POSITIVE_INFINITY;
        assertThatThrownBy(() -> shard0().push(push(TABLE, keys, gradients)))
                .satisfies(e -> assertStatus(e, Status.Code.INVALID_ARGUMENT, "non-finite gradient Infinity"));
    }

    /**
     * Through the SDK a push is split by shard: a bad value in one shard's part must not let the other shard apply its
     * part. Each push below has a good row for shard 0 and a bad one for shard 1; shard 0's row must stay at zeros.
     */
    @Test
    void shouldChangeNothingOnAnyShardWhenAnSdkPushHasABadValueInOneShardsPart() throws InterruptedException {
        final long[] keys = {keyOnShard0, keyOnShard1};
        final float[] gradients = {1, 1, 1, 1, 1, 1, 1, Float.NaN};
        assertThatThrownBy(() -> table.push(keys, gradients))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("non-finite gradient NaN for key " + keyOnShard1 + " (element 3)")
                .hasMessageContaining("nothing was sent");
        gradients[7] = Float.NEGATIVE_INFINITY;
        assertThatThrownBy(() -> table.pushAsync(keys, gradients))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("non-finite gradient -Infinity");

        assertThatThrownBy(() -> table.push(new long[] {keyOnShard0, ROWS}, new float[2 * DIM]))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("key 100 is outside dense table 'dense' (rows 0..99)");

        // Finite values whose sum over a repeated key is not: the SDK sums repeats before it sends them.
        final float[] huge = {1, 1, 1, 1, 0, 0, 0, 3e38f, 0, 0, 0, 3e38f};
        assertThatThrownBy(() -> table.push(new long[] {keyOnShard0, keyOnShard1, keyOnShard1}, huge))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("the gradients of key " + keyOnShard1 + " (element 3), repeated")
                .hasMessageContaining("sum to Infinity");

        // Each value below MAX_VALUE / n, yet summed one after another in float32 their rounding reaches Infinity.
        final int repeats = 8_484;
        final long[] many = new long[repeats];
        final float[] justBelow = new float[repeats * DIM];
        many[0] = keyOnShard0;
        java.util.Arrays.fill(justBelow, 0, DIM, 1f);
        final float value = Math.nextDown(Float.MAX_VALUE / repeats);
        for (int i = 1; i < repeats; i++) {
            many[i] = keyOnShard1;
            justBelow[i * DIM + 3] = value;
        }
        assertThatThrownBy(() -> table.push(many, justBelow))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("the gradients of key " + keyOnShard1 + " (element 3), repeated")
                .hasMessageContaining("sum to Infinity");

        cluster.shard(1).shard().awaitQuiescent();
        assertThat(table.pull(new long[] {keyOnShard0, keyOnShard1})).containsOnly(0f);
    }

    @Test
    void shouldAnswerInvalidArgumentWhenTooManyKeys() {
        final long[] keys = new long[MAX_KEYS + 1];
        java.util.Arrays.fill(keys, keyOnShard0);
        assertThatThrownBy(() -> shard0().push(push(TABLE, keys, new float[keys.length * DIM])))
                .satisfies(e -> assertStatus(
                        e, Status.Code.INVALID_ARGUMENT, "request has 1001 keys, more than the limit of 1000"));
        assertThatThrownBy(() -> shard0().pull(PullRequest.newBuilder()
                        .setRoutingEpoch(client.routingEpoch())
                        .setTable(TABLE)
                        .setKeys(LittleEndian.encodeLongs(keys))
                        .build()))
                .satisfies(e -> assertStatus(e, Status.Code.INVALID_ARGUMENT, "more than the limit"));
    }

    @Test
    void shouldAnswerInvalidArgumentWhenKeyBytesAreTruncatedOrKeyIsOutsideDenseTable() {
        assertThatThrownBy(() -> shard0().push(PushRequest.newBuilder()
                        .setRoutingEpoch(client.routingEpoch())
                        .setTable(TABLE)
                        .setKeys(ByteString.copyFrom(new byte[7]))
                        .build()))
                .satisfies(e -> assertStatus(e, Status.Code.INVALID_ARGUMENT, "keys has 7 bytes"));
        assertThatThrownBy(() -> shard0().push(push(TABLE, new long[] {ROWS}, new float[DIM])))
                .satisfies(e -> assertStatus(
                        e, Status.Code.INVALID_ARGUMENT, "key 100 is outside dense table 'dense' (rows 0..99)"));
        assertThatThrownBy(() -> shard0().push(push(TABLE, new long[] {-1}, new float[DIM])))
                .satisfies(e -> assertStatus(
                        e, Status.Code.INVALID_ARGUMENT, "key -1 is outside dense table 'dense' (rows 0..99)"));
        assertThatThrownBy(() -> shard0().pull(PullRequest.newBuilder()
                        .setRoutingEpoch(client.routingEpoch())
                        .setTable(TABLE)
                        .setKeys(LittleEndian.encodeLongs(new long[] {Long.MIN_VALUE}))
                        .build()))
                .satisfies(e -> assertStatus(e, Status.Code.INVALID_ARGUMENT, "is outside dense table 'dense'"));
    }

    @Test
    void shouldAnswerFailedPreconditionWithEpochWhenShardDoesNotOwnTheSlot() {
        final long[] keys = {keyOnShard0, keyOnShard1};
        assertThatThrownBy(() -> shard0().push(push(TABLE, keys, new float[2 * DIM])))
                .satisfies(e -> {
                    assertStatus(e, Status.Code.FAILED_PRECONDITION, "does not own slot");
                    final StatusRuntimeException status = (StatusRuntimeException) e;
                    assertThat(PsException.rejectOf(status)).isEqualTo(PsException.Reject.WRONG_OWNER);
                    assertThat(Long.parseLong(status.getTrailers().get(PsException.EPOCH_KEY)))
                            .isEqualTo(cluster.shard(0).shard().routingEpoch());
                });
    }

    @Test
    void shouldAnswerAlreadyExistsWhenTableIsCreatedAgainWithAnotherSchema() {
        assertThatThrownBy(() ->
                        client.createTable(table.schema().toBuilder().setDim(8).build()))
                .satisfies(e -> assertStatus(e, Status.Code.ALREADY_EXISTS, "exists with a different schema"));
        // The identical schema is accepted again: workers may all create the table they share.
        assertThat(client.createTable(table.schema()).dim()).isEqualTo(DIM);
    }

    @Test
    void shouldAnswerInvalidArgumentWhenSchemaIsBad() {
        assertThatThrownBy(() -> client.createTable(TableSchema.newBuilder()
                        .setName("bad")
                        .setKind(TableKind.SPARSE)
                        .setDim(0)
                        .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(0.1f))
                        .build()))
                .satisfies(e -> assertStatus(e, Status.Code.INVALID_ARGUMENT, "dim=0 must be in 1..65536"));
    }

    private static ShardServiceGrpc.ShardServiceBlockingStub shard0() {
        return shard0.withDeadlineAfter(10, TimeUnit.SECONDS);
    }

    private static PushRequest push(final String table, final long[] keys, final float[] gradients) {
        return PushRequest.newBuilder()
                .setRoutingEpoch(client.routingEpoch())
                .setTable(table)
                .setKeys(LittleEndian.encodeLongs(keys))
                .setGradients(LittleEndian.encodeFloats(gradients))
                .build();
    }

    private static void assertStatus(final Throwable failure, final Status.Code code, final String message) {
        assertThat(failure).isInstanceOf(StatusRuntimeException.class);
        final Status status = ((StatusRuntimeException) failure).getStatus();
        assertThat(status.getCode()).isEqualTo(code);
        assertThat(status.getDescription()).contains(message);
    }
}
