package io.pscluster.cli;

import io.grpc.ManagedChannel;
import io.pscluster.proto.v1.ProxyDataServiceGrpc;
import io.pscluster.proto.v1.ProxyPullRequest;
import io.pscluster.proto.v1.ProxyPullResponse;
import io.pscluster.wire.LittleEndian;
import java.io.PrintWriter;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/** Reads rows through the proxy, as a thin client does: what the model holds for some keys, now. */
@Command(
        name = "pull",
        mixinStandardHelpOptions = true,
        description = {
            "Print the rows of some keys of a table, read through the proxy (its read cache serves rows no older than"
                    + " --max-staleness-ms; the others come from their shards). One line per key: the key, then its"
                    + " values."
        })
final class PullCommand implements Callable<Integer> {
    @Option(names = "--proxy", required = true, description = "The proxy's HOST:PORT.")
    String proxy;

    @Mixin
    SecurityOptions security;

    @Option(names = "--table", required = true, description = "The table.")
    String table;

    @Option(names = "--keys", required = true, split = ",", description = "The keys, comma-separated (e.g. 3,17,42).")
    List<Long> keys;

    @Option(
            names = "--max-staleness-ms",
            defaultValue = "0",
            description = "How old a row from the proxy's read cache may be; 0 (default): read every row from its"
                    + " shard.")
    long maxStalenessMs;

    @Option(
            names = "--timeout-s",
            defaultValue = "30",
            description = "How long to wait (default ${DEFAULT-VALUE} s), e.g. while slots are restored.")
    long timeoutSeconds;

    @Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() {
        final long[] wanted = keys.stream().mapToLong(Long::longValue).toArray();
        final ManagedChannel channel = security.channel(Cli.hostPort("--proxy", proxy));
        try {
            final ProxyPullResponse response = ProxyDataServiceGrpc.newBlockingStub(channel)
                    .withDeadlineAfter(timeoutSeconds, TimeUnit.SECONDS)
                    .pull(ProxyPullRequest.newBuilder()
                            .setTable(table)
                            .setKeys(LittleEndian.encodeLongs(wanted))
                            .setMaxStalenessMillis(maxStalenessMs)
                            .build());
            final float[] values = LittleEndian.decodeFloats(response.getValues(), "values");
            final int dim = response.getDim();
            final PrintWriter out = spec.commandLine().getOut();
            for (int i = 0; i < wanted.length; i++) {
                final StringBuilder line = new StringBuilder(Long.toString(wanted[i]));
                for (int d = 0; d < dim; d++) {
                    line.append(' ').append(values[i * dim + d]);
                }
                out.println(line);
            }
            if (response.getCachedRows() > 0) {
                spec.commandLine()
                        .getErr()
                        .println(response.getCachedRows() + " of " + wanted.length
                                + " rows from the proxy's read cache");
            }
            return 0;
        } finally {
            Cli.close(channel);
        }
    }
}
