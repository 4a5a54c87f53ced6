package io.pscluster.proxy;

import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.wire.PsException;
import java.io.IOException;
import java.time.Instant;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The checkpoint root's mark that a cluster used it ({@link CheckpointStore#markCluster}). It is the one thing that
 * tells a proxy which lost its state record (and finds no checkpoint) from the proxy of a new cluster: the first must
 * wait one grace for the live shards to claim their slots, the second hands slots out at once. Written before the
 * first table is acknowledged, since from then on shards hold rows that a slot's move would lose.
 */
final class ClusterMark {
    private static final Logger LOG = LoggerFactory.getLogger(ClusterMark.class);

    private final CheckpointStore store;
    private volatile boolean marked;

    ClusterMark(final CheckpointStore store) {
        this.store = store;
    }

    /**
     * Whether a cluster used the root before: the mark, or any checkpoint directory (complete or not, from a version
     * before the mark); true when the root cannot be read, the safe answer.
     */
    boolean existed() {
        try {
            return store.hasClusterMark() || store.nextId() > 1;
        } catch (IOException | RuntimeException e) {
            LOG.warn(
                    "cannot tell whether a cluster used {} before ({}); taking it that one did",
                    store.root(),
                    e.toString());
            return true;
        }
    }

    /**
     * Marks the root before a table is created.
     *
     * @throws PsException UNAVAILABLE naming the root and the cause when the mark cannot be written.
     */
    void ensure(final String what) {
        if (marked) {
            return;
        }
        try {
            store.markCluster("a PSCluster proxy created its first table here at " + Instant.now() + "\n");
            marked = true;
        } catch (IOException | RuntimeException e) {
            throw PsException.unavailable(what + ": cannot write the cluster mark " + CheckpointStore.CLUSTER_MARK
                    + " under the checkpoint root " + store.root() + " (" + e
                    + "); a proxy that loses its state tells a new cluster from a lost one by it");
        }
    }

    /** {@link #ensure} for a cluster that has tables already (a proxy from before the mark): a failure is logged. */
    void ensureQuietly() {
        try {
            ensure("marking the checkpoint root");
        } catch (PsException e) {
            LOG.warn("{}", e.getMessage());
        }
    }
}
