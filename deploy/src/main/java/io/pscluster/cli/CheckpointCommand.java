package io.pscluster.cli;

import io.grpc.ManagedChannel;
import io.pscluster.proto.v1.AdminServiceGrpc;
import io.pscluster.proto.v1.CheckpointInfo;
import io.pscluster.proto.v1.CheckpointNowRequest;
import io.pscluster.proto.v1.CheckpointNowResponse;
import io.pscluster.proto.v1.ListCheckpointsRequest;
import io.pscluster.proto.v1.ListCheckpointsResponse;
import io.pscluster.proto.v1.RestoreRequest;
import io.pscluster.proto.v1.RestoreResponse;
import java.time.Instant;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

@Command(
        name = "checkpoint",
        mixinStandardHelpOptions = true,
        description = "Checkpoints: now (take one), list (complete ones, newest first), restore (load one).")
final class CheckpointCommand implements Callable<Integer> {
    enum Action {
        now,
        list,
        restore
    }

    @Parameters(index = "0", description = "now | list | restore")
    Action action;

    @Option(names = "--proxy", required = true, description = "The proxy's HOST:PORT.")
    String proxy;

    @Option(names = "--id", defaultValue = "0", description = "restore: the checkpoint id; 0 (default) the latest.")
    long id;

    @Option(names = "--timeout-s", defaultValue = "600", description = "Deadline (default ${DEFAULT-VALUE} s).")
    long timeoutSeconds;

    @Override
    public Integer call() {
        final ManagedChannel channel = Cli.channel(Cli.hostPort("--proxy", proxy));
        try {
            final AdminServiceGrpc.AdminServiceBlockingStub admin =
                    AdminServiceGrpc.newBlockingStub(channel).withDeadlineAfter(timeoutSeconds, TimeUnit.SECONDS);
            switch (action) {
                case now -> {
                    final CheckpointNowResponse response =
                            admin.checkpointNow(CheckpointNowRequest.getDefaultInstance());
                    System.out.println("checkpoint taken: " + describe(response.getCheckpoint()));
                    System.out.println(
                            "longest push stall while shards copied rows: " + response.getMaxSnapshotMicros() + " us");
                }
                case list -> {
                    final ListCheckpointsResponse response =
                            admin.listCheckpoints(ListCheckpointsRequest.getDefaultInstance());
                    if (response.getCheckpointsCount() == 0) {
                        System.out.println("no complete checkpoints");
                    }
                    response.getCheckpointsList().forEach(info -> System.out.println(describe(info)));
                }
                case restore -> {
                    final RestoreResponse response = admin.restore(
                            RestoreRequest.newBuilder().setCheckpointId(id).build());
                    System.out.println("restored " + response.getRowsRestored() + " rows from "
                            + describe(response.getCheckpoint()));
                }
            }
            return 0;
        } finally {
            Cli.close(channel);
        }
    }

    static String describe(final CheckpointInfo info) {
        return String.format(
                "#%d %s  %d files, %d rows, %d bytes, tables %s  (%s)",
                info.getId(),
                Instant.ofEpochMilli(info.getCreatedMillis()),
                info.getFiles(),
                info.getRows(),
                info.getBytes(),
                info.getTablesList(),
                info.getUri());
    }
}
