package io.pscluster.local;

import io.pscluster.server.FaultPoints;
import org.junit.jupiter.api.extension.AfterAllCallback;
import org.junit.jupiter.api.extension.BeforeAllCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

/**
 * Allows fault injection ({@link FaultPoints#ENABLE_PROPERTY}) in the shards and proxies a test class starts in its
 * JVM, for that class only: {@code @ExtendWith(FaultsAllowed.class)}.
 */
public final class FaultsAllowed implements BeforeAllCallback, AfterAllCallback {
    @Override
    public void beforeAll(final ExtensionContext context) {
        System.setProperty(FaultPoints.ENABLE_PROPERTY, "true");
    }

    @Override
    public void afterAll(final ExtensionContext context) {
        System.clearProperty(FaultPoints.ENABLE_PROPERTY);
    }
}
