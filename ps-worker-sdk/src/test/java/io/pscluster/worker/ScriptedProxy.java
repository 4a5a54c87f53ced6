package io.pscluster.worker;

import io.grpc.Grpc;
import io.grpc.InsecureServerCredentials;
import io.grpc.Server;
import io.grpc.stub.StreamObserver;
import io.pscluster.proto.v1.GetRoutingTableRequest;
import io.pscluster.proto.v1.GetRoutingTableResponse;
import io.pscluster.proto.v1.ListTablesRequest;
import io.pscluster.proto.v1.ListTablesResponse;
import io.pscluster.proto.v1.OptimizerKind;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.ProxyServiceGrpc;
import io.pscluster.proto.v1.RollbackEvent;
import io.pscluster.proto.v1.RoutingTable;
import io.pscluster.proto.v1.ShardInfo;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.wire.Slots;
import java.io.IOException;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.IntUnaryOperator;

/** A proxy on loopback that serves a routing table the test sets, one table "t" (sparse, dim 1), and counts calls. */
final class ScriptedProxy implements AutoCloseable {
    static final TableSchema TABLE = TableSchema.newBuilder()
            .setName("t")
            .setKind(TableKind.SPARSE)
            .setDim(1)
            .setOptimizer(OptimizerSpec.newBuilder().setKind(OptimizerKind.SGD).setLearningRate(1f))
            .build();

    private final Server server;
    volatile RoutingTable routing = RoutingTable.getDefaultInstance();
    final AtomicInteger routingCalls = new AtomicInteger();
    /** When set, routing calls wait for it before answering. */
    volatile CountDownLatch hold;

    ScriptedProxy() throws IOException {
        this.server = Grpc.newServerBuilderForPort(0, InsecureServerCredentials.create())
                .addService(new Service())
                .build()
                .start();
    }

    String address() {
        return "127.0.0.1:" + server.getPort();
    }

    /**
     * A table of {@code epoch} over {@code addresses} (shards of this build's protocol) where slot s goes to {@code
     * owner(s)} (-1: none).
     */
    static RoutingTable routing(
            final long epoch,
            final List<String> addresses,
            final IntUnaryOperator owner,
            final RollbackEvent... rollbacks) {
        final int[] protocols = new int[addresses.size()];
        java.util.Arrays.fill(protocols, io.pscluster.wire.Protocol.VERSION);
        return routing(epoch, addresses, protocols, owner, rollbacks);
    }

    /** As {@link #routing(long, List, IntUnaryOperator, RollbackEvent...)}, shard i reporting {@code protocols[i]}. */
    static RoutingTable routing(
            final long epoch,
            final List<String> addresses,
            final int[] protocols,
            final IntUnaryOperator owner,
            final RollbackEvent... rollbacks) {
        final RoutingTable.Builder table =
                RoutingTable.newBuilder().setEpoch(epoch).setSlotCount(Slots.SLOT_COUNT);
        for (int i = 0; i < addresses.size(); i++) {
            table.addShards(ShardInfo.newBuilder()
                    .setShardId("s-" + i)
                    .setAddress(addresses.get(i))
                    .setProtocolVersion(protocols[i]));
        }
        for (int slot = 0; slot < Slots.SLOT_COUNT; slot++) {
            table.addSlotOwner(owner.applyAsInt(slot)).addSlotGeneration(epoch);
        }
        return table.addAllRollbacks(List.of(rollbacks)).build();
    }

    static RoutingTable allTo(final long epoch, final String address, final RollbackEvent... rollbacks) {
        return routing(epoch, List.of(address), slot -> 0, rollbacks);
    }

    @Override
    public void close() throws InterruptedException {
        final CountDownLatch held = hold;
        if (held != null) {
            held.countDown();
        }
        server.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }

    private final class Service extends ProxyServiceGrpc.ProxyServiceImplBase {
        @Override
        public void getRoutingTable(
                final GetRoutingTableRequest request, final StreamObserver<GetRoutingTableResponse> response) {
            routingCalls.incrementAndGet();
            final CountDownLatch held = hold;
            if (held != null) {
                try {
                    held.await(30, TimeUnit.SECONDS);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }
            response.onNext(
                    GetRoutingTableResponse.newBuilder().setRouting(routing).build());
            response.onCompleted();
        }

        @Override
        public void listTables(final ListTablesRequest request, final StreamObserver<ListTablesResponse> response) {
            response.onNext(ListTablesResponse.newBuilder().addTables(TABLE).build());
            response.onCompleted();
        }
    }
}
