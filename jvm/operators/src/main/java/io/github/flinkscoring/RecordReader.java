package io.github.flinkscoring;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;

/**
 * Reads a whole data record (a protobuf DataRecord or a JSON record) on the JVM, for the
 * columnar path. It is deliberately narrower than Python's reader: it returns null for any
 * record it is not sure it reads exactly as Python does (a bad record, but also unknown
 * fields, duplicate JSON keys, a Value with two kinds...). Those go to Python as they came,
 * and Python's reader (scoring/records.py), the one author of the reasons, scores them or
 * dead-letters them. So a record read here gives the columns Python's reader gives, and
 * every reason a dead letter carries is the one it carries on the record path.
 */
final class RecordReader {
    static final int MAX_TENSOR_DIMS = 8; // contract/values.py
    private static final JsonFactory JSON = new JsonFactory();
    private static final Pattern BASE64 = Pattern.compile("[A-Za-z0-9+/]*={0,2}");

    private final String recordFormat;
    private final int maxRecordBytes;
    private final Names names = new Names();

    RecordReader(String recordFormat, int maxRecordBytes) {
        this.recordFormat = recordFormat;
        this.maxRecordBytes = maxRecordBytes;
    }

    /** The record, or null: Python reads it. Never throws. */
    ReadRecord read(byte[] raw) {
        if (raw == null || raw.length > maxRecordBytes) {
            return null;
        }
        boolean json = recordFormat.equals("json")
                || (recordFormat.equals("auto") && raw.length > 0 && raw[0] == '{');
        try {
            ReadRecord r = json ? readJson(raw) : readProtobuf(raw);
            return r == null || r.recordId().length == 0 || r.dataType().isEmpty() ? null : r;
        } catch (IOException | RuntimeException | StackOverflowError e) {
            return null;
        }
    }

    // ---- protobuf ---------------------------------------------------------------------------
    private ReadRecord readProtobuf(byte[] b) {
        names.startRecord();
        Wire w = new Wire(b, 0, b.length);
        byte[] id = new byte[0];
        String dataType = "";
        long eventTime = 0;
        Inputs inputs = new Inputs();
        while (w.more()) {
            long tag = w.varint();
            switch ((int) tag) {
                case (1 << 3) | 2 -> id = w.utf8();
                case (2 << 3) | 2 -> dataType = w.name(names, false);
                case (3 << 3) -> eventTime = w.varint();
                case (4 << 3) | 2 -> {
                    if (!mapEntry(w.message(), inputs)) {
                        return null;
                    }
                }
                default -> {
                    return null; // unknown fields and wire types: Python's reader decides
                }
            }
        }
        return new ReadRecord(id, dataType, eventTime, false, inputs.names(), inputs.values(), b);
    }

    /** One map entry; false if it is not one this reader is sure of, or its key came before
     * (protobuf keeps the last: Python's reader decides). */
    private boolean mapEntry(Wire w, Inputs inputs) {
        String key = null;
        Input value = null;
        boolean repeated = false;
        while (w.more()) {
            long tag = w.varint();
            if (tag == ((1 << 3) | 2) && key == null && !repeated) {
                key = w.name(names, true);
                repeated = key == null;
            } else if (tag == ((2 << 3) | 2) && value == null) {
                value = value(w.message());
                if (value == null) {
                    return false;
                }
            } else {
                return false;
            }
        }
        if (key == null || value == null || key.indexOf('#') >= 0) {
            return false;
        }
        inputs.add(key, value);
        return true;
    }

    /** A record's inputs in the order it sent them. */
    static final class Inputs {
        private String[] names = new String[16];
        private Input[] values = new Input[16];
        private int size;

        void add(String name, Input value) {
            if (size == names.length) {
                names = java.util.Arrays.copyOf(names, size * 2);
                values = java.util.Arrays.copyOf(values, size * 2);
            }
            names[size] = name;
            values[size++] = value;
        }

        String[] names() {
            return java.util.Arrays.copyOf(names, size);
        }

        Input[] values() {
            return java.util.Arrays.copyOf(values, size);
        }
    }

