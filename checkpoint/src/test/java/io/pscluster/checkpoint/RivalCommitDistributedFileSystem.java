package io.pscluster.checkpoint;

import java.io.IOException;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.hdfs.DistributedFileSystem;

/**
 * Real HDFS (the HDFS client, unchanged) where another committer wins every manifest rename by a hair: right before a
 * temporary manifest is renamed to {@code _MANIFEST}, a rival manifest of the same length is created there, after the
 * store's own checks for an existing one. HDFS then answers the rename with {@code false}, without an exception.
 * Registered with {@code fs.hdfs.impl}.
 */
public class RivalCommitDistributedFileSystem extends DistributedFileSystem {
    /** The rival manifest's bytes, by the qualified path of the {@code _MANIFEST} it took. */
    static final Map<String, byte[]> RIVALS = new ConcurrentHashMap<>();

    @Override
    public boolean rename(final Path src, final Path dst) throws IOException {
        if (dst.getName().equals(CheckpointStore.MANIFEST) && src.getName().startsWith(CheckpointStore.MANIFEST)) {
            final byte[] rival;
            try (FSDataInputStream in = open(src)) {
                rival = in.readAllBytes();
            }
            rival[rival.length / 2] ^= 0x01;
            try (FSDataOutputStream out = create(dst, false)) {
                out.write(rival);
            }
            RIVALS.put(makeQualified(dst).toString(), rival);
        }
        return super.rename(src, dst);
    }
}
