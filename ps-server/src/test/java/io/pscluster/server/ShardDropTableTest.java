package io.pscluster.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

import io.grpc.Status;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.wire.PsException;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** Dropping a table while requests for it are in flight. */
class ShardDropTableTest {
    private static final int KEYS = 5_000;

    private final Shard shard = new Shard("s", 1 << 20, 2, 1024, new Configuration());

    @BeforeEach
    void ownEverySlot() throws InterruptedException {
        TestRouting.serve(shard, TestRouting.allSlotsTo("s", 1));
    }

    @AfterEach
    void closeShard() {
        shard.close();
    }

    private void createTable(final String name) throws InterruptedException {
        shard.createTable(TableSchema.newBuilder()
                .setName(name)
                .setKind(TableKind.SPARSE)
                .setDim(8)
                .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(1f))
                .build());
        final long[] keys = new long[KEYS];
        for (int i = 0; i < KEYS; i++) {
            keys[i] = i;
        }
        shard.push(name, 1, 0, 0, keys, new float[KEYS * 8]);
        shard.awaitQuiescent();
    }

    @Test
    void shouldAnswerNotFoundWhenATableWasDropped() throws InterruptedException {
        createTable("gone");

        assertThat(shard.dropTable("gone")).isTrue();

        final PsException missing =
                catchThrowableOfType(PsException.class, () -> shard.pull("gone", 1, new long[] {1}));
        assertThat(missing).isNotNull();
        assertThat(missing.code()).isEqualTo(Status.Code.NOT_FOUND);
        assertThat(shard.dropTable("gone")).isFalse();
    }

    @Test
    void shouldServeOrRefuseEveryPullWhenTheTableIsDroppedMeanwhile() throws Exception {
        final long[] keys = new long[64];
        for (int i = 0; i < keys.length; i++) {
            keys[i] = i * 71L;
        }
        for (int round = 0; round < 200; round++) {
            final String name = "dropped-" + round;
            createTable(name);
            final AtomicBoolean pulling = new AtomicBoolean(true);
            final CountDownLatch started = new CountDownLatch(1);
            final CompletableFuture<Void> reader = CompletableFuture.runAsync(() -> {
                started.countDown();
                while (pulling.get()) {
                    try {
                        shard.pull(name, 1, keys);
                    } catch (PsException notFound) {
                        assertThat(notFound.code()).isEqualTo(Status.Code.NOT_FOUND);
                        return;
                    }
                }
            });
            started.await();

            shard.dropTable(name);
            pulling.set(false);

            reader.get(10, TimeUnit.SECONDS);
        }
    }
}
