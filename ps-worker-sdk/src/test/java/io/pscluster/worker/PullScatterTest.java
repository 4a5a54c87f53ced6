package io.pscluster.worker;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.google.protobuf.ByteString;
import com.google.protobuf.Descriptors;
import com.google.protobuf.UnknownFieldSet;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.pscluster.proto.v1.PullResponse;
import io.pscluster.wire.LittleEndian;
import java.io.ByteArrayInputStream;
import java.io.FilterInputStream;
import java.io.InputStream;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.SplittableRandom;
import java.util.stream.IntStream;
import org.junit.jupiter.api.Test;

class PullScatterTest {
    private final SplittableRandom random = new SplittableRandom(7);

    @Test
    void shouldPutEveryRowAtItsPositionAcrossPiecesThatSplitRows() {
        // More than two pieces of values, rows narrow (float by float) and wide (a bulk get per row); at dim 3 and 37
        // rows (and the last piece) straddle piece boundaries.
        for (final int dim : new int[] {1, 3, KeyDedup.BULK_COPY_DIM - 1, KeyDedup.BULK_COPY_DIM, 37}) {
            final int keys = 3 * PullScatter.PIECE_BYTES / (dim * Float.BYTES) + 5;
            final int[] positions = shuffledPositions(keys);
            final float[] answered = randomFloats(keys * dim);

            final float[] values = new float[keys * dim];
            final PullScatter.Outcome outcome = new PullScatter(values, positions, dim)
                    .parse(trickle(response(answered).toByteArray()));

            assertThat(outcome.problem()).isNull();
            // The first mismatch, not a diff of every value (which takes minutes when every row is wrong).
            final float[] wanted = expected(answered, positions, dim, keys);
            final int mismatch = Arrays.mismatch(values, wanted);
            assertThat(mismatch)
                    .as(
                            "dim %d: first wrong value (%s)",
                            dim, mismatch < 0 ? "none" : values[mismatch] + " not " + wanted[mismatch])
                    .isEqualTo(-1);
        }
    }

    @Test
    void shouldSkipFieldsItDoesNotKnowOfEveryWireTypeAroundTheValues() {
        final int dim = 4;
        final int[] positions = shuffledPositions(10);
        final float[] answered = randomFloats(10 * dim);
        final UnknownFieldSet unknown = UnknownFieldSet.newBuilder()
                .addField(
                        2,
                        UnknownFieldSet.Field.newBuilder()
                                .addVarint(300)
                                .addFixed64(-1L)
                                .addFixed32(7)
                                .addLengthDelimited(ByteString.copyFromUtf8("later"))
                                .build())
                .addField(
                        3,
                        UnknownFieldSet.Field.newBuilder()
                                .addGroup(UnknownFieldSet.newBuilder()
                                        .addField(
                                                4,
                                                UnknownFieldSet.Field.newBuilder()
                                                        .addVarint(5)
                                                        .build())
                                        .build())
                                .build())
                .addField(
                        536_870_911,
                        UnknownFieldSet.Field.newBuilder().addVarint(1).build())
                .build();
        final PullResponse withUnknown =
                response(answered).toBuilder().setUnknownFields(unknown).build();

        final float[] values = new float[10 * dim];
        final PullScatter.Outcome outcome =
                new PullScatter(values, positions, dim).parse(new ByteArrayInputStream(withUnknown.toByteArray()));

        assertThat(outcome.problem()).isNull();
        assertThat(values).containsExactly(expected(answered, positions, dim, 10));
    }

    @Test
    void shouldReportValuesOfTheWrongLengthAndLeaveTheCallersArrayAlone() {
        final float[] values = new float[8];
        final PullScatter.Outcome outcome = new PullScatter(values, new int[] {1, 0}, 4)
                .parse(new ByteArrayInputStream(response(randomFloats(7)).toByteArray()));

        assertThat(outcome.problem()).isEqualTo("shard answered 28 bytes for 2 keys of dim 4");
        assertThat(values).containsOnly(0f);
    }

