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
 * A handler giving back the claim of a push that was not queued (see {@link RecordRoom}) racing the partition's writer,
 * which allocates a chunk for another push's claimed row and then removes two rows. Chunks of 2 records: 2 rows in
 * chunk 0, and the two pushes' claims of 1 record each counted a second chunk. Once the writer has allocated that
 * chunk it stays counted, whatever the handler saw of it: a release that read the chunks allocated before the writer
 * allocated, and gave the chunk back after the writer's removals, would leave an allocated chunk outside the budget.
 * Coded as (records claimed, chunks counted, chunks' bytes held by the budget).
 */
@JCStressTest
@Description("A release on a handler racing the writer's allocation of a chunk and its removal of rows")
@Outcome(id = "1, 2, 2", expect = ACCEPTABLE, desc = "the allocated chunk stays counted, in either order")
@Outcome(expect = FORBIDDEN, desc = "an allocated chunk is no longer counted, or the budget disagrees")
@State
public class RecordRoomAllocationTest {
    private static final int CHUNK_BYTES = 64;

    private final OffHeapBudget budget = new OffHeapBudget(16L * CHUNK_BYTES);
    private final RecordRoom room = new RecordRoom(budget, 2, CHUNK_BYTES);

    public RecordRoomAllocationTest() {
        room.claim(2, true);
        room.chunkAllocated();
        room.claim(1, true);
        room.claim(1, true);
    }

    @Actor
    public void writer() {
        room.chunkAllocated();
        room.release(1);
        room.release(1);
    }

    @Actor
    public void handler() {
        room.release(1);
    }

    @Arbiter
    public void arbiter(final III_Result result) {
        result.r1 = (int) room.claimed();
        result.r2 = (int) room.countedChunks();
        result.r3 = (int) ((budget.limit() - budget.available()) / CHUNK_BYTES);
    }
}
