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

    private static long mix(long z) {
        z = (z ^ (z >>> 30)) * 0xbf58476d1ce4e5b9L;
        z = (z ^ (z >>> 27)) * 0x94d049bb133111ebL;
        return z ^ (z >>> 31);
    }
}
