package io.pscluster.cli;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.server.ShardServer;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import picocli.CommandLine;

/**
 * The systemd units and their environment file under {@code deploy/systemd}, read as systemd reads them: each command
 * line, its variables and specifiers expanded, is one psctl accepts (every option exists, every value parses), its JVM
 * options start a JVM, and a shard's stop leaves its drain the time it can take (cut short, a drain is a rollback).
 */
class DeployFilesTest {
    private static final Path DIR = Path.of("systemd");
    private static final Pattern WHOLE = Pattern.compile("\\$\\{(\\w+)}");
    private static final Pattern SPLIT = Pattern.compile("^\\$(\\w+)$");

    @Test
    void shouldStartTheProxyWithOptionsPsctlAccepts() throws Exception {
        final Map<String, String> service = service("pscluster-proxy.service");
        final List<String> psctl = psctlArguments(service);

        final CommandLine.ParseResult parsed = new CommandLine(new Psctl()).parseArgs(psctl.toArray(String[]::new));
        assertThat(parsed.subcommand().commandSpec().name()).isEqualTo("proxy");
        assertThat(psctl)
                .as("a proxy without periodic checkpoints restores a lost shard from nothing newer than an operator's")
                .contains("--checkpoint-interval-s", "--state-dir", "--metrics-port");
        assertThat(service)
                .containsEntry("Restart", "on-failure")
                .containsEntry("KillSignal", "SIGTERM")
                .as("a JVM stopped by SIGTERM exits 143: else every stop leaves the unit failed")
                .containsEntry("SuccessExitStatus", "143");
    }

    @Test
    void shouldStartAShardWithOptionsPsctlAcceptsAndGiveItsDrainTheTimeItTakes() throws Exception {
        final Map<String, String> service = service("pscluster-shard.service");
        final List<String> psctl = psctlArguments(service);

        final CommandLine.ParseResult parsed = new CommandLine(new Psctl()).parseArgs(psctl.toArray(String[]::new));
        assertThat(parsed.subcommand().commandSpec().name()).isEqualTo("shard");
        Cli.hostPort("--proxy", psctl.get(psctl.indexOf("--proxy") + 1));
        assertThat(psctl.get(psctl.indexOf("--id") + 1))
                .as("a stable id, so that a restarted shard takes its slots back")
                .isEqualTo("shard7");
        assertThat(psctl).contains("--metrics-port");
        assertThat(service)
                .containsEntry("Restart", "on-failure")
                .containsEntry("KillSignal", "SIGTERM")
                .as("a JVM stopped by SIGTERM exits 143: else every stop leaves the unit failed")
                .containsEntry("SuccessExitStatus", "143");
        assertThat(TimeUnit.SECONDS.toMillis(seconds(service.get("TimeoutStopSec"))))
                .as("TimeoutStopSec against the longest drained stop")
                .isGreaterThan(new ShardServer.Context().longestStopMs());
    }

    @Test
    void shouldStartAJvmWithEachUnitsJavaOptions() throws Exception {
        for (final String unit : List.of("pscluster-proxy.service", "pscluster-shard.service")) {
            final List<String> command = command(service(unit));
            final List<String> java = new ArrayList<>(command.subList(0, command.indexOf("-jar")));
            java.set(0, ProcessHandle.current().info().command().orElseThrow());
            // The unit's options as they are (a misspelt one fails the start), the heap made small for this test.
            java.addAll(List.of("-Xms16m", "-Xmx64m", "-XX:-AlwaysPreTouch", "-version"));
            final Process process =
                    new ProcessBuilder(java).redirectErrorStream(true).start();
            final String output = new String(process.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            assertThat(process.waitFor()).as("%s: %s\n%s", unit, java, output).isZero();
        }
    }

    /** The unit's ExecStart from {@code /usr/bin/java}'s first argument on, after {@code -jar JAR}. */
    private static List<String> psctlArguments(final Map<String, String> service) throws IOException {
        final List<String> command = command(service);
        assertThat(command.get(0)).isEqualTo("/usr/bin/java");
        final int jar = command.indexOf("-jar");
        assertThat(command.get(jar + 1)).isEqualTo(environment().get("PSCLUSTER_JAR"));
        return command.subList(jar + 2, command.size());
    }

    /**
     * ExecStart as systemd runs it: {@code $NAME} alone is the variable's value split at spaces, {@code ${NAME}} its
     * whole value; {@code %H} the host name, {@code %l} its short form (here shard7.example.com and shard7).
     */
    private static List<String> command(final Map<String, String> service) throws IOException {
        final Map<String, String> env = environment();
        assertThat(service).containsEntry("EnvironmentFile", "/etc/pscluster/pscluster.env");
        final List<String> words = new ArrayList<>();
        for (final String word : service.get("ExecStart").trim().split("\\s+")) {
            final Matcher split = SPLIT.matcher(word);
            if (split.matches()) {
                words.addAll(Arrays.asList(defined(env, split.group(1)).trim().split("\\s+")));
                continue;
            }
            final Matcher whole = WHOLE.matcher(word);
            final StringBuilder expanded = new StringBuilder();
            while (whole.find()) {
                whole.appendReplacement(expanded, Matcher.quoteReplacement(defined(env, whole.group(1))));
            }
            whole.appendTail(expanded);
            words.add(expanded.toString().replace("%H", "shard7.example.com").replace("%l", "shard7"));
        }
        return words;
    }

    private static String defined(final Map<String, String> env, final String name) {
        assertThat(env).as("variables of pscluster.env").containsKey(name);
        return env.get(name);
    }

    private static Map<String, String> environment() throws IOException {
        final Map<String, String> env = new LinkedHashMap<>();
        for (final String line : Files.readAllLines(DIR.resolve("pscluster.env"))) {
            if (line.isBlank() || line.startsWith("#")) {
                continue;
            }
            final int equals = line.indexOf('=');
            assertThat(equals).as("a KEY=VALUE line: %s", line).isPositive();
            env.put(line.substring(0, equals), line.substring(equals + 1));
        }
        return env;
    }

    /** The [Service] section's settings (the last of a repeated key). */
    private static Map<String, String> service(final String unit) throws IOException {
        final Map<String, String> settings = new LinkedHashMap<>();
        String section = "";
        for (final String line : Files.readAllLines(DIR.resolve(unit))) {
            if (line.startsWith("[")) {
                section = line;
            } else if (section.equals("[Service]") && !line.isBlank() && !line.startsWith("#")) {
                final int equals = line.indexOf('=');
                settings.put(line.substring(0, equals), line.substring(equals + 1));
            }
        }
        return settings;
    }

    /** A systemd time span of one unit ("660", "660s", "11min") in seconds. */
    private static long seconds(final String span) {
        final Matcher m = Pattern.compile("(\\d+)(s|min)?").matcher(span.trim());
        assertThat(m.matches()).as("a time span: %s", span).isTrue();
        final long value = Long.parseLong(m.group(1));
        return "min".equals(m.group(2)) ? value * 60 : value;
    }
}
