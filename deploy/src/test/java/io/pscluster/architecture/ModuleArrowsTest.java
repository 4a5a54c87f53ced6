package io.pscluster.architecture;

import static com.tngtech.archunit.lang.syntax.ArchRuleDefinition.noClasses;
import static org.assertj.core.api.Assertions.assertThat;

import com.tngtech.archunit.core.domain.JavaClasses;
import com.tngtech.archunit.core.importer.ClassFileImporter;
import com.tngtech.archunit.core.importer.ImportOption;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The module arrows of DESIGN.md, checked on the compiled classes of every module (this test's module depends on
 * all of them): the SDK sees only the protocol, the server and proxy never see each other, the checkpoint format
 * knows nothing of gRPC or the protocol (only its own manifest message, {@code io.pscluster.proto.checkpoint}).
 */
class ModuleArrowsTest {
    private static JavaClasses classes;

    @BeforeAll
    static void importClasses() {
        classes = new ClassFileImporter()
                .withImportOption(ImportOption.Predefined.DO_NOT_INCLUDE_TESTS)
                .importPackages("io.pscluster");
        // The rules below are only as good as the import: every module's classes must be in it.
        assertThat(classes.contain("io.pscluster.worker.PsTable")).isTrue();
        assertThat(classes.contain("io.pscluster.server.Shard")).isTrue();
        assertThat(classes.contain("io.pscluster.proxy.ClusterState")).isTrue();
        assertThat(classes.contain("io.pscluster.checkpoint.CheckpointStore")).isTrue();
        assertThat(classes.contain("io.pscluster.wire.Slots")).isTrue();
    }

    @Test
    void shouldKeepTheWorkerSdkOnTheProtocolOnly() {
        noClasses()
                .that()
                .resideInAPackage("io.pscluster.worker..")
                .should()
                .dependOnClassesThat()
                .resideInAnyPackage(
                        "io.pscluster.server..",
                        "io.pscluster.proxy..",
                        "io.pscluster.checkpoint..",
                        "io.pscluster.cli..",
                        "io.pscluster.local..",
                        "io.pscluster.example..",
                        "org.apache.hadoop..")
                .because("a training job must not pull in Hadoop or the server")
                .check(classes);
    }

    @Test
    void shouldKeepServerAndProxyApart() {
        noClasses()
                .that()
                .resideInAPackage("io.pscluster.server..")
                .should()
                .dependOnClassesThat()
                .resideInAnyPackage(
                        "io.pscluster.proxy..",
                        "io.pscluster.worker..",
                        "io.pscluster.cli..",
                        "io.pscluster.local..",
                        "io.pscluster.example..")
                .check(classes);
        noClasses()
                .that()
                .resideInAPackage("io.pscluster.proxy..")
                .should()
                .dependOnClassesThat()
                .resideInAnyPackage(
                        "io.pscluster.server..",
                        "io.pscluster.worker..",
                        "io.pscluster.cli..",
                        "io.pscluster.local..",
                        "io.pscluster.example..")
                .check(classes);
    }

    @Test
    void shouldKeepCheckpointsFreeOfGrpcAndTheProtocol() {
        noClasses()
                .that()
                .resideInAPackage("io.pscluster.checkpoint..")
                .should()
                .dependOnClassesThat()
                .resideInAnyPackage(
                        "io.grpc..",
                        "io.pscluster.proto.v1..",
                        "io.pscluster.wire..",
                        "io.pscluster.server..",
                        "io.pscluster.proxy..",
                        "io.pscluster.worker..")
                .check(classes);
    }

    @Test
    void shouldKeepTheProtocolModuleAtTheBottom() {
        noClasses()
                .that()
                .resideInAnyPackage("io.pscluster.proto..", "io.pscluster.wire..")
                .should()
                .dependOnClassesThat()
                .resideInAnyPackage(
                        "io.pscluster.checkpoint..",
                        "io.pscluster.server..",
                        "io.pscluster.proxy..",
                        "io.pscluster.worker..",
                        "org.apache.hadoop..")
                .check(classes);
    }
}
