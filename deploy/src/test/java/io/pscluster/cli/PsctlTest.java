package io.pscluster.cli;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.local.LocalCluster;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** psctl's subcommands against a real local cluster, as an operator runs them. */
class PsctlTest {
    @TempDir
    Path dir;

    @Test
    void shouldRunTheDemoEndToEndAndExitZero() throws Exception {
        final ByteArrayOutputStream output = new ByteArrayOutputStream();
        final int exit = DemoCommand.run(
                dir.resolve("ps-data").toUri().toString(), 2, new PrintStream(output, true, StandardCharsets.UTF_8));
        final String printed = output.toString(StandardCharsets.UTF_8);
        assertThat(exit).as(printed).isZero();
        assertThat(printed)
                .contains("[1/6]", "[3/6]", "[6/6]")
                .contains("weights and Adagrad accumulators are bit-identical");
        assertThat(Files.exists(dir.resolve("ps-data/ckpt-000000000001/_MANIFEST")))
                .isTrue();
    }

    /**
     * A checkpoint committed while the proxy cannot save its state (its state directory replaced by a file): `checkpoint
     * now` says so on standard error and exits 3, not 0: until a save succeeds the proxy changes nothing. Once the state
     * saves again, the next checkpoint is recorded as usual.
     */
    @Test
    void shouldExitThreeAndSayWhyWhenACommittedCheckpointCouldNotBeRecorded() throws Exception {
        try (LocalCluster cluster = LocalCluster.builder()
                .shards(1)
                .checkpointRoot(dir.toUri().toString())
                .start()) {
            final String proxy = cluster.proxyAddress();
            final PsctlRun first = PsctlRun.psctl("checkpoint", "now", "--proxy", proxy, "--quiet");
            assertThat(first.exit()).as(first.text()).isZero();
            assertThat(first.err()).as(first.text()).doesNotContain("warning");

            final Path stateDir = dir.resolve("_proxy-state");
            assertThat(stateDir).isDirectory();
            final Path aside = dir.resolve("state-aside");
            Files.move(stateDir, aside);
            Files.writeString(stateDir, "not a directory");
            final PsctlRun unrecorded = PsctlRun.psctl("checkpoint", "now", "--proxy", proxy, "--quiet");
            assertThat(unrecorded.exit()).as(unrecorded.text()).isEqualTo(3);
            assertThat(unrecorded.err())
                    .as(unrecorded.text())
                    .contains("warning: checkpoint 2 is committed, but the proxy could not save that it is the latest")
                    .contains("the first save that succeeds records checkpoint 2")
                    .doesNotContain("try again");
            assertThat(Files.exists(dir.resolve("ckpt-000000000002/_MANIFEST"))).isTrue();

            Files.delete(stateDir);
            Files.move(aside, stateDir);
            final PsctlRun third = PsctlRun.psctl("checkpoint", "now", "--proxy", proxy, "--quiet");
            assertThat(third.exit()).as(third.text()).isZero();
            assertThat(third.out()).as(third.text()).contains("checkpoint taken: #3 ");
        }
    }

    @Test
    void shouldTakeListAndReportCheckpointsAndStatusThroughTheCli() throws Exception {
        try (LocalCluster cluster = LocalCluster.builder()
                .shards(2)
                .checkpointRoot(dir.toUri().toString())
                .start()) {
            final String proxy = cluster.proxyAddress();
            assertThat(Psctl.run(
                            "train-example", "--proxy", proxy, "--workers", "2", "--epochs", "1", "--samples", "2000"))
                    .isZero();
            assertThat(Psctl.run(
                            "train-example",
                            "--proxy",
                            proxy,
                            "--workers",
                            "2",
                            "--epochs",
                            "1",
                            "--samples",
                            "2000",
                            "--mode",
                            "ssp:1",
                            "--table",
                            "lr_ssp"))
                    .isZero();
            assertThat(Psctl.run("checkpoint", "now", "--proxy", proxy)).isZero();
            assertThat(Psctl.run("checkpoint", "now", "--proxy", proxy)).isZero();
            assertThat(Files.exists(dir.resolve("ckpt-000000000002/_MANIFEST"))).isTrue();
            assertThat(Psctl.run("checkpoint", "list", "--proxy", proxy)).isZero();
            assertThat(Psctl.run("checkpoint", "restore", "--proxy", proxy, "--id", "1"))
                    .isZero();
            final PsctlRun status = PsctlRun.psctl("status", "--proxy", proxy);
            assertThat(status.exit()).as(status.text()).isZero();
            // Each shard's off-heap bytes held against its rows' budget, in MiB: this JVM's budget is not 0.
            assertThat(status.out()).as(status.text()).contains("OFFHEAP_MB");
            assertThat(java.util.regex.Pattern.compile(" \\d+/[1-9]\\d* +\\d+ms")
                            .matcher(status.out())
                            .results()
                            .count())
                    .as("shards with an off-heap budget in:%n%s", status.out())
                    .isEqualTo(2);
            // A checkpoint that does not exist is an error with a non-zero exit, and the cluster keeps serving.
            assertThat(Psctl.run("checkpoint", "restore", "--proxy", proxy, "--id", "99"))
                    .isEqualTo(1);
            assertThat(Psctl.run("status", "--proxy", proxy)).isZero();
        }
    }

