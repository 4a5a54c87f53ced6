package io.pscluster.checkpoint;

import java.util.List;
import java.util.Objects;

/**
 * What {@link CheckpointStore#check} found about one checkpoint.
 *
 * @param checkpointId the checkpoint checked.
 * @param depth how far it was checked.
 * @param problems one line per damaged file, naming the file and the problem; empty if the checkpoint is intact.
 * @param filesByChecksum files whose CRC32C the filesystem reported (HDFS {@code COMPOSITE_CRC}): not read back.
 * @param filesReadBack files read back to compute their CRC32C (filesystems without a comparable checksum, or
 *     {@link Depth#READ_BACK}).
 * @param bytesReadBack the bytes those files hold.
 * @param missingBlocks problems that are only a block no replica could serve (a DataNode down may bring it back).
 */
public record VerifyReport(
        long checkpointId,
        Depth depth,
        List<String> problems,
        int filesByChecksum,
        int filesReadBack,
        long bytesReadBack,
        int missingBlocks) {

    public VerifyReport {
        Objects.requireNonNull(depth, "depth");
        problems = List.copyOf(problems);
    }

    public boolean intact() {
        return problems.isEmpty();
    }

    /** Not intact, but every problem is a block no replica could serve: unreadable now, not proven damaged. */
    public boolean missingBlocksOnly() {
        return !problems.isEmpty() && missingBlocks == problems.size();
    }

    /** How far a check goes; each depth does what the previous one does, and more. */
    public enum Depth {
        /** Every file exists with its listed length: a few NameNode calls, no data read. */
        PRESENCE,
        /**
         * Also: every block has a replica that serves its first byte (not lost, not all corrupt), and the file's
         * CRC32C is what the manifest says. On HDFS the CRC32C comes from the DataNodes' stored block checksums
         * ({@code COMPOSITE_CRC}), so no data crosses the network beyond one byte per block; a filesystem without a
         * comparable checksum (local) reads the file back. A replica that rotted on disk after it was written still
         * matches its stored checksums: {@link #READ_BACK} (or HDFS's block scanner) finds it.
         */
        CHECKSUM,
        /** Also reads every byte back, which makes HDFS check each replica it reads against its block checksums. */
        READ_BACK
    }
}
