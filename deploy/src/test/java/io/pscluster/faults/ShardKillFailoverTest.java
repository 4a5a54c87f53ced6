package io.pscluster.faults;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.pscluster.cli.Psctl;
import io.pscluster.local.AdminCalls;
import io.pscluster.proto.v1.ListShardsResponse;
import io.pscluster.proto.v1.RollbackEvent;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Three shard processes and no idle one, the example training job in a process of its own: {@code kill -9} of one
 * shard mid-training. The job must finish without a restart and within one accuracy point of an undisturbed run, print
 * the rollback with its checkpoint id, {@code psctl status} must show it, and every slot must be served again within
 * two leases of the kill. Prints the failover time and the job's longest step (the README's failover figures).
 */
@Tag("slow")
class ShardKillFailoverTest {
    private static final Pattern ACCURACY = Pattern.compile("final accuracy ([0-9.]+)%");
    private static final Pattern LONGEST_STEP = Pattern.compile("longest step (\\d+) ms");

    @TempDir
    Path dir;

    @Test
    void shouldFinishTrainingWhenAShardIsKilledWithNoIdleShard() throws Exception {
        final long leaseMs = 3_000;
        try (ProcessCluster cluster = new ProcessCluster(dir, leaseMs, 500, 300)) {
            cluster.startProxy("--checkpoint-interval-s", "1");
            cluster.startShard("s0");
            cluster.startShard("s1");
            cluster.startShard("s2");
            await().atMost(Duration.ofSeconds(30)).until(cluster::allSlotsServed);
            final String[] job = {
                "train-example",
                "--proxy",
                cluster.proxyAddress(),
                "--workers",
                "2",
                "--epochs",
                "4",
                "--samples",
                "20000"
            };

            cluster.startJob("undisturbed", append(job, "--table", "lr_a"));
            assertThat(cluster.awaitExit("undisturbed", 300_000))
                    .as(cluster.logs())
                    .isZero();
            final double undisturbed = accuracy(cluster.log("undisturbed"));

            cluster.startJob("disturbed", append(job, "--table", "lr_b"));
            cluster.awaitLine("disturbed", Pattern.compile("epoch 1: "), 300_000);
            await().atMost(Duration.ofSeconds(30))
                    .until(() -> AdminCalls.checkpoints(cluster.proxyAddress()).stream()
                            .findFirst()
                            .map(checkpoint -> checkpoint.getTablesList().contains("lr_b"))
                            .orElse(false));
            final String killed = cluster.shardId("s1");
            final long killedAt = System.nanoTime();
            cluster.kill9("s1");
            // Served again: the killed shard's slots have new owners (its rollback is reported), restored, serving.
            await().atMost(Duration.ofSeconds(60))
                    .pollInterval(Duration.ofMillis(20))
                    .until(() -> cluster.status().getRollbacksList().stream()
                                    .anyMatch(event -> event.getFromShard().equals(killed))
                            && cluster.allSlotsServed());
            final long failoverMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - killedAt);

            assertThat(cluster.awaitExit("disturbed", 300_000))
                    .as(cluster.logs())
                    .isZero();
            final String jobLog = cluster.log("disturbed");
            final double disturbed = accuracy(jobLog);
            final ListShardsResponse status = cluster.status();
            final RollbackEvent rollback = status.getRollbacksList().stream()
                    .filter(event -> event.getFromShard().equals(killed))
                    .findFirst()
                    .orElseThrow(() -> new AssertionError("no rollback reported for " + killed + "\n" + status));
            final ByteArrayOutputStream printed = new ByteArrayOutputStream();
            final PrintStream stdout = System.out;
            System.setOut(new PrintStream(printed, true, StandardCharsets.UTF_8));
            try {
                assertThat(Psctl.run("status", "--proxy", cluster.proxyAddress()))
                        .isZero();
            } finally {
                System.setOut(stdout);
            }
            final Matcher step = LONGEST_STEP.matcher(jobLog);
            System.out.printf(
                    "failover: every slot served again %d ms after kill -9 (lease %d ms); job's longest step %s ms;"
                            + " accuracy %.2f%% undisturbed, %.2f%% disturbed%n",
                    failoverMs, leaseMs, step.find() ? step.group(1) : "?", undisturbed, disturbed);

            assertThat(rollback.getCheckpointId()).isPositive();
            assertThat(rollback.getLossless()).isFalse();
            assertThat(status.getRollbacksTotal()).isGreaterThanOrEqualTo(1);
            assertThat(failoverMs).as(cluster.logs()).isLessThan(2 * leaseMs);
            assertThat(disturbed).isCloseTo(undisturbed, org.assertj.core.data.Offset.offset(1.0));
            assertThat(jobLog).contains("rollback").contains("checkpoint " + rollback.getCheckpointId());
            assertThat(printed.toString(StandardCharsets.UTF_8))
                    .contains("rollback")
                    .contains(killed)
                    .contains("checkpoint " + rollback.getCheckpointId());
        }
    }

    private static String[] append(final String[] args, final String... more) {
        final String[] all = java.util.Arrays.copyOf(args, args.length + more.length);
        System.arraycopy(more, 0, all, args.length, more.length);
        return all;
    }

    private static double accuracy(final String log) {
        final Matcher matcher = ACCURACY.matcher(log);
        assertThat(matcher.find()).as(log).isTrue();
        return Double.parseDouble(matcher.group(1));
    }
}
