package io.github.flinkscoring;

/**
 * A data record read on the JVM: what its row of a column batch holds. Its inputs are
 * names[i] = inputs[i], no name twice; the record id is its UTF-8.
 */
record ReadRecord(byte[] recordId, String dataType, long eventTimeMs, boolean json,
                  String[] names, Input[] inputs, byte[] original) {
}
