package io.pscluster.server.table;

import static org.openjdk.jcstress.annotations.Expect.ACCEPTABLE;
import static org.openjdk.jcstress.annotations.Expect.FORBIDDEN;

import org.openjdk.jcstress.annotations.Actor;
import org.openjdk.jcstress.annotations.Description;
import org.openjdk.jcstress.annotations.JCStressTest;
import org.openjdk.jcstress.annotations.Outcome;
import org.openjdk.jcstress.annotations.State;
import org.openjdk.jcstress.infra.results.II_Result;

/**
 * {@link RecordReuseReadTest} through the path a pull takes: the reader reads key A from the candidate record its
 * home entry named before the removal (as a block's stages find it ahead of the copy), then from a candidate it
 * finds afresh, while the writer removes A and creates B in A's freed record. A read must give A's row or report A
 * absent; B's row under A's key means the candidate was trusted without checking whose record it now is.
 *
 * <p>Each read is coded as 0 (absent), 1 (A's row), 2 (B's row), 3 (any other content: B's zeros, a torn mix).
 */
@JCStressTest
@Description("readValues from a candidate record that was reused for another key: A's row or absent, never B's")
@Outcome(id = "1, 1", expect = ACCEPTABLE, desc = "both reads before the removal")
@Outcome(id = "1, 0", expect = ACCEPTABLE, desc = "the removal between the reads")
@Outcome(id = "0, 0", expect = ACCEPTABLE, desc = "both reads after the removal")
@Outcome(
        id = {"2, .*", ".*, 2"},
        expect = FORBIDDEN,
        desc = "B's row returned for key A")
@Outcome(expect = FORBIDDEN, desc = "other content returned for key A (3), or A found again after it was gone")
@State
public class RecordReuseCandidateReadTest {
    private static final int DIM = 8;
    private static final long KEY_A = 7;
    private static final long KEY_B = 1_000_003;
    private static final int A_ROW = 1;
    private static final int B_ROW = 2;
    private static final float[] B_RECORD = StoreFixture.row(DIM, B_ROW);

    private final PartitionStore store = StoreFixture.store(DIM);
    private final byte[] copied = new byte[4 * DIM];
    private final long hashOfA;
    private final long candidateOfA;

    public RecordReuseCandidateReadTest() {
        store.put(KEY_A, StoreFixture.row(DIM, A_ROW), 1);
        hashOfA = store.hash(KEY_A);
        candidateOfA = candidate();
    }

    @Actor
    public void writer() {
        store.remove(KEY_A);
        // The only free record is A's: B's row is written into it.
        store.put(KEY_B, B_RECORD, 2);
    }

    @Actor
    public void reader(final II_Result result) {
        result.r1 = readA(candidateOfA);
        result.r2 = readA(candidate());
    }

    private long candidate() {
        return store.candidate(PartitionStore.homeEntry(store.segmentEntries(hashOfA), hashOfA), hashOfA);
    }

    private int readA(final long candidate) {
        if (!store.readValues(KEY_A, hashOfA, candidate, copied, 0)) {
            return 0;
        }
        final int value = StoreFixture.commonValue(copied, DIM);
        return value == A_ROW ? 1 : value == B_ROW ? 2 : 3;
    }
}
