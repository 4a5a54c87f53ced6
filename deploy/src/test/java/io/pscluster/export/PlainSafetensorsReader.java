package io.pscluster.export;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A safetensors reader written from the format's description alone, sharing nothing with the exporter: 8 bytes of
 * little-endian header length N, N bytes of JSON ({@code name -> {dtype, shape, data_offsets}} and an optional
 * {@code __metadata__} of strings), then the byte buffer the offsets point into, every byte of it used by exactly one
 * tensor. Reads the whole file: for tests of small exports.
 */
final class PlainSafetensorsReader {
    record Tensor(String dtype, long[] shape, ByteBuffer data) {
        float[] floats() {
            final float[] values = new float[data.remaining() / 4];
            data.duplicate().order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(values);
            return values;
        }

        long[] longs() {
            final long[] values = new long[data.remaining() / 8];
            data.duplicate().order(ByteOrder.LITTLE_ENDIAN).asLongBuffer().get(values);
            return values;
        }
    }

    final Map<String, String> metadata = new LinkedHashMap<>();
    final Map<String, Tensor> tensors = new LinkedHashMap<>();
    final long headerLength;

    PlainSafetensorsReader(final Path file) throws IOException {
        final byte[] bytes = Files.readAllBytes(file);
        final ByteBuffer all = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
        headerLength = all.getLong(0);
        if (headerLength < 2 || headerLength > bytes.length - 8L) {
            throw new IOException(file + ": header length " + headerLength + " does not fit " + bytes.length);
        }
        final String json = new String(bytes, 8, (int) headerLength, StandardCharsets.UTF_8);
        if (!json.startsWith("{")) {
            throw new IOException(file + ": header does not start with '{'");
        }
        final JsonObject header = JsonParser.parseString(json).getAsJsonObject();
        final int bufferStart = 8 + (int) headerLength;
        final int bufferLength = bytes.length - bufferStart;
        final List<long[]> ranges = new ArrayList<>();
        for (final Map.Entry<String, JsonElement> entry : header.entrySet()) {
            if (entry.getKey().equals("__metadata__")) {
                entry.getValue()
                        .getAsJsonObject()
                        .entrySet()
                        .forEach(m -> metadata.put(
                                m.getKey(), m.getValue().getAsJsonPrimitive().getAsString()));
                continue;
            }
            final JsonObject info = entry.getValue().getAsJsonObject();
            final String dtype = info.get("dtype").getAsString();
            final long[] shape = new long[info.getAsJsonArray("shape").size()];
            long elements = 1;
            for (int d = 0; d < shape.length; d++) {
                shape[d] = info.getAsJsonArray("shape").get(d).getAsLong();
                elements *= shape[d];
            }
            final long begin = info.getAsJsonArray("data_offsets").get(0).getAsLong();
            final long end = info.getAsJsonArray("data_offsets").get(1).getAsLong();
            final int size = switch (dtype) {
                case "F32" -> 4;
                case "I64" -> 8;
                default -> throw new IOException(file + ": dtype " + dtype + " not expected here");
            };
            if (end - begin != elements * size || begin < 0 || end > bufferLength) {
                throw new IOException(file + ": tensor " + entry.getKey() + " [" + begin + ", " + end + ") does not"
                        + " hold " + elements + " x " + dtype + " within the " + bufferLength + "-byte buffer");
            }
            ranges.add(new long[] {begin, end});
            tensors.put(
                    entry.getKey(),
                    new Tensor(
                            dtype,
                            shape,
                            ByteBuffer.wrap(bytes, bufferStart + (int) begin, (int) (end - begin))
                                    .slice()));
        }
        ranges.sort(Comparator.comparingLong(range -> range[0]));
        long covered = 0;
        for (final long[] range : ranges) {
            if (range[0] != covered) {
                throw new IOException(file + ": the buffer has a hole or an overlap at byte " + covered);
            }
            covered = range[1];
        }
        if (covered != bufferLength) {
            throw new IOException(file + ": tensors cover " + covered + " of the buffer's " + bufferLength + " bytes");
        }
    }
}
