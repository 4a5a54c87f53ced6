package io.pscluster.server.table;

/**
 * Named fault-injection points inside a table's writer, for tests: each point may throw what the real fault would
 * (an {@link OutOfMemoryError} from an allocation, a {@link RuntimeException} from a bug in an update rule). The
 * table must fail the one row or request, stay readable and keep its writer running whatever is thrown here.
 */
interface TableFaults {
    /** No faults: what every production table uses. */
    TableFaults NONE = new TableFaults() {};

    /** Before the index allocates a grown, rebuilt or split segment. */
    default void indexGrowth() {}

    /** Before a chunk of records is allocated off-heap. */
    default void chunkAllocation() {}

    /** Inside a write of {@code key}'s record, after the record was marked as being written. */
    default void recordWrite(final long key) {}
}
