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
 * The seqlock of one record: the writer replaces the whole row {@value #VERSIONS} times while a reader copies it as
 * many times, with the record id it found before. Version {@code k} holds {@code k} in every element, so a copy that
 * takes some elements from one version and some from the next (the reader's sequence checks missing the write, or
 * its copy reordered past them) shows as elements that differ. Several writes and reads per instance make it likely
 * that some read overlaps some write, whatever the skew between the two threads' starts.
 *
 * <p>Coded as -1 if any copy was torn, -2 if any read reported the key absent, otherwise the version the last read
 * saw.
 */
@JCStressTest
@Description("readValues copies one whole version of a record while put replaces it, never a mix of two")
@Outcome(id = "0", expect = ACCEPTABLE, desc = "last read before the first write")
@Outcome(id = "[1-3]", expect = ACCEPTABLE, desc = "last read between two writes")
@Outcome(id = "4", expect = ACCEPTABLE, desc = "last read after the last write")
@Outcome(id = "-1", expect = FORBIDDEN, desc = "torn read: elements from different versions")
@Outcome(expect = FORBIDDEN, desc = "the key reported absent (-2), or a version that was never written")
@State
public class RecordTornReadTest {
    private static final int DIM = 8;
    private static final int VERSIONS = 4;
    private static final long KEY = 42;
    private static final float[][] RECORDS = new float[VERSIONS + 1][];

    static {
        for (int version = 0; version <= VERSIONS; version++) {
            RECORDS[version] = StoreFixture.row(DIM, version);
        }
    }

    private final PartitionStore store = StoreFixture.store(DIM);
    private final byte[] copied = new byte[4 * DIM];
    private final int id;

    public RecordTornReadTest() {
        store.put(KEY, RECORDS[0], 1);
        id = store.find(KEY);
    }

    @Actor
    public void writer() {
        for (int version = 1; version <= VERSIONS; version++) {
            store.put(KEY, RECORDS[version], 1 + version);
        }
    }

    @Actor
    public void reader(final I_Result result) {
        int seen = 0;
        for (int read = 0; read < VERSIONS; read++) {
            if (!store.readValues(KEY, id, copied, 0)) {
                result.r1 = -2;
                return;
            }
            seen = StoreFixture.commonValue(copied, DIM);
            if (seen == StoreFixture.TORN) {
                result.r1 = StoreFixture.TORN;
                return;
            }
        }
        result.r1 = seen;
    }
}
