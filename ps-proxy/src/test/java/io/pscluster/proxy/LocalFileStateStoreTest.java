package io.pscluster.proxy;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.pscluster.proto.v1.ProxyStateRecord;
import io.pscluster.proto.v1.ShardInfo;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class LocalFileStateStoreTest {
    @TempDir
    Path dir;

    private static ProxyStateRecord record(final long epoch) {
        return ProxyStateRecord.newBuilder()
                .setEpoch(epoch)
                .addShards(ShardInfo.newBuilder().setShardId("shard-0").setAddress("h1:1"))
                .addSlotOwner("shard-0")
                .build();
    }

    @Test
    void shouldRefuseASecondStoreOnTheSameDirectoryUntilTheFirstIsClosed() throws Exception {
        final LocalFileStateStore first = new LocalFileStateStore(dir);

        assertThatThrownBy(() -> new LocalFileStateStore(dir))
                .isInstanceOf(java.io.IOException.class)
                .hasMessageContaining("is in use by another proxy")
                .hasMessageContaining(dir.toAbsolutePath().toString());

        first.close();
        new LocalFileStateStore(dir).close();
    }

    @Test
    void shouldLoadNothingWhenNoRecordWasEverSaved() throws IOException {
        assertThat(new LocalFileStateStore(dir.resolve("new")).load()).isEmpty();
    }

    @Test
    void shouldLoadTheNewestRecordWhenSavedTwice() throws IOException {
        final LocalFileStateStore store = new LocalFileStateStore(dir);
        store.save(record(3));
        store.save(record(4));
        store.close();

        final LocalFileStateStore reopened = new LocalFileStateStore(dir);
        assertThat(reopened.load()).contains(record(4));
        try (var files = Files.list(dir)) {
            assertThat(files)
                    .as("no temporary file is left")
                    .containsExactlyInAnyOrder(store.file(), dir.resolve(LocalFileStateStore.LOCK_NAME));
        }
        reopened.close();
    }

    @Test
    void shouldFailNamingTheFileWhenAByteIsFlipped() throws IOException {
        final LocalFileStateStore store = new LocalFileStateStore(dir);
        store.save(record(3));
        final byte[] bytes = Files.readAllBytes(store.file());
        bytes[bytes.length - 2] ^= 0x40;
        Files.write(store.file(), bytes);

        assertThatThrownBy(store::load)
                .isInstanceOf(IOException.class)
                .hasMessageContaining(store.file().toString())
                .hasMessageContaining("crc32c");
    }

    @Test
    void shouldFailNamingTheFileWhenItIsTruncated() throws IOException {
        final LocalFileStateStore store = new LocalFileStateStore(dir);
        store.save(record(3));
        final byte[] bytes = Files.readAllBytes(store.file());
        Files.write(store.file(), Arrays.copyOf(bytes, bytes.length - 3));

        assertThatThrownBy(store::load)
                .isInstanceOf(IOException.class)
                .hasMessageContaining(store.file().toString())
                .hasMessageContaining("damaged");
    }

    @Test
    void shouldIgnoreAndDeleteATemporaryFileWhenASaveDidNotFinish() throws IOException {
        final LocalFileStateStore store = new LocalFileStateStore(dir);
        store.save(record(3));
        final Path leftover = dir.resolve(LocalFileStateStore.FILE_NAME + ".tmp-crashed");
        Files.write(leftover, new byte[] {1, 2, 3});

        assertThat(store.load()).contains(record(3));
        assertThat(leftover).doesNotExist();
    }
}
