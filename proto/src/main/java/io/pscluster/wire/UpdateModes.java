package io.pscluster.wire;

import io.pscluster.proto.v1.JobSpec;
import io.pscluster.proto.v1.UpdateMode;

/** The one parser and printer of update modes as operators write them: {@code async}, {@code sync}, {@code ssp:S}. */
public final class UpdateModes {
    private UpdateModes() {}

    /**
     * Sets the mode and staleness of {@code job} from {@code text}. {@code ssp:0} is {@code sync}.
     *
     * @throws IllegalArgumentException naming the text and what is accepted.
     */
    public static JobSpec.Builder parse(final String text, final JobSpec.Builder job) {
        final String value = text.trim().toLowerCase(java.util.Locale.ROOT);
        if (value.equals("async")) {
            return job.setMode(UpdateMode.ASYNC).setStaleness(0);
        }
        if (value.equals("sync")) {
            return job.setMode(UpdateMode.SYNC).setStaleness(0);
        }
        if (value.startsWith("ssp:")) {
            final int staleness;
            try {
                staleness = Integer.parseInt(value.substring(4));
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException(
                        "update mode '" + text + "': the staleness after 'ssp:' must be a whole number");
            }
            if (staleness < 0) {
                throw new IllegalArgumentException("update mode '" + text + "': the staleness must be >= 0");
            }
            return staleness == 0
                    ? job.setMode(UpdateMode.SYNC).setStaleness(0)
                    : job.setMode(UpdateMode.SSP).setStaleness(staleness);
        }
        throw new IllegalArgumentException("update mode '" + text + "' is not one of async, sync, ssp:S (S >= 0)");
    }

    /** The mode as {@link #parse} reads it: {@code async}, {@code sync} or {@code ssp:S}. */
    public static String describe(final JobSpec job) {
        return switch (job.getMode()) {
            case SYNC -> "sync";
            case SSP -> "ssp:" + job.getStaleness();
            default -> "async";
        };
    }

    /** The most workers a job may say it expects. */
    public static final int MAX_EXPECTED_WORKERS = 1 << 16;

    /**
     * Checks a spec as the proxy and the SDK accept it: a job id, a known mode, staleness only with SSP.
     *
     * @return the spec with SSP staleness 0 turned into SYNC.
     * @throws IllegalArgumentException naming the field.
     */
    public static JobSpec validate(final JobSpec spec) {
        if (spec.getJobId().isEmpty()) {
            throw new IllegalArgumentException("job spec: job_id is empty");
        }
        if (spec.getMode() == UpdateMode.UPDATE_MODE_UNSPECIFIED || spec.getMode() == UpdateMode.UNRECOGNIZED) {
            throw new IllegalArgumentException("job '" + spec.getJobId() + "': mode must be ASYNC, SYNC or SSP");
        }
        if (spec.getStaleness() < 0) {
            throw new IllegalArgumentException(
                    "job '" + spec.getJobId() + "': staleness " + spec.getStaleness() + " is negative");
        }
        if (spec.getMode() != UpdateMode.SSP && spec.getStaleness() != 0) {
            throw new IllegalArgumentException("job '" + spec.getJobId() + "': staleness " + spec.getStaleness()
                    + " is for SSP only, the mode is " + spec.getMode());
        }
        // A job waits for expected_workers to join before it starts: an absurd count waited out every join's timeout.
        if (spec.getExpectedWorkers() < 0 || spec.getExpectedWorkers() > MAX_EXPECTED_WORKERS) {
            throw new IllegalArgumentException("job '" + spec.getJobId() + "': expected_workers "
                    + spec.getExpectedWorkers() + " is outside 0.." + MAX_EXPECTED_WORKERS
                    + " (0 or 1: the first worker starts the job)");
        }
        if (spec.getMode() == UpdateMode.SSP && spec.getStaleness() == 0) {
            return spec.toBuilder().setMode(UpdateMode.SYNC).build();
        }
        return spec;
    }
}
