package io.github.flinkscoring;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Map;
import org.apache.flink.api.python.shaded.org.apache.arrow.memory.BufferAllocator;
import org.apache.flink.api.python.shaded.org.apache.arrow.vector.BigIntVector;
import org.apache.flink.api.python.shaded.org.apache.arrow.vector.BitVector;
import org.apache.flink.api.python.shaded.org.apache.arrow.vector.FieldVector;
import org.apache.flink.api.python.shaded.org.apache.arrow.vector.Float4Vector;
import org.apache.flink.api.python.shaded.org.apache.arrow.vector.Float8Vector;
import org.apache.flink.api.python.shaded.org.apache.arrow.vector.VarBinaryVector;
import org.apache.flink.api.python.shaded.org.apache.arrow.vector.VarCharVector;
import org.apache.flink.api.python.shaded.org.apache.arrow.vector.VectorSchemaRoot;
import org.apache.flink.api.python.shaded.org.apache.arrow.vector.complex.ListVector;
import org.apache.flink.api.python.shaded.org.apache.arrow.vector.ipc.ArrowStreamReader;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonGenerator;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.StreamWriteFeature;

/**
 * Turns a scored batch (contract.columns.outcomes_to_columns) into one message per row: a
 * ScoringResult, or the same fields as JSON for a record that came as JSON
 * (contract.json_records.result_json), or a DeadLetter with the row's stage, reason and
 * original bytes. scoring.messages.from_columns is the reference it is checked against.
 */
final class ResultWriter {
    // Schubfach: the shortest digits that read back as the same double (Double.toString of JDK 17 is not always).
    private static final JsonFactory JSON = JsonFactory.builder().enable(StreamWriteFeature.USE_FAST_DOUBLE_WRITER).build();
    private static final List<String> FIXED = List.of("record_id", "event_time_ms", "json", "digest", "original",
            "model_name", "model_version", "stage", "reason");

    /** Where one row's message goes. */
    interface Sink {
        void result(byte[] message);

        void deadLetter(byte[] message);
    }

    private ResultWriter() {
    }

