package io.pscluster.checkpoint;

import static io.pscluster.checkpoint.CheckpointStoreContract.writeFiles;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.NoSuchElementException;
import java.util.Set;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@link CheckpointStore#retain} and {@link CheckpointStore#delete} on file://, with hand-made bases and deltas. */
class RetentionTest {
    private static final long DAY = Duration.ofDays(1).toMillis();
    private static final long NOW = 1_800_000_000_000L;

    @TempDir
    java.nio.file.Path tmp;

    private CheckpointStore store;
    private FileSystem fs;

    @BeforeEach
    void setUp() throws IOException {
        store = new CheckpointStore(tmp.resolve("ps").toUri(), new Configuration());
        fs = store.fileSystem();
    }

    @Test
    void shouldKeepTheNewestKWhenMoreAreCommitted() throws IOException {
        for (long id = 1; id <= 7; id++) {
            commitBase(id, NOW - DAY + id);
        }

        RetentionPolicy.Outcome outcome = store.retain(new RetentionPolicy(3, Duration.ZERO), NOW);

        assertThat(outcome.deleted()).containsExactly(4L, 3L, 2L, 1L);
        assertThat(ids()).containsExactly(7L, 6L, 5L);
        assertThat(fs.exists(store.checkpointDir(4))).isFalse();
        assertThat(store.nextId()).isEqualTo(8);
    }

    @Test
    void shouldExpireByAgeButNeverTheNewestCheckpoint() throws IOException {
        commitBase(1, NOW - 10 * DAY);
        commitBase(2, NOW - 5 * DAY);
        commitBase(3, NOW - 2 * DAY);
        commitBase(4, NOW - DAY / 24);

        assertThat(store.retain(new RetentionPolicy(0, Duration.ofDays(3)), NOW).deleted())
                .containsExactly(2L, 1L);
        assertThat(ids()).containsExactly(4L, 3L);
        // Everything is older than a minute, but the newest stays: an age limit never leaves nothing to restore.
        assertThat(store.retain(new RetentionPolicy(0, Duration.ofMinutes(1)), NOW)
                        .deleted())
                .containsExactly(3L);
        assertThat(ids()).containsExactly(4L);
    }

    @Test
    void shouldApplyBothLimitsWhenCountAndAgeAreSet() throws IOException {
        commitBase(1, NOW - 4 * DAY);
        commitBase(2, NOW - 2 * DAY);
        commitBase(3, NOW - DAY);
        commitBase(4, NOW - 1);

        store.retain(new RetentionPolicy(3, Duration.ofDays(3)), NOW);

        assertThat(ids()).containsExactly(4L, 3L, 2L);
        store.retain(new RetentionPolicy(5, Duration.ofHours(36)), NOW);
        assertThat(ids()).containsExactly(4L, 3L);
    }

    @Test
    void shouldNeverDeleteABaseOrParentThatAKeptDeltaNeeds() throws IOException {
        commitBase(1, NOW - 9 * DAY);
        commitDelta(2, 1, 1, NOW - 8 * DAY);
        commitDelta(3, 1, 2, NOW - 7 * DAY);
        commitBase(4, NOW - 6 * DAY);
        commitDelta(5, 4, 4, NOW - 5 * DAY);
        commitDelta(6, 4, 5, NOW - 4 * DAY);

        RetentionPolicy.Outcome outcome = store.retain(new RetentionPolicy(1, Duration.ofDays(1)), NOW);

        // 6 is the one kept by count and age; it needs 5 (its parent) and 4 (its base).
        assertThat(outcome.deleted()).containsExactly(3L, 2L, 1L);
        assertThat(ids()).containsExactly(6L, 5L, 4L);
        assertThat(store.get(6).orElseThrow().manifest().dependsOn()).containsExactly(4L, 5L);
    }

    @Test
    void shouldKeepPinnedCheckpointsAndTheNewestWhoseFilesAreAllThere() throws IOException {
        commitBase(1, NOW - 3);
        commitBase(2, NOW - 2);
        Manifest newest = commitBase(3, NOW - 1);
        fs.delete(new Path(store.checkpointDir(3), newest.files().get(0).file().path()), false);

        store.retain(new RetentionPolicy(1, Duration.ZERO), NOW, Set.of(1L));

        // 3 is the newest (kept even though damaged), 2 the newest intact one, 1 pinned by the caller.
        assertThat(ids()).containsExactly(3L, 2L, 1L);
        store.retain(new RetentionPolicy(1, Duration.ZERO), NOW);
        assertThat(ids()).containsExactly(3L, 2L);
    }

