package io.pscluster.cli;

import io.grpc.ManagedChannel;
import io.pscluster.checkpoint.CheckpointCorruptException;
import io.pscluster.checkpoint.CheckpointStore;
import io.pscluster.checkpoint.Manifest;
import io.pscluster.checkpoint.Progress;
import io.pscluster.checkpoint.VerifyReport;
import io.pscluster.export.SafetensorsExport;
import io.pscluster.proto.v1.AdminServiceGrpc;
import io.pscluster.proto.v1.CheckpointInfo;
import io.pscluster.proto.v1.CheckpointNowRequest;
import io.pscluster.proto.v1.CheckpointNowResponse;
import io.pscluster.proto.v1.ListCheckpointsRequest;
import io.pscluster.proto.v1.ListCheckpointsResponse;
import io.pscluster.proto.v1.OperationProgressRequest;
import io.pscluster.proto.v1.OperationProgressResponse;
import io.pscluster.proto.v1.PassedOverCheckpoint;
import io.pscluster.proto.v1.RestoreRequest;
import io.pscluster.proto.v1.RestoreResponse;
import java.io.IOException;
import java.io.PrintWriter;
import java.net.URI;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.NoSuchElementException;
import java.util.Optional;
import java.util.TreeMap;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code psctl checkpoint}: take and restore checkpoints through the proxy ({@code now}, {@code restore}), and inspect
 * delete or export them straight on the filesystem, with no cluster running ({@code list --checkpoint-dir},
 * {@code verify}, {@code delete}, {@code export}).
 */
@Command(
        name = "checkpoint",
        mixinStandardHelpOptions = true,
        description = "Checkpoints: now, restore (through the proxy); list, verify, delete, export (offline, on the"
                + " filesystem).",
        subcommands = {
            CheckpointCommand.Now.class,
            CheckpointCommand.ListCheckpoints.class,
            CheckpointCommand.Restore.class,
            CheckpointCommand.Verify.class,
            CheckpointCommand.Delete.class,
            CheckpointCommand.Export.class
        })
