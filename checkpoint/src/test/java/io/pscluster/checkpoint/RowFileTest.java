package io.pscluster.checkpoint;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.zip.CRC32C;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileAlreadyExistsException;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

class RowFileTest {
    private static final int WIDTH = 3;
    /** Bit patterns a float round trip through arithmetic would lose: NaN payloads, signed NaN, -0.0. */
    private static final int[] ODD_BITS = {0x7fc12345, 0xffc00001, 0x80000000, 0x00000001, 0x7f800000, 0xff800000};

    @TempDir
    java.nio.file.Path tmp;

    private FileSystem fs;
    private Path dir;

    @BeforeEach
    void setUp() throws IOException {
        fs = FileSystem.getLocal(new Configuration());
        dir = new Path(tmp.toUri());
    }

    @Test
    void shouldRoundTripRowsBitExactWhenReadingAllSlots() throws IOException {
        List<Row> written = sampleRows();
        RowFileInfo info = write("shard-0/emb.rows", written);

        assertThat(info.path()).isEqualTo("shard-0/emb.rows");
        assertThat(info.rows()).isEqualTo(written.size());
        assertThat(info.slots()).containsExactly(2, 7, 40);
        byte[] bytes = readBytes(info.path());
        assertThat(info.length()).isEqualTo(bytes.length);
        CRC32C crc = new CRC32C();
        crc.update(bytes);
        assertThat(info.crc32c()).isEqualTo((int) crc.getValue());

        List<Row> read = new ArrayList<>();
        long count =
                RowFileReader.read(fs, dir, info, slot -> true, (slot, key, row) -> read.add(Row.of(slot, key, row)));

        assertThat(count).isEqualTo(written.size());
        assertThat(read).containsExactlyElementsOf(written);
    }

    @ParameterizedTest
    @EnumSource(ChunkCodec.class)
    void shouldWriteStoredRowsAsTheyAreWhenGivenTheirBytes(ChunkCodec codec) throws IOException {
        List<Row> written = sampleRows();
        int rowBytes = 8 + 4 * WIDTH;
        // The rows as a row file stores them, after 5 bytes of something else to exercise the offset.
        java.nio.ByteBuffer stored =
                java.nio.ByteBuffer.allocate(5 + written.size() * rowBytes).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        stored.position(5);
        for (Row row : written) {
            stored.putLong(row.key);
            for (int bits : row.bits) {
                stored.putInt(bits);
            }
        }
        RowFileInfo info;
        try (RowFileWriter writer = RowFileWriter.create(
                fs, dir, "stored.rows", WIDTH, RowFileWriter.Options.defaults().withCodec(codec))) {
            int slot = -1;
            for (int i = 0; i < written.size(); i++) {
                if (written.get(i).slot != slot) {
                    slot = written.get(i).slot;
                    writer.beginSlot(slot);
                }
                writer.writeStoredRow(stored.array(), 5 + i * rowBytes);
            }
            assertThatThrownBy(() -> writer.writeStoredRow(stored.array(), stored.capacity() - rowBytes + 1))
                    .isInstanceOf(IndexOutOfBoundsException.class);
            info = writer.finish();
        }

        List<Row> read = new ArrayList<>();
        RowFileReader.read(fs, dir, info, slot -> true, (slot, key, row) -> read.add(Row.of(slot, key, row)));
        assertThat(read).containsExactlyElementsOf(written);
    }

    @ParameterizedTest
    @EnumSource(ChunkCodec.class)
    void shouldWriteTheSameFileWhenChunksAreWrittenOnAnOutputThread(ChunkCodec codec) throws Exception {
        // 4 KiB chunks: ~80 of them, so that several are in flight on the output thread at once.
        RowFileWriter.Options options =
                RowFileWriter.Options.defaults().withCodec(codec).withChunkBytes(4096);
        java.util.concurrent.ExecutorService output = java.util.concurrent.Executors.newSingleThreadExecutor();
        try {
            RowFileInfo inline = writeRandomRows("inline.rows", options, null);
            RowFileInfo async = writeRandomRows("async.rows", options, output);

            assertThat(readBytes(async.path())).isEqualTo(readBytes(inline.path()));
            assertThat(async.crc32c()).isEqualTo(inline.crc32c());
            assertThat(async.length()).isEqualTo(inline.length());
            List<Row> read = new ArrayList<>();
            RowFileReader.read(fs, dir, async, slot -> true, (slot, key, row) -> read.add(Row.of(slot, key, row)));
            assertThat(read).hasSize((int) inline.rows());
        } finally {
            output.shutdownNow();
        }
    }

