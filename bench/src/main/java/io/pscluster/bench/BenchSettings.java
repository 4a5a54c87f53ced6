package io.pscluster.bench;

import java.util.List;

/**
 * What to run and how long: set field by field, validated once by {@link #validate()} with errors that name the
 * field and the value, then only read.
 */
final class BenchSettings {
    static final List<String> WORKLOADS = List.of(
            "kv10m",
            "kv10m-random",
            "rtt4k",
            "stream1m",
            "batch",
            "apply",
            "gather",
            "memory",
            "scale",
            "modes",
            CheckpointWorkload.NAME,
            CheckpointWorkload.HDFS_NAME);

    private List<String> workloads = WORKLOADS;
    private String proxyAddress = "";
    private long measureMillis = 10_000;
    private long warmupMillis = -1;
    private int slices = 4;
    private int kvKeys = 10_000_000;
    private int kvWarmupKeys = 1_000_000;
    private int kvWarmupRounds = 3;
    private int kvRounds = 3;
    private int streamKeys = 4096;
    private long deadlineMs = 120_000;
    private int scaleMaxRows = ScaleWorkload.LARGEST_ROWS;
    private int modesSteps = 300;
    private int checkpointRows = CheckpointWorkload.DEFAULT_ROWS;

    /** Which workloads, in order; a subset of {@link #WORKLOADS}. */
    BenchSettings workloads(final List<String> value) {
        workloads = List.copyOf(value);
        return this;
    }

    /** host:port of a running cluster's proxy; empty (the default) starts a local cluster of 1 shard. */
    BenchSettings proxyAddress(final String value) {
        proxyAddress = value;
        return this;
    }

    /** Measuring time per side of each timed workload (rtt4k, stream1m push and pull, batch). */
    BenchSettings measureMillis(final long value) {
        measureMillis = value;
        return this;
    }

    /** Warm-up per side of each timed workload; negative (the default): as long as the measuring time. */
    BenchSettings warmupMillis(final long value) {
        warmupMillis = value;
        return this;
    }

    /** The measuring time is taken in this many slices per side, the two sides in turn. */
    BenchSettings slices(final int value) {
        slices = value;
        return this;
    }

    /** Keys of kv10m's one push and one pull. */
    BenchSettings kvKeys(final int value) {
        kvKeys = value;
        return this;
    }

    /** Keys of each of kv10m's warm-up pushes and pulls. */
    BenchSettings kvWarmupKeys(final int value) {
        kvWarmupKeys = value;
        return this;
    }

    BenchSettings kvWarmupRounds(final int value) {
        kvWarmupRounds = value;
        return this;
    }

    /** kv10m is measured this many times per side; the median is reported. */
    BenchSettings kvRounds(final int value) {
        kvRounds = value;
        return this;
    }

    /** Keys of each stream1m call (dim 64); 4096 makes 1 MiB of values. */
    BenchSettings streamKeys(final int value) {
        streamKeys = value;
        return this;
    }

    /** The largest table scale fills: its sizes (1M, 10M, 50M rows) are capped at this, to shorten a run. */
    BenchSettings scaleMaxRows(final int value) {
        scaleMaxRows = value;
        return this;
    }

    /** Measured steps of each job of the modes workload (plus a fifth as many warm-up steps). */
    BenchSettings modesSteps(final int value) {
        modesSteps = value;
        return this;
    }

    /** Rows of the checkpoint workload's table (random keys, dim 16). */
    BenchSettings checkpointRows(final int value) {
        checkpointRows = value;
        return this;
    }

    /** Deadline of every call on both sides. */
    BenchSettings deadlineMs(final long value) {
        deadlineMs = value;
        return this;
    }

    BenchSettings validate() {
        if (workloads.isEmpty()) {
            throw new IllegalArgumentException("workloads is empty: name at least one of " + WORKLOADS);
        }
        for (final String workload : workloads) {
            if (!WORKLOADS.contains(workload)) {
                throw new IllegalArgumentException(
                        "workload=" + workload + " is unknown: choose from " + WORKLOADS + " or all");
            }
        }
        if (!proxyAddress.isBlank() && !proxyAddress.matches("[^\\s:]+(:[^\\s:]+)*:\\d{1,5}")) {
            throw new IllegalArgumentException("proxy=" + proxyAddress + " must be HOST:PORT");
        }
        positive("measureMillis", measureMillis);
        positive("slices", slices);
        positive("kvKeys", kvKeys);
        positive("kvWarmupKeys", kvWarmupKeys);
        positive("kvRounds", kvRounds);
        positive("streamKeys", streamKeys);
        positive("deadlineMs", deadlineMs);
        if (modesSteps < 2) {
            throw new IllegalArgumentException("modesSteps=" + modesSteps + " must be >= 2 (measured in two halves)");
        }
        if (scaleMaxRows <= 0 || scaleMaxRows > ScaleWorkload.LARGEST_ROWS) {
            throw new IllegalArgumentException(
                    "scaleMaxRows=" + scaleMaxRows + " must be in 1.." + ScaleWorkload.LARGEST_ROWS);
        }
        if (checkpointRows < CheckpointWorkload.MIN_ROWS || checkpointRows > CheckpointWorkload.MAX_ROWS) {
            throw new IllegalArgumentException("checkpointRows=" + checkpointRows + " must be in "
                    + CheckpointWorkload.MIN_ROWS + ".." + CheckpointWorkload.MAX_ROWS);
        }
        if (kvWarmupRounds < 0) {
            throw new IllegalArgumentException("kvWarmupRounds=" + kvWarmupRounds + " must be >= 0");
        }
        if (measureMillis / slices < 1) {
            throw new IllegalArgumentException(
                    "measureMillis=" + measureMillis + " is shorter than 1 ms per slice with slices=" + slices);
        }
        if ((long) streamKeys * StreamWorkload.DIM * Float.BYTES + streamKeys * (long) Long.BYTES
                > RawGrpcServer.MAX_MESSAGE_BYTES / 2) {
            throw new IllegalArgumentException(
                    "streamKeys=" + streamKeys + " makes calls over half the 256 MiB message limit");
        }
        return this;
    }

    private static void positive(final String field, final long value) {
        if (value <= 0) {
            throw new IllegalArgumentException(field + "=" + value + " must be > 0");
        }
    }

    List<String> workloads() {
        return workloads;
    }

    String proxyAddress() {
        return proxyAddress;
    }

    boolean localCluster() {
        return proxyAddress.isBlank();
    }

    long measureNanos() {
        return measureMillis * 1_000_000;
    }

    long warmupNanos() {
        return (warmupMillis < 0 ? measureMillis : warmupMillis) * 1_000_000;
    }

    int slices() {
        return slices;
    }

    int kvKeys() {
        return kvKeys;
    }

    int kvWarmupKeys() {
        return kvWarmupKeys;
    }

    int kvWarmupRounds() {
        return kvWarmupRounds;
    }

    int kvRounds() {
        return kvRounds;
    }

    int streamKeys() {
        return streamKeys;
    }

    int scaleMaxRows() {
        return scaleMaxRows;
    }

    int modesSteps() {
        return modesSteps;
    }

    int checkpointRows() {
        return checkpointRows;
    }

    long deadlineMs() {
        return deadlineMs;
    }
}
