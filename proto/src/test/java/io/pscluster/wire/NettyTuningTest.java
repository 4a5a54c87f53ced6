package io.pscluster.wire;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

class NettyTuningTest {
    private final String before = System.getProperty(NettyTuning.MAX_ORDER_PROPERTY);

    @AfterEach
    void restore() {
        if (before == null) {
            System.clearProperty(NettyTuning.MAX_ORDER_PROPERTY);
        } else {
            System.setProperty(NettyTuning.MAX_ORDER_PROPERTY, before);
        }
    }

    @Test
    void shouldGiveNettysAllocatorSixteenMebibyteChunksUnlessTheCommandLineChoseOtherwise() {
        System.clearProperty(NettyTuning.MAX_ORDER_PROPERTY);
        NettyTuning.applyDefaults();
        assertThat(System.getProperty(NettyTuning.MAX_ORDER_PROPERTY)).isEqualTo("11");

        System.setProperty(NettyTuning.MAX_ORDER_PROPERTY, "9");
        NettyTuning.applyDefaults();
        assertThat(System.getProperty(NettyTuning.MAX_ORDER_PROPERTY)).isEqualTo("9");
    }
}
