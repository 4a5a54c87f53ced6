package io.pscluster.checkpoint;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.List;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.Path;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A checkpoint written by PSCluster 0.1 (format-1 manifest, version-1 row files; committed under
 * src/test/resources/legacy-v1 exactly as that code wrote it) still lists, verifies and loads bit-exact.
 */
class LegacyCheckpointTest {
    private static final String DIR = "ckpt-000000000001";
    private static final List<String> FILES = List.of(
            "_MANIFEST",
            "shard-s0/emb.000000000001.rows",
            "shard-s0/lr_20w.000000000001.rows",
            "shard-s1/emb.000000000001.rows",
            "shard-s1/lr_20w.000000000001.rows");

    @TempDir
    java.nio.file.Path tmp;

    private CheckpointStore store;

    @BeforeEach
    void copyTheOldCheckpoint() throws IOException {
        java.nio.file.Path root = tmp.resolve("ps");
        for (String name : FILES) {
            java.nio.file.Path target = root.resolve(DIR).resolve(name);
            Files.createDirectories(target.getParent());
            try (InputStream in = getClass().getResourceAsStream("/legacy-v1/" + DIR + "/" + name)) {
                Files.copy(in, target);
            }
        }
        store = new CheckpointStore(root.toUri(), new Configuration());
    }

    @Test
    void shouldListVerifyAndLoadEveryRowBitExactWhenWrittenByVersion01() throws IOException {
        CheckpointInfo checkpoint = store.latest().orElseThrow();

        assertThat(checkpoint.id()).isEqualTo(1);
        assertThat(store.check(checkpoint, VerifyReport.Depth.READ_BACK).problems())
                .isEmpty();
        List<String> rows = new ArrayList<>();
        for (Manifest.FileEntry entry : checkpoint.manifest().files()) {
            RowFileReader.read(store.fileSystem(), checkpoint.dir(), entry.file(), slot -> true, (slot, key, row) -> {
                // The fixture's rows: key = slot * 1000 + r, float f = key * 0.5 + f + (table "lr w" ? 100 : 0).
                int offset = entry.table().equals("lr w") ? 100 : 0;
                for (int f = 0; f < row.length; f++) {
                    assertThat(row[f]).isEqualTo(key * 0.5f + f + offset);
                }
                assertThat(key / 1000).isEqualTo(slot);
                rows.add(entry.table() + "/" + key);
            });
        }
        assertThat(rows).hasSize(48).doesNotHaveDuplicates().contains("emb/7002", "lr w/0");
        for (Manifest.FileEntry entry : checkpoint.manifest().files()) {
            long[] slotRows = RowFileReader.slotRows(store.fileSystem(), checkpoint.dir(), entry.file());
            assertThat(slotRows).hasSize(entry.file().slotCount());
            assertThat(java.util.Arrays.stream(slotRows).sum())
                    .isEqualTo(entry.file().rows());
        }
    }

    @Test
    void shouldDetectATruncatedVersion1FileAndCommitTheNextCheckpointBesideIt() throws IOException {
        CheckpointInfo old = store.get(1).orElseThrow();
        Path file = old.resolve(old.manifest().files().get(2).file());
        byte[] bytes = Files.readAllBytes(java.nio.file.Path.of(file.toUri()));
        try (FSDataOutputStream out = store.fileSystem().create(file, true)) {
            out.write(bytes, 0, bytes.length - 20);
        }

        assertThatThrownBy(() -> store.verify(old))
                .isInstanceOf(CheckpointCorruptException.class)
                .hasMessageContaining(file.toString())
                .hasMessageContaining("(truncated)");
        assertThat(store.nextId()).isEqualTo(2);
    }
}
