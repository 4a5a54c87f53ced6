package io.pscluster.cli;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.proto.v1.JobInfo;
import io.pscluster.proto.v1.JobSpec;
import io.pscluster.proto.v1.JobWorker;
import io.pscluster.proto.v1.ListJobsResponse;
import io.pscluster.proto.v1.UpdateMode;
import java.io.ByteArrayOutputStream;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import org.junit.jupiter.api.Test;

/** The jobs part of {@code psctl status}. */
class StatusJobsTest {
    private static String print(final ListJobsResponse response) {
        final ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        StatusCommand.printJobs(
                response, new PrintWriter(new java.io.OutputStreamWriter(bytes, StandardCharsets.UTF_8), true));
        return bytes.toString(StandardCharsets.UTF_8);
    }

    private static JobWorker worker(final int id, final String host, final long clock, final long sinceRenewal) {
        return JobWorker.newBuilder()
                .setWorkerId(id)
                .setRank(id + 1)
                .setHost(host)
                .setClock(clock)
                .setMillisSinceRenewal(sinceRenewal)
                .build();
    }

    @Test
    void shouldListEachJobWithItsModeTablesWorkersAndSlowestWorker() {
        final String printed = print(ListJobsResponse.newBuilder()
                .addJobs(JobInfo.newBuilder()
                        .setSpec(JobSpec.newBuilder()
                                .setJobId("lr")
                                .setMode(UpdateMode.SSP)
                                .setStaleness(2)
                                .setExpectedWorkers(3))
                        .setStarted(true)
                        .addTables("emb")
                        .addTables("bias")
                        .addWorkers(worker(0, "host-a", 12, 120))
                        .addWorkers(worker(2, "host-c", 10, 80))
                        .addWorkers(worker(3, "host-d", 11, 40)))
                .addJobs(JobInfo.newBuilder()
                        .setSpec(JobSpec.newBuilder().setJobId("idle").setMode(UpdateMode.ASYNC))
                        .setIdleSinceMillis(1_700_000_000_000L))
                .build());

        assertThat(printed)
                .contains("2 jobs")
                .containsPattern("lr +ssp:2 +yes +3/3 emb,bias")
                .containsPattern("0 +1 +host-a +12 +0 +120ms")
                .contains("slowest: worker 2 at clock 10")
                .containsPattern("idle +async +no +0/1 -")
                .contains("no live worker since 2023-11-14T22:13:20Z");
    }

    @Test
    void shouldSayThereAreNoJobs() {
        assertThat(print(ListJobsResponse.getDefaultInstance())).isEqualTo("0 jobs" + System.lineSeparator());
    }
}
