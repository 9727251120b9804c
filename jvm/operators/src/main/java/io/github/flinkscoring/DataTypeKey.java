package io.github.flinkscoring;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;
import org.apache.flink.types.Row;

/**
 * Keys a data record by its data type on the JVM, so that the job's Python code runs in one
 * stage (the keyed one) instead of two. Emits Row(data type, record bytes), the shape
 * PyFlink's own key_by gives a keyed Python function.
 *
 * <p>Reads only the data type: a protobuf DataRecord's field 2, or a JSON record's top-level
 * "data_type". The key is "" when it cannot be read (not a record, too large, no data type,
 * groups nested deeper than protobuf's own limit); the Python side parses every record in full
 * and dead-letters those with the reason. No record may make it throw: a throw here fails the
 * task, which restarts from its checkpoint and reads the same record again.
 */
public class DataTypeKey implements MapFunction<byte[], Row> {
    private static final long serialVersionUID = 1L;
    private static final int DATA_TYPE_FIELD = 2;
    static final int MAX_DEPTH = 100; // protobuf's default recursion limit, as the Python parser
    private static final JsonFactory JSON = new JsonFactory();

    private final String recordFormat; // auto | protobuf | json, as the job's --record-format
    private final int maxRecordBytes;

    public DataTypeKey(String recordFormat, int maxRecordBytes) {
        this.recordFormat = recordFormat;
        this.maxRecordBytes = maxRecordBytes;
    }

    @Override
    public Row map(byte[] raw) {
        return Row.of(dataType(raw), raw);
    }

    public String dataType(byte[] raw) {
        if (raw == null || raw.length > maxRecordBytes) {
            return "";
        }
        boolean json = recordFormat.equals("json")
                || (recordFormat.equals("auto") && raw.length > 0 && raw[0] == '{');
        try {
            return json ? jsonDataType(raw) : protobufDataType(raw);
        } catch (RuntimeException | StackOverflowError e) {
            return ""; // a reader's bug must not become a poison record: Python says what is wrong
        }
    }

    /** The last top-level "data_type" string of a JSON object, as Python's json keeps the last. */
    static String jsonDataType(byte[] raw) {
        String found = "";
        try (JsonParser p = JSON.createParser(raw)) {
            if (p.nextToken() != JsonToken.START_OBJECT) {
                return "";
            }
            while (p.nextToken() == JsonToken.FIELD_NAME) {
                String name = p.currentName();
                JsonToken value = p.nextToken();
                if (name.equals("data_type")) {
                    found = value == JsonToken.VALUE_STRING ? p.getText() : "";
                }
                p.skipChildren();
            }
        } catch (IOException | RuntimeException e) {
            return "";
        }
        return found;
    }

    /** The last field 2 of a protobuf message of length-delimited type, as protobuf keeps the last. */
    static String protobufDataType(byte[] b) {
        Reader r = new Reader(b);
        String found = "";
        try {
            while (r.pos < b.length) {
                long tag = r.varint();
                int field = (int) (tag >>> 3);
                int wire = (int) (tag & 7);
                if (field == DATA_TYPE_FIELD && wire == 2) {
                    int length = r.length();
                    found = new String(b, r.pos, length, StandardCharsets.UTF_8);
                    r.pos += length;
                } else {
                    r.skip(field, wire);
                }
            }
        } catch (IllegalArgumentException | ArrayIndexOutOfBoundsException e) {
            return "";
        }
        return found;
    }

    /** Just enough of protobuf's wire format to step over fields. */
    private static final class Reader {
        final byte[] b;
        int pos;

        Reader(byte[] b) {
            this.b = b;
        }

        long varint() {
            long value = 0;
            for (int shift = 0; shift < 64; shift += 7) {
                byte x = b[pos++];
                value |= (long) (x & 0x7f) << shift;
                if (x >= 0) {
                    return value;
                }
            }
            throw new IllegalArgumentException("varint over 10 bytes");
        }

        int length() {
            long length = varint();
            if (length < 0 || length > b.length - pos) {
                throw new IllegalArgumentException("length past the end");
            }
            return (int) length;
        }

        void skip(int field, int wire) {
            switch (wire) {
                case 0 -> varint();
                case 1 -> advance(8);
                case 2 -> advance(length());
                case 3 -> skipGroup(field);
                case 5 -> advance(4);
                default -> throw new IllegalArgumentException("wire type " + wire);
            }
        }

        /** Steps over a group and the groups inside it, without recursion: the open ones on a stack. */
        void skipGroup(int field) {
            int[] open = new int[MAX_DEPTH];
            int depth = 0;
            open[depth++] = field;
            while (depth > 0) {
                long tag = varint();
                int inner = (int) (tag >>> 3);
                int wire = (int) (tag & 7);
                if (wire == 4) {
                    if (inner != open[--depth]) {
                        throw new IllegalArgumentException("unmatched end group");
                    }
                } else if (wire == 3) {
                    if (depth == MAX_DEPTH) {
                        throw new IllegalArgumentException("groups nested deeper than " + MAX_DEPTH);
                    }
                    open[depth++] = inner;
                } else {
                    skip(inner, wire);
                }
            }
        }

        void advance(int n) {
            if (n > b.length - pos) {
                throw new IllegalArgumentException("field past the end");
            }
            pos += n;
        }
    }
}
