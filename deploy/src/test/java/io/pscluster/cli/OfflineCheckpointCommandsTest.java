package io.pscluster.cli;

import static io.pscluster.cli.PsctlRun.psctl;
import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.Manifest;
import io.pscluster.checkpoint.RowFileInfo;
import io.pscluster.checkpoint.RowFileWriter;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code psctl checkpoint list / verify} on a local directory written by hand (a base and deltas on it, no cluster):
 * what they say about a delta whose chain is damaged or gone, and about a directory that is not there.
 */
class OfflineCheckpointCommandsTest {
    @TempDir
    Path tmp;

    @Test
    void shouldReportADeltaDamagedWhenItsBaseIsTruncated() throws Exception {
        final Path root = baseAndDeltas(tmp.resolve("truncated"));
        final Path baseFile = root.resolve("ckpt-000000000001").resolve("shard-s0/t.rows");
        final byte[] whole = Files.readAllBytes(baseFile);
        Files.write(baseFile, java.util.Arrays.copyOf(whole, whole.length - 1));
        Files.deleteIfExists(baseFile.resolveSibling(".t.rows.crc"));

        final PsctlRun verify =
                psctl("checkpoint", "verify", "--checkpoint-dir", root.toString(), "--id", "3", "--quiet");
        assertThat(verify.exit()).as(verify.text()).isEqualTo(1);
        assertThat(verify.out())
                .contains("checkpoint 3: DAMAGED (it needs checkpoint 1: 1 of 1 files)")
                .contains("  file file:" + baseFile + ": length expected")
                .doesNotContain("intact");
        final PsctlRun all = psctl("checkpoint", "verify", "--checkpoint-dir", root.toString(), "--quiet");
        assertThat(all.exit()).as(all.text()).isEqualTo(1);
        assertThat(all.out())
                .contains("checkpoint 3: DAMAGED (it needs checkpoint 1: ")
                .contains("checkpoint 2: DAMAGED (it needs checkpoint 1: ")
                .contains("checkpoint 1: DAMAGED (1 of 1 files)");

        final PsctlRun list = psctl("checkpoint", "list", "--checkpoint-dir", root.toString());
        assertThat(list.exit()).as(list.text()).isEqualTo(1);
        assertThat(list.out().lines().filter(line -> line.matches("^[23] .*")))
                .hasSize(2)
                .allSatisfy(line -> assertThat(line).endsWith("DAMAGED"));
        assertThat(list.out())
                .contains("checkpoint 3: it needs checkpoint 1: file file:" + baseFile + ": length expected");
    }

    @Test
    void shouldReportADeltaDamagedWhenItsBaseDirectoryIsDeleted() throws Exception {
        final Path root = baseAndDeltas(tmp.resolve("deleted"));
        deleteTree(root.resolve("ckpt-000000000001"));

        final PsctlRun verify =
                psctl("checkpoint", "verify", "--checkpoint-dir", root.toString(), "--id", "3", "--quiet");
        assertThat(verify.exit()).as(verify.text()).isEqualTo(1);
        assertThat(verify.out())
                .contains("checkpoint 3: DAMAGED: checkpoint 3 (a delta) needs checkpoint 1, which has no manifest")
                .doesNotContain("intact");
        final PsctlRun list = psctl("checkpoint", "list", "--checkpoint-dir", root.toString(), "--verify");
        assertThat(list.exit()).as(list.text()).isEqualTo(1);
        assertThat(list.out().lines().filter(line -> line.matches("^[23] .*")))
                .hasSize(2)
                .allSatisfy(line -> assertThat(line).endsWith("DAMAGED"));
        assertThat(list.out())
                .contains("checkpoint 2: checkpoint 2 (a delta) needs checkpoint 1, which has no manifest");
    }

    /** A checkpoint a restore marked damaged is shown so, with why, even when its files now pass the check. */
    @Test
    void shouldShowACheckpointARestoreMarkedDamaged() throws Exception {
        final Path root = baseAndDeltas(tmp.resolve("marked"));
        new CheckpointStore(root.toUri(), new Configuration()).markDamaged(2, "a replica went bad");

        final PsctlRun list = psctl("checkpoint", "list", "--checkpoint-dir", root.toString());

        assertThat(list.exit()).as(list.text()).isEqualTo(1);
        assertThat(list.out().lines().filter(line -> line.matches("^2 .*")))
                .singleElement()
                .satisfies(line -> assertThat(line).endsWith("MARKED-DAMAGED"));
        assertThat(list.out().lines().filter(line -> line.matches("^[13] .*")))
                .hasSize(2)
                .allSatisfy(line -> assertThat(line).endsWith("present"));
        assertThat(list.out()).contains("checkpoint 2: a restore found it damaged (a replica went bad)");
        final PsctlRun verify =
                psctl("checkpoint", "verify", "--checkpoint-dir", root.toString(), "--id", "2", "--quiet");
        assertThat(verify.exit()).as(verify.text()).isZero();
        assertThat(verify.out()).contains("checkpoint 2: intact").contains("a restore marked it damaged before");
    }

