package io.pscluster.cli;

import io.pscluster.checkpoint.CheckpointCorruptException;
import io.pscluster.checkpoint.CheckpointInfo;
import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.Progress;
import io.pscluster.checkpoint.VerifyReport;
import java.io.IOException;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Checks a checkpoint as a restore needs it, with its chain: for a delta, the base and every delta up to it, base
 * first, each to one depth, stopping at the first damaged one. A delta whose base is damaged or gone cannot be restored or
 * exported, so the offline commands ({@code list}, {@code verify}, {@code export}) report it damaged, naming the
 * checkpoint of the chain that is. Each checkpoint is checked once per instance, however many deltas need it.
 */
final class ChainCheck {
    private final CheckpointStore store;
    private final VerifyReport.Depth depth;
    private final Map<Long, VerifyReport> reports = new HashMap<>();

    ChainCheck(final CheckpointStore store, final VerifyReport.Depth depth) {
        this.store = store;
        this.depth = depth;
    }

    /**
     * What is wrong with {@code checkpoint}'s chain, if anything, counting into {@code progress} (null: none) the
     * files of each checkpoint checked here for the first time (totals too). A checkpoint found wanting whose manifest
     * is gone by then was deleted while it was checked (by a running proxy's retention, or {@code checkpoint delete}:
     * the store deletes the manifest first): that is said, not reported as damage.
     *
     * @throws IOException if the filesystem fails in a way that is not damage.
     */
    Outcome check(final CheckpointInfo checkpoint, final Progress progress) throws IOException {
        final Outcome outcome = checkChain(checkpoint, progress);
        return outcome.intact() || stillThere(checkpoint)
                ? outcome
                : new Outcome(checkpoint, List.of(), null, null, null, true);
    }

    private boolean stillThere(final CheckpointInfo checkpoint) throws IOException {
        try {
            return store.get(checkpoint.id()).isPresent();
        } catch (CheckpointCorruptException e) {
            return true;
        }
    }

    private Outcome checkChain(final CheckpointInfo checkpoint, final Progress progress) throws IOException {
        final List<CheckpointInfo> chain;
        try {
            chain = store.chain(checkpoint);
        } catch (CheckpointCorruptException e) {
            return new Outcome(checkpoint, List.of(), null, null, e.getMessage(), false);
        }
        VerifyReport own = null;
        for (final CheckpointInfo link : chain) {
            VerifyReport report = reports.get(link.id());
            if (report == null) {
                if (progress != null) {
                    progress.addTotals(
                            link.manifest().totalRows(), link.manifest().totalBytes());
                }
                report = store.check(link, depth, progress);
                reports.put(link.id(), report);
            }
            if (!report.intact()) {
                return new Outcome(checkpoint, chain, link, report, null, false);
            }
            own = report;
        }
        return new Outcome(checkpoint, chain, null, own, null, false);
    }

    /**
     * @param checkpoint the checkpoint checked.
     * @param chain what restores it, base first; empty when the chain cannot be read.
     * @param damagedLink the first checkpoint of the chain with a damaged file (possibly {@code checkpoint} itself);
     *     null if none.
     * @param report the damaged link's report, or the checkpoint's own when the chain is intact; null when the chain
     *     cannot be read.
     * @param unreadableChain why the chain cannot be read (a checkpoint it needs has no manifest, or does not lead to
     *     its base); null if it can.
     * @param deleted the checkpoint was deleted while it was checked: neither intact nor damaged, and no longer there.
     */
    record Outcome(
            CheckpointInfo checkpoint,
            List<CheckpointInfo> chain,
            CheckpointInfo damagedLink,
            VerifyReport report,
            String unreadableChain,
            boolean deleted) {
        /** What {@link #damage()} says of a checkpoint deleted while it was checked. */
        static final String DELETED = "deleted while it was checked (by retention or `psctl checkpoint delete`, of a"
                + " running proxy say; its manifest went first): no longer there, not damaged";

        boolean intact() {
            return damagedLink == null && unreadableChain == null && !deleted;
        }

        /**
         * {@code DAMAGED (2 of 3 files)}, {@code DAMAGED (it needs checkpoint 5: 1 of 2 files)}, {@code DAMAGED:
         * <why its chain cannot be read>} or {@link #DELETED}; empty when intact.
         */
        String damage() {
            if (deleted) {
                return DELETED;
            }
            if (unreadableChain != null) {
                return "DAMAGED: " + unreadableChain;
            }
            if (damagedLink == null) {
                return "";
            }
            return "DAMAGED ("
                    + (damagedLink.id() == checkpoint.id() ? "" : "it needs checkpoint " + damagedLink.id() + ": ")
                    + report.problems().size() + " of "
                    + damagedLink.manifest().files().size() + " files)";
        }

        /** One line per damaged file of the damaged link, as {@link VerifyReport#problems()}; empty if none. */
        List<String> fileProblems() {
            return damagedLink == null ? List.of() : report.problems();
        }

        /**
         * What is wrong, in lines that stand alone: each damaged file's, prefixed {@code it needs checkpoint N: } when
         * the damaged link is not the checkpoint itself, or why the chain cannot be read; empty when intact.
         */
        List<String> problems() {
            if (unreadableChain != null) {
                return List.of(unreadableChain);
            }
            final String prefix = damagedLink == null || damagedLink.id() == checkpoint.id()
                    ? ""
                    : "it needs checkpoint " + damagedLink.id() + ": ";
            return fileProblems().stream().map(problem -> prefix + problem).toList();
        }
    }
}
