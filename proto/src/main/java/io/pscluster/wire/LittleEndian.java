package io.pscluster.wire;

import com.google.protobuf.ByteString;
import com.google.protobuf.UnsafeByteOperations;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * Encodes keys (int64) and values (float32) as the raw little-endian {@code bytes} fields of the protocol, and
 * decodes them with bulk reads. Encoding wraps a freshly filled array without copying it again; the array must not
 * be touched afterwards.
 */
public final class LittleEndian {
    private LittleEndian() {}

    /** Encodes {@code count} keys starting at {@code offset}. */
    public static ByteString encodeLongs(final long[] values, final int offset, final int count) {
        final ByteBuffer buffer = ByteBuffer.allocate(count * Long.BYTES).order(ByteOrder.LITTLE_ENDIAN);
        buffer.asLongBuffer().put(values, offset, count);
        return UnsafeByteOperations.unsafeWrap(buffer.array());
    }

    public static ByteString encodeLongs(final long[] values) {
        return encodeLongs(values, 0, values.length);
    }

    /** Encodes {@code count} floats starting at {@code offset}. */
    public static ByteString encodeFloats(final float[] values, final int offset, final int count) {
        final ByteBuffer buffer = ByteBuffer.allocate(count * Float.BYTES).order(ByteOrder.LITTLE_ENDIAN);
        buffer.asFloatBuffer().put(values, offset, count);
        return UnsafeByteOperations.unsafeWrap(buffer.array());
    }

    public static ByteString encodeFloats(final float[] values) {
        return encodeFloats(values, 0, values.length);
    }

    /**
     * Decodes a field of int64 values.
     *
     * @throws IllegalArgumentException if the length is not a multiple of 8.
     */
    public static long[] decodeLongs(final ByteString bytes, final String field) {
        if (bytes.size() % Long.BYTES != 0) {
            throw new IllegalArgumentException(
                    field + " has " + bytes.size() + " bytes, not a multiple of " + Long.BYTES + " (int64 each)");
        }
        final long[] values = new long[bytes.size() / Long.BYTES];
        bytes.asReadOnlyByteBuffer()
                .order(ByteOrder.LITTLE_ENDIAN)
                .asLongBuffer()
                .get(values);
        return values;
    }

    /**
     * Decodes a field of float32 values.
     *
     * @throws IllegalArgumentException if the length is not a multiple of 4.
     */
    public static float[] decodeFloats(final ByteString bytes, final String field) {
        if (bytes.size() % Float.BYTES != 0) {
            throw new IllegalArgumentException(
                    field + " has " + bytes.size() + " bytes, not a multiple of " + Float.BYTES + " (float32 each)");
        }
        final float[] values = new float[bytes.size() / Float.BYTES];
        bytes.asReadOnlyByteBuffer()
                .order(ByteOrder.LITTLE_ENDIAN)
                .asFloatBuffer()
                .get(values);
        return values;
    }
}