    /**
     * `checkpoint list --proxy` shows a checkpoint that a restore found damaged (its mark in its directory) as such and
     * exits 1, as `list --checkpoint-dir` does; the intact one is listed plainly.
     */
    @Test
    void shouldShowACheckpointMarkedDamagedWhenListingThroughTheProxy() throws Exception {
        try (LocalCluster cluster = LocalCluster.builder()
                .shards(1)
                .checkpointRoot(dir.toUri().toString())
                .start()) {
            final String proxy = cluster.proxyAddress();
            assertThat(Psctl.run("checkpoint", "now", "--proxy", proxy, "--quiet"))
                    .isZero();
            assertThat(Psctl.run("checkpoint", "now", "--proxy", proxy, "--quiet"))
                    .isZero();
            final PsctlRun intact = PsctlRun.psctl("checkpoint", "list", "--proxy", proxy);
            assertThat(intact.exit()).as(intact.text()).isZero();
            assertThat(intact.out()).as(intact.text()).contains("#2 ", "#1 ").doesNotContain("DAMAGED");

            new io.pscluster.checkpoint.CheckpointStore(dir.toUri(), new org.apache.hadoop.conf.Configuration())
                    .markDamaged(2, "a replica went bad");
            final PsctlRun marked = PsctlRun.psctl("checkpoint", "list", "--proxy", proxy);
            assertThat(marked.exit()).as(marked.text()).isEqualTo(1);
            assertThat(marked.out().lines().filter(line -> line.contains("MARKED-DAMAGED")))
                    .as(marked.text())
                    .singleElement(org.assertj.core.api.InstanceOfAssertFactories.STRING)
                    .contains("a replica went bad", "--id 2");
        }
    }

    @Test
    void shouldRejectMalformedArgumentsWithNonZeroExit() {
        assertThat(Psctl.run("status", "--proxy", "no-port")).isEqualTo(1);
        assertThat(Psctl.run("shard", "--proxy", "localhost:1", "--max-queued-push-mb", "-1"))
                .isEqualTo(1);
        assertThat(Psctl.run("checkpoint", "sideways", "--proxy", "localhost:1"))
                .isEqualTo(2);
        assertThat(Psctl.run(
                        "train-example",
                        "--proxy",
                        "localhost:1",
                        "--data",
                        dir.resolve("missing.txt").toString()))
                .isEqualTo(1);
        assertThat(Psctl.run("train-example", "--proxy", "localhost:1", "--mode", "sideways"))
                .isEqualTo(1);
    }

    @Test
    void shouldReadLibsvmAndNameTheLineWhenMalformed() throws Exception {
        final Path good = dir.resolve("good.libsvm");
        Files.writeString(good, "# comment\n+1 3:1 7:0.5\n-1 2:1\n0 9:2\n");
        final io.pscluster.example.Dataset data = io.pscluster.example.Dataset.readLibsvm(good);
        assertThat(data.labels()).containsExactly(1, 0, 0);
        assertThat(data.keys()[0]).containsExactly(3, 7);
        assertThat(data.values()[0]).containsExactly(1f, 0.5f);
        final Path bad = dir.resolve("bad.libsvm");
        Files.writeString(bad, "1 3:1\n1 3-1\n");
        org.assertj.core.api.Assertions.assertThatThrownBy(() -> io.pscluster.example.Dataset.readLibsvm(bad))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining(bad + ":2: feature '3-1' is not index:value");
    }
}
