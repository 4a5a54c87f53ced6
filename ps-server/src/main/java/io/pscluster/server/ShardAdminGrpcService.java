package io.pscluster.server;

import io.grpc.stub.StreamObserver;
import io.pscluster.checkpoint.ChunkCodec;
import io.pscluster.checkpoint.RowFileWriter;
import io.pscluster.proto.checkpoint.RowCodec;
import io.pscluster.proto.v1.CheckpointProgressRequest;
import io.pscluster.proto.v1.CheckpointProgressResponse;
import io.pscluster.proto.v1.FenceSlotsRequest;
import io.pscluster.proto.v1.FenceSlotsResponse;
import io.pscluster.proto.v1.InjectFaultRequest;
import io.pscluster.proto.v1.InjectFaultResponse;
import io.pscluster.proto.v1.JobClock;
import io.pscluster.proto.v1.RestoreCheckpointRequest;
import io.pscluster.proto.v1.RestoreCheckpointResponse;
import io.pscluster.proto.v1.ShardAdminServiceGrpc;
import io.pscluster.proto.v1.UpdateJobsRequest;
import io.pscluster.proto.v1.UpdateJobsResponse;
import io.pscluster.proto.v1.WriteCheckpointRequest;
import io.pscluster.proto.v1.WriteCheckpointResponse;
import io.pscluster.wire.PsException;
import io.pscluster.wire.Slots;
import io.pscluster.wire.Unary;
import java.net.URI;
import java.util.BitSet;

/**
 * Checkpoint calls from the proxy, and fault injection for tests. They block on filesystem I/O, so they run on the
 * server's bounded executor.
 */
final class ShardAdminGrpcService extends ShardAdminServiceGrpc.ShardAdminServiceImplBase {
    /**
     * How long a checkpoint waits for a paused SYNC job's clock to be applied here before its cut: every worker has
     * ended that clock, so it is one clock's apply away.
     */
    private static final long CLOCK_WAIT_MS = 60_000;

    private final Shard shard;
    private final FaultPoints faults;

    ShardAdminGrpcService(final Shard shard, final FaultPoints faults) {
        this.shard = shard;
        this.faults = faults;
    }

    @Override
    public void injectFault(final InjectFaultRequest request, final StreamObserver<InjectFaultResponse> response) {
        Unary.respond(response, () -> {
            faults.inject(request.getPoint(), request.getEnabled(), request.getTimes());
            if (request.getPoint().equals(FaultPoints.HOLD_WRITERS)) {
                shard.holdWriters(request.getEnabled());
            }
            if (request.getPoint().equals(FaultPoints.SLOW_CHECKPOINT)) {
                shard.slowCheckpoints(
                        request.getEnabled()
                                ? java.util.concurrent.TimeUnit.MILLISECONDS.toNanos(
                                        FaultPoints.SLOW_CHECKPOINT_DELAY_MS)
                                : 0);
            }
            return InjectFaultResponse.getDefaultInstance();
        });
    }

    @Override
    public void writeCheckpoint(
            final WriteCheckpointRequest request, final StreamObserver<WriteCheckpointResponse> response) {
        Unary.respond(response, () -> {
            for (final JobClock clock : request.getAppliedClocksList()) {
                shard.awaitClockApplied(clock.getJobId(), clock.getClock(), CLOCK_WAIT_MS);
            }
            final Shard.WrittenCheckpoint written = shard.writeCheckpoint(
                    root(request.getCheckpointRoot()),
                    request.getCheckpointId(),
                    writeOptions(request),
                    requestedSlots(request),
                    request.getSinceCheckpointId(),
                    request.getDelta());
            final WriteCheckpointResponse.Builder answer = WriteCheckpointResponse.newBuilder()
                    .addAllFiles(written.files())
                    .setSnapshotMicros(written.snapshotMicros())
                    .setHeldPushMicros(written.heldPushMicros())
                    .setPeakSavedBytes(written.peakSavedBytes())
                    .setPushWindows(written.pushWindows().toByteString());
            written.covered().stream().forEach(answer::addCoveredSlots);
            return answer.build();
        });
    }

