package io.pscluster.proxy;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.pscluster.wire.Slots;
import java.util.Arrays;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

class SlotOwnersTest {

    private static String[] owners() {
        return new String[Slots.SLOT_COUNT];
    }

    @Test
    void shouldEncodeRangesAndSingleSlotsAsDocumentedWhenOwnersAreContiguous() {
        final String[] owners = owners();
        Arrays.fill(owners, 0, 1024, "a");
        Arrays.fill(owners, 1024, 2048, "b");
        owners[2048] = "a";
        Arrays.fill(owners, 2049, Slots.SLOT_COUNT, "b");

        final String text = SlotOwners.encode(owners);

        assertThat(text).isEqualTo("a=0-1023,2048;b=1024-2047,2049-4095");
        assertThat(SlotOwners.decode(text)).containsExactly(owners);
    }

    @Test
    void shouldRoundTripWhenOwnersInterleaveSlotBySlot() {
        final String[] owners = owners();
        final String[] ids = {"shard-0", "shard-1", "shard.2_x"};
        for (int slot = 0; slot < owners.length; slot++) {
            owners[slot] = ids[slot % 3];
        }

        final String text = SlotOwners.encode(owners);

        assertThat(text)
                .startsWith("shard-0=0,3,6,")
                .contains(";shard-1=1,4,7,")
                .contains(";shard.2_x=2,5,8,");
        assertThat(SlotOwners.decode(text)).containsExactly(owners);
    }

    @Test
    void shouldKeepUnownedSlotsUnownedWhenSomeSlotsHaveNoOwner() {
        final String[] owners = owners();
        Arrays.fill(owners, 1, 100, "a");
        Arrays.fill(owners, 200, 300, "b");
        Arrays.fill(owners, 300, 400, "a");
        owners[4094] = "b";

        final String text = SlotOwners.encode(owners);

        assertThat(text).isEqualTo("a=1-99,300-399;b=200-299,4094");
        final String[] decoded = SlotOwners.decode(text);
        assertThat(decoded).containsExactly(owners);
        assertThat(decoded[0]).isNull();
        assertThat(decoded[4095]).isNull();
    }

    @Test
    void shouldEncodeAsEmptyAndDecodeToAllNullWhenNoSlotIsOwned() {
        assertThat(SlotOwners.encode(owners())).isEmpty();
        assertThat(SlotOwners.decode("")).hasSize(Slots.SLOT_COUNT).containsOnlyNulls();
    }

    @Test
    void shouldRoundTripWhenOneOwnerHasEverySlot() {
        final String[] owners = owners();
        Arrays.fill(owners, "only");

        assertThat(SlotOwners.encode(owners)).isEqualTo("only=0-4095");
        assertThat(SlotOwners.decode("only=0-4095")).containsOnly("only");
    }

    static Stream<Arguments> malformed() {
        return Stream.of(
                Arguments.of("a", "part 'a'"),
                Arguments.of("=0-5", "part '=0-5'"),
                Arguments.of("a b=0", "part 'a b=0'"),
                Arguments.of("a=0;;b=1", "part ''"),
                Arguments.of("a/b=0", "part 'a/b=0'"),
                Arguments.of("a=x", "range 'x' of a"),
                Arguments.of("a=", "range '' of a"),
                Arguments.of("a=1,,2", "range '' of a"),
                Arguments.of("a=1-", "range '1-' of a"),
                Arguments.of("a=-1", "range '-1' of a"),
                Arguments.of("a=1-2-3", "range '1-2-3' of a"),
                Arguments.of("a=4096", "range '4096' of a"),
                Arguments.of("a=0-4096", "range '0-4096' of a"),
                Arguments.of("a=9-3", "range '9-3' of a"),
                Arguments.of("a=0;b=99999999999", "range '99999999999' of b"));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("malformed")
    void shouldNameTheBadPartWhenTheTextIsMalformed(final String text, final String namedPart) {
        assertThatThrownBy(() -> SlotOwners.decode(text))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining(namedPart);
    }
}
