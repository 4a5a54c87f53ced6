package io.pscluster.cli;

import io.pscluster.checkpoint.HadoopConfig;
import java.io.IOException;
import java.nio.file.Path;
import org.apache.hadoop.conf.Configuration;
import picocli.CommandLine.Option;

/**
 * The options every command that touches the checkpoint filesystem shares, as with every Hadoop tool: where the
 * cluster's site files are, and the Kerberos identity to log in with.
 */
final class HadoopOptions {
    /** Hadoop's switch for closing cached filesystems in its own shutdown hook. */
    static final String AUTOMATIC_CLOSE = "fs.automatic.close";

    @Option(
            names = "--hadoop-conf",
            paramLabel = "DIR",
            description = "Directory with core-site.xml / hdfs-site.xml (HA nameservices, replication, block size,"
                    + " security). Default: $HADOOP_CONF_DIR, else Hadoop's built-in defaults.")
    Path confDir;

    @Option(
            names = "--kerberos-principal",
            paramLabel = "PRINCIPAL",
            description = "Log in to Kerberos as this principal (with --kerberos-keytab) before touching HDFS.")
    String principal;

    @Option(
            names = "--kerberos-keytab",
            paramLabel = "FILE",
            description = "The keytab holding --kerberos-principal's key.")
    String keytab;

    /** The configuration to use, after logging in if a principal is given. */
    Configuration configuration() throws IOException {
        final Configuration conf = HadoopConfig.load(confDir, System.getenv());
        HadoopConfig.login(conf, principal, keytab);
        return conf;
    }

    /**
     * {@link #configuration()} for a process that stops on SIGTERM (proxy, shard, local cluster): its filesystems are
     * not closed by Hadoop's own shutdown hook ({@value #AUTOMATIC_CLOSE} false), which runs beside the process's hook
     * and closed them under it: a stopping proxy could not delete its claim on an HDFS root, and a draining shard
     * writes its rows into the drain's checkpoint while it stops. Every file is closed by the code that wrote it.
     */
    Configuration serverConfiguration() throws IOException {
        final Configuration conf = configuration();
        conf.setBoolean(AUTOMATIC_CLOSE, false);
        return conf;
    }
}
