package io.github.flinkscoring;

import org.apache.flink.api.python.shaded.org.apache.arrow.memory.BufferAllocator;
import org.apache.flink.api.python.shaded.org.apache.arrow.memory.RootAllocator;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.BoundedOneInput;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.types.Row;

/**
 * Reads data records on the JVM and groups them per data type into column batches (Batches),
 * for the job's columnar path (docs/columnar.md). A batch goes out when it holds
 * `batchSize` records, `maxWaitMs` after its first record, and before every checkpoint
 * barrier: no batch is ever open at a checkpoint, so none is in state, and a restore replays
 * from Kafka exactly the records no emitted batch held.
 *
 * <p>Emits Row(data type, tagged bytes), as DataTypeKey does, keyed next by field 0. No
 * record may make it throw (a throw fails the task, which reads the same record again):
 * RecordReader returns null for what it cannot read, and the record goes to Python as it came.
 */
public final class RecordBatcher extends AbstractStreamOperator<Row>
        implements OneInputStreamOperator<byte[], Row>, BoundedOneInput {
    private static final long serialVersionUID = 1L;

    private final String recordFormat;
    private final int maxRecordBytes;
    private final int batchSize;
    private final long maxWaitMs;
    private transient BufferAllocator allocator;
    private transient Batches batches;
    private transient boolean timerSet;

    public RecordBatcher(String recordFormat, int maxRecordBytes, int batchSize, long maxWaitMs) {
        if (batchSize < 1 || maxWaitMs < 0) {
            throw new IllegalArgumentException("batch size " + batchSize + " and wait " + maxWaitMs
                    + " ms: the size must be at least 1, the wait at least 0");
        }
        this.recordFormat = recordFormat;
        this.maxRecordBytes = maxRecordBytes;
        this.batchSize = batchSize;
        this.maxWaitMs = maxWaitMs;
    }

    @Override
    public void open() throws Exception {
        super.open();
        allocator = new RootAllocator(Long.MAX_VALUE);
        batches = new Batches(recordFormat, maxRecordBytes, batchSize, allocator);
    }

    @Override
    public void processElement(StreamRecord<byte[]> element) {
        batches.add(element.getValue(), this::emit);
        if (!batches.isEmpty() && !timerSet) {
            timerSet = true;
            long now = getProcessingTimeService().getCurrentProcessingTime();
            getProcessingTimeService().registerTimer(now + maxWaitMs, time -> flush());
        }
    }

    private void flush() {
        timerSet = false;
        batches.flush(this::emit);
    }

    private void emit(Row row) {
        output.collect(new StreamRecord<>(row));
    }

    @Override
    public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
        super.prepareSnapshotPreBarrier(checkpointId);
        batches.flush(this::emit);
    }

    @Override
    public void endInput() {
        batches.flush(this::emit);
    }

    @Override
    public void finish() throws Exception {
        batches.flush(this::emit);
        super.finish();
    }

    @Override
    public void close() throws Exception {
        super.close();
        if (allocator != null) {
            allocator.close();
        }
    }
}
