package io.pscluster.cli;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import org.junit.jupiter.api.Test;
import picocli.CommandLine;

/** {@code psctl proxy}'s options turned into the proxy's settings, without starting a proxy. */
class ProxyCommandTest {
    @Test
    void shouldRefuseACheckpointAgeWithoutAUnitNamingTheOptionAndUnits() {
        assertThatThrownBy(() -> proxy("--max-checkpoint-age", "7").context())
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessage("--max-checkpoint-age=7 needs a unit: e.g. 7d, 7h, 7m or 7s (0: no limit)");
    }

    @Test
    void shouldTakeACheckpointAgeWithAUnitOrZero() throws Exception {
        assertThat(proxy("--max-checkpoint-age", "0").context()).isNotNull();
        assertThat(proxy("--max-checkpoint-age", "7d").context()).isNotNull();
        assertThat(Cli.durationWithUnit("--max-checkpoint-age", "30s")).hasSeconds(30);
        // Other durations keep a bare number as seconds.
        assertThat(proxy("--checkpoint-stall-timeout", "120").context()).isNotNull();
        assertThat(Cli.duration("--checkpoint-stall-timeout", "120")).hasSeconds(120);
    }

    /**
     * A checkpoint root as psctl prints one ({@code file:/abs}, Hadoop's form) is that root, not a relative path named
     * {@code file:} (a hostile review's proxy started an empty cluster under {@code ./file:/...}).
     */
    @Test
    void shouldTakeEveryFormOfALocalRootForTheSameDirectory() {
        final String absolute = java.nio.file.Path.of("/tmp/ps-root").toUri().toString();
        assertThat(Cli.checkpointUri("file:/tmp/ps-root")).isEqualTo("file:/tmp/ps-root");
        assertThat(new org.apache.hadoop.fs.Path(Cli.checkpointUri("file:/tmp/ps-root"))
                        .toUri()
                        .getPath())
                .isEqualTo(new org.apache.hadoop.fs.Path(absolute).toUri().getPath())
                .isEqualTo(new org.apache.hadoop.fs.Path(Cli.checkpointUri("/tmp/ps-root"))
                        .toUri()
                        .getPath())
                .isEqualTo(new org.apache.hadoop.fs.Path(Cli.checkpointUri("file:///tmp/ps-root"))
                        .toUri()
                        .getPath())
                .isEqualTo("/tmp/ps-root");
        assertThat(Cli.checkpointUri("hdfs://nn:8020/ps")).isEqualTo("hdfs://nn:8020/ps");
    }

    @Test
    void shouldTakeAReadCacheSizeAndRefuseOneThatIsNot() throws Exception {
        assertThat(proxy("--read-cache", "1g").context()).isNotNull();
        assertThat(proxy("--read-cache", "0").context()).isNotNull();
        assertThatThrownBy(() -> proxy("--read-cache", "lots").context())
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("--read-cache=lots");
    }

    private static ProxyCommand proxy(final String... options) {
        final ProxyCommand command = new ProxyCommand();
        final String[] args = new String[options.length + 2];
        args[0] = "--checkpoint-dir";
        args[1] = "/nowhere";
        System.arraycopy(options, 0, args, 2, options.length);
        new CommandLine(command).parseArgs(args);
        return command;
    }
}
