package io.pscluster.cli;

import io.pscluster.checkpoint.CheckpointStore;
import java.io.IOException;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.LocalFileSystem;
import org.apache.hadoop.fs.Path;

/**
 * The local filesystem, in which another process's retention deletes one checkpoint while a command reads it: the first
 * time a row file under {@link #deleteWhenRead} is looked at, the checkpoint is deleted as the store deletes one (its
 * manifest first, then its directory), and the look goes on. Picked by {@code fs.file.impl} in a test's
 * {@code core-site.xml}, with {@code fs.file.impl.disable.cache} so that only that command's store gets it.
 */
public final class RetentionRaceFileSystem extends LocalFileSystem {
    /** The checkpoint directory to delete when one of its row files is first read; null: none. */
    static volatile Path deleteWhenRead;

    @Override
    public FileStatus getFileStatus(final Path f) throws IOException {
        deleteIfRead(f);
        return super.getFileStatus(f);
    }

    @Override
    public FSDataInputStream open(final Path f, final int bufferSize) throws IOException {
        deleteIfRead(f);
        return super.open(f, bufferSize);
    }

    private void deleteIfRead(final Path f) throws IOException {
        final Path dir = deleteWhenRead;
        if (dir == null || !f.getName().endsWith(".rows") || !isUnder(makeQualified(f), makeQualified(dir))) {
            return;
        }
        deleteWhenRead = null;
        if (!super.delete(new Path(dir, CheckpointStore.MANIFEST), false) || !super.delete(dir, true)) {
            throw new IOException("the test could not delete " + dir);
        }
    }

    private static boolean isUnder(final Path path, final Path dir) {
        for (Path p = path; p != null; p = p.getParent()) {
            if (p.equals(dir)) {
                return true;
            }
        }
        return false;
    }
}
