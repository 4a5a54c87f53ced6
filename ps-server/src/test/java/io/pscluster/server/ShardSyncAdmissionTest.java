package io.pscluster.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;
import static org.awaitility.Awaitility.await;

import io.grpc.Status;
import io.pscluster.proto.v1.JobInfo;
import io.pscluster.proto.v1.JobSpec;
import io.pscluster.proto.v1.JobWorker;
import io.pscluster.proto.v1.OptimizerSpec;
import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.proto.v1.UpdateJobsRequest;
import io.pscluster.proto.v1.UpdateMode;
import io.pscluster.server.table.ChildJvm;
import io.pscluster.server.table.ParameterTable;
import io.pscluster.wire.PsException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.LongStream;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * A SYNC push is acknowledged when it is held for its clock, and its clock's sum is applied later: its new rows are
 * counted against the table's cap and claimed in the off-heap budget when it is held, once per clock however many
 * workers name a key, so that the sum never finds a row it cannot create (those rows used to be dropped, counted and
 * logged, after every worker had been told its push was taken). Claims of a clock that are not used go back when it is
 * applied or its table is dropped.
 */
class ShardSyncAdmissionTest {
    private static final String TABLE = "capped";
    private static final String OTHER = "other";
    private static final String JOB = "j";

    private final Shard shard = new Shard("s", 1 << 20, 2, 1024, new Configuration());
    private final AtomicLong sequences = new AtomicLong();
    private long jobsVersion;

    @BeforeEach
    void ownEverySlot() throws InterruptedException {
        TestRouting.serve(shard, TestRouting.allSlotsTo("s", 1));
    }

    @AfterEach
    void closeShard() {
        shard.close();
    }

    /** SGD with lr 1 from zeros, dim 2: a row holds minus what was applied to it. */
    private static TableSchema schema(final String name, final int dim, final long maxRowsPerShard) {
        return TableSchema.newBuilder()
                .setName(name)
                .setKind(TableKind.SPARSE)
                .setDim(dim)
                .setOptimizer(OptimizerSpec.newBuilder().setLearningRate(1f))
                .setMaxRowsPerShard(maxRowsPerShard)
                .build();
    }

    private static void syncJob(
            final Shard shard, final long version, final List<String> tables, final int... workers) {
        final JobInfo.Builder job = JobInfo.newBuilder()
                .setSpec(JobSpec.newBuilder().setJobId(JOB).setMode(UpdateMode.SYNC))
                .setVersion(version)
                .setStarted(true)
                .setNextWorkerId(10)
                .addAllTables(tables);
        for (final int worker : workers) {
            job.addWorkers(JobWorker.newBuilder().setWorkerId(worker));
        }
        shard.updateJobs(UpdateJobsRequest.newBuilder()
                .addJobs(job)
                .setJobsVersion(version)
                .build());
    }

    private static void push(
            final Shard shard,
            final String table,
            final int worker,
            final long clock,
            final long sequence,
            final long[] keys,
            final int dim) {
        final float[] gradients = new float[keys.length * dim];
        Arrays.fill(gradients, 1f);
        shard.push(table, 1, 100 + worker, sequence, keys, gradients, new Shard.JobTag(JOB, worker, clock));
    }

    private void push(final int worker, final long... keys) {
        push(shard, TABLE, worker, 0, sequences.incrementAndGet(), keys, 2);
    }

    private static void end(final Shard shard, final int worker, final long clock) {
        assertThat(shard.endClock(JOB, worker, clock, false).join().accepted()).isTrue();
    }

    /** {@value #TABLE}, capped at 8 rows, in a SYNC job of workers 0 and 1 that are both at clock 0. */
    private ParameterTable cappedTableOfATwoWorkerJob() throws InterruptedException {
        shard.createTable(schema(TABLE, 2, 8));
        syncJob(shard, ++jobsVersion, List.of(TABLE), 0, 1);
        end(shard, 0, -1);
        end(shard, 1, -1);
        return shard.table(TABLE);
    }

