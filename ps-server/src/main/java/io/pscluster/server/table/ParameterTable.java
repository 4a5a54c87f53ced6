package io.pscluster.server.table;

import io.pscluster.proto.v1.TableKind;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.wire.Slots;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicReferenceArray;
import java.util.function.IntPredicate;

/**
 * One table's rows on one shard, partitioned by slot. A record is {@code dim} values followed by the optimizer's
 * slots; reads of keys that have no row return the initializer's values without creating the row.
 *
 * <p>Thread-safe: any number of threads may read, apply and snapshot at once; each slot is consistent on its own.
 * Callers validate keys and gradients first (see the shard service); this class trusts its input.
 */
public final class ParameterTable {
    private final TableSchema schema;
    private final long tableHash;
    private final int dim;
    private final int rowWidth;
    private final Optimizer optimizer;
    private final Initializer initializer;
    private final AtomicReferenceArray<SlotStore> slots = new AtomicReferenceArray<>(Slots.SLOT_COUNT);

    /** @param schema a schema already normalized by {@code TableSchemas.normalize}. */
    public ParameterTable(final TableSchema schema) {
        this.schema = schema;
        this.tableHash = Slots.tableHash(schema.getName());
        this.dim = schema.getDim();
        this.optimizer = Optimizer.of(schema.getOptimizer());
        this.rowWidth = dim * (1 + optimizer.slotCount());
        this.initializer = new Initializer(schema.getInitializer());
    }

    public TableSchema schema() {
        return schema;
    }

    public String name() {
        return schema.getName();
    }

    public int dim() {
        return dim;
    }

    /** Floats per record: values plus optimizer slots. */
    public int rowWidth() {
        return rowWidth;
    }

    public int slotOf(final long key) {
        return Slots.slotOf(tableHash, key);
    }

    /** Copies the values of {@code keys} into {@code out}, row after row. */
    public void pull(final long[] keys, final float[] out) {
        for (int i = 0; i < keys.length; i++) {
            final long key = keys[i];
            final SlotStore store = slots.get(slotOf(key));
            if (store == null) {
                initializer.fill(key, out, i * dim, dim);
            } else {
                store.read(key, out, i * dim, dim, initializer);
            }
        }
    }

    /** Applies {@code gradients} (row after row, one per key) with the table's optimizer. */
    public void push(final long[] keys, final float[] gradients) {
        for (int i = 0; i < keys.length; i++) {
            final long key = keys[i];
            store(slotOf(key)).apply(key, gradients, i * dim, dim, optimizer, initializer);
        }
    }

    /** Creates every row of a dense table whose slot is accepted, so that the table holds them all up front. */
    public void materializeDense(final IntPredicate slotFilter) {
        if (schema.getKind() != TableKind.DENSE) {
            return;
        }
        for (long key = 0; key < schema.getRows(); key++) {
            final int slot = slotOf(key);
            if (slotFilter.test(slot)) {
                store(slot).ensure(key, dim, optimizer, initializer);
            }
        }
    }

    /** Replaces the whole record (values and optimizer slots) of {@code key}. */
    public void putRecord(final long key, final float[] record) {
        store(slotOf(key)).put(key, record);
    }

    /** Copies the rows of every accepted slot that has any. */
    public List<SlotSnapshot> snapshot(final IntPredicate slotFilter) {
        final List<SlotSnapshot> snapshots = new ArrayList<>();
        for (int slot = 0; slot < Slots.SLOT_COUNT; slot++) {
            final SlotStore store = slots.get(slot);
            if (store != null && slotFilter.test(slot)) {
                final SlotSnapshot snapshot = store.snapshot(slot);
                if (snapshot.rows() > 0) {
                    snapshots.add(snapshot);
                }
            }
        }
        return snapshots;
    }

    /** Drops the rows of every accepted slot. */
    public void clearSlots(final IntPredicate slotFilter) {
        for (int slot = 0; slot < Slots.SLOT_COUNT; slot++) {
            final SlotStore store = slots.get(slot);
            if (store != null && slotFilter.test(slot)) {
                store.clear();
            }
        }
    }

    public long rowCount() {
        long rows = 0;
        for (int slot = 0; slot < Slots.SLOT_COUNT; slot++) {
            final SlotStore store = slots.get(slot);
            rows += store == null ? 0 : store.size();
        }
        return rows;
    }

    public long bytes() {
        long bytes = 0;
        for (int slot = 0; slot < Slots.SLOT_COUNT; slot++) {
            final SlotStore store = slots.get(slot);
            bytes += store == null ? 0 : store.bytes();
        }
        return bytes;
    }

    private SlotStore store(final int slot) {
        final SlotStore store = slots.get(slot);
        if (store != null) {
            return store;
        }
        final SlotStore created = new SlotStore(rowWidth);
        return slots.compareAndSet(slot, null, created) ? created : slots.get(slot);
    }
}
