package io.pscluster.cli;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.proto.v1.OperationProgressResponse;
import org.junit.jupiter.api.Test;

/** The progress line: what it shows when totals, rate and ETA are known, and what it leaves out when they are not. */
class ProgressReporterTest {
    private static final long MIB = 1 << 20;

    @Test
    void shouldShowShareRateAndEtaWhenTheTotalIsKnown() {
        final ProgressReporter.Reading reading =
                new ProgressReporter.Reading("checkpoint 7", "writing", 250, 1000, 25 * MIB, 100 * MIB, false, "x");

        assertThat(ProgressReporter.line(reading, 5, 25 * MIB))
                .isEqualTo(
                        "checkpoint 7: writing 25.0 MiB of 100.0 MiB (25%), 250 of 1000 rows, 5.0 MiB/s, ETA 15s; x");
    }

    @Test
    void shouldLeaveOutWhatItCannotTell() {
        final ProgressReporter.Reading unknownTotal =
                new ProgressReporter.Reading("export checkpoint 3", "exporting", 10, 0, 2048, 0, false, "");
        assertThat(ProgressReporter.line(unknownTotal, 0.1, 2048))
                .as("no total, and too early for a rate")
                .isEqualTo("export checkpoint 3: exporting 2.0 KiB, 10 rows");

        final ProgressReporter.Reading cut = new ProgressReporter.Reading("checkpoint 7", "cut", 0, 0, 0, 0, false, "");
        assertThat(ProgressReporter.line(cut, 3, 0)).isEqualTo("checkpoint 7: cut");

        final ProgressReporter.Reading done =
                new ProgressReporter.Reading("restore 7", "done", 1000, 1000, 10 * MIB, 10 * MIB, true, "");
        assertThat(ProgressReporter.line(done, 2, 10 * MIB))
                .as("no ETA once ended")
                .isEqualTo("restore 7: done 10.0 MiB of 10.0 MiB (100%), 1000 of 1000 rows, 5.0 MiB/s");
    }

    @Test
    void shouldSkipAnOperationThatBeganBeforeTheCommandOrIsAnotherKind() {
        final OperationProgressResponse running = OperationProgressResponse.newBuilder()
                .setKnown(true)
                .setKind("checkpoint")
                .setCheckpointId(9)
                .setPhase("writing")
                .setShards(2)
                .setShardsCut(2)
                .setElapsedMillis(1_500)
                .build();

        assertThat(CheckpointCommand.reading("checkpoint", running, 2_000).extra())
                .isEqualTo("shards cut 2/2, done 0/2");
        assertThat(CheckpointCommand.reading("checkpoint", running, 200))
                .as("began before this command")
                .isNull();
        assertThat(CheckpointCommand.reading("restore", running, 2_000)).isNull();
        assertThat(CheckpointCommand.reading("checkpoint", OperationProgressResponse.getDefaultInstance(), 2_000))
                .isNull();
    }
}
