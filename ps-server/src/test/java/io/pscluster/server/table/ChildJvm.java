package io.pscluster.server.table;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * A test's own class in a JVM of its own, for what a JVM holds once (its off-heap budget comes from its
 * {@code -XX:MaxDirectMemorySize}) or must not share with the test's (a heap smaller than the data): the test's class
 * path, Agrona's export, the serial collector, and the options given.
 */
public final class ChildJvm {
    /** What the child printed (stdout and stderr) and how it exited. */
    public record Run(String output, int exitValue) {
        /** The words after {@code RESULT } on the first line that starts so; fails with the whole output if none. */
        public String[] result() {
            final String line = output.lines()
                    .filter(candidate -> candidate.startsWith("RESULT "))
                    .findFirst()
                    .orElseThrow(() -> new AssertionError("child printed no result:\n" + output));
            return line.substring("RESULT ".length()).split(" ");
        }

        /** Every {@code RESULT name=value} line, by name (a later line of a name wins). */
        public java.util.Map<String, String> results() {
            final java.util.Map<String, String> results = new java.util.HashMap<>();
            output.lines().filter(line -> line.startsWith("RESULT ")).forEach(line -> {
                final int at = line.indexOf('=');
                results.put(line.substring("RESULT ".length(), at), line.substring(at + 1));
            });
            return results;
        }
    }

    private ChildJvm() {}

    /** Runs {@code main}'s {@code main(args)} with {@code options}; waits for it to exit, at most {@code timeout} s. */
    public static Run run(
            final Class<?> main, final List<String> options, final long timeoutSeconds, final String... args)
            throws IOException, InterruptedException {
        final List<String> command = new ArrayList<>();
        command.add(System.getProperty("java.home") + File.separator + "bin" + File.separator + "java");
        command.add("-XX:+UseSerialGC");
        command.addAll(options);
        command.addAll(List.of(
                "--add-exports",
                "java.base/jdk.internal.misc=ALL-UNNAMED",
                "-cp",
                System.getProperty("java.class.path"),
                main.getName()));
        command.addAll(List.of(args));
        final Process child =
                new ProcessBuilder(command).redirectErrorStream(true).start();
        final String output = new String(child.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertThat(child.waitFor(timeoutSeconds, TimeUnit.SECONDS))
                .as("the child exited:\n%s", output)
                .isTrue();
        return new Run(output, child.exitValue());
    }
}