    private static Input value(Wire w) {
        Input v = null;
        while (w.more()) {
            if (v != null) {
                return null; // a second kind: protobuf keeps the last, Python's reader decides
            }
            long tag = w.varint();
            v = switch ((int) tag) {
                case (1 << 3) | 1 -> Input.ofDouble(Double.longBitsToDouble(w.fixed64()));
                case (2 << 3) -> Input.ofLong(w.varint());
                case (3 << 3) | 2 -> Input.ofString(w.string());
                case (4 << 3) | 2 -> Input.ofBytes(w.bytes());
                case (5 << 3) | 2 -> tensor(w.message());
                default -> null;
            };
            if (v == null) {
                return null;
            }
        }
        return v;
    }

    private static Input tensor(Wire w) {
        List<Long> shape = new ArrayList<>();
        FloatList values = new FloatList();
        while (w.more()) {
            long tag = w.varint();
            switch ((int) tag) {
                case (1 << 3) -> shape.add(w.varint());
                case (1 << 3) | 2 -> {
                    Wire packed = w.message();
                    while (packed.more()) {
                        shape.add(packed.varint());
                    }
                }
                case (2 << 3) | 5 -> values.add(Float.intBitsToFloat(w.fixed32()));
                case (2 << 3) | 2 -> {
                    Wire packed = w.message();
                    if ((packed.end - packed.pos) % 4 != 0) {
                        return null;
                    }
                    while (packed.more()) {
                        values.add(Float.intBitsToFloat(packed.fixed32()));
                    }
                }
                default -> {
                    return null;
                }
            }
        }
        long[] dims = shape.stream().mapToLong(Long::longValue).toArray();
        return fits(dims, values.size) ? Input.ofTensor(values.toArray(), dims) : null;
    }

    /** contract.values.to_python's rule: at most 8 dimensions, none negative, product = values. */
    private static boolean fits(long[] shape, long count) {
        if (shape.length > MAX_TENSOR_DIMS) {
            return false;
        }
        long product = 1;
        for (long d : shape) {
            if (d < 0) {
                return false;
            }
            product = Math.multiplyExact(product, d);
        }
        return product == count;
    }

    /** protobuf's wire format over b[pos, end); any malformation throws IllegalArgumentException. */
    private static final class Wire {
        final byte[] b;
        int pos;
        final int end;

        Wire(byte[] b, int pos, int end) {
            this.b = b;
            this.pos = pos;
            this.end = end;
        }

        boolean more() {
            return pos < end;
        }

        long varint() {
            long value = 0;
            for (int i = 0; i < 10; i++) {
                need(1);
                byte x = b[pos++];
                if (i == 9 && (x & 0xfe) != 0) {
                    throw new IllegalArgumentException("varint over 64 bits");
                }
                value |= (long) (x & 0x7f) << (7 * i);
                if (x >= 0) {
                    return value;
                }
            }
            throw new IllegalArgumentException("varint over 10 bytes");
        }

        long fixed64() {
            need(8);
            long v = ByteBuffer.wrap(b, pos, 8).order(java.nio.ByteOrder.LITTLE_ENDIAN).getLong();
            pos += 8;
            return v;
        }

        int fixed32() {
            need(4);
            int v = ByteBuffer.wrap(b, pos, 4).order(java.nio.ByteOrder.LITTLE_ENDIAN).getInt();
            pos += 4;
            return v;
        }

        Wire message() {
            int length = length();
            Wire inner = new Wire(b, pos, pos + length);
            pos += length;
            return inner;
        }

        byte[] bytes() {
            int length = length();
            byte[] out = java.util.Arrays.copyOfRange(b, pos, pos + length);
            pos += length;
            return out;
        }

        String string() {
            int length = length();
            String s = strictUtf8(b, pos, length);
            pos += length;
            return s;
        }

        /** A string field's UTF-8, checked. */
        byte[] utf8() {
            int length = length();
            checkUtf8(b, pos, length);
            pos += length;
            return java.util.Arrays.copyOfRange(b, pos - length, pos);
        }

        /** A string field as `names` holds it; with `once`, null if the record sent it before. */
        String name(Names names, boolean once) {
            int length = length();
            String s = once ? names.once(b, pos, length) : names.of(b, pos, length);
            pos += length;
            return s;
        }