final class CheckpointCommand implements Runnable {
    @Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        throw new CommandLine.ParameterException(
                spec.commandLine(), "name what to do: now, list, restore, verify, delete or export");
    }

    @Command(
            name = "now",
            mixinStandardHelpOptions = true,
            description = {
                "Take a checkpoint now (through the proxy). Exit 3: the checkpoint is committed, but the proxy could"
                        + " not record it in its state (the warning says why and what follows)."
            })
    static final class Now implements Callable<Integer> {
        /** The checkpoint is committed and the proxy state does not name it yet. */
        static final int UNRECORDED_EXIT = 3;

        @Option(names = "--proxy", required = true, description = "The proxy's HOST:PORT.")
        String proxy;

        @Mixin
        SecurityOptions security;

        @Option(
                names = "--timeout-s",
                defaultValue = "600",
                description = "How long this command waits (default ${DEFAULT-VALUE} s); the proxy's own limits are"
                        + " its --checkpoint-stall-timeout and --checkpoint-timeout.")
        long timeoutSeconds;

        @Option(names = "--quiet", description = "No progress lines on standard error.")
        boolean quiet;

        @Spec
        CommandLine.Model.CommandSpec spec;

        @Override
        public Integer call() {
            return withAdminProgress(security, proxy, timeoutSeconds, "checkpoint", quiet, spec, admin -> {
                final CheckpointNowResponse response = admin.checkpointNow(CheckpointNowRequest.getDefaultInstance());
                final PrintWriter out = spec.commandLine().getOut();
                out.println("checkpoint taken: " + describe(response.getCheckpoint()));
                out.println("longest push stall at a shard's cut: " + response.getMaxSnapshotMicros() + " us");
                out.println("cut: " + response.getCut());
                if (!response.getUnrecorded().isEmpty()) {
                    spec.commandLine().getErr().println("warning: " + response.getUnrecorded());
                    return UNRECORDED_EXIT;
                }
                return 0;
            });
        }
    }

    @Command(
            name = "restore",
            mixinStandardHelpOptions = true,
            description = {
                "Load a checkpoint into the running cluster (through the proxy), e.g. to warm a serving cluster with"
                        + " the latest model. Without --id, the newest complete checkpoint that verifies: newer"
                        + " damaged ones are skipped, and named."
            })
    static final class Restore implements Callable<Integer> {
        @Option(names = "--proxy", required = true, description = "The proxy's HOST:PORT.")
        String proxy;

        @Mixin
        SecurityOptions security;

        @Option(names = "--id", defaultValue = "0", description = "The checkpoint id; 0 (default) the latest.")
        long id;

        @Option(
                names = "--timeout-s",
                defaultValue = "600",
                description = "How long this command waits (default ${DEFAULT-VALUE} s); the proxy's own limits are"
                        + " its --checkpoint-stall-timeout and --checkpoint-timeout.")
        long timeoutSeconds;

        @Option(names = "--quiet", description = "No progress lines on standard error.")
        boolean quiet;

        @Spec
        CommandLine.Model.CommandSpec spec;

        @Override
        public Integer call() {
            return withAdminProgress(security, proxy, timeoutSeconds, "restore", quiet, spec, admin -> {
                final RestoreResponse response = admin.restore(
                        RestoreRequest.newBuilder().setCheckpointId(id).build());
                final PrintWriter out = spec.commandLine().getOut();
                out.println(
                        "restored " + response.getRowsRestored() + " rows from " + describe(response.getCheckpoint()));
                if (response.getPassedOverCount() > 0) {
                    out.println("fell back to checkpoint "
                            + response.getCheckpoint().getId() + ", passing over:");
                    for (final PassedOverCheckpoint newer : response.getPassedOverList()) {
                        out.println("  #" + newer.getId() + ": " + newer.getReason());
                    }
                }
                return 0;
            });
        }
    }

    @Command(
            name = "list",
            mixinStandardHelpOptions = true,
            description = {
                "The complete checkpoints, newest first. With --checkpoint-dir, read from the filesystem (no cluster"
                        + " needed): id, created, age, kind (base/delta), size, compression, rows, tables and a"
                        + " check mark: 'present' (every file there with its length), with --verify 'verified'"
                        + " (checksums too), or DAMAGED and why; MARKED-DAMAGED when a restore found it damaged"
                        + " (retention keeps it, uncounted, until it is deleted). With --proxy, as the proxy sees"
                        + " them, with the checkpoints a restore found damaged marked so.",
                "Exit code 1 if a checkpoint shown is damaged or marked damaged."
            })
    static final class ListCheckpoints implements Callable<Integer> {
        @Option(names = "--checkpoint-dir", description = "Where checkpoints live: hdfs://..., file://... or a path.")
        String checkpointDir;

        @Option(names = "--proxy", description = "Ask the proxy at HOST:PORT instead.")
        String proxy;

        @Mixin
        SecurityOptions security;

        @Option(names = "--verify", description = "Check every file's checksum too (see verify).")
        boolean verify;

        @Option(names = "--timeout-s", defaultValue = "600", description = "Deadline with --proxy (default 600 s).")
        long timeoutSeconds;

        @Mixin
        HadoopOptions hadoop;

        @Spec
        CommandLine.Model.CommandSpec spec;

        @Override
        public Integer call() throws IOException {
            if ((checkpointDir == null) == (proxy == null)) {
                throw new IllegalArgumentException("give --checkpoint-dir URI (read the filesystem) or --proxy"
                        + " HOST:PORT (ask the proxy), one of the two");
            }
            final PrintWriter out = spec.commandLine().getOut();
            if (proxy != null) {
                return withAdmin(security, proxy, timeoutSeconds, admin -> {
                    final ListCheckpointsResponse response =
                            admin.listCheckpoints(ListCheckpointsRequest.getDefaultInstance());
                    if (response.getCheckpointsCount() == 0) {
                        out.println("no complete checkpoints");
                    }
                    int damaged = 0;
                    for (final CheckpointInfo info : response.getCheckpointsList()) {
                        out.println(describe(info));
                        if (!info.getDamaged().isEmpty()) {
                            damaged++;
                            out.println("  MARKED-DAMAGED: a restore found it damaged (" + info.getDamaged()
                                    + "); retention keeps it uncounted until `psctl checkpoint delete --id "
                                    + info.getId() + "`");
                        }
                    }
                    return damaged == 0 ? 0 : 1;
                });
            }
            try (CheckpointStore store = openStore(checkpointDir, hadoop)) {
                return list(store, verify ? VerifyReport.Depth.CHECKSUM : VerifyReport.Depth.PRESENCE, out);
            }
        }

        static int list(final CheckpointStore store, final VerifyReport.Depth depth, final PrintWriter out)
                throws IOException {
            final List<io.pscluster.checkpoint.CheckpointInfo> checkpoints = store.list();
            final Map<Long, String> badManifests = store.damagedManifests();
            final Map<Long, String> marked = store.damageMarks();
            if (checkpoints.isEmpty() && badManifests.isEmpty()) {
                out.println("no complete checkpoints under " + store.root());
                return 0;
            }
            final String format = "%-6s %-20s %-9s %-5s %10s %6s %12s %5s  %-24s %s%n";
            out.printf(format, "ID", "CREATED", "AGE", "KIND", "SIZE", "RATIO", "ROWS", "FILES", "TABLES", "CHECK");
            final Instant now = Instant.now();
            final List<String> problems = new ArrayList<>();
            final List<String> notes = new ArrayList<>();
            final ChainCheck chains = new ChainCheck(store, depth);
            for (final io.pscluster.checkpoint.CheckpointInfo checkpoint : checkpoints) {
                final Manifest manifest = checkpoint.manifest();
                final ChainCheck.Outcome outcome = chains.check(checkpoint, null);
                final Instant created = Instant.ofEpochMilli(manifest.createdMillis());
                final String tables = String.join(
                        ",",
                        manifest.tables().stream()
                                .map(Manifest.TableEntry::name)
                                .toList());
                final String found = marked.get(checkpoint.id());
                final String mark = outcome.deleted()
                        ? "deleted"
                        : !outcome.intact()
                                ? "DAMAGED"
                                : found != null
                                        ? "MARKED-DAMAGED"
                                        : depth == VerifyReport.Depth.PRESENCE ? "present" : "verified";
                out.printf(
                        format,
                        checkpoint.id(),
                        created.truncatedTo(ChronoUnit.SECONDS),
                        age(Duration.between(created, now)),
                        manifest.kind() == Manifest.Kind.BASE ? "base" : "delta:" + manifest.parentId(),
                        size(manifest.totalBytes()),
                        ratio(manifest),
                        manifest.totalRows(),
                        manifest.files().size(),
                        tables.length() > 24 ? tables.substring(0, 21) + "..." : tables,
                        mark);
                outcome.problems().forEach(problem -> problems.add("checkpoint " + checkpoint.id() + ": " + problem));
                if (outcome.deleted()) {
                    notes.add("checkpoint " + checkpoint.id() + ": " + outcome.damage());
                }
                if (found != null && !outcome.deleted()) {
                    problems.add("checkpoint " + checkpoint.id() + ": a restore found it damaged (" + found
                            + "); retention keeps it uncounted until `psctl checkpoint delete --id " + checkpoint.id()
                            + "`");
                }
            }
            badManifests.forEach((id, why) -> {
                out.printf(format, id, "?", "?", "?", "?", "?", "?", "?", "?", "DAMAGED");
                problems.add("checkpoint " + id + ": unreadable manifest: " + why);
            });
            notes.forEach(out::println);
            problems.forEach(out::println);
            return problems.isEmpty() ? 0 : 1;
        }
    }

    @Command(
            name = "verify",
            mixinStandardHelpOptions = true,
            description = {
                "Check checkpoints on the filesystem without loading them (no cluster needed): every file there with"
                        + " its length, no block lost, and its CRC32C as the manifest says. On HDFS the CRC32C comes"
                        + " from the DataNodes' block checksums (COMPOSITE_CRC), so nothing is read back; elsewhere"
                        + " the files are read. --read-back reads every byte on HDFS too.",
                "Exit code 0 if intact, 1 on damage (each damaged file is named with its problem), when the"
                        + " checkpoint of --id is not there, or when there is no checkpoint to verify. One deleted"
                        + " while it is checked (by a running proxy's retention) is said to be, not counted as"
                        + " damage."
            })
    static final class Verify implements Callable<Integer> {
        @Option(
                names = "--checkpoint-dir",
                required = true,
                description = "Where checkpoints live: hdfs://..., file://... or a path.")
        String checkpointDir;

        @Option(names = "--id", defaultValue = "0", description = "The checkpoint to verify; 0 (default): every one.")
        long id;

        @Option(names = "--read-back", description = "Read every byte back as well.")
        boolean readBack;

        @Option(names = "--quiet", description = "No progress lines on standard error.")
        boolean quiet;

        @Mixin
        HadoopOptions hadoop;

        @Spec
        CommandLine.Model.CommandSpec spec;

        @Override
        public Integer call() throws IOException {
            final PrintWriter out = spec.commandLine().getOut();
            final VerifyReport.Depth depth = readBack ? VerifyReport.Depth.READ_BACK : VerifyReport.Depth.CHECKSUM;
            try (CheckpointStore store = openStore(checkpointDir, hadoop)) {
                final List<io.pscluster.checkpoint.CheckpointInfo> checkpoints = new ArrayList<>();
                int damaged = 0;
                if (id != 0) {
                    final Optional<io.pscluster.checkpoint.CheckpointInfo> one;
                    try {
                        one = store.get(id);
                    } catch (CheckpointCorruptException e) {
                        out.println("checkpoint " + id + ": DAMAGED: unreadable manifest: " + e.getMessage());
                        return 1;
                    }
                    if (one.isEmpty()) {
                        out.println("checkpoint " + id + ": " + noSuchCheckpoint(store, id));
                        return 1;
                    }
                    checkpoints.add(one.get());
                } else {
                    checkpoints.addAll(store.list());
                    for (final Map.Entry<Long, String> bad :
                            store.damagedManifests().entrySet()) {
                        out.println("checkpoint " + bad.getKey() + ": DAMAGED: unreadable manifest: " + bad.getValue());
                        damaged++;
                    }
                    if (checkpoints.isEmpty() && damaged == 0) {
                        // Nothing verified is not a pass: a scheduled check must not be quiet about a root that
                        // holds no checkpoint (a mistyped subdirectory, checkpoints never taken or all deleted).
                        out.println("nothing to verify: no complete checkpoint under " + store.root());
                        return 1;
                    }
                }
                // A delta is checked with its chain, as a restore needs it; a base several deltas need, once.
                final ChainCheck chains = new ChainCheck(store, depth);
                for (final io.pscluster.checkpoint.CheckpointInfo checkpoint : checkpoints) {
                    final Progress progress = new Progress("verifying");
                    final ChainCheck.Outcome outcome;
                    try (ProgressReporter ignored = ProgressReporter.start(
                            spec.commandLine().getErr(),
                            () -> ProgressReporter.Reading.of("verify checkpoint " + checkpoint.id(), progress.view()),
                            quiet)) {
                        try {
                            outcome = chains.check(checkpoint, progress);
                            progress.succeeded();
                        } catch (IOException | RuntimeException e) {
                            progress.failed(e.getMessage());
                            throw e;
                        }
                    }
                    if (outcome.intact()) {
                        final List<Long> needed = outcome.chain().stream()
                                .map(io.pscluster.checkpoint.CheckpointInfo::id)
                                .filter(link -> link != checkpoint.id())
                                .toList();
                        out.println("checkpoint " + checkpoint.id() + ": intact (" + how(outcome.report()) + ")"
                                + (needed.isEmpty() ? "" : "; so are the checkpoints it needs, " + needed));
                        if (store.isMarkedDamaged(checkpoint)) {
                            out.println("  a restore marked it damaged before (see `checkpoint list`); its bytes verify"
                                    + " now: the next restore that verifies it removes the mark");
                        }
                    } else if (outcome.deleted()) {
                        // Not damage; but the one checkpoint asked for is not there any more.
                        damaged += id != 0 ? 1 : 0;
                        out.println("checkpoint " + checkpoint.id() + ": " + outcome.damage());
                    } else {
                        damaged++;
                        out.println("checkpoint " + checkpoint.id() + ": " + outcome.damage());
                        outcome.fileProblems().forEach(problem -> out.println("  " + problem));
                    }
                }
                return damaged == 0 ? 0 : 1;
            }
        }

        private static String how(final VerifyReport report) {
            final List<String> parts = new ArrayList<>();
            if (report.filesByChecksum() > 0) {
                parts.add(report.filesByChecksum() + " files by the filesystem's CRC32C file checksum, not read");
            }
            if (report.filesReadBack() > 0) {
                parts.add(report.filesReadBack() + " files read back, " + size(report.bytesReadBack()));
            }
            return parts.isEmpty() ? "no files" : String.join("; ", parts);
        }
    }

    @Command(
            name = "delete",
            mixinStandardHelpOptions = true,
            description = "Delete a checkpoint on the filesystem (its manifest first, so it never looks half there)."
                    + " Refuses a checkpoint that a kept delta needs, unless --force. Deleting the newest one warns"
                    + " (a lost shard's slots then come back from an older one); its id is never reused.")
    static final class Delete implements Callable<Integer> {
        @Option(
                names = "--checkpoint-dir",
                required = true,
                description = "Where checkpoints live: hdfs://..., file://... or a path.")
        String checkpointDir;

        @Option(names = "--id", required = true, description = "The checkpoint to delete.")
        long id;

        @Option(names = "--force", description = "Delete it even if deltas need it (they become unrestorable).")
        boolean force;

        @Mixin
        HadoopOptions hadoop;

        @Spec
        CommandLine.Model.CommandSpec spec;

        @Override
        public Integer call() throws IOException {
            try (CheckpointStore store = openStore(checkpointDir, hadoop)) {
                final List<io.pscluster.checkpoint.CheckpointInfo> before = store.list();
                final boolean newest = !before.isEmpty() && before.get(0).id() == id;
                final List<Long> broken;
                try {
                    broken = store.delete(id, force);
                } catch (NoSuchElementException | IllegalStateException e) {
                    spec.commandLine().getErr().println("psctl checkpoint delete: " + e.getMessage());
                    return 1;
                }
                spec.commandLine().getOut().println("deleted checkpoint " + id + " under " + store.root());
                if (!broken.isEmpty()) {
                    spec.commandLine()
                            .getOut()
                            .println("forced: checkpoints " + broken + " needed it and can no longer be restored");
                }
                if (newest) {
                    warnNewestDeleted(store.list());
                }
                return 0;
            }
        }

        /**
         * The newest checkpoint is the one a running cluster's model is usually at, and the one a shard that takes
         * over a lost shard's slots restores: say what a failover now loads instead, and that the id stays used.
         */
        private void warnNewestDeleted(final List<io.pscluster.checkpoint.CheckpointInfo> left) {
            final String instead = left.isEmpty()
                    ? "no complete checkpoint is left, so a lost shard's slots have nothing to come back from"
                    : "a lost shard's slots now come back from an older one (the newest left is checkpoint "
                            + left.get(0).id() + "), a larger rollback, reported";
            spec.commandLine()
                    .getErr()
                    .println("psctl checkpoint delete: warning: checkpoint " + id + " was the newest; " + instead
                            + ". Take one now (psctl checkpoint now) if a cluster runs on this root. Id " + id
                            + " stays used: the next checkpoint gets a higher one");
        }
    }

    @Command(
            name = "export",
            mixinStandardHelpOptions = true,
            description = {
                "Export a checkpoint's parameter values for serving (no cluster needed): one <table>.safetensors per"
                        + " table in --out. Dense tables: tensor 'values' F32 [rows, dim], row k at index k. Sparse"
                        + " tables: 'keys' I64 [n] and 'values' F32 [n, dim], in the same order. Optimizer state is"
                        + " left out. A delta is exported as the model at that checkpoint (its base, then each delta"
                        + " applied in order). The checkpoint and its chain are verified first; without --id, the"
                        + " newest one whose chain is intact.",
                "Exit code 0 when every file is written, 1 on damage, no such checkpoint or failure (nothing is"
                        + " left under a final name), 2 on a bad option."
            })
    static final class Export implements Callable<Integer> {
        @Option(
                names = "--checkpoint-dir",
                required = true,
                description = "Where checkpoints live: hdfs://..., file://... or a path.")
        String checkpointDir;

        @Option(
                names = "--id",
                defaultValue = "0",
                description = "The checkpoint to export; 0 (default): the newest complete one that verifies.")
        long id;

        @Option(names = "--format", defaultValue = "safetensors", description = "Only safetensors (the default).")
        String format;

        @Option(
                names = "--out",
                required = true,
                paramLabel = "DIR",
                description = "Local directory for the files (created if missing); existing files are never replaced.")
        Path out;

        @Option(
                names = "--table",
                paramLabel = "NAME",
                description = "Export only this table (repeatable); default: every table.")
        List<String> tables = new ArrayList<>();

        @Option(names = "--quiet", description = "No progress lines on standard error.")
        boolean quiet;

        @Mixin
        HadoopOptions hadoop;

        @Spec
        CommandLine.Model.CommandSpec spec;

        @Override
        public Integer call() throws IOException {
            if (!format.equals("safetensors")) {
                throw usage("--format=" + format + " is not supported; the one format is safetensors");
            }
            if (id < 0) {
                throw usage("--id=" + id + " must be a checkpoint id (>= 1), or 0 for the newest intact one");
            }
            if (Files.exists(out) && !Files.isDirectory(out)) {
                throw usage("--out=" + out + " exists and is not a directory");
            }
            final PrintWriter stdout = spec.commandLine().getOut();
            try (CheckpointStore store = openStore(checkpointDir, hadoop)) {
                final Optional<List<io.pscluster.checkpoint.CheckpointInfo>> chosen = choose(store, stdout);
                if (chosen.isEmpty()) {
                    return 1;
                }
                final List<io.pscluster.checkpoint.CheckpointInfo> chain = chosen.get();
                final io.pscluster.checkpoint.CheckpointInfo checkpoint = chain.get(chain.size() - 1);
                final SafetensorsExport export;
                try {
                    export = SafetensorsExport.plan(chain, tables, out);
                } catch (IllegalArgumentException e) {
                    throw usage(e.getMessage());
                } catch (SafetensorsExport.Refused e) {
                    // Not a bad option: a plain error, without the usage text.
                    spec.commandLine().getErr().println("psctl checkpoint export: " + e.getMessage());
                    stdout.println("nothing exported");
                    return 1;
                } catch (CheckpointCorruptException e) {
                    stdout.println("checkpoint " + checkpoint.id() + ": DAMAGED: " + e.getMessage());
                    stdout.println("nothing exported");
                    return 1;
                }
                Files.createDirectories(out);
                stdout.println("exporting checkpoint " + checkpoint.id() + " (created "
                        + Instant.ofEpochMilli(checkpoint.manifest().createdMillis())
                        + (chain.size() > 1 ? "; a delta, read with its chain " + export.chainIds() : "") + ") to "
                        + out + ": " + export.tables().size() + " tables");
                final Progress progress = export.progress();
                try (ProgressReporter ignored = ProgressReporter.start(
                        spec.commandLine().getErr(),
                        () -> ProgressReporter.Reading.of("export checkpoint " + checkpoint.id(), progress.view()),
                        quiet)) {
                    try {
                        export.write(
                                store.fileSystem(),
                                table -> stdout.println("  " + table.table() + ": "
                                        + (table.dense() ? "dense" : "sparse") + ", " + table.rows() + " rows x dim "
                                        + table.dim() + ", " + size(table.bytes()) + " -> " + table.file()));
                        progress.succeeded();
                    } catch (IOException | RuntimeException e) {
                        progress.failed(e.getMessage());
                        throw e;
                    }
                } catch (CheckpointCorruptException e) {
                    stdout.println("checkpoint " + checkpoint.id() + ": DAMAGED: " + e.getMessage());
                    stdout.println("nothing exported");
                    return 1;
                }
                stdout.println("exported checkpoint " + checkpoint.id());
                return 0;
            }
        }

        /**
         * The checkpoint to export with its chain (base first), every file of the chain verified: the one {@code --id}
         * names, or the newest whose chain is intact, naming every newer one skipped for damage (its own, or a
         * damaged or missing checkpoint it needs). Empty (after printing why) when there is none to export.
         */
        private Optional<List<io.pscluster.checkpoint.CheckpointInfo>> choose(
                final CheckpointStore store, final PrintWriter stdout) throws IOException {
            final List<io.pscluster.checkpoint.CheckpointInfo> candidates = new ArrayList<>();
            final TreeMap<Long, String> badManifests = new TreeMap<>();
            if (id != 0) {
                final Optional<io.pscluster.checkpoint.CheckpointInfo> one;
                try {
                    one = store.get(id);
                } catch (CheckpointCorruptException e) {
                    stdout.println("checkpoint " + id + ": DAMAGED: unreadable manifest: " + e.getMessage());
                    return Optional.empty();
                }
                if (one.isEmpty()) {
                    // Not a bad option, as in verify and delete: a plain error, without the usage text.
                    spec.commandLine()
                            .getErr()
                            .println("psctl checkpoint export: --id=" + id + ": " + noSuchCheckpoint(store, id));
                    stdout.println("nothing exported");
                    return Optional.empty();
                }
                candidates.add(one.get());
            } else {
                badManifests.putAll(store.damagedManifests());
                candidates.addAll(store.list());
                if (candidates.isEmpty()) {
                    badManifests.forEach((bad, why) ->
                            stdout.println("checkpoint " + bad + ": DAMAGED: unreadable manifest: " + why));
                    stdout.println("no complete checkpoint under " + store.root());
                    return Optional.empty();
                }
            }
            final String skipped = id == 0 ? "; skipped for the previous one" : "";
            final ChainCheck chains = new ChainCheck(store, VerifyReport.Depth.CHECKSUM);
            for (final io.pscluster.checkpoint.CheckpointInfo candidate : candidates) {
                badManifests
                        .tailMap(candidate.id(), false)
                        .forEach((bad, why) -> stdout.println(
                                "checkpoint " + bad + ": DAMAGED: unreadable manifest: " + why + "; skipped"));
                badManifests.tailMap(candidate.id(), false).clear();
                final ChainCheck.Outcome outcome = chains.check(candidate, null);
                if (outcome.intact()) {
                    return Optional.of(outcome.chain());
                }
                stdout.println("checkpoint " + candidate.id() + ": " + outcome.damage() + skipped);
                outcome.fileProblems().forEach(problem -> stdout.println("  " + problem));
            }
            if (id == 0) {
                stdout.println("no intact checkpoint under " + store.root());
            }
            return Optional.empty();
        }

        private CommandLine.ParameterException usage(final String message) {
            return new CommandLine.ParameterException(spec.commandLine(), message);
        }
    }

    /** Why a command cannot find checkpoint {@code id}, with the ids it can find. */
    private static String noSuchCheckpoint(final CheckpointStore store, final long id) throws IOException {
        return "no such checkpoint under " + store.root() + " (no directory, or no manifest: never committed);"
                + " complete ones: "
                + store.list().stream()
                        .map(io.pscluster.checkpoint.CheckpointInfo::id)
                        .toList();
    }

    /**
     * The store for the offline commands, which create nothing: a mistyped {@code --checkpoint-dir} is an error (exit
     * 1), not a new empty directory reported as holding no checkpoints.
     */
    private static CheckpointStore openStore(final String checkpointDir, final HadoopOptions hadoop)
            throws IOException {
        Cli.logLevel(ch.qos.logback.classic.Level.WARN);
        try {
            return CheckpointStore.openExisting(URI.create(Cli.checkpointUri(checkpointDir)), hadoop.configuration());
        } catch (java.io.FileNotFoundException e) {
            throw new java.io.FileNotFoundException("--checkpoint-dir=" + checkpointDir + ": " + e.getMessage());
        }
    }

    interface AdminCall {
        int call(AdminServiceGrpc.AdminServiceBlockingStub admin);
    }

    private static int withAdmin(
            final SecurityOptions security, final String proxy, final long timeoutSeconds, final AdminCall call) {
        final ManagedChannel channel = security.channel(Cli.hostPort("--proxy", proxy));
        try {
            return call.call(
                    AdminServiceGrpc.newBlockingStub(channel).withDeadlineAfter(timeoutSeconds, TimeUnit.SECONDS));
        } finally {
            Cli.close(channel);
        }
    }

    /**
     * As {@link #withAdmin}, printing the proxy's progress on {@code kind} ("checkpoint", "restore") to standard
     * error about once a second while the call runs (unless {@code quiet}), polled from a second stub.
     */
    static int withAdminProgress(
            final SecurityOptions security,
            final String proxy,
            final long timeoutSeconds,
            final String kind,
            final boolean quiet,
            final CommandLine.Model.CommandSpec spec,
            final AdminCall call) {
        final ManagedChannel channel = security.channel(Cli.hostPort("--proxy", proxy));
        final long startNanos = System.nanoTime();
        final AdminServiceGrpc.AdminServiceBlockingStub poller = AdminServiceGrpc.newBlockingStub(channel);
        try (ProgressReporter ignored = ProgressReporter.start(
                spec.commandLine().getErr(),
                () -> reading(
                        kind,
                        poller.withDeadlineAfter(5, TimeUnit.SECONDS)
                                .operationProgress(OperationProgressRequest.getDefaultInstance()),
                        TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - startNanos)),
                quiet)) {
            return call.call(
                    AdminServiceGrpc.newBlockingStub(channel).withDeadlineAfter(timeoutSeconds, TimeUnit.SECONDS));
        } finally {
            Cli.close(channel);
        }
    }

    /**
     * The proxy's operation as a progress reading, or null if it is not ours: another kind, or one that began before
     * this command did (a second of slack for the clocks of the two processes to disagree).
     */
    static ProgressReporter.Reading reading(
            final String kind, final OperationProgressResponse operation, final long ourMillis) {
        if (!operation.getKnown()
                || !operation.getKind().equals(kind)
                || operation.getElapsedMillis() > ourMillis + 1_000) {
            return null;
        }
        final String extra = operation.getShards() == 0
                ? ""
                : kind.equals("checkpoint")
                        ? "shards cut " + operation.getShardsCut() + "/" + operation.getShards() + ", done "
                                + operation.getShardsDone() + "/" + operation.getShards()
                        : "shards done " + operation.getShardsDone() + "/" + operation.getShards();
        return new ProgressReporter.Reading(
                kind + (operation.getCheckpointId() == 0 ? "" : " " + operation.getCheckpointId()),
                operation.getPhase(),
                operation.getRowsDone(),
                operation.getRowsTotal(),
                operation.getBytesDone(),
                operation.getBytesTotal(),
                operation.getDone() || operation.getFailed(),
                operation.getFailed() ? (extra.isEmpty() ? "" : extra + "; ") + operation.getError() : extra);
    }

    static String describe(final CheckpointInfo info) {
        return String.format(
                "#%d %s  %d files, %d rows, %d bytes, tables %s  (%s)",
                info.getId(),
                Instant.ofEpochMilli(info.getCreatedMillis()),
                info.getFiles(),
                info.getRows(),
                info.getBytes(),
                info.getTablesList(),
                info.getUri());
    }

    /** 45s, 12m 5s, 3h 2m, 4d 7h. */
    static String age(final Duration age) {
        final long seconds = Math.max(0, age.getSeconds());
        if (seconds < 60) {
            return seconds + "s";
        }
        if (seconds < 3600) {
            return seconds / 60 + "m " + seconds % 60 + "s";
        }
        if (seconds < 86_400) {
            return seconds / 3600 + "h " + seconds % 3600 / 60 + "m";
        }
        return seconds / 86_400 + "d " + seconds % 86_400 / 3600 + "h";
    }

    /** 812 B, 4.0 KiB, 1.5 MiB, 2.3 GiB. */
    static String size(final long bytes) {
        if (bytes < 1024) {
            return bytes + " B";
        }
        final String[] units = {"KiB", "MiB", "GiB", "TiB", "PiB"};
        double value = bytes;
        int unit = -1;
        while (value >= 1024 && unit < units.length - 1) {
            value /= 1024;
            unit++;
        }
        return String.format(Locale.ROOT, "%.1f %s", value, units[unit]);
    }

    /** Uncompressed over stored bytes, e.g. {@code 2.7x}; {@code -} when the manifest does not say (format 1). */
    private static String ratio(final Manifest manifest) {
        final long raw = manifest.totalUncompressedBytes();
        return raw == 0 || manifest.totalBytes() == 0
                ? "-"
                : String.format(Locale.ROOT, "%.2fx", (double) raw / manifest.totalBytes());
    }
}
