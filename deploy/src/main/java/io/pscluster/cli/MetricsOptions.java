package io.pscluster.cli;

import java.io.IOException;
import picocli.CommandLine.Option;

/** {@code --metrics-port}, for the commands that run a server. */
final class MetricsOptions {
    @Option(
            names = "--metrics-port",
            description = "Serve Prometheus metrics at http://HOST:PORT/metrics (this process's, with rollbacks,"
                    + " shards, checkpoints and rows, gRPC calls by method and status, and the JVM's); 0 picks a free"
                    + " port. Default: none.")
    Integer port;

    /** The endpoint, started; null without {@code --metrics-port}. */
    MetricsEndpoint start() throws IOException {
        if (port == null) {
            return null;
        }
        if (port < 0 || port > 65_535) {
            throw new IllegalArgumentException("--metrics-port " + port + " is not a port (0 to 65535)");
        }
        final MetricsEndpoint endpoint = MetricsEndpoint.start(port);
        System.out.println("metrics at http://0.0.0.0:" + endpoint.port() + "/metrics");
        return endpoint;
    }
}
