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
            // "io exception" alone names nothing: the cause says what (connection refused, unknown host, ...).
            // A TLS failure's own message ("General OpenSslEngine problem") hides the reason, deepest in the chain
            // (a certificate path that does not lead to the trusted CA, a host name the certificate does not name).
            final Throwable cause = status.getStatus().getCause();
            Throwable root = cause;
            while (root != null && root.getCause() != null && root.getCause() != root) {
                root = root.getCause();
            }
            return status.getStatus().getCode() + ": " + status.getStatus().getDescription()
                    + (cause == null ? "" : " (" + cause.getMessage() + ")")
                    + (root == null || root == cause ? "" : ", because: " + root);
        }
        return failure.getMessage() == null ? failure.toString() : failure.getMessage();
    }
}
