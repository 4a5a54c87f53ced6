package io.pscluster.bench;

/** Entry point of {@code psbench.jar}, which {@code deploy/bin/psctl bench} runs. */
public final class BenchMain {
    private BenchMain() {}

    public static void main(final String[] args) {
        System.exit(BenchCommand.newCommandLine().execute(args));
    }
}
