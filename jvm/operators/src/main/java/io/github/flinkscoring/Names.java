package io.github.flinkscoring;

import java.util.Arrays;

/**
 * Strings decoded once per reader: a record's input names and data type are almost always
 * ones an earlier record sent, so each is one String instance with its hash computed once.
 * It also tells a record's repeated input name in O(1) (`once`). Bounded, as a record stream
 * may send any names: past MAX_ENTRIES names or MAX_BYTES of them it is emptied, between
 * records.
 */
final class Names {
    static final int MAX_ENTRIES = 4096;
    static final int MAX_BYTES = 1 << 22;

    private byte[][] keys;
    private String[] strings;
    private int[] seenIn; // the record that last sent the name, for `once`
    private int count;
    private long bytes;
    private int record;

    Names() {
        empty();
    }

    /** Called before each record: never empties the table in the middle of one. */
    void startRecord() {
        record++;
        if (count >= MAX_ENTRIES || bytes >= MAX_BYTES) {
            empty();
        }
    }

    /** The string of the UTF-8 in b[offset, offset + length); IllegalArgumentException if it is not UTF-8. */
    String of(byte[] b, int offset, int length) {
        return strings[slot(b, offset, length)];
    }

    /** As `of`, but null if this record sent the name before. */
    String once(byte[] b, int offset, int length) {
        int i = slot(b, offset, length);
        if (seenIn[i] == record) {
            return null;
        }
        seenIn[i] = record;
        return strings[i];
    }

    private int slot(byte[] b, int offset, int length) {
        int mask = keys.length - 1;
        for (int i = hash(b, offset, length) & mask; ; i = (i + 1) & mask) {
            byte[] key = keys[i];
            if (key == null) {
                String s = RecordReader.strictUtf8(b, offset, length);
                return put(Arrays.copyOfRange(b, offset, offset + length), s, record - 1);
            }
            if (Arrays.equals(key, 0, key.length, b, offset, offset + length)) {
                return i;
            }
        }
    }

    private int put(byte[] key, String s, int seen) {
        if (2 * (count + 1) > keys.length) {
            grow();
        }
        int mask = keys.length - 1;
        int i = hash(key, 0, key.length) & mask;
        while (keys[i] != null) {
            i = (i + 1) & mask;
        }
        keys[i] = key;
        strings[i] = s;
        seenIn[i] = seen;
        count++;
        bytes += key.length;
        return i;
    }

    private void grow() {
        byte[][] oldKeys = keys;
        String[] oldStrings = strings;
        int[] oldSeen = seenIn;
        allocate(oldKeys.length * 2);
        for (int i = 0; i < oldKeys.length; i++) {
            if (oldKeys[i] != null) {
                put(oldKeys[i], oldStrings[i], oldSeen[i]);
            }
        }
    }

    private void empty() {
        allocate(64);
    }

    private void allocate(int capacity) {
        keys = new byte[capacity][];
        strings = new String[capacity];
        seenIn = new int[capacity];
        count = 0;
        bytes = 0;
    }

    private static int hash(byte[] b, int offset, int length) {
        int h = 1;
        for (int i = offset; i < offset + length; i++) {
            h = 31 * h + b[i];
        }
        return h ^ (h >>> 16);
    }
}
