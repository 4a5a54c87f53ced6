package io.pscluster.checkpoint;

import java.util.Arrays;
import java.util.Objects;

/**
 * What a manifest records about one row file, as returned by {@link RowFileWriter#finish()}.
 *
 * <p>The slots array is copied on the way in and on the way out, so an instance is immutable; {@code equals} and
 * {@code hashCode} compare the array's contents.
 *
 * @param path the file's path relative to the checkpoint directory, e.g. {@code shard-0/emb.000000000007.rows}; no
 *     leading {@code /}, no empty, {@code .} or {@code ..} segments, no {@code :} or {@code \}.
 * @param length the file's length in bytes.
 * @param crc32c the CRC32C of the whole file (the low 32 bits of {@link java.util.zip.CRC32C#getValue()}).
 * @param rows the number of rows in the file.
 * @param slots the sorted distinct slots that have at least one row in the file.
 * @param codec how the file's chunks are stored; {@link ChunkCodec#NONE} for files of format version 1.
 * @param uncompressedBytes the bytes the rows take uncompressed ({@code rows * (8 + 4 * rowWidth)}); 0 if unknown
 *     (manifests of format 1 did not record it).
 */
public record RowFileInfo(
        String path, long length, int crc32c, long rows, int[] slots, ChunkCodec codec, long uncompressedBytes) {
    public RowFileInfo {
        checkRelativePath(path);
        if (length < 0) {
            throw new IllegalArgumentException("length=" + length + " must be >= 0 (file " + path + ")");
        }
        if (rows < 0) {
            throw new IllegalArgumentException("rows=" + rows + " must be >= 0 (file " + path + ")");
        }
        Objects.requireNonNull(slots, "slots");
        slots = slots.clone();
        for (int i = 0; i < slots.length; i++) {
            if (slots[i] < 0 || (i > 0 && slots[i] <= slots[i - 1])) {
                throw new IllegalArgumentException("slots must be distinct, ascending and >= 0, but slots[" + i + "]="
                        + slots[i] + " (file " + path + ")");
            }
        }
        if (slots.length > rows) {
            throw new IllegalArgumentException(slots.length + " slots but only " + rows
                    + " rows: every listed slot has a row (file " + path + ")");
        }
        Objects.requireNonNull(codec, "codec");
        if (uncompressedBytes < 0) {
            throw new IllegalArgumentException(
                    "uncompressedBytes=" + uncompressedBytes + " must be >= 0 (file " + path + ")");
        }
    }

    /** A file whose rows are stored plainly, with its uncompressed size unknown (as manifests of format 1 say). */
    public RowFileInfo(String path, long length, int crc32c, long rows, int[] slots) {
        this(path, length, crc32c, rows, slots, ChunkCodec.NONE, 0);
    }

    /** Returns a copy of the slots. */
    @Override
    public int[] slots() {
        return slots.clone();
    }

    /** The number of slots, without copying them. */
    public int slotCount() {
        return slots.length;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof RowFileInfo other
                && path.equals(other.path)
                && length == other.length
                && crc32c == other.crc32c
                && rows == other.rows
                && Arrays.equals(slots, other.slots)
                && codec == other.codec
                && uncompressedBytes == other.uncompressedBytes;
    }

    @Override
    public int hashCode() {
        return Objects.hash(path, length, crc32c, rows, Arrays.hashCode(slots), codec, uncompressedBytes);
    }

    @Override
    public String toString() {
        return "RowFileInfo[path=" + path + ", length=" + length + ", crc32c=" + String.format("%08x", crc32c)
                + ", rows=" + rows + ", slots=" + slots.length + ", codec=" + codec + ", uncompressedBytes="
                + uncompressedBytes + "]";
    }

    /**
     * Rejects paths that would escape the checkpoint directory or that Hadoop would parse as a URI scheme, since a
     * manifest's paths are resolved against its directory.
     */
    static void checkRelativePath(String path) {
        Objects.requireNonNull(path, "path");
        if (path.isEmpty() || path.startsWith("/") || path.indexOf(':') >= 0 || path.indexOf('\\') >= 0) {
            throw new IllegalArgumentException(
                    "path '" + path + "' must be a non-empty relative path without ':' or '\\'");
        }
        for (String segment : path.split("/", -1)) {
            if (segment.isEmpty() || segment.equals(".") || segment.equals("..")) {
                throw new IllegalArgumentException("path '" + path + "' must not contain empty, '.' or '..' segments");
            }
        }
    }
}