    private RowFileInfo writeRandomRows(
            String path, RowFileWriter.Options options, java.util.concurrent.Executor output) throws IOException {
        Random random = new Random(3);
        float[] row = new float[WIDTH];
        try (RowFileWriter writer = RowFileWriter.create(fs, dir, path, WIDTH, options, output)) {
            for (int slot = 0; slot < 200; slot += 1 + random.nextInt(2)) {
                writer.beginSlot(slot);
                for (int r = random.nextInt(40); r >= 0; r--) {
                    for (int f = 0; f < WIDTH; f++) {
                        row[f] = (float) random.nextGaussian();
                    }
                    writer.writeRow(random.nextLong(), row, 0);
                }
            }
            return writer.finish();
        }
    }

    @Test
    void shouldCountEachSlotsRowsFromTheIndexAlone() throws IOException {
        RowFileInfo info = write("emb.rows", sampleRows());

        assertThat(RowFileReader.slotRows(fs, dir, info)).containsExactly(3, 1, 2);
    }

    @Test
    void shouldReturnOnlyWantedSlotsWhenReadingSubset() throws IOException {
        List<Row> written = sampleRows();
        RowFileInfo info = write("emb.rows", written);

        List<Row> read = new ArrayList<>();
        long count = RowFileReader.read(
                fs, dir, info, slot -> slot == 7 || slot == 40, (slot, key, row) -> read.add(Row.of(slot, key, row)));

        List<Row> expected =
                written.stream().filter(r -> r.slot == 7 || r.slot == 40).toList();
        assertThat(count).isEqualTo(expected.size());
        assertThat(read).containsExactlyElementsOf(expected);
    }

    @ParameterizedTest
    @EnumSource(ChunkCodec.class)
    void shouldRoundTripBitExactWhenRowsSpanManyCompressedChunks(ChunkCodec codec) throws IOException {
        // 4 KiB chunks, so the 3,000 rows of width 6 (32 bytes each) take ~24 chunks and slots straddle chunks.
        RowFileWriter.Options options =
                RowFileWriter.Options.defaults().withCodec(codec).withChunkBytes(4096);
        int width = 6;
        Random random = new Random(11);
        List<Row> written = new ArrayList<>();
        RowFileInfo info;
        try (RowFileWriter writer = RowFileWriter.create(fs, dir, "many.rows", width, options)) {
            for (int slot = 0; slot < 60; slot += 1 + random.nextInt(3)) {
                writer.beginSlot(slot);
                int rows = slot % 7 == 0 ? 1 : random.nextInt(120);
                for (int r = 0; r < rows; r++) {
                    float[] row = new float[width];
                    int kind = r % 4;
                    for (int f = 0; f < width; f++) {
                        // All-zero rows, random finite floats, small Adagrad-like values, odd bit patterns.
                        row[f] = switch (kind) {
                            case 0 -> 0f;
                            case 1 -> Float.intBitsToFloat(randomFiniteBits(random));
                            case 2 -> (float) random.nextGaussian() * 0.01f;
                            default -> Float.intBitsToFloat(ODD_BITS[(r + f) % ODD_BITS.length]);
                        };
                    }
                    long key = random.nextLong();
                    writer.writeRow(key, row, 0);
                    written.add(Row.of(slot, key, row));
                }
            }
            info = writer.finish();
        }

        long rowBytes = 8 + 4L * width;
        assertThat(info.codec()).isEqualTo(codec);
        assertThat(info.rows()).isEqualTo(written.size());
        assertThat(info.uncompressedBytes()).isEqualTo(written.size() * rowBytes);
        if (codec == ChunkCodec.NONE) {
            assertThat(info.length()).isGreaterThan(info.uncompressedBytes());
        } else {
            assertThat(info.length()).isLessThan(info.uncompressedBytes());
        }
        byte[] bytes = readBytes(info.path());
        CRC32C crc = new CRC32C();
        crc.update(bytes);
        assertThat(info.crc32c()).as("CRC32C over the bytes as stored").isEqualTo((int) crc.getValue());

        List<Row> all = new ArrayList<>();
        RowFileReader.read(fs, dir, info, slot -> true, (slot, key, row) -> all.add(Row.of(slot, key, row)));
        assertThat(all).containsExactlyElementsOf(written);

        List<Row> some = new ArrayList<>();
        RowFileReader.read(fs, dir, info, slot -> slot % 5 == 3, (slot, key, row) -> some.add(Row.of(slot, key, row)));
        assertThat(some)
                .containsExactlyElementsOf(
                        written.stream().filter(r -> r.slot % 5 == 3).toList());

        // As stored: runs of one slot's rows that end where a slot or a chunk does, the same rows.
        List<Row> runs = new ArrayList<>();
        int[] runCount = {0};
        long count = RowFileReader.readRuns(fs, dir, info, slot -> true, (slot, rows, offset, n, rowWidth) -> {
            assertThat(n).isPositive();
            assertThat(rowWidth).isEqualTo(width);
            java.nio.ByteBuffer stored =
                    java.nio.ByteBuffer.wrap(rows, offset, n * (int) rowBytes).order(java.nio.ByteOrder.LITTLE_ENDIAN);
            for (int r = 0; r < n; r++) {
                long key = stored.getLong();
                float[] row = new float[rowWidth];
                for (int f = 0; f < rowWidth; f++) {
                    row[f] = Float.intBitsToFloat(stored.getInt());
                }
                runs.add(Row.of(slot, key, row));
            }
            runCount[0]++;
        });
        assertThat(count).isEqualTo(written.size());
        assertThat(runs).containsExactlyElementsOf(written);
        assertThat(runCount[0])
                .as("runs: more than the slots, as chunks end inside slots")
                .isGreaterThan(info.slots().length);
    }

