package io.pscluster.checkpoint;

import java.net.URI;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.io.TempDir;

/** {@link CheckpointStore} on {@code file://}, the embedded default for a laptop. */
class LocalCheckpointStoreTest extends CheckpointStoreContract {
    @TempDir
    java.nio.file.Path tmp;

    @Override
    URI newRoot() {
        return tmp.resolve("ps-data").toUri();
    }

    @Override
    Configuration conf() {
        return new Configuration();
    }

    @Override
    boolean hasFileChecksum() {
        return false;
    }
}
