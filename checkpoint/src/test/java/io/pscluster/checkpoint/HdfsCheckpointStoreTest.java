package io.pscluster.checkpoint;

import java.io.IOException;
import java.net.URI;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.io.TempDir;

/** {@link CheckpointStore} on a real (in-process) HDFS: one NameNode, one DataNode, shared by the class. */
class HdfsCheckpointStoreTest extends CheckpointStoreContract {
    @TempDir
    static java.nio.file.Path baseDir;

    private static MiniDFSCluster cluster;
    private static Configuration conf;
    private static final AtomicInteger ROOTS = new AtomicInteger();

    @BeforeAll
    static void startCluster() throws IOException {
        conf = new Configuration();
        conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, baseDir.toString());
        cluster = new MiniDFSCluster.Builder(conf, baseDir.toFile())
                .numDataNodes(1)
                .build();
        cluster.waitActive();
    }

    @AfterAll
    static void stopCluster() {
        if (cluster != null) {
            cluster.shutdown();
        }
    }

    @Override
    URI newRoot() {
        return URI.create(cluster.getURI() + "/ps-" + ROOTS.incrementAndGet());
    }

    @Override
    Configuration conf() {
        return conf;
    }
}
