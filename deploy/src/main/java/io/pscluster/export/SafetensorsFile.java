package io.pscluster.export;

import java.io.Closeable;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.UUID;

/**
 * One safetensors file whose tensors' dtypes and shapes are known before any of their bytes, written in place: the
 * header first, then each tensor's bytes at positions the caller chooses, so rows can be streamed in whatever order
 * they are read and the file never has to fit in memory.
 *
 * <p>The format (as published with Hugging Face's {@code safetensors}): 8 bytes, the header's length {@code N} as a
 * little-endian unsigned 64-bit integer; {@code N} bytes of UTF-8 JSON, an object mapping each tensor's name to
 * {@code {"dtype", "shape", "data_offsets": [begin, end)}} (offsets into the byte buffer that follows the header),
 * plus an optional {@code "__metadata__"} object of string to string; then the byte buffer, little-endian, every byte
 * of it belonging to exactly one tensor. The header is padded with spaces so that the buffer starts 8-byte aligned
 * (readers may then map an I64 or F32 tensor without copying); tensors follow each other in the order given, with no
 * gap, so each starts at a multiple of its element size when the ones before it do (the caller puts I64 before F32).
 *
 * <p>The bytes go to a temporary file beside the target ({@code .<name>.<random>.partial}); {@link #commit()} forces
 * it to disk and renames it to the target, so a file with the target's name is always whole. {@link #close()} without
 * a commit deletes the temporary file. Not thread-safe.
 */
final class SafetensorsFile implements Closeable {
    /** The size of the length prefix, and the alignment of the byte buffer. */
    private static final int PREFIX_BYTES = 8;

    /** A tensor: its name, dtype ({@code F32}, {@code I64}) and shape. */
    record Tensor(String name, String dtype, long[] shape) {
        Tensor {
            Objects.requireNonNull(name, "name");
            if (name.equals("__metadata__")) {
                throw new IllegalArgumentException("'__metadata__' is reserved for the metadata");
            }
            elementBytes(dtype);
            shape = shape.clone();
            for (final long extent : shape) {
                if (extent < 0) {
                    throw new IllegalArgumentException("tensor " + name + ": negative extent " + extent);
                }
            }
        }

        long bytes() {
            long elements = 1;
            for (final long extent : shape) {
                elements = Math.multiplyExact(elements, extent);
            }
            return Math.multiplyExact(elements, elementBytes(dtype));
        }

        private static int elementBytes(final String dtype) {
            return switch (dtype) {
                case "F32" -> 4;
                case "I64" -> 8;
                default -> throw new IllegalArgumentException("dtype " + dtype + " is not F32 or I64");
            };
        }
    }

    private final Path target;
    private final Path partial;
    private final FileChannel channel;
    /** Where each tensor's bytes start in the file (not in the buffer: the header is counted in). */
    private final long[] starts;

    private final long length;
    private boolean committed;

    private SafetensorsFile(
            final Path target, final Path partial, final FileChannel channel, final long[] starts, final long length) {
        this.target = target;
        this.partial = partial;
        this.channel = channel;
        this.starts = starts;
        this.length = length;
    }

