package io.pscluster.checkpoint;

import java.time.Duration;
import java.util.List;
import java.util.Objects;
import org.apache.hadoop.fs.Path;

/**
 * Which committed checkpoints {@link CheckpointStore#retain} keeps: the newest {@code keepLast} and those younger than
 * {@code maxAge}; a checkpoint outside either limit that is set is deleted. Whatever the limits, the newest checkpoint,
 * the newest one whose files are all present, and every checkpoint a kept one depends on (a delta's base and parents)
 * are kept.
 *
 * @param keepLast how many of the newest checkpoints to keep; 0: no limit by count.
 * @param maxAge delete checkpoints older than this; {@link Duration#ZERO}: no limit by age.
 */
public record RetentionPolicy(int keepLast, Duration maxAge) {
    public RetentionPolicy {
        Objects.requireNonNull(maxAge, "maxAge");
        if (keepLast < 0) {
            throw new IllegalArgumentException("keepLast=" + keepLast + " must be >= 0 (0: no limit by count)");
        }
        if (maxAge.isNegative()) {
            throw new IllegalArgumentException("maxAge=" + maxAge + " must be >= 0 (0: no limit by age)");
        }
    }

    /** Keeps every checkpoint (orphaned directories of failed ones are still removed). */
    public static RetentionPolicy keepAll() {
        return new RetentionPolicy(0, Duration.ZERO);
    }

    /** What {@link CheckpointStore#retain} did. */
    public record Outcome(List<Long> kept, List<Long> deleted, List<Path> orphansRemoved) {
        public Outcome {
            kept = List.copyOf(kept);
            deleted = List.copyOf(deleted);
            orphansRemoved = List.copyOf(orphansRemoved);
        }
    }
}
