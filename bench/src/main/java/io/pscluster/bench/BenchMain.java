package io.pscluster.bench;

import io.pscluster.wire.NettyTuning;

/** Entry point of {@code psbench.jar}, which {@code deploy/bin/psctl bench} runs. */
public final class BenchMain {
    private BenchMain() {}

    public static void main(final String[] args) {
        // Both sides of every comparison share this JVM, so the raw baseline gets the same Netty settings.
        NettyTuning.applyDefaults();
        System.exit(BenchCommand.newCommandLine().execute(args));
    }
}