    @ParameterizedTest
    @EnumSource(ChunkCodec.class)
    void shouldThrowCorruptNamingTheChunkWhenAStoredByteIsFlipped(ChunkCodec codec) throws IOException {
        RowFileWriter.Options options =
                RowFileWriter.Options.defaults().withCodec(codec).withChunkBytes(1024);
        RowFileInfo info;
        try (RowFileWriter writer = RowFileWriter.create(fs, dir, "flip.rows", WIDTH, options)) {
            writer.beginSlot(1);
            for (int r = 0; r < 500; r++) {
                writer.writeRow(r, new float[] {r, r * 0.25f, 0f}, 0);
            }
            info = writer.finish();
        }
        byte[] bytes = readBytes(info.path());
        // A byte in the stored rows of the second chunk (the first starts right after the 16-byte header).
        int firstStored =
                ByteBuffer.wrap(bytes, 16, 4).order(ByteOrder.LITTLE_ENDIAN).getInt();
        int second = 16 + 12 + firstStored;
        int storedOfSecond =
                ByteBuffer.wrap(bytes, second, 4).order(ByteOrder.LITTLE_ENDIAN).getInt();
        bytes[second + 12 + storedOfSecond / 2] ^= 0x10;
        rewrite(info.path(), bytes);

        assertThatThrownBy(() -> RowFileReader.read(fs, dir, info, slot -> true, (slot, key, row) -> {}))
                .isInstanceOf(CheckpointCorruptException.class)
                .hasMessageContaining("flip.rows")
                .hasMessageContaining("chunk at offset " + second);
    }

    @Test
    void shouldRoundTripWhenRowsAreWiderThanAChunk() throws IOException {
        int width = 20_000; // 80 KB per row, more than the 64 KiB chunks asked for: one row per chunk
        float[] values = new float[width * 3];
        for (int i = 0; i < values.length; i++) {
            values[i] = i * 0.5f;
        }
        RowFileInfo info;
        try (RowFileWriter writer = RowFileWriter.create(
                fs, dir, "wide.rows", width, RowFileWriter.Options.defaults().withChunkBytes(64 * 1024))) {
            writer.beginSlot(0);
            writer.writeRow(10, values, 0);
            writer.writeRow(11, values, width);
            writer.beginSlot(9);
            writer.writeRow(12, values, 2 * width);
            info = writer.finish();
        }

        List<Row> read = new ArrayList<>();
        RowFileReader.read(fs, dir, info, slot -> true, (slot, key, row) -> read.add(Row.of(slot, key, row)));

        assertThat(read)
                .containsExactly(
                        Row.of(0, 10, Arrays.copyOfRange(values, 0, width)),
                        Row.of(0, 11, Arrays.copyOfRange(values, width, 2 * width)),
                        Row.of(9, 12, Arrays.copyOfRange(values, 2 * width, 3 * width)));
    }

