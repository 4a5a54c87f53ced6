package io.pscluster.testing;

import java.io.File;
import java.io.IOException;
import java.util.function.Consumer;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.hdfs.MiniDFSCluster;

/** The one real HDFS of a test class: a {@link MiniDFSCluster} under {@code target/minidfs-<class>}. */
public final class MiniHdfs {
    private MiniHdfs() {}

    /** Starts {@code dataNodes} DataNodes and a NameNode, waits until they are up. */
    public static MiniDFSCluster start(final Class<?> test, final int dataNodes) throws IOException {
        return start(test, dataNodes, base -> {});
    }

    /** As {@link #start(Class, int)}, the cluster's configuration given {@code settings} first. */
    public static MiniDFSCluster start(final Class<?> test, final int dataNodes, final Consumer<Configuration> settings)
            throws IOException {
        final Configuration base = new Configuration();
        final File dir = new File("target/minidfs-" + test.getSimpleName());
        base.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, dir.getAbsolutePath());
        settings.accept(base);
        final MiniDFSCluster hdfs =
                new MiniDFSCluster.Builder(base, dir).numDataNodes(dataNodes).build();
        hdfs.waitActive();
        return hdfs;
    }

    /** Shuts {@code hdfs} down, if it started. */
    public static void stop(final MiniDFSCluster hdfs) throws IOException {
        // This JVM's cached filesystems of that NameNode go with it: a later test's NameNode on the same port would
        // otherwise get one with this test's configuration (replication, block size).
        FileSystem.closeAll();
        if (hdfs != null) {
            hdfs.shutdown();
        }
    }
}
