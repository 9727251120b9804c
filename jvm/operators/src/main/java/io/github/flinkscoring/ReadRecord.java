package io.github.flinkscoring;

import java.util.Map;

/** A data record read on the JVM: what its row of a column batch holds. */
record ReadRecord(String recordId, String dataType, long eventTimeMs, boolean json,
                  Map<String, Input> inputs, byte[] original) {
}
