package io.pscluster.checkpoint;

import java.io.Closeable;
import java.io.IOException;
import org.apache.hadoop.fs.ChecksumException;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.hdfs.BlockMissingException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A file read by position that, when a read finds no good replica, reads again from a newly opened stream before it
 * gives up.
 *
 * <p>Why: HDFS's client marks a DataNode dead for the rest of a stream once one replica on it fails its checksum. With
 * bad replicas of different blocks on different DataNodes, one stream runs out of DataNodes (a {@link
 * ChecksumException} or {@link BlockMissingException}) although every block still has a good replica. The client has
 * reported the bad replicas it found to the NameNode, which leaves them out of the locations a new stream gets, so
 * each further attempt gets past at least one more bad replica, unless none of a block's replicas is good: then the
 * same failure comes back and, after as many attempts as the range can hold bad replicas, is thrown.
 *
 * <p>The price: a block with no good replica is declared damaged only after those attempts (one per block the read
 * spans and per replica beyond the first: two for a chunk inside one block replicated 3 times), each with the client's
 * own waits between its location refreshes ({@code dfs.client.retry.window.base}, 3 s by default), so a restore falls
 * back to an older checkpoint some tens of seconds later than a single stream would.
 */
final class ReplicaRetryingInput implements Closeable {
    private static final Logger LOG = LoggerFactory.getLogger(ReplicaRetryingInput.class);

    private final FileSystem fs;
    private final Path file;
    private final long blockSize;
    private final int replication;
    private FSDataInputStream in;

    ReplicaRetryingInput(final FileSystem fs, final Path file, final FileStatus status) throws IOException {
        this.fs = fs;
        this.file = file;
        this.blockSize = Math.max(1, status.getBlockSize());
        this.replication = Math.max(1, status.getReplication());
        this.in = fs.open(file);
    }

    /**
     * Reads exactly {@code length} bytes at {@code position}; sequential reads of adjacent ranges stream.
     *
     * @throws java.io.EOFException if the file ends first.
     * @throws ChecksumException or {@link BlockMissingException} when a block of the range has no good replica.
     */
    void readFully(final long position, final byte[] bytes, final int offset, final int length) throws IOException {
        final long blocks = (position + length - 1) / blockSize - position / blockSize + 1;
        final long retries = blocks * Math.max(1, replication - 1);
        for (long attempt = 0; ; attempt++) {
            try {
                in.seek(position);
                in.readFully(bytes, offset, length);
                return;
            } catch (ChecksumException | BlockMissingException noGoodReplica) {
                if (attempt >= retries) {
                    throw noGoodReplica;
                }
                LOG.warn(
                        "{}: a read of {} bytes at offset {} found no good replica ({}); reading again from a new"
                                + " stream (retry {} of {})",
                        file,
                        length,
                        position,
                        noGoodReplica.toString(),
                        attempt + 1,
                        retries);
                in.close();
                in = fs.open(file);
            }
        }
    }

    @Override
    public void close() throws IOException {
        in.close();
    }
}
