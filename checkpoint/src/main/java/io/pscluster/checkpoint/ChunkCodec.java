package io.pscluster.checkpoint;

import com.github.luben.zstd.Zstd;
import com.github.luben.zstd.ZstdCompressCtx;
import com.github.luben.zstd.ZstdDecompressCtx;
import com.github.luben.zstd.ZstdException;
import io.pscluster.proto.checkpoint.RowCodec;
import java.util.Locale;
import java.util.Optional;
import net.jpountz.lz4.LZ4Compressor;
import net.jpountz.lz4.LZ4Exception;
import net.jpountz.lz4.LZ4Factory;
import net.jpountz.lz4.LZ4SafeDecompressor;

/**
 * How the chunks of a row file are stored: each chunk (about 1 MiB of rows) is compressed on its own, losslessly, so a
 * reader can start at any chunk. The id is what a row file's header records; the name is what operators type
 * ({@code --checkpoint-codec zstd}).
 *
 * <p>zstd (level 1) is the default: on trained float rows it saves more than LZ4 at a write speed that stays above
 * what HDFS takes; LZ4 decompresses fastest. Before either, a chunk's bytes are shuffled by position within each 4-byte
 * word (all first bytes, then all second bytes, ...), which puts the floats' sign-and-exponent bytes together: those
 * repeat, the low mantissa bytes do not (see {@link RowFileFormat}).
 */
public enum ChunkCodec {
    NONE(0, "none"),
    ZSTD(1, "zstd"),
    LZ4(2, "lz4");

    /** zstd's fastest regular level: float rows gain little from higher ones and cost much more time. */
    static final int ZSTD_LEVEL = 1;

    private final int id;
    private final String optionName;

    ChunkCodec(int id, String optionName) {
        this.id = id;
        this.optionName = optionName;
    }

    /** The id stored in a row file's header. */
    int id() {
        return id;
    }

    /** {@code none}, {@code zstd} or {@code lz4}. */
    public String optionName() {
        return optionName;
    }

    @Override
    public String toString() {
        return optionName;
    }

    /**
     * The codec an operator named: {@code none}, {@code zstd} or {@code lz4}, in any case.
     *
     * @throws IllegalArgumentException naming the value and the accepted ones.
     */
    public static ChunkCodec parse(String name) {
        String lower = name == null ? "" : name.trim().toLowerCase(Locale.ROOT);
        for (ChunkCodec codec : values()) {
            if (codec.optionName.equals(lower)) {
                return codec;
            }
        }
        throw new IllegalArgumentException("codec '" + name + "' is not one of none, zstd, lz4");
    }

    /** This codec in the manifest's and the shard protocol's terms. */
    public RowCodec toProto() {
        return switch (this) {
            case NONE -> RowCodec.ROW_CODEC_NONE;
            case ZSTD -> RowCodec.ROW_CODEC_ZSTD;
            case LZ4 -> RowCodec.ROW_CODEC_LZ4;
        };
    }

    /** The codec a protocol value names; empty for {@code ROW_CODEC_UNSPECIFIED} or an unknown value. */
    public static Optional<ChunkCodec> fromProto(RowCodec codec) {
        return switch (codec) {
            case ROW_CODEC_NONE -> Optional.of(NONE);
            case ROW_CODEC_ZSTD -> Optional.of(ZSTD);
            case ROW_CODEC_LZ4 -> Optional.of(LZ4);
            default -> Optional.empty();
        };
    }

    /** The codec with this header id, or null. */
    static ChunkCodec ofId(int id) {
        for (ChunkCodec codec : values()) {
            if (codec.id == id) {
                return codec;
            }
        }
        return null;
    }

    /** Upper bound of what {@link Compressor#compress} writes for {@code rawBytes} bytes. */
    int maxStoredBytes(int rawBytes) {
        return switch (this) {
            case NONE -> rawBytes;
            case ZSTD -> (int) Math.min(Integer.MAX_VALUE, Zstd.compressBound(rawBytes));
            case LZ4 -> LZ4Factory.fastestInstance().fastCompressor().maxCompressedLength(rawBytes);
        };
    }

    Compressor newCompressor() {
        return switch (this) {
            case NONE -> null;
            case ZSTD -> new ZstdCompressor();
            case LZ4 -> new Lz4Compressor();
        };
    }

    Decompressor newDecompressor() {
        return switch (this) {
            case NONE -> null;
            case ZSTD -> new ZstdDecompressor();
            case LZ4 -> new Lz4Decompressor();
        };
    }

    /** Compresses whole chunks; holds native state (zstd), so one per writer, closed with it. Not thread-safe. */
    interface Compressor extends AutoCloseable {
        /** Compresses {@code raw[0..length)} into {@code out[offset..]}; returns the compressed length. */
        int compress(byte[] raw, int length, byte[] out, int offset, int capacity);

        @Override
        void close();
    }

    /** Decompresses whole chunks; one per reader, closed with it. Not thread-safe. */
    interface Decompressor extends AutoCloseable {
        /**
         * Decompresses {@code stored[0..storedLength)} into {@code raw[0..rawLength)}.
         *
         * @throws IllegalStateException if the data does not decompress to exactly {@code rawLength} bytes (damage);
         *     the message says what the codec reported.
         */
        void decompress(byte[] stored, int storedLength, byte[] raw, int rawLength);

        @Override
        void close();
    }

    private static final class ZstdCompressor implements Compressor {
        private final ZstdCompressCtx ctx = new ZstdCompressCtx().setLevel(ZSTD_LEVEL);

        @Override
        public int compress(byte[] raw, int length, byte[] out, int offset, int capacity) {
            return ctx.compressByteArray(out, offset, capacity, raw, 0, length);
        }

        @Override
        public void close() {
            ctx.close();
        }
    }

    private static final class ZstdDecompressor implements Decompressor {
        private final ZstdDecompressCtx ctx = new ZstdDecompressCtx();

        @Override
        public void decompress(byte[] stored, int storedLength, byte[] raw, int rawLength) {
            int n;
            try {
                n = ctx.decompressByteArray(raw, 0, rawLength, stored, 0, storedLength);
            } catch (ZstdException e) {
                throw new IllegalStateException("zstd: " + e.getMessage(), e);
            }
            if (n != rawLength) {
                throw new IllegalStateException("zstd gave " + n + " bytes, expected " + rawLength);
            }
        }

        @Override
        public void close() {
            ctx.close();
        }
    }

    private static final class Lz4Compressor implements Compressor {
        private final LZ4Compressor compressor = LZ4Factory.fastestInstance().fastCompressor();

        @Override
        public int compress(byte[] raw, int length, byte[] out, int offset, int capacity) {
            return compressor.compress(raw, 0, length, out, offset, capacity);
        }

        @Override
        public void close() {}
    }

    private static final class Lz4Decompressor implements Decompressor {
        // The safe decompressor checks every bound against the input: a damaged chunk is an exception, never a read
        // outside the arrays.
        private final LZ4SafeDecompressor decompressor =
                LZ4Factory.fastestInstance().safeDecompressor();

        @Override
        public void decompress(byte[] stored, int storedLength, byte[] raw, int rawLength) {
            int n;
            try {
                n = decompressor.decompress(stored, 0, storedLength, raw, 0, rawLength);
            } catch (LZ4Exception e) {
                throw new IllegalStateException("lz4: " + e.getMessage(), e);
            }
            if (n != rawLength) {
                throw new IllegalStateException("lz4 gave " + n + " bytes, expected " + rawLength);
            }
        }

        @Override
        public void close() {}
    }
}
