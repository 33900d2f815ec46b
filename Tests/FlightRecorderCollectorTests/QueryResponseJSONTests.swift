import FlightRecorderCore
import FlightRecorderOTLP
import FlightRecorderQuery
import FlightRecorderTesting
import Foundation
import Testing

@testable import FlightRecorderCollector

/// Bodies written with `JSONWriter` are what `JSONEncoder` with sorted keys makes of them.
@Suite struct QueryResponseJSONTests {
    @Test func aLookupAnswerIsWhatJSONEncoderMakesOfIt() throws {
        let trace = RequestBuilder.traceID(1)
        let body = RequestBuilder.request(
            resource: [("service.name", .string("agent"))],
            spans: [
                TestSpan(trace: trace, span: RequestBuilder.spanID(1), name: "invoke_agent", start: 0, end: 100),
                TestSpan(
                    trace: trace, span: RequestBuilder.spanID(2), parent: RequestBuilder.spanID(1),
                    name: "execute_tool \"quoted\" \\ /", start: 10, end: 20,
                    attributes: [("operation.id", .string("op-1")), ("gen_ai.tool.name", .string("disable"))]),
            ])
        let spans = try body.withUnsafeBytes { try TracesDataDecoder.decode($0) { _, _ in true } }
        let graph = RunGraph(runID: "run \u{1}é", spans: spans)
        let lookup = LookupBody(
            key: "operation.id", value: "op-1\n",
            matches: [
                .init(runId: graph.runID, tenant: "acme", spanId: spans[1].spanID.hex, path: graph.path(to: 1)),
                .init(runId: graph.runID, tenant: "globex", spanId: spans[0].spanID.hex, path: graph.path(to: 0)),
            ])
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var w = JSONWriter()
        lookup.writeJSON(to: &w)
        #expect(String(decoding: w.bytes, as: UTF8.self) == String(decoding: try encoder.encode(lookup), as: UTF8.self))
        var empty = JSONWriter()
        LookupBody(key: "k", value: "v", matches: []).writeJSON(to: &empty)
        #expect(String(decoding: empty.bytes, as: UTF8.self) == #"{"key":"k","matches":[],"value":"v"}"#)
    }
}
