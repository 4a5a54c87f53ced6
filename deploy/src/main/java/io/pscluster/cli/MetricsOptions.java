package io.pscluster.cli;

import io.micrometer.core.instrument.MeterRegistry;
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

    /** A server started with the registry its metrics go to (null: none). */
    @FunctionalInterface
    interface Server<T> {
        T start(MeterRegistry registry) throws Exception;
    }

    /**
     * Starts the endpoint (none without {@code --metrics-port}), then {@code server} with its registry; the endpoint is
     * closed again when the server does not start.
     */
    <T> T serve(final Server<T> server) throws Exception {
        final MetricsEndpoint endpoint = start();
        try {
            return server.start(endpoint == null ? null : endpoint.registry());
        } catch (Exception e) {
            if (endpoint != null) {
                endpoint.close();
            }
            throw e;
        }
    }

    /** The endpoint, started; null without {@code --metrics-port}. */
    private MetricsEndpoint start() throws IOException {
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
