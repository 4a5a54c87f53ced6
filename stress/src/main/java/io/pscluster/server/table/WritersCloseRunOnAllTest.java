package io.pscluster.server.table;

import static org.openjdk.jcstress.annotations.Expect.ACCEPTABLE;
import static org.openjdk.jcstress.annotations.Expect.FORBIDDEN;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.openjdk.jcstress.annotations.Actor;
import org.openjdk.jcstress.annotations.Arbiter;
import org.openjdk.jcstress.annotations.Description;
import org.openjdk.jcstress.annotations.JCStressTest;
import org.openjdk.jcstress.annotations.Outcome;
import org.openjdk.jcstress.annotations.State;
import org.openjdk.jcstress.infra.results.II_Result;

/**
 * {@link PartitionWriters#close()} racing {@link PartitionWriters#runOnAll}: every control task must either run on
 * the writer or fail, never stay queued with nobody left to complete it (its caller would wait forever for a
 * snapshot or a clear).
 *
 * <p>A close takes far longer than a runOnAll (it stops the writer thread and waits for it), so a single call would
 * nearly always fall before or after it. The caller therefore keeps calling until a call fails because the writers
 * are closed: its calls cover the whole close, the last ones the moment close marks the writers closed and fails
 * what is still queued, which is where a task can be missed.
 *
 * <p>Once both actors have returned the writer thread has stopped and close has failed what it found queued, so
 * every future is either done or never will be: the arbiter's bounded wait only covers completions still in flight
 * on another thread. Coded as (futures never completed, 1 if some task ran before the writer stopped else 0). Each
 * instance starts one writer thread.
 */
@JCStressTest
@Description("close() racing runOnAll() calls: every future runOnAll returned completes, ran or failed")
@Outcome(id = "0, 1", expect = ACCEPTABLE, desc = "all completed: tasks ran until the writer stopped, then failed")
@Outcome(id = "0, 0", expect = ACCEPTABLE, desc = "all completed: close came first and every call failed")
@Outcome(expect = FORBIDDEN, desc = "futures never completed (first number): tasks stranded in a stopped queue")
@State
public class WritersCloseRunOnAllTest {
    private static final long WAIT_NANOS = TimeUnit.MILLISECONDS.toNanos(200);

    private final PartitionWriters writers = new PartitionWriters("jcstress", 1, 1, List::of);
    private final List<CompletableFuture<List<Integer>>> futures = new ArrayList<>();

    @Actor
    public void closer() {
        writers.close();
    }

    @Actor
    public void caller() {
        CompletableFuture<List<Integer>> last;
        do {
            last = writers.runOnAll(partition -> partition);
            futures.add(last);
        } while (!last.isCompletedExceptionally());
    }

    @Arbiter
    public void arbiter(final II_Result result) {
        final long deadline = System.nanoTime() + WAIT_NANOS;
        int neverCompleted = 0;
        int ran = 0;
        for (final CompletableFuture<List<Integer>> future : futures) {
            try {
                future.get(Math.max(0, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
                ran = 1;
            } catch (ExecutionException closed) {
                // Failed: the writers were closed before it could run.
            } catch (TimeoutException stranded) {
                neverCompleted++;
            } catch (InterruptedException interrupted) {
                Thread.currentThread().interrupt();
                neverCompleted++;
            }
        }
        result.r1 = neverCompleted;
        result.r2 = ran;
    }
}
