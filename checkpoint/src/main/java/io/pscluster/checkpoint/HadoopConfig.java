package io.pscluster.checkpoint;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.security.UserGroupInformation;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The Hadoop configuration of a PSCluster process, found the way every Hadoop tool finds it: {@code core-site.xml} and
 * {@code hdfs-site.xml} from the directory given with {@code --hadoop-conf}, else from {@code $HADOOP_CONF_DIR}
 * (which {@code java -jar} would otherwise ignore: Hadoop reads only what is on the classpath), over Hadoop's
 * defaults. That is where a cluster's HA nameservices, replication, block size and security settings come from.
 *
 * <p>Kerberos: with a principal and keytab, the process logs in from the keytab before it touches the filesystem,
 * with automatic renewal of the ticket for long-running processes.
 */
public final class HadoopConfig {
    private static final Logger LOG = LoggerFactory.getLogger(HadoopConfig.class);

    public static final String CONF_DIR_ENV = "HADOOP_CONF_DIR";
    static final List<String> SITE_FILES = List.of("core-site.xml", "hdfs-site.xml");

    private HadoopConfig() {}

    /**
     * Hadoop's defaults plus the site files of {@code confDir}, or of {@code env}'s {@code HADOOP_CONF_DIR} if
     * {@code confDir} is null; just the defaults if neither is set.
     *
     * @throws IllegalArgumentException if the directory does not exist or holds neither site file; the message names
     *     the option (or variable) and the path.
     */
    public static Configuration load(Path confDir, Map<String, String> env) {
        String origin = "--hadoop-conf";
        Path dir = confDir;
        if (dir == null) {
            String fromEnv = env.get(CONF_DIR_ENV);
            if (fromEnv == null || fromEnv.isBlank()) {
                return new Configuration();
            }
            origin = CONF_DIR_ENV;
            dir = Path.of(fromEnv);
        }
        if (!Files.isDirectory(dir)) {
            throw new IllegalArgumentException(origin + "=" + dir + " is not a directory");
        }
        Configuration conf = new Configuration();
        List<Path> added = new ArrayList<>();
        for (String name : SITE_FILES) {
            Path site = dir.resolve(name);
            if (Files.isRegularFile(site)) {
                conf.addResource(new org.apache.hadoop.fs.Path(site.toUri()));
                added.add(site);
            }
        }
        if (added.isEmpty()) {
            throw new IllegalArgumentException(
                    origin + "=" + dir + " holds neither " + String.join(" nor ", SITE_FILES));
        }
        LOG.info("Hadoop configuration from {} ({})", added, origin);
        return conf;
    }

    /**
     * Logs this process in to Kerberos from a keytab, if a principal is given: sets
     * {@code hadoop.security.authentication=kerberos} and ticket renewal on {@code conf}, then calls
     * {@link UserGroupInformation#loginUserFromKeytab}. Does nothing if both are null or blank.
     *
     * @throws IllegalArgumentException if only one of the two is given, or the keytab is not a readable file.
     * @throws IOException if the login fails (the message names the principal and keytab).
     */
    public static void login(Configuration conf, String principal, String keytab) throws IOException {
        boolean hasPrincipal = principal != null && !principal.isBlank();
        boolean hasKeytab = keytab != null && !keytab.isBlank();
        if (!hasPrincipal && !hasKeytab) {
            return;
        }
        if (!hasPrincipal || !hasKeytab) {
            throw new IllegalArgumentException("--kerberos-principal and --kerberos-keytab go together, but only "
                    + (hasPrincipal ? "--kerberos-principal=" + principal : "--kerberos-keytab=" + keytab)
                    + " is given");
        }
        Path keytabFile = Path.of(keytab);
        if (!Files.isRegularFile(keytabFile) || !Files.isReadable(keytabFile)) {
            throw new IllegalArgumentException("--kerberos-keytab=" + keytab + " is not a readable file");
        }
        conf.set("hadoop.security.authentication", "kerberos");
        conf.setBoolean("hadoop.kerberos.keytab.login.autorenewal.enabled", true);
        try {
            UserGroupInformation.setConfiguration(conf);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(
                    "--kerberos-principal=" + principal + ": Kerberos is not configured on" + " this host ("
                            + e.getMessage() + "): give /etc/krb5.conf or -Djava.security.krb5.conf=FILE",
                    e);
        }
        UserGroupInformation.loginUserFromKeytab(
                principal, keytabFile.toAbsolutePath().toString());
        LOG.info("Logged in to Kerberos as {} from {}", principal, keytabFile);
    }
}
