package io.github.flinkscoring;

import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.types.Row;

/**
 * The record bytes of a keyed Row(data type, bytes), unchanged: the identity operator of the
 * benchmarks' JVM-only baseline (bench/jvm_only_job.py), the job's shape with no Python at all.
 */
public final class RecordBytes implements MapFunction<Row, byte[]> {
    private static final long serialVersionUID = 1L;

    @Override
    public byte[] map(Row keyed) {
        return (byte[]) keyed.getField(1);
    }
}