    private static long[] keys(final long from, final long to) {
        return LongStream.range(from, to).toArray();
    }

    /** {@code count} keys of the shard's partition {@code partition} (of 2: the slot's parity). */
    private static long[] keysIn(final ParameterTable table, final int partition, final int count) {
        return LongStream.iterate(0, key -> key + 1)
                .filter(key -> table.slotOf(key) % 2 == partition)
                .limit(count)
                .toArray();
    }

    /**
     * Two workers name the same six new keys (counted once), then worker 1 three more: 9 new rows for a cap of 8 is
     * refused when pushed, not taken and then short of a row when the clock is applied; two more fit.
     */
    @Test
    void shouldCountAClocksNewRowsAgainstTheCapOnceWhenHeldAndCreateEveryRowItAcknowledged() throws Exception {
        final ParameterTable table = cappedTableOfATwoWorkerJob();

        push(0, keys(0, 6));
        push(1, keys(0, 6));
        assertThat(table.rowsCounted())
                .as("six new rows held for clock 0, once")
                .isEqualTo(6);
        final PsException refused = catchThrowableOfType(PsException.class, () -> push(1, keys(100, 103)));
        assertThat(refused).as("three more new rows than the cap takes").isNotNull();
        assertThat(refused.code()).isEqualTo(Status.Code.RESOURCE_EXHAUSTED);
        assertThat(refused.getMessage())
                .contains("'" + TABLE + "'", "cap of 8 rows", "SYNC clock holds 6", "3 new rows", "max_rows_per_shard");
        assertThat(PsException.rejectOf(PsException.toStatus(refused)))
                .as("final: the clock's own rows fill the cap")
                .isNull();
        push(1, keys(100, 102));
        end(shard, 0, 0);
        end(shard, 1, 0);

        await().atMost(Duration.ofSeconds(10)).until(() -> shard.jobClocks(JOB).applied() == 0);
        assertThat(table.droppedRows()).as("rows dropped").isZero();
        assertThat(table.rowCount()).isEqualTo(8);
        assertThat(table.rowsCounted()).as("nothing left promised").isEqualTo(8);
        for (long key = 0; key < 6; key++) {
            assertThat(table.pull(new long[] {key})[0]).as("key %d", key).isEqualTo(-2f);
        }
        assertThat(table.pull(new long[] {100, 101})).containsExactly(-1f, -1f, -1f, -1f);
        assertThat(table.countAbsent(new long[] {102}, table.slotsOf(new long[] {102})))
                .as("the refused push's key")
                .isEqualTo(1);
    }

    /**
     * A worker that ended clock 0 pushes the same new keys for clock 1 before the other worker ended clock 0: the rows
     * clock 0 holds count against the cap until it is applied, so the push is refused, but to retry (clock 0 creates
     * them); sent again once clock 0 is applied, it is taken.
     */
    @Test
    void shouldRefuseAPushWhoseRowsAnotherClockHoldsOnlyUntilThatClockIsApplied() throws Exception {
        final ParameterTable table = cappedTableOfATwoWorkerJob();
        push(0, keys(0, 6));
        end(shard, 0, 0);

        final PsException refused = catchThrowableOfType(
                PsException.class, () -> push(shard, TABLE, 0, 1, sequences.incrementAndGet(), keys(0, 6), 2));
        assertThat(refused).as("clock 0 holds the same six rows").isNotNull();
        assertThat(refused.code()).isEqualTo(Status.Code.RESOURCE_EXHAUSTED);
        assertThat(PsException.rejectOf(PsException.toStatus(refused)))
                .as("to retry")
                .isNotNull();
        assertThat(refused.getMessage()).contains("'" + TABLE + "'", "cap of 8 rows", "other clocks");

        end(shard, 1, 0);
        await().atMost(Duration.ofSeconds(10)).until(() -> shard.jobClocks(JOB).applied() == 0);
        shard.awaitQuiescent();
        push(shard, TABLE, 0, 1, sequences.incrementAndGet(), keys(0, 6), 2);
        end(shard, 0, 1);
        end(shard, 1, 1);
        await().atMost(Duration.ofSeconds(10)).until(() -> shard.jobClocks(JOB).applied() == 1);
        shard.awaitQuiescent();
        assertThat(table.rowCount()).isEqualTo(6);
        assertThat(table.rowsCounted()).isEqualTo(6);
        assertThat(table.pull(new long[] {5})).containsExactly(-2f, -2f);
    }

