package io.pscluster.checkpoint;

import java.io.IOException;
import java.util.EnumSet;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.hadoop.fs.CreateFlag;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.Options.ChecksumOpt;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.permission.FsPermission;
import org.apache.hadoop.hdfs.DistributedFileSystem;
import org.apache.hadoop.util.Progressable;

/**
 * Real HDFS (it is the HDFS client, unchanged) that also records what each {@code create} asked for, so a test can
 * show that our writer asks HDFS for {@code SYNC_BLOCK}: the flag changes what DataNodes do with a finished block, which
 * no test on one machine can observe from outside. Registered with {@code fs.hdfs.impl}.
 */
public class RecordingDistributedFileSystem extends DistributedFileSystem {
    record Create(EnumSet<CreateFlag> flags, short replication, long blockSize, ChecksumOpt checksumOpt) {}

    static final Map<String, Create> CREATES = new ConcurrentHashMap<>();

    @Override
    public FSDataOutputStream create(
            Path f,
            FsPermission permission,
            EnumSet<CreateFlag> flags,
            int bufferSize,
            short replication,
            long blockSize,
            Progressable progress,
            ChecksumOpt checksumOpt)
            throws IOException {
        CREATES.put(
                makeQualified(f).toString(), new Create(EnumSet.copyOf(flags), replication, blockSize, checksumOpt));
        return super.create(f, permission, flags, bufferSize, replication, blockSize, progress, checksumOpt);
    }
}
