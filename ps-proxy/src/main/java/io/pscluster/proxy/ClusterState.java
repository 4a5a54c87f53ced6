package io.pscluster.proxy;

import io.pscluster.proto.v1.HeartbeatRequest;
import io.pscluster.proto.v1.HeartbeatResponse;
import io.pscluster.proto.v1.RegisterShardRequest;
import io.pscluster.proto.v1.RegisterShardResponse;
import io.pscluster.proto.v1.RestoreDirective;
import io.pscluster.proto.v1.RoutingTable;
import io.pscluster.proto.v1.ShardInfo;
import io.pscluster.proto.v1.ShardLoad;
import io.pscluster.proto.v1.ShardStatus;
import io.pscluster.proto.v1.TableSchema;
import io.pscluster.proto.v1.TableStats;
import io.pscluster.wire.PsException;
import io.pscluster.wire.Slots;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.LongSupplier;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The proxy's view of the cluster: shards and their leases, the slot -> shard assignment with its epoch, and the
 * table catalog. Control-plane traffic is a few calls per second, so one monitor guards it all.
 *
 * <p>Assignment rules. While no table exists, slots hold no data and are spread evenly over the live shards on
 * every change. Once a table exists the assignment is sticky: a slot only moves when its owner is gone (deregistered
 * or lease lapsed), and then the whole group of slots of that owner goes to one live shard that owns nothing (a new
 * or standby shard), which restores it from the newest complete checkpoint. A shard that restarts with its old id
 * keeps its group and restores it. Rows lost since that checkpoint are reported in the log, never silently.
 */
final class ClusterState {
    private static final Logger LOG = LoggerFactory.getLogger(ClusterState.class);

    private final Map<String, ShardRecord> shards = new LinkedHashMap<>();
    private final String[] owners = new String[Slots.SLOT_COUNT];
    private final Map<String, TableSchema> tables = new LinkedHashMap<>();
    private final Map<String, RestoreDirective> pendingRestores = new LinkedHashMap<>();
    private final LongSupplier nanoClock;
    private final long leaseNanos;
    private final String checkpointRoot;
    private long epoch;
    private long nextShardNumber;
    private long latestCheckpointId;

    private static final class ShardRecord {
        final String id;
        String address;
        long lastHeartbeatNanos;
        boolean live = true;
        ShardLoad load = ShardLoad.getDefaultInstance();
        List<TableStats> tables = List.of();

        ShardRecord(final String id, final String address, final long now) {
            this.id = id;
            this.address = address;
            this.lastHeartbeatNanos = now;
        }
    }

    /** A shard to call and the slots it owns. */
    record Owner(String shardId, String address, List<Integer> slots) {}

    ClusterState(final long leaseMillis, final String checkpointRoot, final LongSupplier nanoClock) {
        this.leaseNanos = leaseMillis * 1_000_000L;
        this.checkpointRoot = checkpointRoot;
        this.nanoClock = nanoClock;
    }

    /** Starts from a checkpoint: its tables, and its slot groups waiting for shards to adopt them. */
    synchronized void loadCheckpoint(
            final long checkpointId, final List<TableSchema> schemas, final String[] slotOwners, final long lastEpoch) {
        schemas.forEach(schema -> tables.put(schema.getName(), schema));
        System.arraycopy(slotOwners, 0, owners, 0, owners.length);
        epoch = lastEpoch + 1;
        latestCheckpointId = checkpointId;
    }

    synchronized void checkpointCommitted(final long checkpointId) {
        latestCheckpointId = Math.max(latestCheckpointId, checkpointId);
    }

    synchronized long latestCheckpointId() {
        return latestCheckpointId;
    }

    // ---- discovery

