package io.pscluster.local;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;

/** Damage done to checkpoint files by hand, as a rotten disk would, for tests of what a restore makes of it. */
public final class CheckpointFiles {
    private CheckpointFiles() {}

    /** Flips one bit of the byte at {@code at} in {@code file}. */
    public static void flipBit(final Path file, final long at) throws IOException {
        assertThat(file).exists();
        try (RandomAccessFile raf = new RandomAccessFile(file.toFile(), "rw")) {
            assertThat(at).isLessThan(raf.length());
            raf.seek(at);
            final int b = raf.read();
            raf.seek(at);
            raf.write(b ^ 0x01);
        }
    }

    /**
     * Flips a bit in the middle of every row file of checkpoint {@code id} under the local root {@code root} written
     * by a shard whose id contains {@code shardId} ("" for every shard); returns the files damaged (at least one).
     */
    public static List<Path> flipABitInEachRowFile(final Path root, final long id, final String shardId)
            throws IOException {
        final Path checkpoint = root.resolve(String.format("ckpt-%012d", id));
        final List<Path> files;
        try (Stream<Path> paths = Files.walk(checkpoint)) {
            files = paths.filter(Files::isRegularFile)
                    .filter(path -> {
                        final String name = path.getFileName().toString();
                        return !name.startsWith("_")
                                && !name.startsWith(".")
                                && checkpoint.relativize(path).toString().contains(shardId);
                    })
                    .toList();
        }
        assertThat(files)
                .as("row files of checkpoint %d by shard '%s'", id, shardId)
                .isNotEmpty();
        for (final Path file : files) {
            flipBit(file, Files.size(file) / 2);
        }
        return files;
    }
}
