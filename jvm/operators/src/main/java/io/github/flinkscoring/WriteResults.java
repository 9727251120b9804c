package io.github.flinkscoring;

import org.apache.flink.api.python.shaded.org.apache.arrow.memory.BufferAllocator;
import org.apache.flink.api.python.shaded.org.apache.arrow.memory.RootAllocator;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.streaming.api.functions.ProcessFunction;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

/**
 * The columnar path's writer: each scored batch from the Python operator becomes one message
 * per row (ResultWriter): results to the main output, dead letters to the side output
 * "dead-letters" (RouteByTag.sideOutput).
 */
public final class WriteResults extends ProcessFunction<byte[], byte[]> {
    private static final long serialVersionUID = 1L;
    private static final OutputTag<byte[]> DEAD_LETTERS = RouteByTag.sideOutput("dead-letters");

    private transient BufferAllocator allocator;

    @Override
    public void open(OpenContext openContext) {
        allocator = new RootAllocator(Long.MAX_VALUE);
    }

    @Override
    public void processElement(byte[] scored, Context ctx, Collector<byte[]> out) {
        ResultWriter.write(scored, 0, allocator, System.currentTimeMillis(), new ResultWriter.Sink() {
            @Override
            public void result(byte[] message) {
                out.collect(message);
            }

            @Override
            public void deadLetter(byte[] message) {
                ctx.output(DEAD_LETTERS, message);
            }
        });
    }

    @Override
    public void close() {
        if (allocator != null) {
            allocator.close();
        }
    }
}
