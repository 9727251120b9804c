package io.github.flinkscoring;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import org.apache.flink.api.python.shaded.org.apache.arrow.memory.BufferAllocator;
import org.apache.flink.types.Row;

/**
 * The open batches of one RecordBatcher, per data type, without Flink: records in, elements
 * Row(data type, tagged bytes) out. Tag BATCH: an Arrow IPC stream of up to `batchSize`
 * records (ColumnBatch); tag RECORD: one record as it came, that this reader left to Python's
 * (RecordReader), keyed as DataTypeKey keys it.
 */
final class Batches {
    static final byte BATCH = 1;
    static final byte RECORD = 2;

    private final RecordReader reader;
    private final DataTypeKey keys;
    private final int batchSize;
    private final BufferAllocator allocator;
    private final Map<String, List<ReadRecord>> open = new LinkedHashMap<>();

    Batches(String recordFormat, int maxRecordBytes, int batchSize, BufferAllocator allocator) {
        this.reader = new RecordReader(recordFormat, maxRecordBytes);
        this.keys = new DataTypeKey(recordFormat, maxRecordBytes);
        this.batchSize = batchSize;
        this.allocator = allocator;
    }

    /** Adds one record; emits its batch if that is now full, or the record itself. */
    void add(byte[] raw, Consumer<Row> emit) {
        ReadRecord record = reader.read(raw);
        if (record == null) {
            emit.accept(Row.of(keys.dataType(raw), tagged(RECORD, raw)));
            return;
        }
        List<ReadRecord> batch = open.computeIfAbsent(record.dataType(), k -> new ArrayList<>());
        batch.add(record);
        if (batch.size() >= batchSize) {
            emit.accept(element(record.dataType(), open.remove(record.dataType())));
        }
    }

    boolean isEmpty() {
        return open.isEmpty();
    }

    /** Emits every open batch. */
    void flush(Consumer<Row> emit) {
        open.forEach((dataType, rows) -> emit.accept(element(dataType, rows)));
        open.clear();
    }

    private Row element(String dataType, List<ReadRecord> rows) {
        return Row.of(dataType, ColumnBatch.toIpc(BATCH, dataType, rows, allocator));
    }

    static byte[] tagged(byte tag, byte[] payload) {
        byte[] out = new byte[payload.length + 1];
        out[0] = tag;
        System.arraycopy(payload, 0, out, 1, payload.length);
        return out;
    }
}