    synchronized RegisterShardResponse register(final RegisterShardRequest request) {
        if (request.getAddress().isBlank()) {
            throw PsException.invalidArgument("register: address is empty");
        }
        String id = request.getShardId();
        if (id.isEmpty()) {
            do {
                id = "shard-" + nextShardNumber++;
            } while (shards.containsKey(id) || ownsAny(id));
        } else if (!SlotOwners.SHARD_ID.matcher(id).matches()) {
            throw PsException.invalidArgument(
                    "register: shard id '" + id + "' must match " + SlotOwners.SHARD_ID.pattern());
        }
        final ShardRecord existing = shards.get(id);
        if (existing != null && existing.live && !existing.address.equals(request.getAddress())) {
            throw PsException.alreadyExists("register: shard id '" + id + "' is live at " + existing.address + "; "
                    + request.getAddress() + " cannot take it until that lease lapses");
        }
        final long now = nanoClock.getAsLong();
        final ShardRecord record = new ShardRecord(id, request.getAddress(), now);
        shards.put(id, record);
        LOG.info("shard {} registered at {} (fresh start: {})", id, request.getAddress(), request.getFreshStart());
        if (request.getFreshStart() && sticky() && ownsAny(id)) {
            // A restarted shard keeps its slots but lost its rows: they come back from the checkpoint.
            planRestore(id, slotsOf(id), "shard " + id + " restarted");
        }
        reconcile();
        // A registration always changes the routing table: a new shard, a new address, or a lapsed one back.
        epoch++;
        final RegisterShardResponse.Builder response = RegisterShardResponse.newBuilder()
                .setShardId(id)
                .setCheckpointRoot(checkpointRoot)
                .setRouting(routingTable())
                .addAllTables(tables.values());
        final RestoreDirective restore = pendingRestores.remove(id);
        if (restore != null) {
            response.setRestore(restore);
        }
        return response.build();
    }

    synchronized HeartbeatResponse heartbeat(final HeartbeatRequest request) {
        final ShardRecord record = shards.get(request.getShardId());
        if (record == null || !record.live) {
            throw PsException.notFound("shard '" + request.getShardId() + "' is not registered (or its lease lapsed)");
        }
        record.lastHeartbeatNanos = nanoClock.getAsLong();
        record.load = request.getLoad();
        record.tables = request.getTablesList();
        final HeartbeatResponse.Builder response = HeartbeatResponse.newBuilder();
        if (request.getRoutingEpoch() != epoch) {
            response.setRouting(routingTable());
        }
        final Set<String> reported = new HashSet<>();
        for (final TableStats stats : request.getTablesList()) {
            reported.add(stats.getName());
            if (!tables.containsKey(stats.getName())) {
                response.addDroppedTables(stats.getName());
            }
        }
        tables.values().stream()
                .filter(schema -> !reported.contains(schema.getName()))
                .forEach(response::addTables);
        final RestoreDirective restore = pendingRestores.remove(record.id);
        if (restore != null) {
            response.setRestore(restore);
            response.setRouting(routingTable());
        }
        return response.build();
    }

    synchronized void deregister(final String shardId) {
        if (shards.remove(shardId) != null) {
            LOG.info("shard {} deregistered", shardId);
            pendingRestores.remove(shardId);
            reconcile();
            epoch++;
        }
    }

    /** Marks shards whose lease lapsed as dead and hands their slots on; returns true if anything changed. */
    synchronized boolean expireLeases() {
        final long now = nanoClock.getAsLong();
        boolean expired = false;
        for (final ShardRecord record : shards.values()) {
            if (record.live && now - record.lastHeartbeatNanos > leaseNanos) {
                record.live = false;
                expired = true;
                LOG.warn(
                        "shard {} at {} missed its lease ({} ms without a heartbeat)",
                        record.id,
                        record.address,
                        (now - record.lastHeartbeatNanos) / 1_000_000);
            }
        }
        if (expired) {
            reconcile();
            epoch++;
        }
        return expired;
    }

