package io.pscluster.faults;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.local.LocalCluster;
import io.pscluster.proto.v1.AdminServiceGrpc;
import io.pscluster.proto.v1.CheckpointNowRequest;
import io.pscluster.testing.MiniHdfs;
import java.net.URI;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.SafeModeAction;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A NameNode in safe mode takes no writes, so the proxy cannot renew its claim on an HDFS checkpoint root and refuses
 * checkpoints: the refusal says the NameNode is in safe mode (it used to name only the unrenewed claim and the
 * exception), and checkpoints go on once the NameNode leaves it.
 */
class SafeModeCheckpointTest {
    private static MiniDFSCluster hdfs;

    @TempDir
    Path dir;

    @BeforeAll
    static void startHdfs() throws Exception {
        hdfs = MiniHdfs.start(SafeModeCheckpointTest.class, 1);
    }

    @AfterAll
    static void stopHdfs() throws java.io.IOException {
        MiniHdfs.stop(hdfs);
    }

    @Test
    void shouldNameTheNameNodesSafeModeWhenRefusingACheckpointAndCheckpointOnceItLeaves() throws Exception {
        final String root = hdfs.getURI() + "/safe";
        final Configuration conf = new Configuration(hdfs.getConfiguration(0));
        final CheckpointStore store = new CheckpointStore(URI.create(root), conf);
        try (LocalCluster cluster = LocalCluster.builder()
                .shards(1)
                .checkpointRoot(root)
                .hadoopConf(conf)
                .start()) {
            final ManagedChannel channel = ManagedChannelBuilder.forTarget(cluster.proxyAddress())
                    .usePlaintext()
                    .build();
            try {
                final var admin = AdminServiceGrpc.newBlockingStub(channel);
                hdfs.getFileSystem().setSafeMode(SafeModeAction.ENTER);
                try {
                    await().atMost(Duration.ofSeconds(30))
                            .untilAsserted(() -> assertThatThrownBy(() -> admin.withDeadlineAfter(60, TimeUnit.SECONDS)
                                            .checkpointNow(CheckpointNowRequest.getDefaultInstance()))
                                    .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                                        assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.FAILED_PRECONDITION);
                                        assertThat(e.getStatus().getDescription())
                                                .contains("was in safe mode at this proxy's last renewal")
                                                .contains("until the NameNode leaves safe mode");
                                    }));
                } finally {
                    hdfs.getFileSystem().setSafeMode(SafeModeAction.LEAVE);
                }
                assertThat(store.list()).as("no checkpoint taken in safe mode").isEmpty();

                await().atMost(Duration.ofSeconds(30))
                        .ignoreException(StatusRuntimeException.class)
                        .until(() -> admin.withDeadlineAfter(60, TimeUnit.SECONDS)
                                        .checkpointNow(CheckpointNowRequest.getDefaultInstance())
                                        .getCheckpoint()
                                        .getId()
                                > 0);
                assertThat(store.list()).as("the checkpoint taken once it left").hasSize(1);
            } finally {
                channel.shutdownNow();
            }
        }
    }
}
