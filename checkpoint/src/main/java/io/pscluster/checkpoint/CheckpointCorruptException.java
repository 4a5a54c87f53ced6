package io.pscluster.checkpoint;

import java.io.IOException;

/**
 * A checkpoint file or manifest is damaged: bad magic, unsupported version, out-of-bounds index, wrong length or
 * checksum. The message names the file and what is wrong. Distinct from other {@link IOException}s so a caller can
 * tell "this checkpoint is bad, fall back to the previous one" from "the filesystem is unreachable, retry".
 */
public class CheckpointCorruptException extends IOException {
    private static final long serialVersionUID = 1L;

    public CheckpointCorruptException(String message) {
        super(message);
    }

    public CheckpointCorruptException(String message, Throwable cause) {
        super(message, cause);
    }
}
