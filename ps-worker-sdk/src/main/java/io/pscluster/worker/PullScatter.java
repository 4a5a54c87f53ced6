package io.pscluster.worker;

import io.grpc.MethodDescriptor;
import io.grpc.Status;
import io.pscluster.proto.v1.PullRequest;
import io.pscluster.proto.v1.PullResponse;
import io.pscluster.proto.v1.ShardServiceGrpc;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;

/**
 * The SDK's marshaller for one pull request's answer: reads the answer's values from the transport's stream in small
 * pieces and writes each row straight to where the caller's array wants it (the request's positions), as the answer
 * is parsed.
 *
 * <p>The default marshaller read a 1 MiB answer into a per-thread array, copied its {@code values} field into a fresh
 * one (protobuf copies {@code bytes} fields of an array it may not keep), and the SDK then decoded the copy row by row
 * into the caller's array: two passes over memory and a fresh 1 MiB array per answer before the rows reached the
 * caller. Here the answer goes through a 64 KiB per-thread array that stays in cache, once.
 *
 * <p>{@link PullResponse} has one field ({@code values = 1}): other fields are skipped as unknown ones are, and a test
 * fails if one is added without being read here. A {@code values} field of the wrong length is not scattered but
 * reported in the {@link Outcome}, so that the call fails with the same INTERNAL status, naming the lengths, as
 * before; a malformed answer fails the parse as the default marshaller's would.
 *
 * <p>One instance serves one request (it knows where that request's rows go), with a method descriptor of its own
 * ({@link #method}). gRPC parses an answer on the call's executor before it hands it to the observer, so the rows are
 * in the caller's array before the request's future completes.
 */
final class PullScatter implements MethodDescriptor.Marshaller<PullScatter.Outcome> {
    /** Bytes read from the stream at a time: a multiple of a float, small enough to stay in cache. */
    static final int PIECE_BYTES = 64 << 10;

    private static final VarHandle FLOAT_LE =
            MethodHandles.byteArrayViewVarHandle(float[].class, ByteOrder.LITTLE_ENDIAN);

    private static final int VALUES_FIELD = 1;
    private static final ThreadLocal<ByteBuffer> PIECE =
            ThreadLocal.withInitial(() -> ByteBuffer.allocate(PIECE_BYTES).order(ByteOrder.LITTLE_ENDIAN));

    /** What parsing an answer did: {@code problem} is null when its rows are in the caller's array. */
    record Outcome(String problem) {}

    private final float[] values;
    private final int[] positions;
    private final int dim;
    /**
     * Set once an answer has been parsed. A unary call has one answer, but gRPC parses a second one a misbehaving
     * shard sends before it fails the call for it, after the first completed the request: by then the caller may hold
     * the array, so nothing after the first answer may write to it. gRPC parses one call's answers in order on the
     * call's serializing executor; volatile all the same.
     */
    private volatile boolean answered;

    /**
     * @param values the call's answer, {@code dim} floats per key of the call.
     * @param positions the call's keys (indexes into it) this request carries, in the order the shard answers them.
     */
    PullScatter(final float[] values, final int[] positions, final int dim) {
        this.values = values;
        this.positions = positions;
        this.dim = dim;
    }

    /** The pull method with its answer parsed by this marshaller. */
    MethodDescriptor<PullRequest, Outcome> method() {
        final MethodDescriptor<PullRequest, PullResponse> pull = ShardServiceGrpc.getPullMethod();
        return pull.toBuilder(pull.getRequestMarshaller(), this).build();
    }

    @Override
    public InputStream stream(final Outcome value) {
        throw new UnsupportedOperationException("the SDK parses pull answers; it never sends one");
    }

    @Override
    public Outcome parse(final InputStream stream) {
        if (answered) {
            return new Outcome("shard sent a second answer to one pull request; it was not read");
        }
        answered = true;
        try {
            // An answer without the field holds no values (protobuf leaves an empty field out).
            String problem = check(0);
            for (long tag = readTag(stream); tag != 0; tag = readTag(stream)) {
                final int wireType = (int) (tag & 7);
                if (tag >>> 3 == VALUES_FIELD && wireType == 2) {
                    // Protobuf keeps the last occurrence of a field: so does this, row by row.
                    final int length = readLength(stream);
                    problem = check(length);
                    if (problem == null) {
                        scatter(stream, length);
                    } else {
                        stream.skipNBytes(length);
                    }
                } else {
                    skip(stream, tag);
                }
            }
            return new Outcome(problem);
        } catch (IOException e) {
            // As the default marshaller answers a malformed message.
            throw Status.INTERNAL
                    .withDescription("Invalid protobuf byte sequence")
                    .withCause(e)
                    .asRuntimeException();
        }
    }

