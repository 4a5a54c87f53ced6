package io.pscluster.checkpoint;

import java.util.Objects;
import org.apache.hadoop.fs.Path;

/**
 * A complete checkpoint as listed by {@link CheckpointStore}: its manifest decoded, its files not yet verified.
 *
 * @param id the checkpoint id, equal to {@code manifest.id()}.
 * @param dir the checkpoint directory; the manifest's file paths are relative to it.
 * @param manifest the decoded manifest.
 */
public record CheckpointInfo(long id, Path dir, Manifest manifest) {
    public CheckpointInfo {
        Objects.requireNonNull(dir, "dir");
        Objects.requireNonNull(manifest, "manifest");
        if (manifest.id() != id) {
            throw new IllegalArgumentException("checkpoint " + id + " has a manifest with id " + manifest.id());
        }
    }

    /** The absolute path of one of the checkpoint's files. */
    public Path resolve(RowFileInfo file) {
        return new Path(dir, file.path());
    }
}
