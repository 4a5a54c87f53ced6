package io.pscluster.server.table;

/**
 * A copy of one slot's rows: {@code rows} keys and, for key {@code i}, its record (values then optimizer slots) at
 * {@code records[i * rowWidth]}.
 */
public record SlotSnapshot(int slot, long[] keys, float[] records, int rows, int rowWidth) {}
