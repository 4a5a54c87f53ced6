package io.pscluster.wire;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.google.protobuf.ByteString;
import org.junit.jupiter.api.Test;

class LittleEndianTest {
    @Test
    void shouldRoundTripLongsAndFloatsInLittleEndianOrder() {
        final ByteString keys = LittleEndian.encodeLongs(new long[] {1L, -2L, Long.MAX_VALUE});
        assertThat(keys.byteAt(0)).isEqualTo((byte) 1);
        assertThat(keys.byteAt(7)).isEqualTo((byte) 0);
        assertThat(LittleEndian.decodeLongs(keys, "keys")).containsExactly(1L, -2L, Long.MAX_VALUE);

        final float[] values = {0.5f, -0.0f, Float.NaN, 3e38f};
        final float[] decoded = LittleEndian.decodeFloats(LittleEndian.encodeFloats(values), "values");
        for (int i = 0; i < values.length; i++) {
            assertThat(Float.floatToRawIntBits(decoded[i])).isEqualTo(Float.floatToRawIntBits(values[i]));
        }
    }

    @Test
    void shouldNameTheFieldWhenLengthIsNotAWholeNumberOfValues() {
        assertThatThrownBy(() -> LittleEndian.decodeLongs(ByteString.copyFrom(new byte[9]), "keys"))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessage("keys has 9 bytes, not a multiple of 8 (int64 each)");
        assertThatThrownBy(() -> LittleEndian.decodeFloats(ByteString.copyFrom(new byte[6]), "gradients"))
                .hasMessage("gradients has 6 bytes, not a multiple of 4 (float32 each)");
    }
}
