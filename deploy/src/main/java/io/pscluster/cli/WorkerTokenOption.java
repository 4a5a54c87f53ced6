package io.pscluster.cli;

import java.nio.file.Path;
import picocli.CommandLine.Option;

/** {@code --worker-token-file}, for the commands that run a server (see {@link io.pscluster.wire.Security}). */
final class WorkerTokenOption {
    @Option(
            names = "--worker-token-file",
            paramLabel = "FILE",
            defaultValue = "${env:PSCLUSTER_WORKER_TOKEN_FILE}",
            description = "A file holding a second token this server accepts, with a training job's rights only: push,"
                    + " pull, clocks, routing, creating and listing tables, jobs (anything else is PERMISSION_DENIED)."
                    + " Needs --token-file. Env: PSCLUSTER_WORKER_TOKEN_FILE.")
    Path file;
}
