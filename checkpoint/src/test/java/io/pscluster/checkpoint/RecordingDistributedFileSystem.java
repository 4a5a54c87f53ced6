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
 * Real HDFS (it is the HDFS client, unchanged) that also records what each {@code create} asked for and whether the
 * stream was {@code hsync}ed whole before it was closed, so a test can show that our writer asks HDFS for
 * {@code SYNC_BLOCK} and syncs: both change what DataNodes do with the bytes, which no test on one machine can observe
 * from outside. Registered with {@code fs.hdfs.impl}.
 */
public class RecordingDistributedFileSystem extends DistributedFileSystem {
    record Create(EnumSet<CreateFlag> flags, short replication, long blockSize, ChecksumOpt checksumOpt) {}

    static final Map<String, Create> CREATES = new ConcurrentHashMap<>();
    /** Files whose stream was {@code hsync}ed and then closed with nothing written in between: their length. */
    static final Map<String, Long> SYNCED_THEN_CLOSED = new ConcurrentHashMap<>();

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
        String path = makeQualified(f).toString();
        CREATES.put(path, new Create(EnumSet.copyOf(flags), replication, blockSize, checksumOpt));
        FSDataOutputStream out =
                super.create(f, permission, flags, bufferSize, replication, blockSize, progress, checksumOpt);
        return new FSDataOutputStream(out, null) {
            private long syncedAt = -1;

            @Override
            public void hsync() throws IOException {
                super.hsync();
                syncedAt = getPos();
            }

            @Override
            public void close() throws IOException {
                super.close();
                if (syncedAt == getPos()) {
                    SYNCED_THEN_CLOSED.put(path, syncedAt);
                }
            }
        };
    }
}
