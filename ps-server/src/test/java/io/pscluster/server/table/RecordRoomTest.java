package io.pscluster.server.table;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.Test;

/** {@link RecordRoom}'s count of records and chunks against an {@link OffHeapBudget} of its own. */
class RecordRoomTest {
    private static final int PER_CHUNK = 4;
    private static final long CHUNK_BYTES = 1024;

    private final OffHeapBudget budget = new OffHeapBudget(100 * CHUNK_BYTES);
    private final RecordRoom room = new RecordRoom(budget, PER_CHUNK, CHUNK_BYTES);

    private long chunksHeld() {
        return (budget.limit() - budget.available()) / CHUNK_BYTES;
    }

    @Test
    void shouldCountAChunkWhenAClaimNeedsOneAndGiveItBackWhenTheClaimIsReleased() {
        assertThat(room.claim(3, true)).isTrue();
        assertThat(room.countedChunks()).isEqualTo(1);
        assertThat(room.claim(2, true)).isTrue();
        assertThat(room.countedChunks()).isEqualTo(2);
        assertThat(chunksHeld()).isEqualTo(2);
        assertThat(budget.anyAhead()).isTrue();

        room.release(2);
        assertThat(room.claimed()).isEqualTo(3);
        assertThat(room.countedChunks()).isEqualTo(1);
        assertThat(chunksHeld()).isEqualTo(1);
    }

    /**
     * A handler that gives back the claim of a push not queued must not stop counting a chunk the writer allocated
     * for another push's claim, even when the writer removed rows since, so that the claims alone no longer need it:
     * the chunk's memory is in use until the table is dropped.
     */
    @Test
    void shouldKeepCountingAChunkTheWriterAllocatedAfterTheRowsInItAreRemoved() {
        assertThat(room.claim(PER_CHUNK, true)).isTrue();
        room.chunkAllocated();
        // Two pushes of one new key each: the second chunk is counted for them.
        assertThat(room.claim(1, true)).isTrue();
        assertThat(room.claim(1, true)).isTrue();
        // The writer creates the first push's row in a new chunk, then removes two rows.
        room.chunkAllocated();
        room.release(1);
        room.release(1);
        // The second push was not queued: its handler gives its claim back.
        room.release(1);

        assertThat(room.claimed()).isEqualTo(PER_CHUNK - 1);
        assertThat(room.countedChunks()).as("chunks counted, 2 allocated").isEqualTo(2);
        assertThat(chunksHeld()).isEqualTo(2);
    }

    /**
     * An upper bound of a claim (every key of a push) takes chunks only while they are a small share of the free
     * bytes; an exact claim takes what is there.
     */
    @Test
    void shouldLetAnUpperBoundTakeOnlyAShareOfTheFreeChunks() {
        assertThat(room.claim(30 * PER_CHUNK, false))
                .as("30 of 100 free chunks")
                .isFalse();
        assertThat(room.claimed()).isZero();
        assertThat(room.claim(20 * PER_CHUNK, false)).as("20 of 100").isTrue();
        assertThat(room.claim(80 * PER_CHUNK, true)).as("the other 80, exactly").isTrue();
        assertThat(room.claim(1, true)).as("a record more").isFalse();
        assertThat(chunksHeld()).isEqualTo(100);
    }
}
