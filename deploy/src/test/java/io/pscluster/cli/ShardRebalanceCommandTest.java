package io.pscluster.cli;

import static io.pscluster.cli.PsctlRun.psctl;
import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.pscluster.local.AdminCalls;
import io.pscluster.local.CounterTable;
import io.pscluster.local.LocalCluster;
import io.pscluster.worker.PsClient;
import java.nio.file.Path;
import java.time.Duration;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code psctl shard rebalance} against a real cluster whose added shard owns nothing. */
class ShardRebalanceCommandTest {
    private static final Pattern MOVE =
            Pattern.compile("(would move|moved) (\\d+) slots from shard \\S+ to shard (\\S+)");

    @TempDir
    Path dir;

    private static int slotsTo(final String out, final String verb, final String shardId) {
        int slots = 0;
        final Matcher matcher = MOVE.matcher(out);
        while (matcher.find()) {
            assertThat(matcher.group(1)).isEqualTo(verb);
            assertThat(matcher.group(3)).isEqualTo(shardId);
            slots += Integer.parseInt(matcher.group(2));
        }
        return slots;
    }

    @Test
    void shouldPrintTheMovesMoveThemAndThenSayNothingIsLeftToMove() throws Exception {
        try (LocalCluster cluster = LocalCluster.builder()
                .shards(2)
                .checkpointRoot(dir.resolve("checkpoints").toUri().toString())
                .start()) {
            try (PsClient client = PsClient.connect(cluster.proxyAddress())) {
                client.createTable(CounterTable.schema("counter"));
            }
            final String added = cluster.shard(cluster.addShard()).shardId();

            final PsctlRun dry = psctl("shard", "rebalance", "--proxy", cluster.proxyAddress(), "--dry-run");
            assertThat(dry.exit()).as(dry.text()).isZero();
            assertThat(slotsTo(dry.out(), "would move", added)).as(dry.text()).isEqualTo(1365);

            final PsctlRun run = psctl("shard", "rebalance", "--proxy", cluster.proxyAddress(), "--quiet");
            assertThat(run.exit()).as(run.text()).isZero();
            assertThat(slotsTo(run.out(), "moved", added)).as(run.text()).isEqualTo(1365);
            assertThat(run.out())
                    .containsPattern("routing epoch \\d+; the new owners load the slots from checkpoint \\d+");
            await().atMost(Duration.ofSeconds(60))
                    .until(() -> AdminCalls.status(cluster.proxyAddress()).getPendingRestoresCount() == 0);

            final PsctlRun again = psctl("shard", "rebalance", "--proxy", cluster.proxyAddress());
            assertThat(again.exit()).as(again.text()).isZero();
            assertThat(again.out()).contains("nothing to move");
        }
    }

    @Test
    void shouldRefuseWithoutAProxy() {
        final PsctlRun run = psctl("shard", "rebalance");

        assertThat(run.exit()).isEqualTo(2);
        assertThat(run.err()).contains("--proxy");
    }
}