    @Test
    void shouldNotWriteASecondAnswerToTheCallersArray() {
        // A unary call has one answer; gRPC parses a second before it fails the call, when the caller may hold the
        // array already.
        final float[] values = new float[4];
        final PullScatter scatter = new PullScatter(values, new int[] {0}, 4);
        assertThat(scatter.parse(new ByteArrayInputStream(
                                response(new float[] {1, 2, 3, 4}).toByteArray()))
                        .problem())
                .isNull();

        final PullScatter.Outcome second = scatter.parse(
                new ByteArrayInputStream(response(new float[] {9, 9, 9, 9}).toByteArray()));

        assertThat(second.problem()).contains("second answer");
        assertThat(values).containsExactly(1, 2, 3, 4);
    }

    @Test
    void shouldFailANegativeLengthAsAMalformedAnswer() {
        // Field 1, wire type 2, then a length of -1 as a 10-byte varint.
        final byte[] malformed = {0x0a, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0x01};

        assertThatThrownBy(() ->
                        new PullScatter(new float[4], new int[] {0}, 4).parse(new ByteArrayInputStream(malformed)))
                .isInstanceOfSatisfying(
                        StatusRuntimeException.class,
                        e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.INTERNAL));
    }

    @Test
    void shouldReportAnAnswerWithoutValuesForKeys() {
        final PullScatter.Outcome outcome = new PullScatter(new float[4], new int[] {0}, 4)
                .parse(new ByteArrayInputStream(
                        PullResponse.getDefaultInstance().toByteArray()));

        assertThat(outcome.problem()).isEqualTo("shard answered 0 bytes for 1 keys of dim 4");
    }

    @Test
    void shouldFailATruncatedAnswerAsAMalformedOne() {
        final byte[] whole = response(randomFloats(64)).toByteArray();

        for (final int cut : new int[] {1, 2, whole.length - 1}) {
            final byte[] truncated = Arrays.copyOf(whole, cut);
            assertThatThrownBy(() -> new PullScatter(
                                    new float[64], IntStream.range(0, 16).toArray(), 4)
                            .parse(new ByteArrayInputStream(truncated)))
                    .as("cut at %d of %d bytes", cut, whole.length)
                    .isInstanceOfSatisfying(
                            StatusRuntimeException.class,
                            e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.INTERNAL));
        }
    }

    @Test
    void shouldKnowEveryFieldOfThePullAnswer() {
        // A field added to PullResponse would be skipped as unknown by PullScatter: read it there, then change this.
        final List<Descriptors.FieldDescriptor> fields =
                PullResponse.getDescriptor().getFields();

        assertThat(fields).hasSize(1);
        assertThat(fields.get(0).getNumber()).isEqualTo(1);
        assertThat(fields.get(0).getType()).isEqualTo(Descriptors.FieldDescriptor.Type.BYTES);
    }

    private static PullResponse response(final float[] answered) {
        return PullResponse.newBuilder()
                .setValues(LittleEndian.encodeFloats(answered))
                .build();
    }

    private int[] shuffledPositions(final int keys) {
        final List<Integer> order =
                new ArrayList<>(IntStream.range(0, keys).boxed().toList());
        Collections.shuffle(order, new java.util.Random(random.nextLong()));
        return order.stream().mapToInt(Integer::intValue).toArray();
    }

    private float[] randomFloats(final int count) {
        final float[] floats = new float[count];
        for (int i = 0; i < count; i++) {
            floats[i] = (float) random.nextDouble(-10, 10);
        }
        return floats;
    }

    /** The call's answer when row {@code r} of the shard's answer belongs to key {@code positions[r]}. */
    private static float[] expected(final float[] answered, final int[] positions, final int dim, final int keys) {
        final float[] values = new float[keys * dim];
        for (int r = 0; r < positions.length; r++) {
            System.arraycopy(answered, r * dim, values, positions[r] * dim, dim);
        }
        return values;
    }

    /** A stream that hands out at most 1,000 bytes per read, as a transport's buffers may. */
    private static InputStream trickle(final byte[] bytes) {
        return new FilterInputStream(new ByteArrayInputStream(bytes)) {
            @Override
            public int read(final byte[] into, final int offset, final int length) throws java.io.IOException {
                return super.read(into, offset, Math.min(length, 1_000));
            }
        };
    }
}