    /**
     * Checkpoints found damaged (6 itself; 5 through its base 4) do not count toward the newest K: the two newest
     * intact ones (3 and 2) stay rather than being pushed out by them, and the damaged ones are kept for the operator.
     * Without the damage known, the same limit keeps only 6 and the chain of 5.
     */
    @Test
    void shouldNotCountCheckpointsFoundDamagedTowardTheNewestK() throws IOException {
        basesOneToSixWithFiveADeltaOfFour();

        RetentionPolicy.Outcome outcome =
                store.retain(new RetentionPolicy(2, Duration.ZERO), NOW, Set.of(), Set.of(6L, 4L));

        assertThat(outcome.deleted()).containsExactly(1L);
        assertThat(ids()).containsExactly(6L, 5L, 4L, 3L, 2L);
        store.retain(new RetentionPolicy(2, Duration.ZERO), NOW, Set.of(), Set.of());
        assertThat(ids()).containsExactly(6L, 5L, 4L);
    }

    /**
     * Checkpoints marked damaged in their directories count as found damaged for a store opened afresh (a restarted
     * proxy): the same outcome as above with no set passed. A mark for a checkpoint deleted meanwhile writes nothing.
     */
    @Test
    void shouldNotCountCheckpointsMarkedDamagedTowardTheNewestKWhenOpenedAfresh() throws IOException {
        basesOneToSixWithFiveADeltaOfFour();
        store.markDamaged(6, "flipped byte");
        store.markDamaged(4, "missing block");
        store.markDamaged(9, "deleted meanwhile");

        final CheckpointStore reopened = new CheckpointStore(tmp.resolve("ps").toUri(), new Configuration());
        RetentionPolicy.Outcome outcome = reopened.retain(new RetentionPolicy(2, Duration.ZERO), NOW);

        assertThat(reopened.damageMarks()).containsOnlyKeys(6L, 4L).containsEntry(6L, "flipped byte");
        assertThat(outcome.deleted()).containsExactly(1L);
        assertThat(ids()).containsExactly(6L, 5L, 4L, 3L, 2L);
        assertThat(fs.exists(store.checkpointDir(9)))
                .as("no directory made for a mark")
                .isFalse();
    }

    /** Bases 1, 2, 3, 4 and 6, and 5 a delta of 4, one millisecond apart. */
    private void basesOneToSixWithFiveADeltaOfFour() throws IOException {
        commitBase(1, NOW - 6);
        commitBase(2, NOW - 5);
        commitBase(3, NOW - 4);
        commitBase(4, NOW - 3);
        commitDelta(5, 4, 4, NOW - 2);
        commitBase(6, NOW - 1);
    }

    /**
     * The newest checkpoint a restore can use is the newest whose whole chain has its files: a delta whose own files
     * are all there but whose base lost one cannot be restored, so the older chain must stay.
     */
    @Test
    void shouldKeepTheNewestChainWhoseFilesAreAllThereNotJustTheNewestCheckpointWithItsOwnFiles() throws IOException {
        commitBase(1, NOW - 4);
        commitDelta(2, 1, 1, NOW - 3);
        Manifest base = commitBase(3, NOW - 2);
        commitDelta(4, 3, 3, NOW - 1);
        fs.delete(new Path(store.checkpointDir(3), base.files().get(0).file().path()), false);

        RetentionPolicy.Outcome outcome = store.retain(new RetentionPolicy(1, Duration.ZERO), NOW);

        // 4 is the newest (kept, with the base it needs, though that is damaged); 2 is the newest restorable, with 1.
        assertThat(outcome.deleted()).isEmpty();
        assertThat(ids()).containsExactly(4L, 3L, 2L, 1L);
    }