    /**
     * A key whose row a push of the clock found, and so did not hold, is evicted by the table's TTL before the clock
     * is applied, and the clock's other new rows fill the cap meanwhile: the row is created again all the same (past
     * the cap), not dropped after its push was acknowledged.
     */
    @Test
    void shouldCreateTheRowOfAKeyEvictedBetweenItsPushAndItsClock() throws Exception {
        shard.createTable(schema(TABLE, 2, 8).toBuilder().setTtlSeconds(2).build());
        final ParameterTable table = shard.table(TABLE);
        syncJob(shard, ++jobsVersion, List.of(TABLE), 0, 1);
        end(shard, 0, -1);
        end(shard, 1, -1);
        push(0, 0);
        end(shard, 0, 0);
        end(shard, 1, 0);
        await().atMost(Duration.ofSeconds(10)).until(() -> shard.jobClocks(JOB).applied() == 0);
        shard.awaitQuiescent();
        assertThat(table.rowCount()).isEqualTo(1);

        push(shard, TABLE, 0, 1, sequences.incrementAndGet(), keys(0, 7), 2);
        assertThat(table.rowsCounted()).as("key 0's row, and keys 1-6 held").isEqualTo(7);
        await().atMost(Duration.ofSeconds(15)).until(() -> table.rowCount() == 0);
        push(shard, TABLE, 1, 1, sequences.incrementAndGet(), new long[] {100, 101}, 2);
        end(shard, 0, 1);
        end(shard, 1, 1);
        await().atMost(Duration.ofSeconds(10)).until(() -> shard.jobClocks(JOB).applied() == 1);
        shard.awaitQuiescent();

        assertThat(table.droppedRows()).as("rows dropped").isZero();
        assertThat(table.rowCount())
                .as("every key of clock 1, one past the cap")
                .isEqualTo(9);
        assertThat(table.rowsCounted()).isEqualTo(9);
        assertThat(table.pull(new long[] {0, 100})).containsExactly(-1f, -1f, -1f, -1f);
    }

    /**
     * A table dropped and created again under its name while a clock that pushed to it is being applied (the clock is
     * no longer among those a drop forgets) gets nothing of the clock; the clock's other table gets its sum. The apply
     * is held on the other table's sum, which waits for room in the writers' queue (filled by async pushes while the
     * writers are held), while the table is dropped and created again.
     */
    @Test
    void shouldNotApplyAClocksSumToATableCreatedAgainWhileTheClockWasApplied() throws Exception {
        final String first = "a";
        final String again = "b";
        final java.util.Map<String, Integer> clockOrder = new java.util.HashMap<>();
        clockOrder.put(again, 0);
        clockOrder.put(first, 1);
        assertThat(clockOrder.keySet())
                .as("the order a clock applies its tables in (a HashMap's)")
                .containsExactly(first, again);
        shard.createTable(schema(first, 2, 0));
        shard.createTable(schema(again, 2, 0));
        shard.createTable(schema(OTHER, 2, 0));
        syncJob(shard, ++jobsVersion, List.of(first, again), 0);
        end(shard, 0, -1);
        // Clock 0 creates the rows, so that clock 1 holds none of them: its sum has nothing of the old table's budget.
        push(shard, again, 0, 0, sequences.incrementAndGet(), keys(0, 4), 2);
        end(shard, 0, 0);
        await().atMost(Duration.ofSeconds(10)).until(() -> shard.jobClocks(JOB).applied() == 0);
        push(shard, first, 0, 1, sequences.incrementAndGet(), keys(0, 4), 2);
        push(shard, again, 0, 1, sequences.incrementAndGet(), keys(0, 4), 2);

        try (BlockedWriters blocked = BlockedWriters.block(shard, 2)) {
            int queued = 0;
            while (queued < 10_000) {
                try {
                    shard.push(OTHER, 1, 0, 0, keys(100, 104), new float[8]);
                    queued++;
                } catch (PsException full) {
                    assertThat(PsException.rejectOf(PsException.toStatus(full)))
                            .as("the writers' queue is full: %s", full.getMessage())
                            .isNotNull();
                    break;
                }
            }
            end(shard, 0, 1);
            await().atMost(Duration.ofSeconds(10))
                    .until(() -> shard.jobClocks(JOB).pendingClocks() == 0);
            assertThat(shard.jobClocks(JOB).applied())
                    .as("clock 1 being applied")
                    .isZero();
            shard.dropTable(again);
            shard.createTable(schema(again, 2, 0));
        }
        await().atMost(Duration.ofSeconds(10)).until(() -> shard.jobClocks(JOB).applied() == 1);
        shard.awaitQuiescent();

        assertThat(shard.table(first).pull(new long[] {3})).containsExactly(-1f, -1f);
        assertThat(shard.table(again).rowCount())
                .as("rows of the table created again")
                .isZero();
    }

