package io.pscluster.checkpoint;

import java.io.IOException;

/**
 * A checkpoint file or manifest is damaged: bad magic, unsupported version, out-of-bounds index, wrong length or
 * checksum. The message names the file and what is wrong. Distinct from other {@link IOException}s so a caller can
 * tell "this checkpoint is bad, fall back to the previous one" from "the filesystem is unreachable, retry".
 */
public class CheckpointCorruptException extends IOException {
    private static final long serialVersionUID = 1L;

    private final long checkpointId;
    private final boolean missingBlocksOnly;

    public CheckpointCorruptException(String message) {
        this(message, null, 0, false);
    }

    public CheckpointCorruptException(String message, Throwable cause) {
        this(message, cause, 0, false);
    }

    /**
     * @param checkpointId the checkpoint whose own file or manifest is bad (for a delta whose parent is, the parent);
     *     0 when not known.
     * @param missingBlocksOnly true when all that is wrong is blocks no replica could serve: the bytes may come back
     *     with a DataNode, so it is not proven damage.
     */
    public CheckpointCorruptException(String message, Throwable cause, long checkpointId, boolean missingBlocksOnly) {
        super(message, cause);
        this.checkpointId = checkpointId;
        this.missingBlocksOnly = missingBlocksOnly;
    }

    /** The checkpoint whose own file or manifest is bad, or {@code restoring} (the one being read) when not known. */
    public long checkpointIdOr(long restoring) {
        return checkpointId != 0 ? checkpointId : restoring;
    }

    /**
     * This damage as found in a file of checkpoint {@code id}: this exception when it already names its checkpoint,
     * else the same one naming {@code id} (a reader of a row file knows its directory, its caller the checkpoint).
     */
    public CheckpointCorruptException inCheckpoint(long id) {
        if (checkpointId != 0) {
            return this;
        }
        CheckpointCorruptException named =
                new CheckpointCorruptException(getMessage(), getCause(), id, missingBlocksOnly);
        named.setStackTrace(getStackTrace());
        return named;
    }

    /** All that is wrong is blocks no replica could serve (they may come back): not proven damage. */
    public boolean missingBlocksOnly() {
        return missingBlocksOnly;
    }
}