    @Test
    void shouldRemoveOrphansOfFailedCheckpointsButNotOneInProgress() throws IOException {
        commitBase(1, NOW - 4);
        writeFiles(store, 2); // a checkpoint whose coordinator died before the manifest
        commitBase(3, NOW - 2);
        writeFiles(store, 4); // being written now: its id is above every committed one
        try (FSDataOutputStream out = fs.create(new Path(store.checkpointDir(4), "_MANIFEST.tmp-x"), false)) {
            out.write('{');
        }

        RetentionPolicy.Outcome outcome = store.retain(RetentionPolicy.keepAll(), NOW);

        assertThat(outcome.orphansRemoved()).containsExactly(store.checkpointDir(2));
        assertThat(outcome.deleted()).isEmpty();
        assertThat(fs.exists(store.checkpointDir(2))).isFalse();
        assertThat(fs.exists(store.checkpointDir(4))).isTrue();
        assertThat(ids()).containsExactly(3L, 1L);
        assertThat(store.nextId()).isEqualTo(5);
    }

    /**
     * A proxy killed between writing its claim's text aside and renaming it leaves the text behind: retention removes
     * it once it is an hour old, and leaves one being written now (and the claims themselves) alone.
     */
    @Test
    void shouldRemoveAProxyClaimsTextLeftAsideByADeadProxyButNotOneBeingWritten() throws IOException {
        commitBase(1, NOW - 4);
        store.createProxyClaim("_PROXY-a1", "proxy state at /var/ps");
        final Path abandoned = new Path(new Path(store.root()), "_PROXY.tmp-abandoned");
        final Path writing = new Path(new Path(store.root()), "_PROXY.tmp-writing");
        for (final Path aside : List.of(abandoned, writing)) {
            try (FSDataOutputStream out = fs.create(aside, false)) {
                out.write('p');
            }
        }
        fs.setTimes(abandoned, NOW - 2 * 3_600_000L, -1);
        fs.setTimes(writing, NOW - 60_000L, -1);

        final RetentionPolicy.Outcome outcome = store.retain(RetentionPolicy.keepAll(), NOW);

        assertThat(outcome.orphansRemoved()).containsExactly(abandoned);
        assertThat(fs.exists(abandoned)).isFalse();
        assertThat(fs.exists(writing)).isTrue();
        assertThat(fs.exists(new Path(new Path(store.root()), "_PROXY-a1"))).isTrue();
        assertThat(ids()).containsExactly(1L);
    }

    @Test
    void shouldRefuseToDeleteABaseAKeptDeltaNeedsUnlessForced() throws IOException {
        commitBase(1, NOW - 3);
        commitDelta(2, 1, 1, NOW - 2);
        commitDelta(3, 1, 2, NOW - 1);

        assertThatThrownBy(() -> store.delete(1, false))
                .isInstanceOf(IllegalStateException.class)
                .hasMessageContaining("checkpoint 1 is needed by checkpoint(s) [3, 2]");
        assertThatThrownBy(() -> store.delete(2, false))
                .isInstanceOf(IllegalStateException.class)
                .hasMessageContaining("needed by checkpoint(s) [3]");
        assertThat(ids()).containsExactly(3L, 2L, 1L);

        assertThat(store.delete(3, false)).isEmpty();
        assertThat(store.delete(1, true)).containsExactly(2L);
        assertThat(ids()).containsExactly(2L);
        assertThat(fs.exists(store.checkpointDir(1))).isFalse();
        assertThatThrownBy(() -> store.delete(9, false))
                .isInstanceOf(NoSuchElementException.class)
                .hasMessageContaining("no checkpoint 9");
    }

    private List<Long> ids() throws IOException {
        return store.list().stream().map(CheckpointInfo::id).toList();
    }

    private Manifest commitBase(long id, long createdMillis) throws IOException {
        return commit(id, Manifest.Kind.BASE, 0, 0, createdMillis);
    }

    private void commitDelta(long id, long baseId, long parentId, long createdMillis) throws IOException {
        commit(id, Manifest.Kind.DELTA, baseId, parentId, createdMillis);
    }

    private Manifest commit(long id, Manifest.Kind kind, long baseId, long parentId, long createdMillis)
            throws IOException {
        Manifest manifest = new Manifest(
                id,
                createdMillis,
                64,
                kind,
                baseId,
                parentId,
                List.of(new Manifest.TableEntry("emb", new byte[0])),
                writeFiles(store, id),
                Map.of());
        store.commit(manifest);
        return manifest;
    }
}
