package io.pscluster.proxy;

import io.pscluster.wire.Slots;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;

/**
 * Encodes the slot -> shard id map as text for a checkpoint manifest ({@code a=0-1023,2048;b=1024-2047}), so that a
 * proxy restarted on a checkpoint knows which slots belonged together and can hand each group to one new shard.
 */
final class SlotOwners {
    /** Shard ids are restricted so that they are safe in paths, logs and this encoding. */
    static final Pattern SHARD_ID = Pattern.compile("[A-Za-z0-9._-]{1,64}");

    private SlotOwners() {}

    static String encode(final String[] owners) {
        final Map<String, StringBuilder> ranges = new LinkedHashMap<>();
        int slot = 0;
        while (slot < owners.length) {
            final String owner = owners[slot];
            int end = slot;
            while (end + 1 < owners.length && owner != null && owner.equals(owners[end + 1])) {
                end++;
            }
            if (owner != null) {
                final StringBuilder text = ranges.computeIfAbsent(owner, id -> new StringBuilder());
                if (text.length() > 0) {
                    text.append(',');
                }
                text.append(slot);
                if (end > slot) {
                    text.append('-').append(end);
                }
            }
            slot = end + 1;
        }
        final List<String> parts = new ArrayList<>();
        ranges.forEach((owner, text) -> parts.add(owner + "=" + text));
        return String.join(";", parts);
    }

    /**
     * @throws IllegalArgumentException naming the part that is malformed.
     */
    static String[] decode(final String text) {
        final String[] owners = new String[Slots.SLOT_COUNT];
        if (text.isEmpty()) {
            return owners;
        }
        for (final String part : text.split(";")) {
            final int eq = part.indexOf('=');
            if (eq <= 0 || !SHARD_ID.matcher(part.substring(0, eq)).matches()) {
                throw new IllegalArgumentException("slot owners: malformed part '" + part + "'");
            }
            final String owner = part.substring(0, eq);
            for (final String range : part.substring(eq + 1).split(",")) {
                final int dash = range.indexOf('-');
                final int from;
                final int to;
                try {
                    from = Integer.parseInt(dash < 0 ? range : range.substring(0, dash));
                    to = dash < 0 ? from : Integer.parseInt(range.substring(dash + 1));
                } catch (NumberFormatException e) {
                    throw new IllegalArgumentException("slot owners: malformed range '" + range + "' of " + owner);
                }
                if (from < 0 || to >= Slots.SLOT_COUNT || from > to) {
                    throw new IllegalArgumentException("slot owners: range '" + range + "' of " + owner
                            + " is outside 0.." + (Slots.SLOT_COUNT - 1));
                }
                for (int slot = from; slot <= to; slot++) {
                    owners[slot] = owner;
                }
            }
        }
        return owners;
    }
}
