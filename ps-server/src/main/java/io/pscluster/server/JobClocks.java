package io.pscluster.server;

import io.pscluster.proto.v1.UpdateJobsRequest;

/** The jobs a shard knows from the proxy, and their clocks on this shard. */
final class JobClocks {
    private volatile UpdateJobsRequest jobs = UpdateJobsRequest.getDefaultInstance();

    /** Replaces the job list with the proxy's, unless the shard already holds that version or a newer one. */
    synchronized void update(final UpdateJobsRequest request) {
        if (request.getJobsVersion() > jobs.getJobsVersion()) {
            jobs = request;
        }
    }

    long version() {
        return jobs.getJobsVersion();
    }
}
