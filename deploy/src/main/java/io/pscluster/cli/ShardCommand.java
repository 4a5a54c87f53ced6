package io.pscluster.cli;

import io.pscluster.server.ShardServer;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

@Command(name = "shard", mixinStandardHelpOptions = true, description = "Run a PS shard until stopped.")
final class ShardCommand implements Callable<Integer> {
    @Option(names = "--proxy", required = true, description = "The proxy's HOST:PORT.")
    String proxy;

    @Option(names = "--port", defaultValue = "0", description = "Port to serve on; 0 (default) picks a free one.")
    int port;

    @Option(
            names = "--host",
            defaultValue = "127.0.0.1",
            description = "Host name clients use to reach this shard (default ${DEFAULT-VALUE}).")
    String host;

    @Option(
            names = "--id",
            defaultValue = "",
            description = "Stable shard id; a shard restarted with its id takes its slots back. Default: assigned.")
    String id;

    @Override
    public Integer call() throws Exception {
        final ShardServer shard = ShardServer.start(new ShardServer.Context()
                .proxyAddress(Cli.hostPort("--proxy", proxy))
                .port(port)
                .host(host)
                .shardId(id));
        System.out.println("shard " + shard.shardId() + " serving at " + shard.address());
        Cli.runUntilStopped(shard);
        return 0;
    }
}
