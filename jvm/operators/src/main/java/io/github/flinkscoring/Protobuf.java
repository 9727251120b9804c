package io.github.flinkscoring;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;

/** Just enough of protobuf's wire format to write the job's messages (proto/contract/scoring.proto). */
final class Protobuf {
    private final ByteArrayOutputStream out = new ByteArrayOutputStream(256);

    byte[] bytes() {
        return out.toByteArray();
    }

    /** proto3: a field at its default value is not written, as protobuf's own writers do. */
    Protobuf string(int field, String value) {
        return value == null || value.isEmpty() ? this : bytes(field, value.getBytes(StandardCharsets.UTF_8));
    }

    Protobuf bytes(int field, byte[] value) {
        if (value == null || value.length == 0) {
            return this;
        }
        return lengthDelimited(field, value);
    }

    Protobuf lengthDelimited(int field, byte[] value) {
        tag(field, 2);
        varint(value.length);
        out.write(value, 0, value.length);
        return this;
    }

    Protobuf int64(int field, long value) {
        if (value != 0) {
            tag(field, 0);
            varint(value);
        }
        return this;
    }

    /** A oneof member: written whatever its value. */
    Protobuf oneofInt64(int field, long value) {
        tag(field, 0);
        varint(value);
        return this;
    }

    Protobuf oneofDouble(int field, double value) {
        tag(field, 1);
        fixed(Double.doubleToRawLongBits(value), 8);
        return this;
    }

    Protobuf packedInt64(int field, long[] values) {
        if (values.length == 0) {
            return this;
        }
        Protobuf inner = new Protobuf();
        for (long v : values) {
            inner.varint(v);
        }
        return lengthDelimited(field, inner.bytes());
    }

    Protobuf packedFloat(int field, float[] values, int from, int to) {
        if (to == from) {
            return this;
        }
        Protobuf inner = new Protobuf();
        for (int i = from; i < to; i++) {
            inner.fixed(Float.floatToRawIntBits(values[i]) & 0xffffffffL, 4);
        }
        return lengthDelimited(field, inner.bytes());
    }

    private void tag(int field, int wire) {
        varint(((long) field << 3) | wire);
    }

    private void varint(long v) {
        while ((v & ~0x7fL) != 0) {
            out.write((int) ((v & 0x7f) | 0x80));
            v >>>= 7;
        }
        out.write((int) v);
    }

    private void fixed(long v, int bytes) {
        for (int i = 0; i < bytes; i++) {
            out.write((int) (v >>> (8 * i)) & 0xff);
        }
    }
}
