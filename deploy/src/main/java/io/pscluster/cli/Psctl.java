package io.pscluster.cli;

import io.pscluster.wire.NettyTuning;
import java.io.PrintWriter;
import picocli.CommandLine;
import picocli.CommandLine.Command;

/** {@code psctl}: the one command-line tool for operators. */
@Command(
        name = "psctl",
        mixinStandardHelpOptions = true,
        version = "psctl 0.1.0",
        description = "PSCluster: run and operate a parameter-server cluster.",
        subcommands = {
            ProxyCommand.class,
            ShardCommand.class,
            LocalCommand.class,
            TrainExampleCommand.class,
            DemoCommand.class,
            CheckpointCommand.class,
            StatusCommand.class,
            PullCommand.class,
            CommandLine.HelpCommand.class
        })
public final class Psctl implements Runnable {
    @CommandLine.Spec
    private CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        spec.commandLine().usage(System.out);
    }

    public static void main(final String[] args) {
        NettyTuning.applyDefaults();
        System.exit(run(args));
    }

    /** Runs psctl and returns its exit code (for tests). */
    public static int run(final String... args) {
        return commandLine().execute(args);
    }

    /** Runs psctl with its output and errors going to {@code out} and {@code err}; returns its exit code. */
    public static int run(final PrintWriter out, final PrintWriter err, final String... args) {
        return commandLine().setOut(out).setErr(err).execute(args);
    }

    private static CommandLine commandLine() {
        return new CommandLine(new Psctl()).setExecutionExceptionHandler((failure, commandLine, parseResult) -> {
            commandLine.getErr().println(commandLine.getCommandSpec().qualifiedName() + ": " + describe(failure));
            return 1;
        });
    }

    private static String describe(final Throwable failure) {
        if (failure instanceof io.grpc.StatusRuntimeException status) {
            // "io exception" alone names nothing: the cause says what (connection refused, unknown host, a TLS
            // handshake's reason).
            final String description = status.getStatus().getDescription();
            final String cause = io.pscluster.wire.PsException.causeOf(status.getStatus());
            // The SDK's errors carry it already.
            return status.getStatus().getCode() + ": " + description
                    + (description != null && description.endsWith(cause) ? "" : cause);
        }
        return failure.getMessage() == null ? failure.toString() : failure.getMessage();
    }
}
