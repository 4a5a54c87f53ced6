package io.pscluster.faults;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.local.LocalCluster;
import java.nio.file.Path;
import java.util.Map;
import java.util.TreeMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A SYNC job's worker process killed with {@code kill -9} mid-job (no clean leave): the others stall for about one
 * worker lease (the proxy drops it, the shards stop waiting for it), then go on; a new worker process joins the
 * running job at the current clock; every worker finishes, and at every clock the workers read identical parameters.
 */
@Tag("slow")
class WorkerKillTest {
    private static final Pattern CLOCK = Pattern.compile("clock (\\d+) at (\\d+) sum (-?\\d+)");
    private static final long WORKER_LEASE_MS = 3_000;
    private static final long LAST_CLOCK = 400;

    @TempDir
    Path dir;

    @Test
    void othersGoOnOneLeaseAfterAWorkerIsKilledAndANewWorkerJoins() throws Exception {
        try (LocalCluster cluster = LocalCluster.builder()
                        .shards(2)
                        .workerLeaseMs(WORKER_LEASE_MS)
                        .checkpointRoot(dir.resolve("checkpoints").toUri().toString())
                        .start();
                ProcessCluster workers = new ProcessCluster(dir, 3_000, 1_000, 500)) {
            final String[] args = {cluster.proxyAddress(), "killjob", "sync", "3", Long.toString(LAST_CLOCK), "20"};
            for (final String name : new String[] {"w0", "w1", "w2"}) {
                workers.startMain(name, SyncWorkerMain.class, args);
            }
            final Pattern clock30 = Pattern.compile("clock 30 at");
            for (final String name : new String[] {"w0", "w1", "w2"}) {
                workers.awaitLine(name, clock30, 120_000);
            }
            final long killedAt = System.currentTimeMillis();
            workers.kill9("w2");
            workers.startMain("w3", SyncWorkerMain.class, args);
            for (final String name : new String[] {"w0", "w1", "w3"}) {
                assertThat(workers.awaitExit(name, 180_000))
                        .as("exit of %s; logs:%n%s", name, workers.logs())
                        .isZero();
            }
            final Map<Long, long[]> w0 = clocks(workers.log("w0"));
            final Map<Long, long[]> w1 = clocks(workers.log("w1"));
            final Map<Long, long[]> w3 = clocks(workers.log("w3"));
            assertThat(w0).containsKey(LAST_CLOCK);
            assertThat(w3).as("the joiner's clocks").isNotEmpty();
            // The longest stall of a survivor after the kill: about one worker lease, never much more.
            long longestGap = 0;
            long previous = -1;
            for (final long[] line : w0.values()) {
                if (previous > 0 && line[0] > killedAt) {
                    longestGap = Math.max(longestGap, line[0] - previous);
                }
                previous = line[0];
            }
            System.out.printf(
                    "longest stall of a survivor after kill -9 of a worker: %d ms (worker lease %d ms)%n",
                    longestGap, WORKER_LEASE_MS);
            assertThat(longestGap).as("stall after the kill").isLessThan(2 * WORKER_LEASE_MS + 2_000);
            for (final Map.Entry<Long, long[]> entry : w0.entrySet()) {
                final long clock = entry.getKey();
                assertThat(w1.get(clock)[1]).as("w1 vs w0 at clock %d", clock).isEqualTo(entry.getValue()[1]);
                if (w3.containsKey(clock)) {
                    assertThat(w3.get(clock)[1])
                            .as("w3 vs w0 at clock %d", clock)
                            .isEqualTo(entry.getValue()[1]);
                }
            }
            assertThat(w3.keySet().iterator().next())
                    .as("the joiner starts where the job is, not at 0")
                    .isGreaterThan(30);
        }
    }

    /** Clock -> {millis, sum} from a worker's output. */
    private static Map<Long, long[]> clocks(final String log) {
        final Map<Long, long[]> clocks = new TreeMap<>();
        final Matcher matcher = CLOCK.matcher(log);
        while (matcher.find()) {
            clocks.put(
                    Long.parseLong(matcher.group(1)),
                    new long[] {Long.parseLong(matcher.group(2)), Long.parseLong(matcher.group(3))});
        }
        return clocks;
    }
}