    /**
     * Creates the temporary file, writes the header and sets the file's length to its final size (the tensors' bytes
     * read as zeros until written).
     *
     * @throws FileAlreadyExistsException if {@code target} exists.
     */
    static SafetensorsFile create(final Path target, final Map<String, String> metadata, final List<Tensor> tensors)
            throws IOException {
        if (Files.exists(target)) {
            throw new FileAlreadyExistsException(target.toString(), null, "the export would replace it");
        }
        final StringBuilder json = new StringBuilder("{\"__metadata__\":{");
        String separator = "";
        for (final Map.Entry<String, String> entry : metadata.entrySet()) {
            json.append(separator);
            appendString(json, entry.getKey());
            json.append(':');
            appendString(json, entry.getValue());
            separator = ",";
        }
        json.append('}');
        final long[] offsets = new long[tensors.size()];
        long offset = 0;
        for (int i = 0; i < tensors.size(); i++) {
            final Tensor tensor = tensors.get(i);
            offsets[i] = offset;
            final long end = Math.addExact(offset, tensor.bytes());
            json.append(',');
            appendString(json, tensor.name());
            json.append(":{\"dtype\":\"").append(tensor.dtype()).append("\",\"shape\":[");
            for (int d = 0; d < tensor.shape().length; d++) {
                json.append(d == 0 ? "" : ",").append(tensor.shape()[d]);
            }
            json.append("],\"data_offsets\":[")
                    .append(offset)
                    .append(',')
                    .append(end)
                    .append("]}");
            offset = end;
        }
        json.append('}');
        byte[] header = json.toString().getBytes(StandardCharsets.UTF_8);
        final int padded = (header.length + PREFIX_BYTES - 1) / PREFIX_BYTES * PREFIX_BYTES;
        final ByteBuffer head = ByteBuffer.allocate(PREFIX_BYTES + padded).order(ByteOrder.LITTLE_ENDIAN);
        head.putLong(padded).put(header);
        while (head.hasRemaining()) {
            head.put((byte) ' ');
        }
        head.flip();
        final long bufferStart = PREFIX_BYTES + padded;
        final long[] starts = new long[tensors.size()];
        for (int i = 0; i < starts.length; i++) {
            starts[i] = bufferStart + offsets[i];
        }

        final Path dir = target.toAbsolutePath().getParent();
        // Not Files.createTempFile: its files are private to the owner, and a model is usually read by another user.
        final Path partial =
                Files.createFile(dir.resolve("." + target.getFileName() + "." + UUID.randomUUID() + ".partial"));
        FileChannel channel = null;
        try {
            channel = FileChannel.open(partial, StandardOpenOption.WRITE);
            writeFully(channel, head, 0);
            // Sets the length up front: a sparse file on most filesystems, so holes cost nothing until written.
            if (bufferStart + offset > channel.size()) {
                writeFully(channel, ByteBuffer.allocate(1), bufferStart + offset - 1);
            }
            return new SafetensorsFile(target, partial, channel, starts, bufferStart + offset);
        } catch (IOException | RuntimeException e) {
            if (channel != null) {
                channel.close();
            }
            Files.deleteIfExists(partial);
            throw e;
        }
    }

    /** Where tensor {@code index}'s bytes start in the file. */
    long start(final int index) {
        return starts[index];
    }

    /** The file's final length. */
    long length() {
        return length;
    }

    /** Writes all of {@code bytes} (position to limit) at {@code position} in the file. */
    void write(final ByteBuffer bytes, final long position) throws IOException {
        writeFully(channel, bytes, position);
    }

    /** Forces the bytes to disk and renames the file to its target; the target must still not exist. */
    void commit() throws IOException {
        channel.force(true);
        channel.close();
        // The move replaces an existing target on POSIX, so look again (another export into the same directory).
        if (Files.exists(target)) {
            throw new FileAlreadyExistsException(target.toString(), null, "it appeared during the export");
        }
        Files.move(partial, target, StandardCopyOption.ATOMIC_MOVE);
        committed = true;
        try (FileChannel dir = FileChannel.open(target.toAbsolutePath().getParent(), StandardOpenOption.READ)) {
            dir.force(true);
        } catch (IOException | UnsupportedOperationException e) {
            // Some platforms cannot open a directory to sync it; the file itself is on disk.
        }
    }

    /** Takes a committed file back (deletes it from its target): a later file of the same export failed. */
    void withdraw() throws IOException {
        if (committed) {
            Files.deleteIfExists(target);
        }
    }

    /** Deletes the temporary file unless the export was committed. */
    @Override
    public void close() throws IOException {
        if (!committed) {
            channel.close();
            Files.deleteIfExists(partial);
        }
    }

    private static void writeFully(final FileChannel channel, final ByteBuffer bytes, final long position)
            throws IOException {
        long at = position;
        while (bytes.hasRemaining()) {
            at += channel.write(bytes, at);
        }
    }

    /** A JSON string: quotes, backslash and control characters escaped, the rest as UTF-8. */
    private static void appendString(final StringBuilder json, final String value) {
        json.append('"');
        for (int i = 0; i < value.length(); i++) {
            final char c = value.charAt(i);
            if (c == '"' || c == '\\') {
                json.append('\\').append(c);
            } else if (c < 0x20) {
                json.append(String.format("\\u%04x", (int) c));
            } else {
                json.append(c);
            }
        }
        json.append('"');
    }
}
