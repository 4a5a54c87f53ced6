package io.pscluster.bench;

import io.pscluster.proto.v1.OptimizerKind;
import java.util.ArrayList;
import java.util.List;

/**
 * Bytes per row of a sparse table (off-heap records plus index) against the raw bytes of its values and optimizer
 * slots, {@code dim * 4 * (1 + slots)}. Target: at most 1.15 x raw + 16 bytes.
 */
final class MemoryFootprint {
    private MemoryFootprint() {}

    static List<BenchResult> measure(final int rows, final int dim) {
        final List<BenchResult> results = new ArrayList<>();
        for (final OptimizerKind optimizer : List.of(OptimizerKind.SGD, OptimizerKind.ADAM)) {
            final int partitions = 2;
            try (TableFixture fixture = new TableFixture(partitions, rows / partitions, dim, optimizer)) {
                final long stored = fixture.table.rowCount();
                final double perRow = (double) fixture.table.bytes() / stored;
                final int slots = optimizer == OptimizerKind.ADAM ? 2 : 0;
                final double raw = dim * 4.0 * (1 + slots);
                results.add(new BenchResult(
                        "memory",
                        "bytes/row " + optimizer.name().toLowerCase(java.util.Locale.ROOT) + " dim " + dim + " ("
                                + stored / 1_000_000 + "M rows; baseline raw, target <= "
                                + String.format(java.util.Locale.ROOT, "%.1f", 1.15 * raw + 16) + ")",
                        perRow,
                        raw,
                        "B",
                        BenchResult.Better.LOWER,
                        null));
            }
        }
        return results;
    }
}