    @Test
    void shouldReadNothingWhenFileHasNoRows() throws IOException {
        RowFileInfo info;
        try (RowFileWriter writer = RowFileWriter.create(fs, dir, "empty.rows", WIDTH)) {
            writer.beginSlot(3); // no rows: must not appear in the index
            info = writer.finish();
        }

        assertThat(info.rows()).isZero();
        assertThat(info.slots()).isEmpty();
        assertThat(info.length()).isEqualTo(RowFileFormat.HEADER_BYTES + RowFileFormat.TRAILER_BYTES);
        assertThat(RowFileReader.read(fs, dir, info, slot -> true, (slot, key, row) -> {}))
                .isZero();
    }

    @Test
    void shouldThrowWhenSlotsAreNotStrictlyIncreasing() throws IOException {
        try (RowFileWriter writer = RowFileWriter.create(fs, dir, "order.rows", WIDTH)) {
            writer.beginSlot(5);
            writer.writeRow(1, new float[WIDTH], 0);

            assertThatThrownBy(() -> writer.beginSlot(3))
                    .isInstanceOf(IllegalStateException.class)
                    .hasMessageContaining("slot 3 after slot 5");
            assertThatThrownBy(() -> writer.beginSlot(5))
                    .isInstanceOf(IllegalStateException.class)
                    .hasMessageContaining("slot 5 after slot 5");
        }
    }

    @Test
    void shouldRefuseWhenFileAlreadyExists() throws IOException {
        write("dup.rows", sampleRows());

        assertThatThrownBy(() -> RowFileWriter.create(fs, dir, "dup.rows", WIDTH))
                .isInstanceOf(FileAlreadyExistsException.class)
                .hasMessageContaining(new Path(dir, "dup.rows").toString());
    }

    @Test
    void shouldThrowCorruptWhenFileIsTruncated() throws IOException {
        RowFileInfo info = write("cut.rows", sampleRows());
        byte[] bytes = readBytes(info.path());
        rewrite(info.path(), Arrays.copyOf(bytes, bytes.length - 5));

        assertThatThrownBy(() -> RowFileReader.read(fs, dir, info, slot -> true, (slot, key, row) -> {}))
                .isInstanceOf(CheckpointCorruptException.class)
                .hasMessageContaining("cut.rows")
                .hasMessageContaining("length is " + (bytes.length - 5) + " bytes, manifest says " + bytes.length);
    }

    @Test
    void shouldThrowCorruptWhenStructureIsDamaged() throws IOException {
        RowFileInfo info = write("bad.rows", sampleRows());
        byte[] original = readBytes(info.path());
        int trailer = original.length - RowFileFormat.TRAILER_BYTES;
        int footer = trailer - 3 * RowFileFormat.SLOT_ENTRY_BYTES;
        int chunk = RowFileFormat.HEADER_BYTES;
        int firstRow = chunk + RowFileFormat.CHUNK_HEADER_BYTES;

        assertCorrupt(info, original, 0, buf -> buf.put(0, (byte) 'X'), "bad header magic");
        assertCorrupt(info, original, 4, buf -> buf.putInt(4, 3), "unsupported version 3");
        assertCorrupt(info, original, 8, buf -> buf.putInt(8, -1), "rowWidth -1 out of range");
        assertCorrupt(info, original, 12, buf -> buf.putInt(12, 9), "unknown codec id 9");
        assertCorrupt(info, original, 12, buf -> buf.putInt(12, 2), "header says codec lz4, manifest says none");
        assertCorrupt(info, original, trailer + 16, buf -> buf.put(trailer + 16, (byte) 'X'), "bad trailer magic");
        assertCorrupt(info, original, trailer + 4, buf -> buf.putLong(trailer + 4, 5), "footer offset 5");
        assertCorrupt(
                info, original, footer + 4, buf -> buf.putLong(footer + 4, 1L << 40), "slot 2 (3 rows from row 0");
        assertCorrupt(info, original, footer + 16, buf -> buf.putLong(footer + 16, Long.MAX_VALUE), "slot 2");
        assertCorrupt(info, original, footer, buf -> buf.putInt(footer, 3), "is slot 3, manifest says slot 2");
        assertCorrupt(info, original, chunk + 4, buf -> buf.putInt(chunk + 4, 7), "is malformed");
        assertCorrupt(info, original, chunk, buf -> buf.putInt(chunk, 1 << 30), "is malformed");
        assertCorrupt(
                info,
                original,
                firstRow + 9,
                buf -> buf.put(firstRow + 9, (byte) (buf.get(firstRow + 9) ^ 1)),
                "chunk at offset 16: crc32c of its rows expected");
    }

