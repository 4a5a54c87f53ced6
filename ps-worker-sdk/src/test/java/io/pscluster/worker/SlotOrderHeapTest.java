package io.pscluster.worker;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.wire.Slots;
import java.io.File;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * A large call whose arrays fit the caller's heap but whose ordered copy does not (a JVM of its own, {@code -Xmx128m},
 * holding 72 MB of keys and gradients): the call goes on unordered, the JVM lives, and the next call that fits is
 * ordered again.
 */
class SlotOrderHeapTest {
    private static final int LARGE_KEYS = 6_000_000;

    @Test
    void shouldGoOnUnorderedWhenTheHeapHasNoRoomForTheOrderedCopy() throws Exception {
        final List<String> command = List.of(
                System.getProperty("java.home") + File.separator + "bin" + File.separator + "java",
                "-Xmx128m",
                "-XX:+UseSerialGC",
                "-cp",
                System.getProperty("java.class.path"),
                SlotOrderHeapTest.class.getName());
        final Process child =
                new ProcessBuilder(command).redirectErrorStream(true).start();
        final String output = new String(child.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertThat(child.waitFor(120, TimeUnit.SECONDS))
                .as("the child exited:\n%s", output)
                .isTrue();
        assertThat(child.exitValue())
                .as("the child's exit, output:\n%s", output)
                .isZero();
        assertThat(output).contains("RESULT large=unordered small=ordered");
    }

    /** The child: one push too large to copy in its heap, then one that fits. */
    public static void main(final String[] args) {
        final long tableHash = Slots.tableHash("t");
        final long[] keys = new long[LARGE_KEYS];
        final float[] gradients = new float[LARGE_KEYS];
        final SplittableRandom random = new SplittableRandom(3);
        for (int i = 0; i < keys.length; i++) {
            keys[i] = random.nextLong();
            gradients[i] = i;
        }
        final SlotChunks.Ordered large = SlotChunks.inSlotOrder(tableHash, keys, gradients, 1);
        final long[] smallKeys = java.util.Arrays.copyOf(keys, SlotChunks.ORDER_MIN_KEYS);
        final SlotChunks.Ordered small = SlotChunks.inSlotOrder(tableHash, smallKeys, null, 1);
        System.out.println("RESULT large=" + (large == null ? "unordered" : "ordered") + " small="
                + (small != null && small.keys().length == smallKeys.length ? "ordered" : "unordered")
                + " (held " + keys[keys.length - 1] + gradients[gradients.length - 1] + ")");
    }
}
