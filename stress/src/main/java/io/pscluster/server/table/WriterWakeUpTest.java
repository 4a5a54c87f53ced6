package io.pscluster.server.table;

import static org.openjdk.jcstress.annotations.Expect.ACCEPTABLE;
import static org.openjdk.jcstress.annotations.Expect.FORBIDDEN;

import java.util.List;
import org.openjdk.jcstress.annotations.Actor;
import org.openjdk.jcstress.annotations.Description;
import org.openjdk.jcstress.annotations.JCStressTest;
import org.openjdk.jcstress.annotations.Outcome;
import org.openjdk.jcstress.annotations.State;
import org.openjdk.jcstress.infra.results.II_Result;

/**
 * A writer going to sleep racing a task queued to it (see {@code PartitionWriters.WriterIdle}). The writer marks itself
 * sleeping, then looks at its queue; whoever queues a task then looks whether the writer sleeps, to unpark it. A
 * wake-up is lost if the writer saw an empty queue (it parks) and the queuing thread saw it awake (it does not unpark
 * it): the task would wait until the writer wakes on its own. Coded as (1 if the writer would park, 1 if the queuing
 * thread would unpark it). No thread parks here; only what each side decides is recorded.
 */
@JCStressTest
@Description("A writer going to sleep racing a task queued to it: it sees the task, or it is seen sleeping")
@Outcome(id = "1, 0", expect = FORBIDDEN, desc = "lost wake-up: the writer parks on an empty queue, nobody unparks it")
@Outcome(id = "1, 1", expect = ACCEPTABLE, desc = "the writer parks and the queuing thread unparks it")
@Outcome(id = "0, 1", expect = ACCEPTABLE, desc = "the writer saw the task; it was seen sleeping for a moment")
@Outcome(id = "0, 0", expect = ACCEPTABLE, desc = "the writer saw the task; it was seen awake")
@State
public class WriterWakeUpTest {
    private static final PartitionWriters.Task TASK = partition -> {};

    private final PartitionWriters.PartitionAgent agent =
            new PartitionWriters.PartitionAgent("jcstress", 0, 4, List::of, () -> null, Long.MAX_VALUE, () -> false);

    @Actor
    public void writer(final II_Result result) {
        result.r1 = agent.prepareToSleep() ? 1 : 0;
    }

    @Actor
    public void queuer(final II_Result result) {
        agent.queue.offer(TASK);
        result.r2 = agent.wake() ? 1 : 0;
    }
}
