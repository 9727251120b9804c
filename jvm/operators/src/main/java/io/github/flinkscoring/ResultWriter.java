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
        new Rows(root, dataType).write(nowMs, sink);
    }

    static byte[] deadLetter(String recordId, String dataType, String stage, String reason, byte[] original,
                             String modelName, long modelVersion, long nowMs) {
        return new Protobuf().string(1, recordId).string(2, dataType).string(3, stage).string(4, reason)
                .bytes(5, original).string(6, modelName).int64(7, modelVersion).int64(8, nowMs).bytes();
    }

    /** One output column: its name, the kind its suffix names, and a tensor's shapes. */
    private record Output(String name, byte[] nameBytes, Input.Kind kind, FieldVector values, ListVector shapes) {
        static Output of(FieldVector v, VectorSchemaRoot root) {
            String column = v.getField().getName();
            int hash = column.indexOf('#');
            String name = hash < 0 ? column : column.substring(0, hash);
            Input.Kind kind = Input.Kind.ofSuffix(hash < 0 ? "" : column.substring(hash));
            if (kind == null) {
                throw new IllegalArgumentException("an output column " + column + " of no kind the job writes");
            }
            ListVector shapes = kind == Input.Kind.TENSOR ? (ListVector) root.getVector(name + "#shape") : null;
            return new Output(name, name.getBytes(StandardCharsets.UTF_8), kind, v, shapes);
        }
    }

    /** A scored batch's columns, and the writers its messages are built in (reused row after row). */
    private static final class Rows {
        final String dataType;
        final VarCharVector id;
        final BigIntVector time;
        final BitVector json;
        final VarBinaryVector original;
        final VarCharVector name;
        final BigIntVector version;
        final VarCharVector stage;
        final VarCharVector reason;
        final List<Output> outputs = new ArrayList<>();
        final int rowCount;
        final Protobuf message = new Protobuf();
        final Protobuf entry = new Protobuf();
        final Protobuf value = new Protobuf();
        final Protobuf tensor = new Protobuf();

        Rows(VectorSchemaRoot root, String dataType) {
            this.dataType = dataType;
            id = (VarCharVector) root.getVector("record_id");
            time = (BigIntVector) root.getVector("event_time_ms");
            json = (BitVector) root.getVector("json");
            original = (VarBinaryVector) root.getVector("original");
            name = (VarCharVector) root.getVector("model_name");
            version = (BigIntVector) root.getVector("model_version");
            stage = (VarCharVector) root.getVector("stage");
            reason = (VarCharVector) root.getVector("reason");
            rowCount = root.getRowCount();
            for (FieldVector v : root.getFieldVectors()) {
                String n = v.getField().getName();
                if (!FIXED.contains(n) && !n.endsWith("#shape")) {
                    outputs.add(Output.of(v, root));
                }
            }
        }

        void write(long nowMs, Sink sink) {
            byte[] dataTypeBytes = dataType.getBytes(StandardCharsets.UTF_8);
            for (int row = 0; row < rowCount; row++) {
                long modelVersion = version.isNull(row) ? 0 : version.get(row);
                if (!reason.isNull(row)) {
                    sink.deadLetter(deadLetter(text(id, row), dataType, text(stage, row), text(reason, row),
                            originalOf(row), text(name, row), modelVersion, nowMs));
                } else if (json.get(row) == 1) {
                    byte[] message = resultJson(row, modelVersion, nowMs);
                    if (message != null) {
                        sink.result(message);
                    } else {
                        sink.deadLetter(deadLetter(text(id, row), dataType, "score",
                                "the model's outputs cannot be written as JSON: a non-finite number",
                                originalOf(row), text(name, row), modelVersion, nowMs));
                    }
                } else {
                    sink.result(result(row, dataTypeBytes, modelVersion, nowMs));
                }
            }
        }

        private byte[] originalOf(int row) {
            return original.isNull(row) ? new byte[0] : original.get(row);
        }

        private byte[] result(int row, byte[] dataTypeBytes, long modelVersion, long nowMs) {
            message.reset().bytes(1, utf8(id, row)).bytes(2, dataTypeBytes).bytes(3, utf8(name, row))
                    .int64(4, modelVersion);
            for (Output out : outputs) {
                if (!out.values().isNull(row)) {
                    entry.reset().lengthDelimited(1, out.nameBytes()).message(2, value(out, row));
                    message.message(5, entry);
                }
            }
            return message.int64(6, time.get(row)).int64(7, nowMs).bytes();
        }

        /** A Value message (its oneof member written whatever its value). */
        private Protobuf value(Output out, int row) {
            value.reset();
            return switch (out.kind()) {
                case DOUBLE -> value.oneofDouble(1, ((Float8Vector) out.values()).get(row));
                case INT -> value.oneofInt64(2, ((BigIntVector) out.values()).get(row));
                case STRING -> value.lengthDelimited(3, ((VarCharVector) out.values()).get(row));
                case BYTES -> value.lengthDelimited(4, ((VarBinaryVector) out.values()).get(row));
                case TENSOR -> {
                    Tensor t = tensorOf(out, row);
                    yield value.message(5, tensor.reset().packedInt64(1, t.shape).packedFloat(2, t.values));
                }
            };
        }

        private byte[] resultJson(int row, long modelVersion, long nowMs) {
            ByteArrayOutputStream out = new ByteArrayOutputStream(256);
            try (JsonGenerator g = JSON.createGenerator(out)) {
                g.writeStartObject();
                g.writeStringField("record_id", text(id, row));
                g.writeStringField("data_type", dataType);
                g.writeStringField("model_name", text(name, row));
                g.writeNumberField("model_version", modelVersion);
                g.writeObjectFieldStart("outputs");
                for (Output o : outputs) {
                    if (o.values().isNull(row)) {
                        continue;
                    }
                    g.writeFieldName(o.name());
                    if (!jsonValue(g, o, row)) {
                        return null;
                    }
                }
                g.writeEndObject();
                g.writeNumberField("event_time_ms", time.get(row));
                g.writeNumberField("scoring_time_ms", nowMs);
                g.writeEndObject();
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
            return out.toByteArray();
        }
    }

    /** Writes one output as JSON; false if it holds a number JSON cannot carry. */
    private static boolean jsonValue(JsonGenerator g, Output o, int row) throws IOException {
        switch (o.kind()) {
            case DOUBLE -> {
                double d = ((Float8Vector) o.values()).get(row);
                if (!Double.isFinite(d)) {
                    return false;
                }
                g.writeNumber(d);
            }
            case INT -> g.writeNumber(((BigIntVector) o.values()).get(row));
            case STRING -> g.writeString(new String(((VarCharVector) o.values()).get(row), StandardCharsets.UTF_8));
            case BYTES -> {
                g.writeStartObject();
                g.writeStringField("b64", Base64.getEncoder().encodeToString(((VarBinaryVector) o.values()).get(row)));
                g.writeEndObject();
            }
            case TENSOR -> {
                Tensor t = tensorOf(o, row);
                for (float f : t.values) {
                    if (!Float.isFinite(f)) {
                        return false;
                    }
                }
                nestedList(g, t, 0, 0);
            }
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

    private static Tensor tensorOf(Output out, int row) {
        ListVector values = (ListVector) out.values();
        ListVector shapes = out.shapes();
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

    private static String text(VarCharVector v, int row) {
        return v.isNull(row) ? "" : new String(v.get(row), StandardCharsets.UTF_8);
    }

    private static byte[] utf8(VarCharVector v, int row) {
        return v.isNull(row) ? null : v.get(row);
    }
}
