package io.pscluster.checkpoint;

import java.io.FileNotFoundException;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.zip.CRC32C;
import org.apache.hadoop.fs.BlockLocation;
import org.apache.hadoop.fs.ChecksumException;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FileChecksum;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.hdfs.BlockMissingException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Checks the files of one checkpoint against its manifest, to a {@link VerifyReport.Depth}, collecting one problem per
 * damaged file (every file is checked, so an operator sees all the damage at once).
 *
 * <p>Damage (missing file, wrong length, block without a live replica, CRC32C mismatch, the filesystem's own checksum
 * error on read) is reported as a problem. Any other I/O failure (NameNode unreachable, permission) is thrown, so that
 * an outage is never mistaken for a damaged checkpoint.
 *
 * <p>What {@code CHECKSUM} proves on HDFS: the CRC32C the DataNodes recorded for every chunk when the file was written
 * combines to the CRC32C the writer computed, and every block has a replica the NameNode believes healthy. It does not
 * read the data, so a replica that rotted on disk since is found by HDFS's block scanner, or by a read (which then
 * takes another replica), or by {@code READ_BACK}.
 */
final class CheckpointVerifier {
    private static final Logger LOG = LoggerFactory.getLogger(CheckpointVerifier.class);
    private static final int BUFFER_BYTES = 1024 * 1024;
    /** HDFS's name for a whole-file CRC32C combined from block checksums ({@code dfs.checksum.combine.mode}). */
    static final String COMPOSITE_CRC32C = "COMPOSITE-CRC32C";

    private final FileSystem fs;
    private final ChecksumSource checksums;
    private final byte[] buffer = new byte[BUFFER_BYTES];
    /** Counts each file's rows and bytes as it is checked (bytes read back as they are read); null: none. */
    private final Progress progress;

    /** Where whole-file checksums come from: an HDFS client in {@code COMPOSITE_CRC} mode, or any filesystem. */
    interface ChecksumSource {
        FileChecksum checksumOf(Path file) throws IOException;
    }

    CheckpointVerifier(FileSystem fs, ChecksumSource checksums) {
        this(fs, checksums, null);
    }

    CheckpointVerifier(FileSystem fs, ChecksumSource checksums, Progress progress) {
        this.fs = fs;
        this.checksums = checksums;
        this.progress = progress;
    }

    VerifyReport check(CheckpointInfo checkpoint, VerifyReport.Depth depth) throws IOException {
        List<String> problems = new ArrayList<>();
        int byChecksum = 0;
        int readBack = 0;
        long bytesReadBack = 0;
        int missingBlocks = 0;
        for (Manifest.FileEntry entry : checkpoint.manifest().files()) {
            RowFileInfo expected = entry.file();
            Path file = checkpoint.resolve(expected);
            long counted = 0;
            Problem problem = Problem.of(presence(file, expected));
            if (problem == null && depth != VerifyReport.Depth.PRESENCE) {
                problem = blocks(file, expected);
            }
            if (problem == null && depth != VerifyReport.Depth.PRESENCE) {
                Integer crc = depth == VerifyReport.Depth.CHECKSUM ? filesystemCrc32c(file) : null;
                if (crc != null) {
                    byChecksum++;
                    if (crc != expected.crc32c()) {
                        problem = Problem.of(String.format(
                                "crc32c expected %08x, the filesystem's %s is %08x",
                                expected.crc32c(), COMPOSITE_CRC32C, crc));
                    }
                } else {
                    readBack++;
                    bytesReadBack += expected.length();
                    long before = readBackBytes;
                    problem = readBack(file, expected);
                    counted = readBackBytes - before;
                }
            }
            if (progress != null) {
                progress.addRows(expected.rows());
                progress.addBytes(expected.length() - counted);
            }
            if (problem != null) {
                problems.add("file " + file + ": " + problem.text());
                missingBlocks += problem.blockUnreachable() ? 1 : 0;
            }
        }
        return new VerifyReport(checkpoint.id(), depth, problems, byChecksum, readBack, bytesReadBack, missingBlocks);
    }

    private String presence(Path file, RowFileInfo expected) throws IOException {
        FileStatus status;
        try {
            status = fs.getFileStatus(file);
        } catch (FileNotFoundException e) {
            return "is missing";
        }
        if (!status.isFile()) {
            return "is a directory, not a file";
        }
        if (status.getLen() != expected.length()) {
            return "length expected " + expected.length() + " bytes, actual " + status.getLen()
                    + (status.getLen() < expected.length() ? " (truncated)" : "");
        }
        return null;
    }

    /**
     * Blocks that are lost: the NameNode knows no live replica, or only corrupt ones; or no replica can serve the
     * block's first byte (its block file is gone, or its first chunk fails its checksum). The probe reads one byte per
     * block, which costs a DataNode one checksum chunk, not the block.
     */
    private Problem blocks(Path file, RowFileInfo expected) throws IOException {
        FileStatus status = fs.getFileStatus(file);
        BlockLocation[] blocks = fs.getFileBlockLocations(status, 0, expected.length());
        for (BlockLocation block : blocks) {
            if (block.getLength() == 0) {
                continue;
            }
            if (block.getHosts().length == 0) {
                return new Problem(
                        "block at offset " + block.getOffset() + " (" + block.getLength()
                                + " bytes) has no live replica (missing block)",
                        true);
            }
            if (block.isCorrupt()) {
                return Problem.of("block at offset " + block.getOffset() + " (" + block.getLength()
                        + " bytes): every replica is corrupt");
            }
        }
        byte[] probe = new byte[1];
        try (FSDataInputStream in = fs.open(file)) {
            for (BlockLocation block : blocks) {
                if (block.getLength() == 0) {
                    continue;
                }
                try {
                    in.readFully(block.getOffset(), probe);
                } catch (BlockMissingException e) {
                    // Every replica failed: unreachable (a DataNode down), or each failed its checksum, which the
                    // read reported to the NameNode, and that is damage.
                    return Problem.unserved(
                            fs,
                            file,
                            e,
                            "block at offset " + block.getOffset() + " (" + block.getLength()
                                    + " bytes) cannot be read: ");
                } catch (ChecksumException e) {
                    return Problem.of(
                            "block at offset " + block.getOffset() + ": filesystem checksum error: " + e.getMessage());
                }
            }
        } catch (FileNotFoundException e) {
            return Problem.of("is missing");
        }
        return null;
    }

