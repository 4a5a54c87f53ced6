package io.pscluster.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.google.protobuf.ByteString;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.internal.CompositeReadableBuffer;
import io.grpc.internal.ReadableBuffers;
import io.pscluster.proto.v1.PushRequest;
import io.pscluster.wire.LittleEndian;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.util.Arrays;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

class PushDecoderTest {
    private final PushDecoder decoder = new PushDecoder();

    @Test
    void shouldDecodeKeysAndGradientsThatOutliveTheNextParseOnTheSameThread() {
        final SplittableRandom random = new SplittableRandom(5);
        final long[] keys = random.longs(3000).toArray();
        final float[] gradients = new float[keys.length * 16];
        for (int i = 0; i < gradients.length; i++) {
            gradients[i] = (float) random.nextGaussian();
        }
        final PushRequest request = request(keys, gradients);

        final PushDecoder.DecodedPush first = decoder.parse(wire(request, 16384));
        // Same thread, same reused array, other bytes: the first push's arrays must not change.
        final PushDecoder.DecodedPush second = decoder.parse(wire(request(new long[] {1, 2}, new float[32]), 100));

        assertThat(first.keys()).containsExactly(keys);
        assertThat(first.gradients()).containsExactly(gradients);
        assertThat(first.undecodable()).isNull();
        assertThat(first.table()).isEqualTo("t");
        assertThat(first.routingEpoch()).isEqualTo(7);
        assertThat(first.clientId()).isEqualTo(11);
        assertThat(first.sequence()).isEqualTo(13);
        assertThat(first.jobId()).isEqualTo("job");
        assertThat(first.workerId()).isEqualTo(2);
        assertThat(first.clock()).isEqualTo(17);
        assertThat(first.request()).isEqualTo(request);
        assertThat(second.keys()).containsExactly(1, 2);
    }

    /**
     * The decoder carries every field of a push by name: a field added to PushRequest must be added to DecodedPush
     * too, or the shard would silently drop it. This fails until it is.
     */
    @Test
    void shouldParseTheByteFieldsAsViewsOfTheArrayTheRequestArrivedIn() throws Exception {
        final byte[] bytes =
                request(new long[] {7, 8}, new float[] {1.5f, -2.5f}).toByteArray();

        final PushRequest aliased = PushDecoder.aliased(bytes, bytes.length);
        final ByteString gradients = aliased.getGradients();
        final int first = indexOf(bytes, gradients.toByteArray());
        bytes[first] ^= 0x55;

        // A view sees the change (nothing was copied); a copy, which costs a pass over 1 MiB per large push, would not.
        assertThat(gradients.byteAt(0)).isEqualTo(bytes[first]);
    }

    private static int indexOf(final byte[] haystack, final byte[] needle) {
        for (int i = 0; i + needle.length <= haystack.length; i++) {
            if (Arrays.equals(haystack, i, i + needle.length, needle, 0, needle.length)) {
                return i;
            }
        }
        throw new AssertionError("the field's bytes are not in the request's");
    }

    @Test
    void shouldKnowEveryFieldOfAPushRequest() {
        assertThat(PushRequest.getDescriptor().getFields())
                .extracting(field -> field.getName())
                .containsExactlyInAnyOrder(
                        "table",
                        "routing_epoch",
                        "keys",
                        "gradients",
                        "client_id",
                        "sequence",
                        "job_id",
                        "worker_id",
                        "clock",
                        "partial");
    }

    @Test
    void shouldPassOnCopiesOfFieldsWhoseLengthIsNotAWholeNumberOfValues() {
        final PushRequest request = request(new long[] {1}, new float[] {1}).toBuilder()
                .setKeys(ByteString.copyFrom(new byte[] {1, 2, 3, 4, 5, 6, 7}))
                .build();

        final PushDecoder.DecodedPush decoded = decoder.parse(wire(request, 3));
        decoder.parse(wire(request(new long[] {-1}, new float[] {-1}), 3));

        assertThat(decoded.keys()).isNull();
        assertThat(decoded.undecodable()).isEqualTo(request);
        assertThat(decoded.request()).isEqualTo(request);
    }

    @Test
    void shouldAnswerInternalAsTheDefaultMarshallerDoesWhenTheBytesAreNotAPushRequest() {
        final byte[] garbage = new byte[64];
        Arrays.fill(garbage, (byte) 0xff);

        assertThatThrownBy(() -> decoder.parse(ReadableBuffers.openStream(ReadableBuffers.wrap(garbage), true)))
                .isInstanceOfSatisfying(
                        StatusRuntimeException.class,
                        e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.INTERNAL));
    }

    private static PushRequest request(final long[] keys, final float[] gradients) {
        return PushRequest.newBuilder()
                .setTable("t")
                .setRoutingEpoch(7)
                .setClientId(11)
                .setSequence(13)
                .setJobId("job")
                .setWorkerId(2)
                .setClock(17)
                .setPartial(true)
                .setKeys(LittleEndian.encodeLongs(keys))
                .setGradients(LittleEndian.encodeFloats(gradients))
                .build();
    }

    /** The request as gRPC hands it to a marshaller: a known-length stream over frames of {@code frameBytes}. */
    private static InputStream wire(final PushRequest request, final int frameBytes) {
        final byte[] bytes = request.toByteArray();
        final CompositeReadableBuffer frames = new CompositeReadableBuffer();
        for (int from = 0; from < bytes.length; from += frameBytes) {
            final int length = Math.min(frameBytes, bytes.length - from);
            frames.addBuffer(ReadableBuffers.wrap(ByteBuffer.wrap(Arrays.copyOfRange(bytes, from, from + length))));
        }
        return ReadableBuffers.openStream(frames, true);
    }
}
