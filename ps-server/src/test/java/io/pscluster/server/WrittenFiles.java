package io.pscluster.server;

import io.pscluster.checkpoint.ChunkCodec;
import io.pscluster.checkpoint.Manifest;
import io.pscluster.checkpoint.RowFileInfo;
import io.pscluster.proto.v1.CheckpointFile;

/** What a shard said it wrote, as the checkpoint format records it (the proxy's coordinator does the same). */
final class WrittenFiles {
    private WrittenFiles() {}

    static RowFileInfo info(final CheckpointFile file) {
        return new RowFileInfo(
                file.getPath(),
                file.getLength(),
                file.getCrc32C(),
                file.getRows(),
                file.getSlotsList().stream().mapToInt(Integer::intValue).toArray(),
                ChunkCodec.fromProto(file.getCodec()).orElseThrow(),
                file.getUncompressedBytes());
    }

    /** The manifest entry of a file that shard {@code shardId} wrote. */
    static Manifest.FileEntry entry(final String shardId, final CheckpointFile file) {
        return new Manifest.FileEntry(file.getTable(), shardId, info(file), file.getRemovedKeys());
    }
}
