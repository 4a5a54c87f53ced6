package io.pscluster.cli;

import java.io.PrintWriter;
import java.io.StringWriter;

/** One run of psctl in the test's JVM: its exit code and what it printed to each stream. */
public record PsctlRun(int exit, String out, String err) {
    /** Runs psctl with {@code args}, as the command line would. */
    public static PsctlRun psctl(final String... args) {
        final StringWriter out = new StringWriter();
        final StringWriter err = new StringWriter();
        final int exit = Psctl.run(new PrintWriter(out, true), new PrintWriter(err, true), args);
        return new PsctlRun(exit, out.toString(), err.toString());
    }

    /** Exit code and both streams, for assertion messages. */
    public String text() {
        return "exit " + exit + "\n" + out + err;
    }
}
