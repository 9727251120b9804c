package io.github.flinkscoring;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.channels.Channels;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.flink.api.python.shaded.org.apache.arrow.memory.BufferAllocator;
import org.apache.flink.api.python.shaded.org.apache.arrow.vector.BigIntVector;
import org.apache.flink.api.python.shaded.org.apache.arrow.vector.BitVector;
import org.apache.flink.api.python.shaded.org.apache.arrow.vector.FieldVector;
import org.apache.flink.api.python.shaded.org.apache.arrow.vector.FixedSizeBinaryVector;
import org.apache.flink.api.python.shaded.org.apache.arrow.vector.Float4Vector;
import org.apache.flink.api.python.shaded.org.apache.arrow.vector.Float8Vector;
import org.apache.flink.api.python.shaded.org.apache.arrow.vector.VarBinaryVector;
import org.apache.flink.api.python.shaded.org.apache.arrow.vector.VarCharVector;
import org.apache.flink.api.python.shaded.org.apache.arrow.vector.VectorSchemaRoot;
import org.apache.flink.api.python.shaded.org.apache.arrow.vector.complex.ListVector;
import org.apache.flink.api.python.shaded.org.apache.arrow.vector.ipc.ArrowStreamWriter;
import org.apache.flink.api.python.shaded.org.apache.arrow.vector.types.FloatingPointPrecision;
import org.apache.flink.api.python.shaded.org.apache.arrow.vector.types.pojo.ArrowType;
import org.apache.flink.api.python.shaded.org.apache.arrow.vector.types.pojo.Field;
import org.apache.flink.api.python.shaded.org.apache.arrow.vector.types.pojo.FieldType;
import org.apache.flink.api.python.shaded.org.apache.arrow.vector.types.pojo.Schema;

/**
 * One data type's records as an Arrow record batch, written as an Arrow IPC stream: the
 * schema of contract/columns.py (to_columns is the reference this is checked against).
 *
 * <p>Fixed columns record_id, event_time_ms, json, digest (the first 16 bytes of the
 * record's SHA-256: the crash journal's key), original; then per input name, in code-point
 * order, one column per kind some row sent (null where a row sent another kind or none).
 */
final class ColumnBatch {
    static final String DATA_TYPE_KEY = "data_type";
    static final ArrowType FLOAT32 = new ArrowType.FloatingPoint(FloatingPointPrecision.SINGLE);
    static final ArrowType FLOAT64 = new ArrowType.FloatingPoint(FloatingPointPrecision.DOUBLE);
    static final ArrowType INT64 = new ArrowType.Int(64, true);

    private ColumnBatch() {
    }

