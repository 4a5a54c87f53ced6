package io.pscluster.bench;

import java.util.List;

/** One end-to-end workload, run on our side and on the baseline in the same run. */
interface Workload {
    String name();

    /** The shape, one line, for the report's header. */
    String describe(BenchSettings settings);

    List<BenchResult> run(BenchHarness harness) throws Exception;

    static Workload named(final String name) {
        return switch (name) {
            case KvWorkload.IN_ORDER -> KvWorkload.inOrder();
            case KvWorkload.RANDOM_ORDER -> KvWorkload.randomOrder();
            case "rtt4k" -> RoundTripWorkload.rtt4k();
            case "stream1m" -> new StreamWorkload();
            case "batch" -> RoundTripWorkload.batch();
            case "apply", "gather", "memory" -> new TableWorkload(name);
            case ScaleWorkload.NAME -> new ScaleWorkload();
            case ModesWorkload.NAME -> new ModesWorkload();
            case CheckpointWorkload.NAME -> CheckpointWorkload.local();
            case CheckpointWorkload.HDFS_NAME -> CheckpointWorkload.hdfs();
            default ->
                throw new IllegalArgumentException(
                        "workload=" + name + " is unknown: choose from " + BenchSettings.WORKLOADS);
        };
    }
}
