package io.github.flinkscoring;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;

/**
 * Just enough of protobuf's wire format to write the job's messages (proto/contract/scoring.proto),
 * into a growable array of its own: a writer is reused (`reset`) for message after message,
 * and a nested message is written from a second writer without an array of its own.
 */
final class Protobuf {
    private byte[] buf = new byte[256];
    private int size;

    byte[] bytes() {
        return Arrays.copyOf(buf, size);
    }

    Protobuf reset() {
        size = 0;
        return this;
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
        return lengthDelimited(field, value, value.length);
    }

    /** A nested message: what `inner` holds. */
    Protobuf message(int field, Protobuf inner) {
        return lengthDelimited(field, inner.buf, inner.size);
    }

    private Protobuf lengthDelimited(int field, byte[] value, int length) {
        tag(field, 2);
        varint(length);
        room(length);
        System.arraycopy(value, 0, buf, size, length);
        size += length;
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
        int length = 0;
        for (long v : values) {
            length += varintSize(v);
        }
        tag(field, 2);
        varint(length);
        for (long v : values) {
            varint(v);
        }
        return this;
    }

    Protobuf packedFloat(int field, float[] values) {
        if (values.length == 0) {
            return this;
        }
        tag(field, 2);
        varint(4L * values.length);
        for (float v : values) {
            fixed(Float.floatToRawIntBits(v) & 0xffffffffL, 4);
        }
        return this;
    }

    private void tag(int field, int wire) {
        varint(((long) field << 3) | wire);
    }

    private void varint(long v) {
        room(10);
        while ((v & ~0x7fL) != 0) {
            buf[size++] = (byte) ((v & 0x7f) | 0x80);
            v >>>= 7;
        }
        buf[size++] = (byte) v;
    }

    private static int varintSize(long v) {
        int n = 1;
        while ((v & ~0x7fL) != 0) {
            v >>>= 7;
            n++;
        }
        return n;
    }

    private void fixed(long v, int bytes) {
        room(bytes);
        for (int i = 0; i < bytes; i++) {
            buf[size++] = (byte) (v >>> (8 * i));
        }
    }

    private void room(int more) {
        if (size + more > buf.length) {
            buf = Arrays.copyOf(buf, Math.max(buf.length * 2, size + more));
        }
    }
}
