package io.pscluster.cli;

import ch.qos.logback.classic.Level;
import io.grpc.Grpc;
import io.grpc.ManagedChannel;
import io.pscluster.wire.Security;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.slf4j.LoggerFactory;

/** What several subcommands share: address and URI parsing, an admin channel, waiting for Ctrl-C. */
final class Cli {
    /**
     * A URI with a scheme: {@code hdfs://nn/x}, {@code file:///x}, also {@code file:/x} (as Hadoop prints local paths).
     * Two letters at least, so that a Windows drive ({@code C:/x}) stays a path.
     */
    private static final Pattern SCHEME = Pattern.compile("^[a-zA-Z][a-zA-Z0-9+.-]+:/.*");

    private Cli() {}

    /** A checkpoint location as a Hadoop URI: a URI with a scheme as given, a plain path as file:// absolute. */
    static String checkpointUri(final String location) {
        if (SCHEME.matcher(location).matches()) {
            return location;
        }
        return Path.of(location).toAbsolutePath().normalize().toUri().toString();
    }

    private static final Pattern DURATION = Pattern.compile("(\\d+)([smhd]?)");
    private static final Pattern SIZE = Pattern.compile("(\\d+)([kmgt]?)(i?b)?", Pattern.CASE_INSENSITIVE);

    /**
     * A duration such as {@code 90s}, {@code 30m}, {@code 12h} or {@code 7d} (a bare number is seconds); {@code 0} is
     * zero.
     *
     * @throws IllegalArgumentException naming the option and the value.
     */
    static Duration duration(final String option, final String value) {
        final Matcher matcher = DURATION.matcher(value.trim());
        if (!matcher.matches()) {
            throw new IllegalArgumentException(
                    option + "=" + value + " must be a number with s, m, h or d (seconds, minutes, hours, days)");
        }
        final long amount = Long.parseLong(matcher.group(1));
        return switch (matcher.group(2)) {
            case "m" -> Duration.ofMinutes(amount);
            case "h" -> Duration.ofHours(amount);
            case "d" -> Duration.ofDays(amount);
            default -> Duration.ofSeconds(amount);
        };
    }

    /**
     * As {@link #duration}, but a bare number other than 0 is refused: for an option where seconds are never meant
     * (a checkpoint age of {@code 7} is not seven seconds; read as such, retention deleted every checkpoint but the
     * newest).
     *
     * @throws IllegalArgumentException naming the option and the value, and suggesting units.
     */
    static Duration durationWithUnit(final String option, final String value) {
        final Matcher matcher = DURATION.matcher(value.trim());
        if (matcher.matches() && matcher.group(2).isEmpty() && Long.parseLong(matcher.group(1)) != 0) {
            throw new IllegalArgumentException(option + "=" + value + " needs a unit: e.g. " + value.trim() + "d, "
                    + value.trim() + "h, " + value.trim() + "m or " + value.trim() + "s (0: no limit)");
        }
        return duration(option, value);
    }

    /**
     * A byte count such as {@code 134217728}, {@code 128m} or {@code 1GiB} (k, m, g, t are powers of 1024).
     *
     * @throws IllegalArgumentException naming the option and the value.
     */
    static long bytes(final String option, final String value) {
        final Matcher matcher = SIZE.matcher(value.trim());
        if (!matcher.matches()) {
            throw new IllegalArgumentException(option + "=" + value + " must be bytes, or a number with k, m, g or t");
        }
        final int shift = switch (matcher.group(2).toLowerCase(java.util.Locale.ROOT)) {
            case "k" -> 10;
            case "m" -> 20;
            case "g" -> 30;
            case "t" -> 40;
            default -> 0;
        };
        return Long.parseLong(matcher.group(1)) << shift;
    }

    /** Checks a host:port argument and names the option when it is malformed. */
    static String hostPort(final String option, final String value) {
        final int colon = value.lastIndexOf(':');
        if (colon <= 0 || colon == value.length() - 1) {
            throw new IllegalArgumentException(option + "=" + value + " must be HOST:PORT");
        }
        try {
            final int port = Integer.parseInt(value.substring(colon + 1));
            if (port < 1 || port > 65535) {
                throw new IllegalArgumentException(option + "=" + value + ": port must be in 1..65535");
            }
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(option + "=" + value + ": port is not a number");
        }
        return value;
    }

    static ManagedChannel channel(final String address) {
        return channel(address, Security.NONE);
    }

    /** A channel to {@code address} with TLS and the token {@code security} says. */
    static ManagedChannel channel(final String address, final Security security) {
        return Grpc.newChannelBuilder(address, security.channelCredentials()).build();
    }

    static void close(final ManagedChannel channel) {
        channel.shutdownNow();
        try {
            channel.awaitTermination(5, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /** Blocks until the JVM is asked to stop (Ctrl-C, SIGTERM), then runs {@code shutdown} before exiting. */
    static void runUntilStopped(final AutoCloseable service) throws InterruptedException {
        final CountDownLatch stopped = new CountDownLatch(1);
        final Thread hook = new Thread(() -> {
            try {
                service.close();
            } catch (Exception e) {
                System.err.println("shutdown: " + e);
            } finally {
                stopped.countDown();
            }
        });
        Runtime.getRuntime().addShutdownHook(hook);
        stopped.await();
    }

    /** Sets PSCluster's own log level (commands whose output is a report keep the log to what matters). */
    static void logLevel(final Level level) {
        ((ch.qos.logback.classic.Logger) LoggerFactory.getLogger("io.pscluster")).setLevel(level);
    }
}
