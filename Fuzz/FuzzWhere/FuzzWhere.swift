import FlightRecorderOTLP
import FlightRecorderQuery
import FlightRecorderTesting
import FuzzSupport

/// The `where` expression language of `GET /api/v1/runs?where=`: parse, then evaluate
/// against a span, and ask which indexed equalities it requires.
let span: SpanRecord = {
    let body = RequestBuilder.request(spans: [
        TestSpan(
            trace: RequestBuilder.traceID(1), span: RequestBuilder.spanID(1), name: "execute_tool disable_device",
            attributes: [
                ("policy.outcome", .string("blocked")), ("gen_ai.tool.name", .string("disable_device")),
                ("gen_ai.usage.input_tokens", .int(812)), ("retry", .bool(true)), ("score", .double(0.25)),
            ], statusCode: 2, statusMessage: "backend said 502")
    ])
    return try! body.withUnsafeBytes { try TracesDataDecoder.decode($0) { _, _ in true } }[0]
}()

func fuzzOne(_ input: UnsafeBufferPointer<UInt8>) {
    let text = String(decoding: input, as: UTF8.self)
    guard let filter = try? SpanFilter.parse(text) else { return }
    _ = filter.matches(span)
    _ = filter.requiredEqualities(among: ["policy.outcome", "gen_ai.tool.name"])
}

@main enum Main {
    static func main() { FuzzMain.run(fuzzOne) }
}