    private static final ThreadLocal<MessageDigest> SHA_256 = ThreadLocal.withInitial(() -> {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("every JVM has SHA-256", e);
        }
    });

    /** contract.columns.digest: the first 16 bytes of the record's SHA-256. */
    static byte[] digest(byte[] raw) {
        return Arrays.copyOf(SHA_256.get().digest(raw), 16);
    }

    /** The batch as an Arrow IPC stream, after the byte `tag`. */
    static byte[] toIpc(byte tag, String dataType, List<ReadRecord> rows, BufferAllocator allocator) {
        Map<String, Column[]> columns = columns(rows);
        List<String> names = new ArrayList<>(columns.keySet());
        names.sort(ColumnBatch::byCodePoint);
        List<Field> fields = new ArrayList<>(List.of(
                Field.nullable("record_id", ArrowType.Utf8.INSTANCE),
                Field.nullable("event_time_ms", INT64),
                Field.nullable("json", ArrowType.Bool.INSTANCE),
                Field.nullable("digest", new ArrowType.FixedSizeBinary(16)),
                Field.nullable("original", ArrowType.Binary.INSTANCE)));
        for (String name : names) {
            for (Column c : columns.get(name)) {
                if (c != null) {
                    fields.addAll(inputFields(name, c.kind));
                }
            }
        }
        Schema schema = new Schema(fields, Map.of(DATA_TYPE_KEY, dataType));
        try (VectorSchemaRoot root = VectorSchemaRoot.create(schema, allocator)) {
            for (FieldVector v : root.getFieldVectors()) {
                v.setInitialCapacity(rows.size());
            }
            root.allocateNew();
            int bytes = fill(root, rows);
            for (String name : names) {
                for (Column c : columns.get(name)) {
                    if (c != null) {
                        c.fill(root, name, rows.size());
                    }
                }
            }
            root.setRowCount(rows.size());
            return ipc(tag, root, 2 * bytes + 1024);
        }
    }

    /** Per input name, per kind (by ordinal), the rows that sent it and their values. */
    private static Map<String, Column[]> columns(List<ReadRecord> rows) {
        Map<String, Column[]> columns = new HashMap<>();
        for (int row = 0; row < rows.size(); row++) {
            ReadRecord r = rows.get(row);
            for (int i = 0; i < r.names().length; i++) {
                Input v = r.inputs()[i];
                Column[] kinds = columns.get(r.names()[i]);
                if (kinds == null) {
                    kinds = new Column[Input.Kind.values().length];
                    columns.put(r.names()[i], kinds);
                }
                int k = v.kind().ordinal();
                if (kinds[k] == null) {
                    kinds[k] = new Column(v.kind());
                }
                kinds[k].add(row, v);
            }
        }
        return columns;
    }

    /** One input column of one kind: which rows hold a value (the others are null), and the values. */
    private static final class Column {
        final Input.Kind kind;
        int[] rows = new int[16];
        Input[] values = new Input[16];
        int size;

        Column(Input.Kind kind) {
            this.kind = kind;
        }

        void add(int row, Input v) {
            if (size == rows.length) {
                rows = Arrays.copyOf(rows, size * 2);
                values = Arrays.copyOf(values, size * 2);
            }
            rows[size] = row;
            values[size++] = v;
        }

        void fill(VectorSchemaRoot root, String name, int rowCount) {
            FieldVector vector = root.getVector(name + kind.suffix);
            for (int j = 0; j < size; j++) {
                int i = rows[j];
                Input v = values[j];
                switch (kind) {
                    case DOUBLE -> ((Float8Vector) vector).setSafe(i, v.doubleValue());
                    case INT -> ((BigIntVector) vector).setSafe(i, v.longValue());
                    case STRING -> ((VarCharVector) vector).setSafe(i, v.stringValue().getBytes(StandardCharsets.UTF_8));
                    case BYTES -> ((VarBinaryVector) vector).setSafe(i, v.bytesValue());
                    case TENSOR -> {
                        setFloats((ListVector) vector, i, v.tensorValues());
                        setLongs((ListVector) root.getVector(name + "#shape"), i, v.tensorShape());
                    }
                }
            }
            if (kind == Input.Kind.TENSOR) {
                root.getVector(name + "#shape").setValueCount(rowCount);
            }
            vector.setValueCount(rowCount);
        }
    }

    /** Java's String order is by UTF-16 unit; Python's (and the reference's) by code point. */
    static int byCodePoint(String a, String b) {
        return Arrays.compare(a.codePoints().toArray(), b.codePoints().toArray());
    }

    static List<Field> inputFields(String name, Input.Kind kind) {
        return switch (kind) {
            case DOUBLE -> List.of(Field.nullable(name, FLOAT64));
            case INT -> List.of(Field.nullable(name + "#int", INT64));
            case STRING -> List.of(Field.nullable(name + "#str", ArrowType.Utf8.INSTANCE));
            case BYTES -> List.of(Field.nullable(name + "#bytes", ArrowType.Binary.INSTANCE));
            case TENSOR -> List.of(listField(name + "#tensor", FLOAT32), listField(name + "#shape", INT64));
        };
    }

    static Field listField(String name, ArrowType item) {
        return new Field(name, FieldType.nullable(ArrowType.List.INSTANCE), List.of(Field.nullable("item", item)));
    }

    /** The fixed columns; returns the bytes the records take. */
    private static int fill(VectorSchemaRoot root, List<ReadRecord> rows) {
        VarCharVector id = (VarCharVector) root.getVector("record_id");
        BigIntVector time = (BigIntVector) root.getVector("event_time_ms");
        BitVector json = (BitVector) root.getVector("json");
        FixedSizeBinaryVector digest = (FixedSizeBinaryVector) root.getVector("digest");
        VarBinaryVector original = (VarBinaryVector) root.getVector("original");
        int bytes = 0;
        for (int i = 0; i < rows.size(); i++) {
            ReadRecord r = rows.get(i);
            id.setSafe(i, r.recordId());
            time.setSafe(i, r.eventTimeMs());
            json.setSafe(i, r.json() ? 1 : 0);
            digest.setSafe(i, digest(r.original()));
            original.setSafe(i, r.original());
            bytes += r.original().length;
        }
        return bytes;
    }

    static void setFloats(ListVector list, int row, float[] values) {
        int start = list.startNewValue(row);
        Float4Vector data = (Float4Vector) list.getDataVector();
        for (int j = 0; j < values.length; j++) {
            data.setSafe(start + j, values[j]);
        }
        data.setValueCount(start + values.length);
        list.endValue(row, values.length);
    }

    static void setLongs(ListVector list, int row, long[] values) {
        int start = list.startNewValue(row);
        BigIntVector data = (BigIntVector) list.getDataVector();
        for (int j = 0; j < values.length; j++) {
            data.setSafe(start + j, values[j]);
        }
        data.setValueCount(start + values.length);
        list.endValue(row, values.length);
    }

    static byte[] ipc(byte tag, VectorSchemaRoot root, int sizeHint) {
        ByteArrayOutputStream out = new ByteArrayOutputStream(sizeHint);
        out.write(tag);
        try (ArrowStreamWriter writer = new ArrowStreamWriter(root, null, Channels.newChannel(out))) {
            writer.start();
            writer.writeBatch();
            writer.end();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return out.toByteArray();
    }
}