    /**
     * Retention (of a proxy running on the same root) deletes a checkpoint while {@code verify} or {@code list --verify}
     * reads it: that one is said to be deleted, not damaged, and the others are checked as before; asked for by
     * {@code --id}, it is not there (exit 1), still not damaged.
     */
    @Test
    void shouldSayACheckpointDeletedWhileItIsCheckedIsDeletedNotDamaged() throws Exception {
        final Path root = baseAndDeltas(tmp.resolve("raced"), 4);
        final Path conf = Files.createDirectories(tmp.resolve("conf"));
        Files.writeString(
                conf.resolve("core-site.xml"),
                "<configuration>"
                        + "<property><name>fs.file.impl</name><value>" + RetentionRaceFileSystem.class.getName()
                        + "</value></property>"
                        + "<property><name>fs.file.impl.disable.cache</name><value>true</value></property>"
                        + "</configuration>");
        try {
            deleteWhenRead(root, 4);
            final PsctlRun verify = psctl(
                    "checkpoint",
                    "verify",
                    "--checkpoint-dir",
                    root.toString(),
                    "--hadoop-conf",
                    conf.toString(),
                    "--quiet");
            assertThat(RetentionRaceFileSystem.deleteWhenRead)
                    .as("deleted mid-run")
                    .isNull();
            assertThat(verify.exit()).as(verify.text()).isZero();
            assertThat(verify.out())
                    .contains("checkpoint 4: " + ChainCheck.Outcome.DELETED)
                    .contains("checkpoint 3: intact")
                    .contains("checkpoint 1: intact")
                    .doesNotContain("DAMAGED");

            deleteWhenRead(root, 3);
            final PsctlRun list = psctl(
                    "checkpoint",
                    "list",
                    "--checkpoint-dir",
                    root.toString(),
                    "--hadoop-conf",
                    conf.toString(),
                    "--verify");
            assertThat(RetentionRaceFileSystem.deleteWhenRead)
                    .as("deleted mid-run")
                    .isNull();
            assertThat(list.exit()).as(list.text()).isZero();
            assertThat(list.out().lines().filter(line -> line.matches("^3 .*")))
                    .singleElement()
                    .satisfies(line -> assertThat(line).endsWith("deleted"));
            assertThat(list.out())
                    .contains("checkpoint 3: " + ChainCheck.Outcome.DELETED)
                    .doesNotContain("DAMAGED");

            deleteWhenRead(root, 2);
            final PsctlRun one = psctl(
                    "checkpoint",
                    "verify",
                    "--checkpoint-dir",
                    root.toString(),
                    "--hadoop-conf",
                    conf.toString(),
                    "--id",
                    "2",
                    "--quiet");
            assertThat(one.exit()).as(one.text()).isEqualTo(1);
            assertThat(one.out())
                    .contains("checkpoint 2: " + ChainCheck.Outcome.DELETED)
                    .doesNotContain("DAMAGED");
        } finally {
            RetentionRaceFileSystem.deleteWhenRead = null;
        }
    }

    private static void deleteWhenRead(final Path root, final long id) {
        RetentionRaceFileSystem.deleteWhenRead =
                new org.apache.hadoop.fs.Path("file://" + root.resolve(String.format("ckpt-%012d", id)));
    }

    @Test
    void shouldSayAnIntactDeltaIsIntactWithTheCheckpointsItNeeds() throws Exception {
        final Path root = baseAndDeltas(tmp.resolve("intact"));

        final PsctlRun verify =
                psctl("checkpoint", "verify", "--checkpoint-dir", root.toString(), "--id", "3", "--quiet");
        assertThat(verify.exit()).as(verify.text()).isZero();
        assertThat(verify.out())
                .contains("checkpoint 3: intact (1 files read back, ")
                .contains("it needs, [1, 2]");
        final PsctlRun list = psctl("checkpoint", "list", "--checkpoint-dir", root.toString(), "--verify");
        assertThat(list.exit()).as(list.text()).isZero();
        assertThat(list.out()).contains(" delta:2 ").contains(" verified").doesNotContain("DAMAGED");
    }

