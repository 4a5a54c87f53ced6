package io.pscluster.bench;

import io.grpc.Drainable;
import io.grpc.KnownLength;
import io.grpc.MethodDescriptor;
import io.grpc.Status;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * The baseline's one RPC, defined without protobuf: a request is a 4-byte little-endian reply length followed by a
 * payload, and the reply is that many bytes. With it the baseline sends exactly the bytes the SDK sends and gets back
 * exactly the bytes a shard returns: a push is a sink (keys and gradients in, 4 bytes back), a pull a source of the
 * same size as the shard's answer (keys in, values out).
 */
final class RawExchange {
    static final String SERVICE = "pscluster.bench.RawExchange";
    static final int HEADER_BYTES = Integer.BYTES;

    static final MethodDescriptor<byte[], byte[]> METHOD = MethodDescriptor.<byte[], byte[]>newBuilder()
            .setType(MethodDescriptor.MethodType.UNARY)
            .setFullMethodName(MethodDescriptor.generateFullMethodName(SERVICE, "Exchange"))
            .setRequestMarshaller(ByteArrayMarshaller.INSTANCE)
            .setResponseMarshaller(ByteArrayMarshaller.INSTANCE)
            .build();

    private RawExchange() {}

    /** A request of {@code payloadBytes} (to be filled after the header) asking for {@code replyBytes} back. */
    static ByteBuffer request(final int payloadBytes, final int replyBytes) {
        final ByteBuffer request =
                ByteBuffer.allocate(HEADER_BYTES + payloadBytes).order(ByteOrder.LITTLE_ENDIAN);
        request.putInt(replyBytes);
        return request;
    }

    /** The reply length a request asks for, or -1 when it is too short to say. */
    static int replyBytes(final byte[] request) {
        if (request.length < HEADER_BYTES) {
            return -1;
        }
        return ByteBuffer.wrap(request).order(ByteOrder.LITTLE_ENDIAN).getInt(0);
    }

    /** Passes a message's bytes through untouched. */
    enum ByteArrayMarshaller implements MethodDescriptor.Marshaller<byte[]> {
        INSTANCE;

        @Override
        public InputStream stream(final byte[] value) {
            return new DrainableBytes(value);
        }

        @Override
        public byte[] parse(final InputStream stream) {
            try {
                if (stream instanceof KnownLength) {
                    // One copy out of the transport's buffers, as protobuf's parser makes for a bytes field.
                    final byte[] bytes = new byte[stream.available()];
                    final int read = stream.readNBytes(bytes, 0, bytes.length);
                    if (read != bytes.length) {
                        throw new IOException("message ended after " + read + " of " + bytes.length + " bytes");
                    }
                    return bytes;
                }
                return stream.readAllBytes();
            } catch (IOException e) {
                throw Status.INTERNAL
                        .withDescription("cannot read a raw message: " + e.getMessage())
                        .withCause(e)
                        .asRuntimeException();
            }
        }
    }

    /**
     * Tells gRPC the length up front and copies the array straight into its frame, the way protobuf's message stream
     * does, so the baseline pays no extra buffering that the SDK's path does not.
     */
    private static final class DrainableBytes extends ByteArrayInputStream implements KnownLength, Drainable {
        DrainableBytes(final byte[] bytes) {
            super(bytes);
        }

        @Override
        public synchronized int drainTo(final OutputStream target) throws IOException {
            final int length = count - pos;
            target.write(buf, pos, length);
            pos = count;
            return length;
        }
    }
}