    /**
     * A worker that leaves in the middle of a clock takes its gradients with it: the rows only it named are given back
     * to the cap, at once for a table no other worker pushed to, when the clock is applied for one they did; a dropped
     * table's clock gives back all of its own.
     */
    @Test
    void shouldGiveBackTheRowsAClockHeldButDidNotCreate() throws Exception {
        shard.createTable(schema(TABLE, 2, 8));
        shard.createTable(schema(OTHER, 2, 8));
        final ParameterTable table = shard.table(TABLE);
        final ParameterTable other = shard.table(OTHER);
        syncJob(shard, ++jobsVersion, List.of(TABLE, OTHER), 0, 1);
        end(shard, 0, -1);
        end(shard, 1, -1);
        // Worker 1's keys all in the partition worker 0's are not in: the sum gives that partition nothing to do.
        push(0, keysIn(table, 0, 2));
        push(1, keysIn(table, 1, 6));
        push(shard, OTHER, 1, 0, sequences.incrementAndGet(), keys(0, 5), 2);
        assertThat(table.rowsCounted()).isEqualTo(8);
        assertThat(other.rowsCounted()).isEqualTo(5);

        syncJob(shard, ++jobsVersion, List.of(TABLE, OTHER), 0);
        assertThat(other.rowsCounted()).as("only worker 1 pushed to it").isZero();
        end(shard, 0, 0);
        await().atMost(Duration.ofSeconds(10)).until(() -> shard.jobClocks(JOB).applied() == 0);
        shard.awaitQuiescent();
        assertThat(table.rowCount()).as("worker 0's rows").isEqualTo(2);
        assertThat(table.rowsCounted()).as("worker 1's six given back").isEqualTo(2);
        assertThat(other.rowCount()).isZero();

        push(shard, TABLE, 0, 1, sequences.incrementAndGet(), keys(20, 26), 2);
        assertThat(table.rowsCounted()).isEqualTo(8);
        shard.dropTable(TABLE);
        assertThat(table.rowsCounted())
                .as("the dropped table's clock held none")
                .isEqualTo(2);
        shard.createTable(schema(TABLE, 2, 8));
        final ParameterTable again = shard.table(TABLE);
        push(shard, TABLE, 0, 1, sequences.incrementAndGet(), keys(0, 8), 2);
        assertThat(again.rowsCounted())
                .as("a table created again under the name")
                .isEqualTo(8);
        end(shard, 0, 1);
        await().atMost(Duration.ofSeconds(10)).until(() -> shard.jobClocks(JOB).applied() == 1);
        shard.awaitQuiescent();
        assertThat(again.rowCount()).isEqualTo(8);
        assertThat(again.pull(new long[] {7})).containsExactly(-1f, -1f);
    }