    /**
     * A root that exists but holds no checkpoint lists as such (exit 0) and fails verify (exit 1): a scheduled check
     * must not pass on a root checkpoints were never written to. A checkpoint asked for by id that is not there fails
     * verify, delete and export alike (exit 1), naming the ones there are.
     */
    @Test
    void shouldFailVerifyWithNothingToVerifyAndEveryCommandOnAnIdThatIsNotThere() throws Exception {
        final Path empty = Files.createDirectories(tmp.resolve("empty"));
        final PsctlRun list = psctl("checkpoint", "list", "--checkpoint-dir", empty.toString());
        assertThat(list.exit()).as(list.text()).isZero();
        assertThat(list.out()).contains("no complete checkpoints under ");
        final PsctlRun verify = psctl("checkpoint", "verify", "--checkpoint-dir", empty.toString(), "--quiet");
        assertThat(verify.exit()).as(verify.text()).isEqualTo(1);
        assertThat(verify.out()).contains("nothing to verify: no complete checkpoint under ");

        final Path root = baseAndDeltas(tmp.resolve("three"));
        for (final String[] command :
                List.of(new String[] {"verify", "--quiet"}, new String[] {"delete"}, new String[] {
                    "export", "--quiet", "--out", tmp.resolve("model").toString()
                })) {
            final String[] args = Stream.concat(
                            Stream.of("checkpoint", command[0], "--checkpoint-dir", root.toString(), "--id", "7"),
                            Stream.of(command).skip(1))
                    .toArray(String[]::new);
            final PsctlRun run = psctl(args);
            assertThat(run.exit())
                    .as(String.join(" ", args) + "\n" + run.text())
                    .isEqualTo(1);
            assertThat(run.out() + run.err())
                    .as(String.join(" ", args))
                    .containsPattern("checkpoint 7|--id=7")
                    .containsPattern("no (such )?checkpoint")
                    .doesNotContain("Usage:");
        }
    }

    @Test
    void shouldRefuseAMissingCheckpointDirectoryAndCreateNothing() throws Exception {
        final Path missing = tmp.resolve("mistyped").resolve("ckpts");
        final String expected = "--checkpoint-dir=" + missing + ": checkpoint root file:" + missing + " does not exist";

        for (final String[] command : List.of(
                new String[] {"list"},
                new String[] {"list", "--verify"},
                new String[] {"verify"},
                new String[] {"verify", "--id", "3"},
                new String[] {"delete", "--id", "3"},
                new String[] {"export", "--out", tmp.resolve("model").toString()})) {
            final String[] args = Stream.concat(
                            Stream.of("checkpoint", command[0], "--checkpoint-dir", missing.toString()),
                            Stream.of(command).skip(1))
                    .toArray(String[]::new);
            final PsctlRun run = psctl(args);
            assertThat(run.exit())
                    .as(String.join(" ", args) + "\n" + run.text())
                    .isEqualTo(1);
            assertThat(run.err()).as(String.join(" ", args)).contains(expected);
        }
        assertThat(tmp.resolve("mistyped")).doesNotExist();
        assertThat(tmp.resolve("model")).doesNotExist();
    }

    /** Checkpoint 1 a base, 2 a delta of 1, 3 a delta of 2: one row file each, committed through the store. */
    private static Path baseAndDeltas(final Path root) throws IOException {
        return baseAndDeltas(root, 3);
    }

    /** Checkpoints 1 to {@code count}: 1 a base, each next one a delta of the one before, one row file each. */
    static Path baseAndDeltas(final Path root, final int count) throws IOException {
        try (CheckpointStore store = new CheckpointStore(root.toUri(), new Configuration())) {
            for (long id = 1; id <= count; id++) {
                final RowFileInfo file;
                try (RowFileWriter writer =
                        RowFileWriter.create(store.fileSystem(), store.checkpointDir(id), "shard-s0/t.rows", 2)) {
                    writer.beginSlot(0);
                    writer.writeRow(id, new float[] {1f, 2f}, 0);
                    file = writer.finish();
                }
                store.commit(new Manifest(
                        id,
                        System.currentTimeMillis(),
                        16,
                        id == 1 ? Manifest.Kind.BASE : Manifest.Kind.DELTA,
                        id == 1 ? 0 : 1,
                        id == 1 ? 0 : id - 1,
                        List.of(new Manifest.TableEntry("t", new byte[0])),
                        List.of(new Manifest.FileEntry("t", "s0", file)),
                        Map.of()));
            }
        }
        return root;
    }

    private static void deleteTree(final Path dir) throws IOException {
        try (Stream<Path> paths = Files.walk(dir)) {
            for (final Path path : paths.sorted(Comparator.reverseOrder()).toList()) {
                Files.delete(path);
            }
        }
    }
}