    private interface Damage {
        void apply(ByteBuffer buffer);
    }

    private void assertCorrupt(RowFileInfo info, byte[] original, int at, Damage damage, String message)
            throws IOException {
        ByteBuffer buffer = ByteBuffer.wrap(original.clone()).order(ByteOrder.LITTLE_ENDIAN);
        damage.apply(buffer);
        rewrite(info.path(), buffer.array());

        assertThatThrownBy(() -> RowFileReader.read(fs, dir, info, slot -> true, (slot, key, row) -> {}))
                .as("damage at offset %d", at)
                .isInstanceOf(CheckpointCorruptException.class)
                .hasMessageContaining("bad.rows")
                .hasMessageContaining(message);
    }

    /** Slot 2 with three rows, slot 5 begun but empty, slot 7 with one row, slot 40 with two. */
    private static List<Row> sampleRows() {
        List<Row> rows = new ArrayList<>();
        rows.add(Row.ofBits(2, 100, ODD_BITS[0], ODD_BITS[1], ODD_BITS[2]));
        rows.add(Row.ofBits(2, -1, ODD_BITS[3], ODD_BITS[4], ODD_BITS[5]));
        rows.add(Row.ofBits(2, Long.MIN_VALUE, 0, Float.floatToRawIntBits(1.5f), Float.floatToRawIntBits(-2f)));
        rows.add(Row.ofBits(7, Long.MAX_VALUE, 1, 2, 3));
        rows.add(Row.ofBits(40, 0, ODD_BITS[2], ODD_BITS[0], 0x3f800000));
        rows.add(Row.ofBits(40, 42, 0x7fc00000, 0x80000000, 0x00000000));
        return rows;
    }

    /** A finite float's bits, uniformly over sign, exponent (not 255) and mantissa: no NaN, no infinity. */
    private static int randomFiniteBits(Random random) {
        int bits;
        do {
            bits = random.nextInt();
        } while ((bits & 0x7f800000) == 0x7f800000);
        return bits;
    }

    /** Written plainly (codec none), so tests can damage a known byte. */
    private RowFileInfo write(String path, List<Row> rows) throws IOException {
        try (RowFileWriter writer = RowFileWriter.create(
                fs, dir, path, WIDTH, RowFileWriter.Options.defaults().withCodec(ChunkCodec.NONE))) {
            int slot = -1;
            for (Row row : rows) {
                if (row.slot != slot) {
                    if (slot < 5 && row.slot > 5) {
                        writer.beginSlot(5); // an empty slot, left out of the index
                    }
                    writer.beginSlot(row.slot);
                    slot = row.slot;
                }
                // Written from the middle of a larger array to exercise the offset.
                float[] source = new float[WIDTH + 2];
                for (int i = 0; i < WIDTH; i++) {
                    source[i + 1] = Float.intBitsToFloat(row.bits[i]);
                }
                writer.writeRow(row.key, source, 1);
            }
            return writer.finish();
        }
    }

    private byte[] readBytes(String path) throws IOException {
        try (InputStream in = fs.open(new Path(dir, path))) {
            return in.readAllBytes();
        }
    }

    /** Replaces the content through the filesystem, so file:// updates its own .crc and only our checks can fail. */
    private void rewrite(String path, byte[] bytes) throws IOException {
        try (OutputStream out = fs.create(new Path(dir, path), true)) {
            out.write(bytes);
        }
    }

    /** A row compared by raw float bits, so NaN payloads and -0.0 must survive exactly. */
    record Row(int slot, long key, int[] bits) {
        static Row ofBits(int slot, long key, int... bits) {
            return new Row(slot, key, bits);
        }

        static Row of(int slot, long key, float[] row) {
            int[] bits = new int[row.length];
            for (int i = 0; i < row.length; i++) {
                bits[i] = Float.floatToRawIntBits(row[i]);
            }
            return new Row(slot, key, bits);
        }

        @Override
        public boolean equals(Object o) {
            return o instanceof Row other && slot == other.slot && key == other.key && Arrays.equals(bits, other.bits);
        }

        @Override
        public int hashCode() {
            return Long.hashCode(key) * 31 + slot;
        }

        @Override
        public String toString() {
            StringBuilder s = new StringBuilder("Row[slot=" + slot + ", key=" + key + ", bits=");
            for (int b : bits) {
                s.append(String.format("%08x ", b));
            }
            return s.append(']').toString();
        }
    }
}