    /** The slots a checkpoint request names (null: none named, every owned slot), each checked to be a slot. */
    private static BitSet requestedSlots(final WriteCheckpointRequest request) {
        if (request.getSlotsCount() == 0) {
            return null;
        }
        final BitSet slots = new BitSet(Slots.SLOT_COUNT);
        for (final int slot : request.getSlotsList()) {
            if (slot < 0 || slot >= Slots.SLOT_COUNT) {
                throw PsException.invalidArgument(
                        "slot " + slot + " is not a slot (0.." + (Slots.SLOT_COUNT - 1) + ")");
            }
            slots.set(slot);
        }
        return slots;
    }

    /** The request's codec (unspecified: zstd), replication and block size (0: the filesystem's defaults). */
    static RowFileWriter.Options writeOptions(final WriteCheckpointRequest request) {
        RowFileWriter.Options options = RowFileWriter.Options.defaults();
        if (request.getCodec() != RowCodec.ROW_CODEC_UNSPECIFIED) {
            options = options.withCodec(ChunkCodec.fromProto(request.getCodec())
                    .orElseThrow(() -> PsException.invalidArgument(
                            "codec " + request.getCodecValue() + " is not one of NONE, ZSTD, LZ4")));
        }
        if (request.getReplication() > Short.MAX_VALUE) {
            throw PsException.invalidArgument("replication=" + request.getReplication() + " must be <= "
                    + Short.MAX_VALUE + " (0: the filesystem's default)");
        }
        try {
            return options.withReplication((short) request.getReplication()).withBlockSize(request.getBlockSize());
        } catch (IllegalArgumentException e) {
            throw PsException.invalidArgument(e.getMessage());
        }
    }

    @Override
    public void restoreCheckpoint(
            final RestoreCheckpointRequest request, final StreamObserver<RestoreCheckpointResponse> response) {
        Unary.respond(response, () -> {
            final BitSet slots = new BitSet(Slots.SLOT_COUNT);
            for (final int slot : request.getSlotsList()) {
                if (slot < 0 || slot >= Slots.SLOT_COUNT) {
                    throw PsException.invalidArgument(
                            "slot " + slot + " is outside 0.." + (Slots.SLOT_COUNT - 1) + " in restore request");
                }
                slots.set(slot);
            }
            if (faults.fire(FaultPoints.FAIL_RESTORE)) {
                throw PsException.unavailable("injected fault " + FaultPoints.FAIL_RESTORE + ": nothing restored");
            }
            final long rows = shard.restore(root(request.getCheckpointRoot()), request.getCheckpointId(), slots);
            return RestoreCheckpointResponse.newBuilder().setRowsRestored(rows).build();
        });
    }

    @Override
    public void checkpointProgress(
            final CheckpointProgressRequest request, final StreamObserver<CheckpointProgressResponse> response) {
        Unary.respond(response, () -> shard.checkpointProgress(request.getCheckpointId()));
    }

    @Override
    public void updateJobs(final UpdateJobsRequest request, final StreamObserver<UpdateJobsResponse> response) {
        Unary.respond(response, () -> {
            shard.updateJobs(request);
            return UpdateJobsResponse.getDefaultInstance();
        });
    }

    @Override
    public void fenceSlots(final FenceSlotsRequest request, final StreamObserver<FenceSlotsResponse> response) {
        Unary.respond(response, () -> {
            final BitSet slots = new BitSet(Slots.SLOT_COUNT);
            for (final int slot : request.getSlotsList()) {
                if (slot < 0 || slot >= Slots.SLOT_COUNT) {
                    throw PsException.invalidArgument(
                            "slot " + slot + " is outside 0.." + (Slots.SLOT_COUNT - 1) + " in fence request");
                }
                slots.set(slot);
            }
            if (!slots.isEmpty() && request.getHoldMillis() <= 0) {
                throw PsException.invalidArgument("fence of " + slots.cardinality() + " slots has hold_millis="
                        + request.getHoldMillis() + "; it must be > 0");
            }
            return FenceSlotsResponse.newBuilder()
                    .setUnapplied(shard.fenceSlots(slots, request.getHoldMillis(), request.getMadeMillis()))
                    .build();
        });
    }

    static URI root(final String uri) {
        if (uri.isEmpty()) {
            throw PsException.invalidArgument("checkpoint_root is empty");
        }
        try {
            return new URI(uri);
        } catch (java.net.URISyntaxException e) {
            throw PsException.invalidArgument("checkpoint_root '" + uri + "' is not a URI: " + e.getMessage());
        }
    }
}
