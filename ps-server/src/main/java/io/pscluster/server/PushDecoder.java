package io.pscluster.server;

import com.google.protobuf.ByteString;
import com.google.protobuf.CodedInputStream;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.UnknownFieldSet;
import com.google.protobuf.UnsafeByteOperations;
import io.grpc.Drainable;
import io.grpc.KnownLength;
import io.grpc.MethodDescriptor;
import io.grpc.Status;
import io.grpc.protobuf.ProtoUtils;
import io.pscluster.proto.v1.PushRequest;
import io.pscluster.proto.v1.PushResponse;
import io.pscluster.proto.v1.ShardServiceGrpc;
import io.pscluster.wire.LittleEndian;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteOrder;

/**
 * The shard's marshaller for push requests: decodes keys and gradients from the bytes the request arrived in, once,
 * into the arrays the table takes, while the request is parsed.
 *
 * <p>The default marshaller reads a request into a per-thread array, copies each {@code bytes} field out of it, and
 * the handler then decoded the copies: three passes over a 1 MiB push. Here the request is read into a per-thread
 * array too, parsed with aliasing (its {@code bytes} fields are views of that array, not copies) and decoded from
 * those views before the array can be reused: two passes. A fresh array per request instead of the per-thread one
 * measured slower than the copy it saves (zeroing 1 MiB, allocated outside the thread's allocation buffer).
 *
 * <p>A request whose keys or gradients have a length that is not a whole number of values is passed on undecoded
 * (with copied fields), so that the handler refuses it with the same INVALID_ARGUMENT as before.
 */
final class PushDecoder implements MethodDescriptor.Marshaller<PushDecoder.DecodedPush> {
    /** Requests up to this size are read into the reading thread's array; larger ones into an array of their own. */
    static final int REUSED_BUFFER_MAX_BYTES = 4 << 20;

    /**
     * A push request's fields with its keys and gradients decoded; {@code undecodable} is the request itself (with
     * copied fields) when they could not be, and null otherwise.
     */
    record DecodedPush(
            String table,
            long routingEpoch,
            long clientId,
            long sequence,
            String jobId,
            int workerId,
            long clock,
            boolean partial,
            long[] keys,
            float[] gradients,
            PushRequest undecodable) {
        /** The request as it came, for serializing. */
        PushRequest request() {
            if (undecodable != null) {
                return undecodable;
            }
            return PushRequest.newBuilder()
                    .setTable(table)
                    .setRoutingEpoch(routingEpoch)
                    .setClientId(clientId)
                    .setSequence(sequence)
                    .setJobId(jobId)
                    .setWorkerId(workerId)
                    .setClock(clock)
                    .setPartial(partial)
                    .setKeys(LittleEndian.encodeLongs(keys))
                    .setGradients(LittleEndian.encodeFloats(gradients))
                    .build();
        }
    }

    private static final ThreadLocal<byte[]> BUFFER = new ThreadLocal<>();

    private final MethodDescriptor.Marshaller<PushRequest> protobuf =
            ProtoUtils.marshaller(PushRequest.getDefaultInstance());

    /** The push method with requests decoded by this marshaller. */
    static MethodDescriptor<DecodedPush, PushResponse> method() {
        final MethodDescriptor<PushRequest, PushResponse> push = ShardServiceGrpc.getPushMethod();
        return push.toBuilder(new PushDecoder(), push.getResponseMarshaller()).build();
    }

    @Override
    public InputStream stream(final DecodedPush value) {
        return protobuf.stream(value.request());
    }

    @Override
    public DecodedPush parse(final InputStream stream) {
        if (stream instanceof Drainable || !(stream instanceof KnownLength)) {
            // Not serialized (the in-process transport) or of unknown length: the default parse, then decode.
            return decoded(protobuf.parse(stream));
        }
        try {
            final int size = stream.available();
            byte[] bytes = size <= REUSED_BUFFER_MAX_BYTES ? BUFFER.get() : null;
            if (bytes == null || bytes.length < size) {
                bytes = new byte[size];
                if (size <= REUSED_BUFFER_MAX_BYTES) {
                    BUFFER.set(bytes);
                }
            }
            final int read = stream.readNBytes(bytes, 0, size);
            if (read != size || stream.read() >= 0) {
                throw new IOException("a push request's stream announced " + size + " bytes and held "
                        + (read == size ? "more" : String.valueOf(read)));
            }
            // Decoded now, before this thread's array is reused: nothing returned refers to it.
            return decoded(aliased(bytes, size));
        } catch (InvalidProtocolBufferException e) {
            // As the default marshaller answers a malformed request.
            throw Status.INTERNAL
                    .withDescription("Invalid protobuf byte sequence")
                    .withCause(e)
                    .asRuntimeException();
        } catch (IOException e) {
            throw Status.INTERNAL
                    .withDescription("reading a push request failed")
                    .withCause(e)
                    .asRuntimeException();
        }
    }

    /** Decodes {@code request}'s keys and gradients; nothing returned refers to the request's bytes. */
    static DecodedPush decoded(final PushRequest request) {
        final ByteString keys = request.getKeys();
        final ByteString gradients = request.getGradients();
        if (keys.size() % Long.BYTES != 0 || gradients.size() % Float.BYTES != 0) {
            // The handler refuses it, naming the field: keep copies of the fields, not views.
            return withValues(
                    request,
                    null,
                    null,
                    PushRequest.newBuilder(request)
                            .setKeys(ByteString.copyFrom(keys.asReadOnlyByteBuffer()))
                            .setGradients(ByteString.copyFrom(gradients.asReadOnlyByteBuffer()))
                            .setUnknownFields(UnknownFieldSet.getDefaultInstance())
                            .build());
        }
        final long[] keyValues = new long[keys.size() / Long.BYTES];
        keys.asReadOnlyByteBuffer()
                .order(ByteOrder.LITTLE_ENDIAN)
                .asLongBuffer()
                .get(keyValues);
        final float[] gradientValues = new float[gradients.size() / Float.BYTES];
        gradients
                .asReadOnlyByteBuffer()
                .order(ByteOrder.LITTLE_ENDIAN)
                .asFloatBuffer()
                .get(gradientValues);
        return withValues(request, keyValues, gradientValues, null);
    }

    /**
     * Parses the push request in {@code bytes[0 .. size)} with its {@code bytes} fields (keys, gradients) as views of
     * {@code bytes}, not copies: valid only until the array is reused.
     */
    static PushRequest aliased(final byte[] bytes, final int size) throws IOException {
        // A coded input over an array protobuf takes as immutable (through a ByteString): only then does aliasing
        // make the bytes fields views of the array; over a plain array each is copied (1 MiB per large push).
        final CodedInputStream input =
                UnsafeByteOperations.unsafeWrap(bytes, 0, size).newCodedInput();
        input.enableAliasing(true);
        // gRPC has applied its own limit on message size already.
        input.setSizeLimit(Integer.MAX_VALUE);
        final PushRequest request = PushRequest.parser().parseFrom(input);
        input.checkLastTagWas(0);
        return request;
    }

    private static DecodedPush withValues(
            final PushRequest request, final long[] keys, final float[] gradients, final PushRequest undecodable) {
        return new DecodedPush(
                request.getTable(),
                request.getRoutingEpoch(),
                request.getClientId(),
                request.getSequence(),
                request.getJobId(),
                request.getWorkerId(),
                request.getClock(),
                request.getPartial(),
                keys,
                gradients,
                undecodable);
    }
}