    /** Applies the assignment rules; returns true if any slot moved. */
    private boolean reconcile() {
        final List<ShardRecord> live = liveShards();
        if (!sticky()) {
            boolean moved = false;
            for (int slot = 0; slot < owners.length; slot++) {
                final String owner =
                        live.isEmpty() ? null : live.get((int) ((long) slot * live.size() / owners.length)).id;
                if (owner == null ? owners[slot] != null : !owner.equals(owners[slot])) {
                    owners[slot] = owner;
                    moved = true;
                }
            }
            return moved;
        }
        final Map<String, List<Integer>> orphans = new LinkedHashMap<>();
        for (int slot = 0; slot < owners.length; slot++) {
            final ShardRecord owner = owners[slot] == null ? null : shards.get(owners[slot]);
            if (owners[slot] != null && (owner == null || !owner.live)) {
                orphans.computeIfAbsent(owners[slot], id -> new ArrayList<>()).add(slot);
            }
        }
        final List<ShardRecord> idle = new ArrayList<>();
        for (final ShardRecord record : live) {
            if (!ownsAny(record.id)) {
                idle.add(record);
            }
        }
        final List<Map.Entry<String, List<Integer>>> groups = new ArrayList<>(orphans.entrySet());
        groups.sort(Comparator.comparingInt((Map.Entry<String, List<Integer>> group) ->
                        group.getValue().size())
                .reversed());
        boolean moved = false;
        for (int i = 0; i < groups.size() && i < idle.size(); i++) {
            final String heir = idle.get(i).id;
            final List<Integer> slots = groups.get(i).getValue();
            slots.forEach(slot -> owners[slot] = heir);
            planRestore(
                    heir,
                    slots,
                    "shard " + groups.get(i).getKey() + " is gone; shard " + heir + " adopts its " + slots.size()
                            + " slots");
            moved = true;
        }
        if (groups.size() > idle.size()) {
            LOG.warn(
                    "{} slot groups of lost shards wait for a new shard to adopt them; requests for them fail",
                    groups.size() - idle.size());
        }
        return moved;
    }

    private void planRestore(final String shardId, final List<Integer> slots, final String why) {
        final RestoreDirective.Builder directive = RestoreDirective.newBuilder()
                .setCheckpointRoot(checkpointRoot)
                .setCheckpointId(latestCheckpointId)
                .addAllSlots(slots);
        if (latestCheckpointId == 0) {
            LOG.warn(
                    "{}: no checkpoint exists, so those {} slots start empty (their rows are lost)", why, slots.size());
        } else {
            LOG.warn(
                    "{}: restoring {} slots from checkpoint {}; updates after that checkpoint are rolled back",
                    why,
                    slots.size(),
                    latestCheckpointId);
        }
        pendingRestores.put(shardId, directive.build());
    }

    /** Tables exist and slots are assigned: rows may live in the slots, so they only move with a restore. */
    private boolean sticky() {
        if (tables.isEmpty()) {
            return false;
        }
        for (final String owner : owners) {
            if (owner != null) {
                return true;
            }
        }
        return false;
    }

    private boolean ownsAny(final String shardId) {
        for (final String owner : owners) {
            if (shardId.equals(owner)) {
                return true;
            }
        }
        return false;
    }

    private List<Integer> slotsOf(final String shardId) {
        final List<Integer> slots = new ArrayList<>();
        for (int slot = 0; slot < owners.length; slot++) {
            if (shardId.equals(owners[slot])) {
                slots.add(slot);
            }
        }
        return slots;
    }

    private List<ShardRecord> liveShards() {
        final List<ShardRecord> live = new ArrayList<>();
        for (final ShardRecord record : shards.values()) {
            if (record.live) {
                live.add(record);
            }
        }
        live.sort(Comparator.comparing(record -> record.id));
        return live;
    }

    // ---- routing

    synchronized long epoch() {
        return epoch;
    }

