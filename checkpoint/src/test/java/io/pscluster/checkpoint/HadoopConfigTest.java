package io.pscluster.checkpoint;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.security.UserGroupInformation;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class HadoopConfigTest {
    @TempDir
    Path tmp;

    @AfterEach
    void resetLogin() {
        System.clearProperty("java.security.krb5.realm");
        System.clearProperty("java.security.krb5.kdc");
        // UserGroupInformation is JVM-wide: later tests (MiniDFSCluster) must find simple authentication again.
        UserGroupInformation.reset();
        UserGroupInformation.setConfiguration(new Configuration());
    }

    @Test
    void shouldReadSiteFilesFromTheGivenDirectoryBeforeTheEnvironmentOnes() throws IOException {
        Path explicit = confDir("explicit", "hdfs://nameservice1", "2");
        Path fromEnv = confDir("env", "hdfs://other:8020", "3");
        Map<String, String> env = Map.of(HadoopConfig.CONF_DIR_ENV, fromEnv.toString());

        Configuration withOption = HadoopConfig.load(explicit, env);
        Configuration withEnv = HadoopConfig.load(null, env);
        Configuration plain = HadoopConfig.load(null, Map.of());

        assertThat(withOption.get("fs.defaultFS")).isEqualTo("hdfs://nameservice1");
        assertThat(withOption.getInt("dfs.replication", 0)).isEqualTo(2);
        assertThat(withEnv.get("fs.defaultFS")).isEqualTo("hdfs://other:8020");
        assertThat(withEnv.getInt("dfs.replication", 0)).isEqualTo(3);
        assertThat(plain.get("fs.defaultFS")).isEqualTo("file:///");
    }

    @Test
    void shouldNameTheOptionOrVariableWhenTheDirectoryIsUnusable() throws IOException {
        Path empty = Files.createDirectory(tmp.resolve("empty"));

        assertThatThrownBy(() -> HadoopConfig.load(tmp.resolve("nope"), Map.of()))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessage("--hadoop-conf=" + tmp.resolve("nope") + " is not a directory");
        assertThatThrownBy(() -> HadoopConfig.load(null, Map.of(HadoopConfig.CONF_DIR_ENV, empty.toString())))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessage("HADOOP_CONF_DIR=" + empty + " holds neither core-site.xml nor hdfs-site.xml");
    }

    @Test
    void shouldRefuseHalfAKerberosLoginAndAnUnreadableKeytab() throws IOException {
        Configuration conf = new Configuration();
        HadoopConfig.login(conf, null, " "); // neither: nothing to do

        assertThatThrownBy(() -> HadoopConfig.login(conf, "ps/host@EXAMPLE.COM", null))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("only --kerberos-principal=ps/host@EXAMPLE.COM is given");
        assertThatThrownBy(() -> HadoopConfig.login(conf, "ps/host@EXAMPLE.COM", tmp + "/missing.keytab"))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessage("--kerberos-keytab=" + tmp + "/missing.keytab is not a readable file");
        assertThat(conf.get("hadoop.security.authentication")).isEqualTo("simple");
    }

    @Test
    void shouldSwitchToKerberosAndAskHadoopToLogInFromTheKeytabWhenBothAreGiven() throws IOException {
        // No KDC here: the login is attempted for real and fails inside Hadoop's Kerberos module, which proves that
        // the principal and keytab reached UserGroupInformation.loginUserFromKeytab.
        Path keytab = Files.write(tmp.resolve("ps.keytab"), new byte[] {5, 2, 0, 0});
        Configuration conf = new Configuration();
        // Without a realm Hadoop stops before the login; with this one it tries and finds no key for the principal.
        System.setProperty("java.security.krb5.realm", "EXAMPLE.COM");
        System.setProperty("java.security.krb5.kdc", "localhost:1");

        assertThatThrownBy(() -> HadoopConfig.login(conf, "ps/host@EXAMPLE.COM", keytab.toString()))
                .isInstanceOf(IOException.class)
                .hasMessageContaining("ps/host@EXAMPLE.COM")
                .hasMessageContaining(keytab.toString());
        assertThat(conf.get("hadoop.security.authentication")).isEqualTo("kerberos");
        assertThat(UserGroupInformation.isSecurityEnabled()).isTrue();
    }

    private Path confDir(String name, String defaultFs, String replication) throws IOException {
        Path dir = Files.createDirectory(tmp.resolve(name));
        Files.writeString(dir.resolve("core-site.xml"), site("fs.defaultFS", defaultFs));
        Files.writeString(dir.resolve("hdfs-site.xml"), site("dfs.replication", replication));
        return dir;
    }

    private static String site(String key, String value) {
        return "<?xml version=\"1.0\"?>\n<configuration>\n  <property><name>" + key + "</name><value>" + value
                + "</value></property>\n</configuration>\n";
    }
}
