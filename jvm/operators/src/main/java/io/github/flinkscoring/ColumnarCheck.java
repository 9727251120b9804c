package io.github.flinkscoring;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import org.apache.flink.api.python.shaded.org.apache.arrow.memory.BufferAllocator;
import org.apache.flink.api.python.shaded.org.apache.arrow.memory.RootAllocator;
import org.apache.flink.types.Row;

/**
 * The columnar path's readers and writers without Flink, for the tests that check them
 * against Python's (tests/test_columns_jvm.py), called through PyFlink's gateway.
 */
public final class ColumnarCheck {
    private ColumnarCheck() {
    }

    /** What a RecordBatcher emits for these records, then its flush: each element as
     * [4-byte length of the data type][data type, UTF-8][tag][payload]. */
    public static byte[][] batches(String recordFormat, int maxRecordBytes, int batchSize, byte[][] records) {
        List<byte[]> out = new ArrayList<>();
        try (BufferAllocator allocator = new RootAllocator(Long.MAX_VALUE)) {
            Batches batches = new Batches(recordFormat, maxRecordBytes, batchSize, allocator);
            for (byte[] raw : records) {
                batches.add(raw, row -> out.add(framed(row)));
            }
            batches.flush(row -> out.add(framed(row)));
        }
        return out.toArray(new byte[0][]);
    }

    /** What WriteResults writes for a scored batch: each message after a byte 0 (result) or 1 (dead letter). */
    public static byte[][] write(byte[] scored, long nowMs) {
        List<byte[]> out = new ArrayList<>();
        try (BufferAllocator allocator = new RootAllocator(Long.MAX_VALUE)) {
            ResultWriter.write(scored, 0, allocator, nowMs, new ResultWriter.Sink() {
                @Override
                public void result(byte[] message) {
                    out.add(Batches.tagged((byte) 0, message));
                }

                @Override
                public void deadLetter(byte[] message) {
                    out.add(Batches.tagged((byte) 1, message));
                }
            });
        }
        return out.toArray(new byte[0][]);
    }

    private static byte[] framed(Row row) {
        byte[] key = ((String) row.getField(0)).getBytes(StandardCharsets.UTF_8);
        byte[] payload = (byte[]) row.getField(1);
        return ByteBuffer.allocate(4 + key.length + payload.length).putInt(key.length).put(key).put(payload).array();
    }
}
