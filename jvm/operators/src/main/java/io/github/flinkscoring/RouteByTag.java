package io.github.flinkscoring;

import java.util.Arrays;
import java.util.List;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.streaming.api.functions.ProcessFunction;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

/**
 * Sends each output of the Python scoring operator where its first byte says: 0 to the main
 * output, i to the i-th named side output; the rest of the bytes is the message.
 *
 * <p>The Python operator tags its outputs itself instead of using PyFlink's side outputs: in
 * thread mode, PyFlink 2.2.1 sends whatever a KeyedBroadcastProcessFunction's on_timer yields
 * to the main output, side output or not.
 */
public final class RouteByTag extends ProcessFunction<byte[], byte[]> {
    private static final long serialVersionUID = 1L;

    private final List<OutputTag<byte[]>> sideOutputs;

    public RouteByTag(String... sideOutputNames) {
        this.sideOutputs = Arrays.stream(sideOutputNames).map(RouteByTag::sideOutput).toList();
    }

    /** The side output of this name: equal to the one the router sends to. */
    public static OutputTag<byte[]> sideOutput(String name) {
        return new OutputTag<>(name, PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO);
    }

    @Override
    public void processElement(byte[] tagged, Context ctx, Collector<byte[]> out) {
        if (tagged.length == 0 || tagged[0] < 0 || tagged[0] > sideOutputs.size()) {
            throw new IllegalStateException("an output of the scoring operator has no valid tag: "
                    + (tagged.length == 0 ? "it is empty" : "its first byte is " + tagged[0])
                    + "; tags are 0 (main output) to " + sideOutputs.size() + " " + sideOutputNames());
        }
        byte[] message = Arrays.copyOfRange(tagged, 1, tagged.length);
        if (tagged[0] == 0) {
            out.collect(message);
        } else {
            ctx.output(sideOutputs.get(tagged[0] - 1), message);
        }
    }

    private List<String> sideOutputNames() {
        return sideOutputs.stream().map(OutputTag::getId).toList();
    }
}