    private String check(final int length) {
        final long expected = (long) positions.length * dim * Float.BYTES;
        return length == expected
                ? null
                : "shard answered " + length + " bytes for " + positions.length + " keys of dim " + dim;
    }

    /** Reads {@code length} bytes of rows, in the order of {@link #positions}, into their places in {@link #values}. */
    private void scatter(final InputStream stream, final int length) throws IOException {
        final ByteBuffer piece = PIECE.get();
        if (dim < KeyDedup.BULK_COPY_DIM) {
            scatterNarrow(stream, length, piece.array());
            return;
        }
        final FloatBuffer floats = piece.asFloatBuffer();
        int row = 0;
        int column = 0;
        for (int left = length; left > 0; ) {
            final int bytes = Math.min(left, PIECE_BYTES);
            readFully(stream, piece.array(), bytes);
            floats.clear().limit(bytes / Float.BYTES);
            while (floats.hasRemaining()) {
                final int run = Math.min(dim - column, floats.remaining());
                floats.get(values, positions[row] * dim + column, run);
                column += run;
                if (column == dim) {
                    column = 0;
                    row++;
                }
            }
            left -= bytes;
        }
    }

    /**
     * As {@link #scatter} for rows narrower than {@link KeyDedup#BULK_COPY_DIM}: float by float, where a bulk get per
     * row would cost a call and its checks for each row.
     */
    private void scatterNarrow(final InputStream stream, final int length, final byte[] piece) throws IOException {
        int row = 0;
        int column = 0;
        for (int left = length; left > 0; ) {
            final int bytes = Math.min(left, PIECE_BYTES);
            readFully(stream, piece, bytes);
            for (int at = 0; at < bytes; at += Float.BYTES) {
                values[positions[row] * dim + column] = (float) FLOAT_LE.get(piece, at);
                if (++column == dim) {
                    column = 0;
                    row++;
                }
            }
            left -= bytes;
        }
    }

    private static void readFully(final InputStream stream, final byte[] into, final int bytes) throws IOException {
        if (stream.readNBytes(into, 0, bytes) != bytes) {
            throw new EOFException("a pull answer ended inside its values");
        }
    }

    /** The next field's tag (field number and wire type, up to 32 bits), or 0 at the end of the message. */
    private static long readTag(final InputStream stream) throws IOException {
        final int first = stream.read();
        if (first < 0) {
            return 0;
        }
        final long tag = readVarint(stream, first);
        if (tag >>> 3 == 0 || tag > 0xFFFF_FFFFL) {
            throw new IOException("a pull answer holds an invalid tag " + Long.toUnsignedString(tag));
        }
        return tag;
    }

    private static int readLength(final InputStream stream) throws IOException {
        final long length = readVarint(stream, stream.read());
        if (length < 0 || length > Integer.MAX_VALUE) {
            throw new IOException("a pull answer holds a field of " + Long.toUnsignedString(length) + " bytes");
        }
        return (int) length;
    }

    /** A varint whose first byte ({@code -1} at the end of the stream) was read already. */
    private static long readVarint(final InputStream stream, final int first) throws IOException {
        long value = 0;
        int next = first;
        for (int shift = 0; shift < 64; shift += 7) {
            if (next < 0) {
                throw new EOFException("a pull answer ended inside a varint");
            }
            value |= (long) (next & 0x7f) << shift;
            if ((next & 0x80) == 0) {
                return value;
            }
            next = stream.read();
        }
        throw new IOException("a pull answer holds a varint longer than 10 bytes");
    }

    /** Skips the field of {@code tag}, whose tag was read (a group up to and with its end tag). */
    private static void skip(final InputStream stream, final long tag) throws IOException {
        switch ((int) (tag & 7)) {
            case 0 -> readVarint(stream, stream.read());
            case 1 -> stream.skipNBytes(Long.BYTES);
            case 2 -> stream.skipNBytes(readLength(stream));
            case 3 -> {
                // A group (deprecated, still valid): its fields, then an end tag of the same field number.
                final long end = (tag & ~7L) | 4;
                long inner = readTag(stream);
                while (inner != end) {
                    if (inner == 0 || (inner & 7) == 4) {
                        throw new IOException("a pull answer holds a group of field " + (tag >>> 3) + " not ended");
                    }
                    skip(stream, inner);
                    inner = readTag(stream);
                }
            }
            case 5 -> stream.skipNBytes(Integer.BYTES);
            default ->
                throw new IOException("a pull answer holds a field of wire type " + (tag & 7)
                        + " where none may be (field " + (tag >>> 3) + ")");
        }
    }
}
