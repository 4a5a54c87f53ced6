package io.pscluster.proxy;

import static org.assertj.core.api.Assertions.assertThat;

import io.pscluster.proto.v1.OperationProgressResponse;
import java.util.List;
import org.junit.jupiter.api.Test;

/** What {@code psctl}'s progress line reads of a checkpoint's fan-out. */
class OperationBoardTest {

    /**
     * A shard done writing has cut, though no poll saw it between the two (it finished before the first poll, or its
     * last poll failed and the reading kept is from before its cut): the line said "shards cut 0/2, done 2/2".
     */
    @Test
    void shouldCountAShardDoneWritingAsCutWhenNoPollSawItsCut() {
        final OperationBoard board = new OperationBoard();
        final OperationBoard.Operation operation = board.begin("checkpoint", 7);
        operation.fanOut("cut", List.of("a", "b"));
        final long now = System.nanoTime();
        operation.shard(0, new OperationBoard.ShardProgress("writing", 10, 10, 100, 100, true, 0, false), now);
        operation.shard(1, new OperationBoard.ShardProgress("starting", 0, 0, 0, 0, false, 0, false), now);
        assertThat(board.answer().getShardsCut()).as("b not begun").isEqualTo(1);

        operation.shard(1, new OperationBoard.ShardProgress("starting", 0, 0, 0, 0, false, 0, true), now);
        operation.succeeded();
        final OperationProgressResponse answer = board.answer();
        assertThat(answer.getShardsCut()).isEqualTo(2);
        assertThat(answer.getShardsDone()).isEqualTo(1);
        assertThat(answer.getShardProgress(1).getCutMarked()).isTrue();
    }
}