    /**
     * A shard whose off-heap memory runs out refuses the SYNC push that has no room for its new rows when it is held,
     * and its clock's sum then creates every row it acknowledged. Runs in a child JVM with a small
     * {@code -XX:MaxDirectMemorySize}, as {@link ShardOffHeapAdmissionTest} does for pushes applied at once.
     */
    @Test
    void shouldRefuseTheSyncPushThatHasNoMemoryForItsRowsAndCreateEveryRowTheClockAcknowledged() throws Exception {
        final ChildJvm.Run run = ChildJvm.run(
                Child.class, List.of("-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:MaxDirectMemorySize=72m"), 120);
        final String out = run.output();
        final Map<String, String> result = run.results();
        assertThat(result).as("the child's results:\n%s", out).containsKeys("acknowledged", "code", "message");

        // 8 MiB for rows (72 MiB less 64 for gRPC) hold about 30,000 rows of 272 bytes.
        assertThat(Integer.parseInt(result.get("acknowledged")))
                .as("pushes acknowledged")
                .isBetween(5, 20);
        assertThat(result.get("applied")).as("clock 0 applied").isEqualTo("0");
        assertThat(result.get("absent"))
                .as("acknowledged rows missing once the clock is applied")
                .isEqualTo("0");
        assertThat(result.get("dropped")).as("dropped rows").isEqualTo("0");
        assertThat(result.get("value"))
                .as("a row the last push acknowledged, pushed by both workers")
                .isEqualTo("-2.0");
        assertThat(result.get("code")).isEqualTo(Status.Code.RESOURCE_EXHAUSTED.name());
        assertThat(result.get("message"))
                .contains("'" + Child.WIDE + "'", "off-heap", "SYNC clocks", "MaxDirectMemorySize");
        assertThat(result.get("retryable"))
                .as("final: the room is held by the clock the refused worker's push belongs to")
                .isEqualTo("false");
    }

    /** Two SYNC workers push the same new keys for clock 0 until one push is refused, end the clock, then report. */
    public static final class Child {
        static final String WIDE = "wide";
        private static final int DIM = 64;
        private static final int KEYS_PER_PUSH = 2_000;

        public static void main(final String[] args) throws Exception {
            final Shard shard = new Shard("s", 1 << 20, 2, 1024, new Configuration());
            TestRouting.serve(shard, TestRouting.allSlotsTo("s", 1));
            shard.createTable(schema(WIDE, DIM, 0));
            final ParameterTable table = shard.table(WIDE);
            syncJob(shard, 1, List.of(WIDE), 0, 1);
            end(shard, 0, -1);
            end(shard, 1, -1);
            final List<long[]> acknowledged = new ArrayList<>();
            long sequence = 0;
            boolean refused = false;
            for (int push = 0; push < 100 && !refused; push++) {
                final long[] keys = keys(1_000_000L * (push + 1), 1_000_000L * (push + 1) + KEYS_PER_PUSH);
                try {
                    for (int worker = 0; worker < 2; worker++) {
                        push(shard, WIDE, worker, 0, ++sequence, keys, DIM);
                    }
                    acknowledged.add(keys);
                } catch (PsException e) {
                    refused = true;
                    report("code", e.code().name());
                    report("message", e.getMessage());
                    report("retryable", PsException.rejectOf(PsException.toStatus(e)) != null);
                }
            }
            end(shard, 0, 0);
            end(shard, 1, 0);
            await().atMost(Duration.ofSeconds(30))
                    .until(() -> shard.jobClocks(JOB).applied() == 0);
            shard.awaitQuiescent();
            report("applied", shard.jobClocks(JOB).applied());
            report("acknowledged", acknowledged.size());
            long absent = 0;
            for (final long[] keys : acknowledged) {
                absent += table.countAbsent(keys, table.slotsOf(keys));
            }
            report("absent", absent);
            report("dropped", table.droppedRows());
            report("value", table.pull(new long[] {acknowledged.get(acknowledged.size() - 1)[0]})[0]);
            shard.close();
            System.exit(0);
        }

        private static void report(final String name, final Object value) {
            System.out.println("RESULT " + name + "=" + value);
        }
    }
}
