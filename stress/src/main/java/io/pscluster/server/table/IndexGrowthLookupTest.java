package io.pscluster.server.table;

import static org.openjdk.jcstress.annotations.Expect.ACCEPTABLE;
import static org.openjdk.jcstress.annotations.Expect.FORBIDDEN;

import org.openjdk.jcstress.annotations.Actor;
import org.openjdk.jcstress.annotations.Description;
import org.openjdk.jcstress.annotations.JCStressTest;
import org.openjdk.jcstress.annotations.Outcome;
import org.openjdk.jcstress.annotations.State;
import org.openjdk.jcstress.infra.results.I_Result;

/**
 * Lookups while the index grows: the writer creates the rows that make the index grow while a reader looks up every
 * key that was there from the start and copies its row. Each key must be found, with its own row, whichever index
 * (the old one, the new one, one being built) the reader probes.
 *
 * <p>Sizes are tuned to today's index (16 entries at first, rebuilt at 70% load and doubled when rows fill a third
 * of it): {@value #PRESENT} rows fill it just below its first growth, and the writer's first new row grows it to 32
 * entries. An index that grows differently (by splitting segments) needs {@value #PRESENT} tuned so that the
 * writer's few rows cross one growth. The reader checks all {@value #PRESENT} keys, both so that its work lasts as
 * long as the writer's and so that keys at different probe positions are covered.
 *
 * <p>The reads are coded as 1 (every key found, with its row) or, for the first key that was not: 0 ({@code find}
 * missed it), 2 ({@code readValues} said absent for the id found), 3 (found with a row it never had).
 */
@JCStressTest
@Description("find and readValues of present keys while the writer grows the index: always found, with their rows")
@Outcome(id = "1", expect = ACCEPTABLE, desc = "every key found, with its row")
@Outcome(id = "0", expect = FORBIDDEN, desc = "find missed a key present all along")
@Outcome(id = "2", expect = FORBIDDEN, desc = "readValues said absent for a key present all along")
@Outcome(expect = FORBIDDEN, desc = "a key found with a row it never had")
@State
public class IndexGrowthLookupTest {
    private static final int DIM = 2;
    private static final int PRESENT = 11;
    private static final int CREATED = 2;

    private final PartitionStore store = StoreFixture.store(DIM);
    private final byte[] copied = new byte[4 * DIM];

    /** Keys 1 .. PRESENT, each with a row holding its own key in every element. */
    public IndexGrowthLookupTest() {
        for (int key = 1; key <= PRESENT; key++) {
            store.put(key, StoreFixture.row(DIM, key), 1);
        }
    }

    @Actor
    public void writer() {
        for (long key = 1_000; key < 1_000 + CREATED; key++) {
            store.ensure(key, 2);
        }
    }

    @Actor
    public void reader(final I_Result result) {
        result.r1 = 1;
        for (int key = 1; key <= PRESENT; key++) {
            final int id = store.find(key);
            if (id < 0) {
                result.r1 = 0;
                return;
            }
            if (!store.readValues(key, id, copied, 0)) {
                result.r1 = 2;
                return;
            }
            if (StoreFixture.commonValue(copied, DIM) != key) {
                result.r1 = 3;
                return;
            }
        }
    }
}