    synchronized RoutingTable routingTable() {
        final RoutingTable.Builder routing =
                RoutingTable.newBuilder().setEpoch(epoch).setSlotCount(Slots.SLOT_COUNT);
        final Map<String, Integer> index = new LinkedHashMap<>();
        for (final String owner : owners) {
            final ShardRecord record = owner == null ? null : shards.get(owner);
            if (record != null && record.live && !index.containsKey(owner)) {
                index.put(owner, index.size());
                routing.addShards(ShardInfo.newBuilder().setShardId(owner).setAddress(record.address));
            }
        }
        for (final ShardRecord record : shards.values()) {
            if (record.live && !index.containsKey(record.id)) {
                index.put(record.id, index.size());
                routing.addShards(ShardInfo.newBuilder().setShardId(record.id).setAddress(record.address));
            }
        }
        for (final String owner : owners) {
            final Integer i = owner == null ? null : index.get(owner);
            routing.addSlotOwner(i == null ? -1 : i);
        }
        return routing.build();
    }

    synchronized String[] slotOwners() {
        return owners.clone();
    }

    /**
     * The live shards that own slots, for a cluster-wide operation (checkpoint, restore).
     *
     * @throws PsException FAILED_PRECONDITION naming the slots no live shard owns: the operation would miss them.
     */
    synchronized List<Owner> ownersForClusterOperation(final String operation) {
        final Map<String, List<Integer>> bySlot = new LinkedHashMap<>();
        int unowned = 0;
        String firstMissing = null;
        for (int slot = 0; slot < owners.length; slot++) {
            final ShardRecord record = owners[slot] == null ? null : shards.get(owners[slot]);
            if (record == null || !record.live) {
                unowned++;
                if (firstMissing == null) {
                    firstMissing = "slot " + slot + " (owner " + owners[slot] + ")";
                }
            } else {
                bySlot.computeIfAbsent(record.id, id -> new ArrayList<>()).add(slot);
            }
        }
        if (unowned > 0) {
            throw PsException.failedPrecondition(operation + " needs every slot on a live shard; " + unowned
                    + " slots are not, first " + firstMissing);
        }
        final List<Owner> result = new ArrayList<>();
        bySlot.forEach((id, slots) -> result.add(new Owner(id, shards.get(id).address, slots)));
        return result;
    }

    synchronized List<String> liveAddresses() {
        final List<String> addresses = new ArrayList<>();
        liveShards().forEach(record -> addresses.add(record.address));
        return addresses;
    }

    // ---- catalog

    /**
     * Adds a table to the catalog; returns false if an identical one is there.
     *
     * @throws PsException ALREADY_EXISTS when a table of that name has another schema.
     */
    synchronized boolean addTable(final TableSchema schema) {
        final TableSchema existing = tables.get(schema.getName());
        if (existing != null) {
            if (!existing.equals(schema)) {
                throw PsException.alreadyExists("table '" + schema.getName() + "' exists with a different schema: "
                        + existing + "; requested " + schema);
            }
            return false;
        }
        if (liveShards().isEmpty()) {
            throw PsException.failedPrecondition("no shard is live: start shards before creating tables");
        }
        tables.put(schema.getName(), schema);
        return true;
    }

    /** Removes a table from the catalog; returns false if there was none. */
    synchronized boolean removeTable(final String name) {
        return tables.remove(name) != null;
    }

    synchronized List<TableSchema> tables() {
        return new ArrayList<>(tables.values());
    }

    // ---- status

    synchronized List<ShardStatus> shardStatuses() {
        final long now = nanoClock.getAsLong();
        final List<ShardStatus> statuses = new ArrayList<>();
        for (final ShardRecord record : shards.values()) {
            statuses.add(ShardStatus.newBuilder()
                    .setShard(ShardInfo.newBuilder().setShardId(record.id).setAddress(record.address))
                    .setLive(record.live)
                    .setSlotsOwned(slotsOf(record.id).size())
                    .setMillisSinceHeartbeat((now - record.lastHeartbeatNanos) / 1_000_000)
                    .setLoad(record.load)
                    .addAllTables(record.tables)
                    .build());
        }
        return statuses;
    }

    synchronized int unownedSlots() {
        int unowned = 0;
        for (final String owner : owners) {
            final ShardRecord record = owner == null ? null : shards.get(owner);
            if (record == null || !record.live) {
                unowned++;
            }
        }
        return unowned;
    }
}