    /**
     * The file's CRC32C as the filesystem computes it without reading the data, or null if it has no comparable
     * checksum (local files, HDFS files with CRC32 block checksums) or could not compute one (then the file is read
     * back, which tells damage from an outage precisely).
     */
    private Integer filesystemCrc32c(Path file) {
        FileChecksum checksum;
        try {
            checksum = checksums.checksumOf(file);
        } catch (IOException e) {
            LOG.info("no file checksum for {} ({}); reading it back", file, e.toString());
            return null;
        }
        if (checksum == null || !COMPOSITE_CRC32C.equals(checksum.getAlgorithmName())) {
            return null;
        }
        byte[] bytes = checksum.getBytes();
        return bytes.length == 4 ? ByteBuffer.wrap(bytes).getInt() : null;
    }

    /**
     * After no replica served a block ({@code missing}): whether they are reachable but corrupt (damage), rather than
     * unreachable (a DataNode down, which may come back). A client does not report to the NameNode when every replica
     * of a block fails its checksum, so this reads the block again through a filesystem of its own: a byte of it with
     * checksums off, then the whole block with checksums on (the exception names only the block's start, and the rot
     * may be anywhere in it). Corrupt when the first is served and the second is not. Served both times, the block was
     * only unreachable before (its DataNode is back); served neither time, it is unreachable still. A block is read
     * whole only here, after a read of it failed.
     */
    static boolean replicasCorrupt(FileSystem fs, Path file, BlockMissingException missing) {
        long start = missing.getOffset();
        try (FileSystem again = FileSystem.newInstance(fs.getUri(), fs.getConf())) {
            again.setVerifyChecksum(false);
            try (FSDataInputStream in = again.open(file)) {
                in.readFully(start, new byte[1]);
            }
            BlockLocation[] blocks = again.getFileBlockLocations(file, start, 1);
            long end = blocks.length == 0 ? start + 1 : blocks[0].getOffset() + blocks[0].getLength();
            again.setVerifyChecksum(true);
            try (FSDataInputStream in = again.open(file)) {
                in.seek(start);
                byte[] buffer = new byte[64 * 1024];
                for (long left = end - start; left > 0; ) {
                    int n = in.read(buffer, 0, (int) Math.min(buffer.length, left));
                    if (n < 0) {
                        break;
                    }
                    left -= n;
                }
            } catch (ChecksumException | BlockMissingException corrupt) {
                return true;
            }
            return false;
        } catch (IOException unreachable) {
            return false;
        }
    }

    /** Bytes read back so far, counted into {@link #progress} buffer by buffer. */
    private long readBackBytes;

    private Problem readBack(Path file, RowFileInfo expected) throws IOException {
        CRC32C crc = new CRC32C();
        long read = 0;
        try (InputStream in = fs.open(file, BUFFER_BYTES)) {
            for (int n; (n = in.read(buffer)) > 0; ) {
                crc.update(buffer, 0, n);
                read += n;
                if (progress != null && read <= expected.length()) {
                    progress.addBytes(n);
                    readBackBytes += n;
                }
            }
        } catch (FileNotFoundException e) {
            return Problem.of("is missing");
        } catch (ChecksumException e) {
            // The filesystem's own block checksums failed (HDFS, or the .crc files of file://).
            return Problem.of("filesystem checksum error: " + e.getMessage());
        } catch (BlockMissingException e) {
            // No DataNode could serve a block: the file cannot be read back whole, which is damage (fall back to an
            // older checkpoint), not an outage to wait out; proven damage only when its replicas are corrupt.
            return Problem.unserved(fs, file, e, "");
        }
        if (read != expected.length()) {
            return Problem.of("length expected " + expected.length() + " bytes, read " + read);
        }
        int actual = (int) crc.getValue();
        if (actual != expected.crc32c()) {
            return Problem.of(String.format("crc32c expected %08x, read back %08x", expected.crc32c(), actual));
        }
        return null;
    }

    /**
     * What is wrong with one file.
     *
     * @param blockUnreachable all that is wrong is a block no replica could serve because none was reachable (a DataNode
     *     down may bring it back; {@link VerifyReport#missingBlocks}).
     */
    record Problem(String text, boolean blockUnreachable) {
        /** A problem that is damage; null for none. */
        static Problem of(String text) {
            return text == null ? null : new Problem(text, false);
        }

        /**
         * A block no replica served ({@code missing}), told apart by {@link #replicasCorrupt}: "{@code where}every
         * replica of a block is corrupt: ..." (damage) or "{@code where}a block has no live replica: ...".
         */
        static Problem unserved(FileSystem fs, Path file, BlockMissingException missing, String where) {
            boolean corrupt = replicasCorrupt(fs, file, missing);
            return new Problem(
                    where
                            + (corrupt
                                    ? "every replica of a block is corrupt: "
                                    : "a block has no live replica (missing block): ")
                            + missing.getMessage(),
                    !corrupt);
        }
    }
}
