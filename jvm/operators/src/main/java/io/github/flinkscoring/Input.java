package io.github.flinkscoring;

/**
 * One input of a record, as a protobuf Value holds it: one of five kinds. The kind names the
 * Arrow column the value goes to: "name" (double), "name#int", "name#str", "name#bytes",
 * "name#tensor" with "name#shape" (contract/columns.py).
 */
record Input(Kind kind, double doubleValue, long longValue, String stringValue, byte[] bytesValue,
             float[] tensorValues, long[] tensorShape) {

    enum Kind {
        DOUBLE(""), INT("#int"), STRING("#str"), BYTES("#bytes"), TENSOR("#tensor");

        final String suffix;

        Kind(String suffix) {
            this.suffix = suffix;
        }

        /** The kind of a column named `name` + suffix, or null. */
        static Kind ofSuffix(String suffix) {
            for (Kind k : values()) {
                if (k.suffix.equals(suffix)) {
                    return k;
                }
            }
            return null;
        }
    }

    static Input ofDouble(double v) {
        return new Input(Kind.DOUBLE, v, 0, null, null, null, null);
    }

    static Input ofLong(long v) {
        return new Input(Kind.INT, 0, v, null, null, null, null);
    }

    static Input ofString(String v) {
        return new Input(Kind.STRING, 0, 0, v, null, null, null);
    }

    static Input ofBytes(byte[] v) {
        return new Input(Kind.BYTES, 0, 0, null, v, null, null);
    }

    static Input ofTensor(float[] values, long[] shape) {
        return new Input(Kind.TENSOR, 0, 0, null, null, values, shape);
    }
}
