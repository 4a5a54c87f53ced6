package io.pscluster.checkpoint;

/**
 * Closing a stream after a write to it failed. HDFS's output stream keeps its failure and throws the same exception
 * again from {@code close()}: in a try-with-resources the close's exception is then the body's, {@code
 * addSuppressed} of itself throws {@code IllegalArgumentException("Self-suppression not permitted")}, and that replaces
 * the I/O failure (a NameNode restart mid checkpoint was reported as INVALID_ARGUMENT). Write such blocks as
 * {@code try { ... } catch (Throwable t) { Closing.closeAfter(t, out); throw t; } out.close();}.
 */
public final class Closing {
    private Closing() {}

    /** Closes {@code closeable}; what its close throws is added to {@code failure} unless it is {@code failure}. */
    public static void closeAfter(final Throwable failure, final AutoCloseable closeable) {
        try {
            closeable.close();
        } catch (Exception | Error closeFailure) {
            if (closeFailure instanceof InterruptedException) {
                Thread.currentThread().interrupt();
            }
            if (closeFailure != failure) {
                failure.addSuppressed(closeFailure);
            }
        }
    }
}