    static void write(byte[] ipc, int offset, BufferAllocator allocator, long nowMs, Sink sink) {
        try (ArrowStreamReader reader = new ArrowStreamReader(
                new ByteArrayInputStream(ipc, offset, ipc.length - offset), allocator)) {
            VectorSchemaRoot root = reader.getVectorSchemaRoot();
            while (reader.loadNextBatch()) {
                write(root, nowMs, sink);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("a scored batch from the Python operator is not an Arrow stream", e);
        }
    }

    private static void write(VectorSchemaRoot root, long nowMs, Sink sink) {
        Map<String, String> metadata = root.getSchema().getCustomMetadata();
        String dataType = metadata == null ? "" : metadata.getOrDefault(ColumnBatch.DATA_TYPE_KEY, "");
        VarCharVector id = (VarCharVector) root.getVector("record_id");
        BigIntVector time = (BigIntVector) root.getVector("event_time_ms");
        BitVector json = (BitVector) root.getVector("json");
        VarBinaryVector original = (VarBinaryVector) root.getVector("original");
        VarCharVector name = (VarCharVector) root.getVector("model_name");
        BigIntVector version = (BigIntVector) root.getVector("model_version");
        VarCharVector stage = (VarCharVector) root.getVector("stage");
        VarCharVector reason = (VarCharVector) root.getVector("reason");
        List<FieldVector> outputs = new ArrayList<>();
        for (FieldVector v : root.getFieldVectors()) {
            String n = v.getField().getName();
            if (!FIXED.contains(n) && !n.endsWith("#shape")) {
                outputs.add(v);
            }
        }
        for (int row = 0; row < root.getRowCount(); row++) {
            String recordId = text(id, row);
            String modelName = text(name, row);
            long modelVersion = version.isNull(row) ? 0 : version.get(row);
            if (!reason.isNull(row)) {
                sink.deadLetter(deadLetter(recordId, dataType, text(stage, row), text(reason, row),
                        original.isNull(row) ? new byte[0] : original.get(row), modelName, modelVersion, nowMs));
                continue;
            }
            long eventTime = time.get(row);
            if (json.get(row) == 1) {
                byte[] message = resultJson(recordId, dataType, modelName, modelVersion, root, outputs, row,
                        eventTime, nowMs);
                if (message != null) {
                    sink.result(message);
                } else {
                    sink.deadLetter(deadLetter(recordId, dataType, "score",
                            "the model's outputs cannot be written as JSON: a non-finite number",
                            original.isNull(row) ? new byte[0] : original.get(row), modelName, modelVersion,
                            nowMs));
                }
            } else {
                sink.result(result(recordId, dataType, modelName, modelVersion, root, outputs, row, eventTime,
                        nowMs));
            }
        }
    }

    static byte[] deadLetter(String recordId, String dataType, String stage, String reason, byte[] original,
                             String modelName, long modelVersion, long nowMs) {
        return new Protobuf().string(1, recordId).string(2, dataType).string(3, stage).string(4, reason)
                .bytes(5, original).string(6, modelName).int64(7, modelVersion).int64(8, nowMs).bytes();
    }

    private static byte[] result(String recordId, String dataType, String modelName, long modelVersion,
                                 VectorSchemaRoot root, List<FieldVector> outputs, int row, long eventTime,
                                 long nowMs) {
        Protobuf message = new Protobuf().string(1, recordId).string(2, dataType).string(3, modelName)
                .int64(4, modelVersion);
        for (FieldVector v : outputs) {
            if (v.isNull(row)) {
                continue;
            }
            String[] named = split(v.getField().getName());
            byte[] entry = new Protobuf().lengthDelimited(1, named[0].getBytes(StandardCharsets.UTF_8))
                    .lengthDelimited(2, value(v, named[1], root, named[0], row)).bytes();
            message.lengthDelimited(5, entry);
        }
        return message.int64(6, eventTime).int64(7, nowMs).bytes();
    }

    /** A Value message (its oneof member written whatever its value). */
    private static byte[] value(FieldVector v, String suffix, VectorSchemaRoot root, String name, int row) {
        Protobuf value = new Protobuf();
        switch (suffix) {
            case "" -> value.oneofDouble(1, ((Float8Vector) v).get(row));
            case "#int" -> value.oneofInt64(2, ((BigIntVector) v).get(row));
            case "#str" -> value.lengthDelimited(3, ((VarCharVector) v).get(row));
            case "#bytes" -> value.lengthDelimited(4, ((VarBinaryVector) v).get(row));
            case "#tensor" -> {
                Tensor t = tensor((ListVector) v, (ListVector) root.getVector(name + "#shape"), row);
                value.lengthDelimited(5, new Protobuf().packedInt64(1, t.shape).packedFloat(2, t.values, 0,
                        t.values.length).bytes());
            }
            default -> throw new IllegalArgumentException("an output column " + name + suffix
                    + " of no kind the job writes");
        }
        return value.bytes();
    }

    private static byte[] resultJson(String recordId, String dataType, String modelName, long modelVersion,
                                     VectorSchemaRoot root, List<FieldVector> outputs, int row, long eventTime,
                                     long nowMs) {
        ByteArrayOutputStream out = new ByteArrayOutputStream(256);
        try (JsonGenerator g = JSON.createGenerator(out)) {
            g.writeStartObject();
            g.writeStringField("record_id", recordId);
            g.writeStringField("data_type", dataType);
            g.writeStringField("model_name", modelName);
            g.writeNumberField("model_version", modelVersion);
            g.writeObjectFieldStart("outputs");
            for (FieldVector v : outputs) {
                if (v.isNull(row)) {
                    continue;
                }
                String[] named = split(v.getField().getName());
                g.writeFieldName(named[0]);
                if (!jsonValue(g, v, named[1], root, named[0], row)) {
                    return null;
                }
            }
            g.writeEndObject();
            g.writeNumberField("event_time_ms", eventTime);
            g.writeNumberField("scoring_time_ms", nowMs);
            g.writeEndObject();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return out.toByteArray();
    }

    /** Writes one output as JSON; false if it holds a number JSON cannot carry. */
    private static boolean jsonValue(JsonGenerator g, FieldVector v, String suffix, VectorSchemaRoot root,
                                     String name, int row) throws IOException {
        switch (suffix) {
            case "" -> {
                double d = ((Float8Vector) v).get(row);
                if (!Double.isFinite(d)) {
                    return false;
                }
                g.writeNumber(d);
            }
            case "#int" -> g.writeNumber(((BigIntVector) v).get(row));
            case "#str" -> g.writeString(new String(((VarCharVector) v).get(row), StandardCharsets.UTF_8));
            case "#bytes" -> {
                g.writeStartObject();
                g.writeStringField("b64", Base64.getEncoder().encodeToString(((VarBinaryVector) v).get(row)));
                g.writeEndObject();
            }
            case "#tensor" -> {
                Tensor t = tensor((ListVector) v, (ListVector) root.getVector(name + "#shape"), row);
                for (float f : t.values) {
                    if (!Float.isFinite(f)) {
                        return false;
                    }
                }
                nestedList(g, t, 0, 0);
            }
            default -> throw new IllegalArgumentException("an output column " + name + suffix
                    + " of no kind the job writes");
        }
        return true;
    }

    /** numpy's tolist(): nested lists by the shape; a 0-d tensor is its one number. */
    private static int nestedList(JsonGenerator g, Tensor t, int axis, int at) throws IOException {
        if (axis == t.shape.length) {
            g.writeNumber((double) t.values[at]);
            return at + 1;
        }
        g.writeStartArray();
        for (long i = 0; i < t.shape[axis]; i++) {
            at = nestedList(g, t, axis + 1, at);
        }
        g.writeEndArray();
        return at;
    }

    private record Tensor(float[] values, long[] shape) {
    }

    private static Tensor tensor(ListVector values, ListVector shapes, int row) {
        Float4Vector data = (Float4Vector) values.getDataVector();
        int start = values.getElementStartIndex(row);
        float[] flat = new float[values.getElementEndIndex(row) - start];
        for (int i = 0; i < flat.length; i++) {
            flat[i] = data.get(start + i);
        }
        BigIntVector dims = (BigIntVector) shapes.getDataVector();
        int from = shapes.getElementStartIndex(row);
        long[] shape = new long[shapes.getElementEndIndex(row) - from];
        for (int i = 0; i < shape.length; i++) {
            shape[i] = dims.get(from + i);
        }
        return new Tensor(flat, shape);
    }

    private static String[] split(String column) {
        int hash = column.indexOf('#');
        return hash < 0 ? new String[] {column, ""} : new String[] {column.substring(0, hash), column.substring(hash)};
    }

    private static String text(VarCharVector v, int row) {
        return v.isNull(row) ? "" : new String(v.get(row), StandardCharsets.UTF_8);
    }
}
