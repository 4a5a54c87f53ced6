package io.pscluster.faults;

import io.pscluster.local.CounterTable;
import io.pscluster.proto.v1.JobSpec;
import io.pscluster.wire.UpdateModes;
import io.pscluster.worker.PsClient;
import io.pscluster.worker.PsTable;
import java.util.Arrays;

/**
 * One worker of a job as its own process (for the tests that kill one): joins the job, then until clock {@code
 * clocks} pulls every key, pushes -1 for each (SGD, learning rate 1: each applied push adds 1), spends {@code
 * stepMs} computing, and ends the clock. Prints "clock C at MILLIS sum BITS" for every clock it reads (BITS: a hash of
 * the raw bits it pulled, equal across workers that saw the same parameters) and "done" at the end.
 *
 * <p>Arguments: proxy, job id, mode (async, sync, ssp:S), expected workers, last clock, step milliseconds.
 */
public final class SyncWorkerMain {
    static final int KEYS = 32;

    private SyncWorkerMain() {}

    public static void main(final String[] args) throws Exception {
        final JobSpec job = UpdateModes.parse(args[2], JobSpec.newBuilder().setJobId(args[1]))
                .setExpectedWorkers(Integer.parseInt(args[3]))
                .build();
        final long lastClock = Long.parseLong(args[4]);
        final long stepMs = Long.parseLong(args[5]);
        try (PsClient client = PsClient.connect(
                new PsClient.Context().proxyAddress(args[0]).deadlineMs(60_000).job(job))) {
            System.out.println("worker " + client.workerId() + " starts at clock " + client.currentClock());
            final PsTable table = client.createTable(CounterTable.schema(args[1] + "_w"));
            final long[] keys = new long[KEYS];
            for (int i = 0; i < KEYS; i++) {
                keys[i] = i * 31L + 5;
            }
            final float[] minusOnes = new float[KEYS];
            Arrays.fill(minusOnes, -1f);
            while (client.currentClock() <= lastClock) {
                final float[] values = table.pull(keys);
                System.out.println("clock " + client.currentClock() + " at " + System.currentTimeMillis() + " sum "
                        + Arrays.hashCode(values));
                table.push(keys, minusOnes);
                Thread.sleep(stepMs);
                client.clock();
            }
            System.out.println("done");
        }
    }
}