        private int length() {
            long length = varint();
            if (length < 0 || length > end - pos) {
                throw new IllegalArgumentException("length past the end");
            }
            return (int) length;
        }

        private void need(int n) {
            if (n > end - pos) {
                throw new IllegalArgumentException("field past the end");
            }
        }
    }

    private static final ThreadLocal<CharsetDecoder> UTF_8 = ThreadLocal.withInitial(() ->
            StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT));

    /** b[offset, offset + length) as a String; IllegalArgumentException if it is not UTF-8. */
    static String strictUtf8(byte[] b, int offset, int length) {
        if (ascii(b, offset, length)) {
            return new String(b, offset, length, StandardCharsets.ISO_8859_1);
        }
        try {
            return UTF_8.get().reset().decode(ByteBuffer.wrap(b, offset, length)).toString();
        } catch (CharacterCodingException e) {
            throw new IllegalArgumentException("not UTF-8", e);
        }
    }

    /** As strictUtf8, without making the String where the bytes are ASCII. */
    static void checkUtf8(byte[] b, int offset, int length) {
        if (!ascii(b, offset, length)) {
            strictUtf8(b, offset, length);
        }
    }

    private static boolean ascii(byte[] b, int offset, int length) {
        for (int i = offset; i < offset + length; i++) {
            if (b[i] < 0) {
                return false;
            }
        }
        return true;
    }

    // ---- JSON (contract/json_records.py) -----------------------------------------------------
    private static ReadRecord readJson(byte[] raw) throws IOException {
        if (raw.length >= 3 && (raw[0] & 0xff) == 0xef && (raw[1] & 0xff) == 0xbb && (raw[2] & 0xff) == 0xbf) {
            return null; // a BOM: Python's json refuses it
        }
        checkUtf8(raw, 0, raw.length);
        try (JsonParser p = JSON.createParser(raw)) {
            if (p.nextToken() != JsonToken.START_OBJECT) {
                return null;
            }
            Map<String, Object> fields = new HashMap<>();
            while (p.nextToken() == JsonToken.FIELD_NAME) {
                String name = p.currentName();
                JsonToken token = p.nextToken();
                Object value = switch (name) {
                    case "record_id", "data_type" -> token == JsonToken.VALUE_STRING ? text(p) : null;
                    case "event_time_ms" -> eventTime(p, token);
                    case "inputs" -> token == JsonToken.START_OBJECT ? jsonInputs(p) : null;
                    default -> null;
                };
                if (value == null || fields.put(name, value) != null) {
                    return null;
                }
            }
            if (p.currentToken() != JsonToken.END_OBJECT || p.nextToken() != null) {
                return null;
            }
            @SuppressWarnings("unchecked")
            Map<String, Input> inputs = (Map<String, Input>) fields.getOrDefault("inputs", new LinkedHashMap<>());
            return new ReadRecord(((String) fields.getOrDefault("record_id", "")).getBytes(StandardCharsets.UTF_8),
                    (String) fields.getOrDefault("data_type", ""),
                    (Long) fields.getOrDefault("event_time_ms", 0L), true,
                    inputs.keySet().toArray(new String[0]), inputs.values().toArray(new Input[0]), raw);
        }
    }

    private static Long eventTime(JsonParser p, JsonToken token) throws IOException {
        if (token != JsonToken.VALUE_NUMBER_INT || !fitsLong(p) || p.getLongValue() < 0) {
            return null;
        }
        return p.getLongValue();
    }

    private static Map<String, Input> jsonInputs(JsonParser p) throws IOException {
        Map<String, Input> inputs = new LinkedHashMap<>();
        while (p.nextToken() == JsonToken.FIELD_NAME) {
            String name = p.currentName();
            if (!wellFormed(name) || name.indexOf('#') >= 0) {
                return null;
            }
            Input value = jsonInput(p, p.nextToken());
            if (value == null || inputs.put(name, value) != null) {
                return null;
            }
        }
        return inputs;
    }

    private static Input jsonInput(JsonParser p, JsonToken token) throws IOException {
        return switch (token) {
            case VALUE_TRUE -> Input.ofLong(1);
            case VALUE_FALSE -> Input.ofLong(0);
            case VALUE_NUMBER_INT -> fitsLong(p) ? Input.ofLong(p.getLongValue()) : null;
            case VALUE_NUMBER_FLOAT -> {
                double d = p.getDoubleValue();
                yield Double.isFinite(d) ? Input.ofDouble(d) : null;
            }
            case VALUE_STRING -> {
                String s = text(p);
                yield s == null ? null : Input.ofString(s);
            }
            case START_OBJECT -> b64(p);
            case START_ARRAY -> jsonTensor(p);
            default -> null;
        };
    }

    private static Input b64(JsonParser p) throws IOException {
        if (p.nextToken() != JsonToken.FIELD_NAME || !p.currentName().equals("b64")
                || p.nextToken() != JsonToken.VALUE_STRING) {
            return null;
        }
        String text = p.getText();
        if (p.nextToken() != JsonToken.END_OBJECT || text.length() % 4 != 0 || !BASE64.matcher(text).matches()) {
            return null;
        }
        return Input.ofBytes(Base64.getDecoder().decode(text));
    }

    /** A rectangular nested list of numbers, read as Python's _tensor reads it (float64, then float32). */
    private static Input jsonTensor(JsonParser p) throws IOException {
        FloatList cells = new FloatList();
        long[] shape = nested(p, cells, 0);
        return shape == null ? null : Input.ofTensor(cells.toArray(), shape);
    }

    /** The shape of the list whose START_ARRAY was just read, its cells appended; null if not a tensor. */
    private static long[] nested(JsonParser p, FloatList cells, int depth) throws IOException {
        if (depth >= MAX_TENSOR_DIMS) {
            return null;
        }
        JsonToken token = p.nextToken();
        if (token != JsonToken.START_ARRAY) { // a list of numbers (or empty)
            long n = 0;
            for (; token != JsonToken.END_ARRAY; token = p.nextToken(), n++) {
                Float cell = cell(p, token);
                if (cell == null) {
                    return null;
                }
                cells.add(cell);
            }
            return new long[] {n};
        }
        long[] inner = null;
        long n = 0;
        for (; token != JsonToken.END_ARRAY; token = p.nextToken(), n++) {
            if (token != JsonToken.START_ARRAY) {
                return null;
            }
            long[] shape = nested(p, cells, depth + 1);
            if (shape == null || (inner != null && !java.util.Arrays.equals(inner, shape))) {
                return null;
            }
            inner = shape;
        }
        long[] out = new long[inner.length + 1];
        out[0] = n;
        System.arraycopy(inner, 0, out, 1, inner.length);
        return out;
    }

    private static Float cell(JsonParser p, JsonToken token) throws IOException {
        double d;
        if (token == JsonToken.VALUE_NUMBER_INT && fitsLong(p)) {
            d = (double) p.getLongValue();
        } else if (token == JsonToken.VALUE_NUMBER_FLOAT) {
            d = p.getDoubleValue();
        } else {
            return null;
        }
        return Double.isFinite(d) && Math.abs(d) <= Float.MAX_VALUE ? (float) d : null;
    }

    private static boolean fitsLong(JsonParser p) throws IOException {
        JsonParser.NumberType type = p.getNumberType();
        return type == JsonParser.NumberType.INT || type == JsonParser.NumberType.LONG;
    }

    private static String text(JsonParser p) throws IOException {
        String s = p.getText();
        return wellFormed(s) ? s : null;
    }

    /** No lone surrogate (JSON's "\ud800" escapes): such a string is no UTF-8 text. */
    static boolean wellFormed(String s) {
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (Character.isHighSurrogate(c) && i + 1 < s.length() && Character.isLowSurrogate(s.charAt(i + 1))) {
                i++;
            } else if (Character.isSurrogate(c)) {
                return false;
            }
        }
        return true;
    }

    /** A growable float[]: tensors are read without boxing. */
    static final class FloatList {
        float[] values = new float[16];
        int size;

        void add(float v) {
            if (size == values.length) {
                values = java.util.Arrays.copyOf(values, size * 2);
            }
            values[size++] = v;
        }

        float[] toArray() {
            return java.util.Arrays.copyOf(values, size);
        }
    }
}
