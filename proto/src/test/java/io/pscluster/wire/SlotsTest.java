package io.pscluster.wire;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.Test;

class SlotsTest {
    @Test
    void shouldSpreadConsecutiveKeysEvenlyOverAllSlots() {
        final long table = Slots.tableHash("weights");
        final int[] counts = new int[Slots.SLOT_COUNT];
        final int keys = Slots.SLOT_COUNT * 64;
        for (long key = 0; key < keys; key++) {
            counts[Slots.slotOf(table, key)]++;
        }
        for (final int count : counts) {
            // 64 expected per slot; a binomial tail this far out would mean a broken mix.
            assertThat(count).isBetween(25, 110);
        }
    }

    @Test
    void shouldGiveTheSameSlotForTheSameTableAndKeyAndDifferForOtherTables() {
        final long a = Slots.tableHash("a");
        final long b = Slots.tableHash("b");
        assertThat(Slots.slotOf(a, 42)).isEqualTo(Slots.slotOf(Slots.tableHash("a"), 42));
        int same = 0;
        for (long key = 0; key < 1000; key++) {
            if (Slots.slotOf(a, key) == Slots.slotOf(b, key)) {
                same++;
            }
        }
        assertThat(same).isLessThan(10);
    }

    @Test
    void shouldPinTheHashSoCheckpointsStayReadable() {
        // Checkpoints and routing depend on this exact function; a change must be deliberate.
        assertThat(Slots.tableHash("")).isEqualTo(0xcbf29ce484222325L);
        assertThat(Slots.slotOf(0, 0)).isEqualTo((int) (mix(0x9e3779b97f4a7c15L) >>> 52));
    }

    @Test
    void shouldPinTableHashesOnManyNames() {
        // FNV-1a 64 of "a" is the published test vector; the others pin what checkpoints written so far depend on.
        assertThat(Slots.tableHash("a")).isEqualTo(0xaf63dc4c8601ec8cL);
        assertThat(Slots.tableHash("weights")).isEqualTo(0xb1494b6ef08a411eL);
        assertThat(Slots.tableHash("lr_weights")).isEqualTo(0x381c012ad2cdd1fdL);
        assertThat(Slots.tableHash("counter")).isEqualTo(0x77976c7416517c63L);
        assertThat(Slots.tableHash("emb_user_id")).isEqualTo(0x0a47c49646fddfe9L);
        assertThat(Slots.tableHash("\u00fcn\u00efc\u00f8d\u00e9 \u8868")).isEqualTo(0x62458439a555dd89L);
    }

    @Test
    void shouldPinSlotsOnManyKeys() {
        final long[] keys = {0, 1, -1, 42, 1_000_003L, Long.MAX_VALUE, Long.MIN_VALUE, (3L << 56) | 12345};
        final long weights = Slots.tableHash("weights");
        final long counter = Slots.tableHash("counter");
        final int[] expectedWeights = {2758, 691, 104, 1330, 1669, 1581, 614, 3314};
        final int[] expectedCounter = {4036, 1519, 668, 2207, 1576, 4045, 3359, 415};
        for (int i = 0; i < keys.length; i++) {
            assertThat(Slots.slotOf(weights, keys[i]))
                    .as("weights, key %d", keys[i])
                    .isEqualTo(expectedWeights[i]);
            assertThat(Slots.slotOf(counter, keys[i]))
                    .as("counter, key %d", keys[i])
                    .isEqualTo(expectedCounter[i]);
        }
    }

    private static long mix(long z) {
        z = (z ^ (z >>> 30)) * 0xbf58476d1ce4e5b9L;
        z = (z ^ (z >>> 27)) * 0x94d049bb133111ebL;
        return z ^ (z >>> 31);
    }
}
