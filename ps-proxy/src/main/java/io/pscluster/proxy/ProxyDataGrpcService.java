package io.pscluster.proxy;

import com.google.protobuf.UnsafeByteOperations;
import io.grpc.stub.StreamObserver;
import io.pscluster.proto.v1.ProxyDataServiceGrpc;
import io.pscluster.proto.v1.ProxyPullRequest;
import io.pscluster.proto.v1.ProxyPullResponse;
import io.pscluster.wire.LittleEndian;

/** Pulls of thin clients ({@link ProxyPulls}), on their own pool: they wait on shards and never hold a control thread. */
final class ProxyDataGrpcService extends ProxyDataServiceGrpc.ProxyDataServiceImplBase {
    private final ProxyPulls pulls;
    private final LongCalls calls;

    ProxyDataGrpcService(final ProxyPulls pulls, final LongCalls calls) {
        this.pulls = pulls;
        this.calls = calls;
    }

    @Override
    public void pull(final ProxyPullRequest request, final StreamObserver<ProxyPullResponse> out) {
        calls.respond(out, () -> {
            final ProxyPulls.Pulled pulled = pulls.pull(
                    request.getTable(),
                    LittleEndian.decodeLongs(request.getKeys(), "keys"),
                    request.getMaxStalenessMillis());
            return ProxyPullResponse.newBuilder()
                    .setValues(UnsafeByteOperations.unsafeWrap(pulled.values()))
                    .setDim(pulled.dim())
                    .setCachedRows(pulled.cachedRows())
                    .build();
        });
    }
}
