package io.pscluster.server.table;

import static org.openjdk.jcstress.annotations.Expect.ACCEPTABLE;
import static org.openjdk.jcstress.annotations.Expect.FORBIDDEN;

import org.openjdk.jcstress.annotations.Actor;
import org.openjdk.jcstress.annotations.Arbiter;
import org.openjdk.jcstress.annotations.Description;
import org.openjdk.jcstress.annotations.JCStressTest;
import org.openjdk.jcstress.annotations.Outcome;
import org.openjdk.jcstress.annotations.State;
import org.openjdk.jcstress.infra.results.III_Result;

/**
 * A push's handler claiming records (see {@link RecordRoom}) racing the partition's writer giving one back (a row
 * removed). Chunks of 2 records, 2 claimed in 1 chunk to begin with: the claim of a third record needs a second chunk
 * unless the release came first, and the release must give that chunk's bytes back when it comes second. Whatever the
 * order, 2 records stay claimed in 1 counted chunk, and the budget holds exactly the bytes of the chunks counted.
 * Coded as (records claimed, chunks counted, chunks' bytes held by the budget).
 */
@JCStressTest
@Description("Records claimed by a handler while the writer releases one: the budget holds the bytes of counted chunks")
@Outcome(id = "2, 1, 1", expect = ACCEPTABLE, desc = "the claim and the release, in either order")
@Outcome(expect = FORBIDDEN, desc = "the chunks counted and the budget's bytes disagree, or a claim or release is lost")
@State
public class RecordRoomClaimReleaseTest {
    private static final int CHUNK_BYTES = 64;

    private final OffHeapBudget budget = new OffHeapBudget(16L * CHUNK_BYTES);
    private final RecordRoom room = new RecordRoom(budget, 2, CHUNK_BYTES);

    public RecordRoomClaimReleaseTest() {
        room.claim(2, true);
        room.chunkAllocated();
    }

    @Actor
    public void handler() {
        room.claim(1, true);
    }

    @Actor
    public void writer() {
        room.release(1);
    }

    @Arbiter
    public void arbiter(final III_Result result) {
        result.r1 = (int) room.claimed();
        result.r2 = (int) room.countedChunks();
        result.r3 = (int) ((budget.limit() - budget.available()) / CHUNK_BYTES);
    }
}
