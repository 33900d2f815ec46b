import FlightRecorderCore
import FlightRecorderOTLP
import FlightRecorderQuery
import FlightRecorderTesting
import Foundation
import Testing

/// The causal views are written with `JSONWriter`; clients were promised the bytes
/// `JSONEncoder` makes of them. Every view, on runs with skew, links, errors, absent and
/// present facts, and strings that need escaping, must come out identical.
@Suite struct CausalViewJSONTests {
    static func encoded(_ value: some Encodable) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    static func written(_ value: some JSONWritable) -> String {
        var w = JSONWriter()
        value.writeJSON(to: &w)
        return String(decoding: w.bytes, as: UTF8.self)
    }

    static func graphs() throws -> [RunGraph] {
        var out = [try RunGraphTests.stolenLaptop(), try RunGraphTests.stolenLaptop(grant: false, withPolicy: false)]
        // Hostile strings: quotes, backslashes, every control character, slashes, non-ASCII.
        let controls = String((0..<32).map { Character(UnicodeScalar(UInt8($0))) })
        let odd = "a\"b\\c/d \(controls) \u{7F} é 東京 🚀 </script>"
        let parent = try RunGraphTests.spans(
            service: "agent \(odd)",
            [
                TestSpan(
                    trace: RunGraphTests.t1, span: RunGraphTests.id(1), name: odd, start: 1_000, end: 2_000,
                    attributes: [
                        ("gen_ai.tool.name", .string(odd)), ("gen_ai.tool.call.arguments", .string(#"{"a":"x\"y"}"#)),
                        ("operation.id", .string("op/1")),
                    ], statusCode: 2, statusMessage: odd)
            ])
        let child = try RunGraphTests.spans(
            service: "tool-api",
            [
                TestSpan(
                    trace: RunGraphTests.t1, span: RunGraphTests.id(2), parent: RunGraphTests.id(1), name: "handle",
                    start: 400, end: 600, statusCode: 2),
                TestSpan(
                    trace: RunGraphTests.t1, span: RunGraphTests.id(3), parent: RunGraphTests.id(9), name: "orphan"),
            ])
        out.append(RunGraph(runID: "run \(odd)", spans: parent + child))
        // A whole generated agent run of many steps.
        var options = AgentWorkload.Options()
        options.spansPerRequest = 400
        options.tenants = ["acme"]
        var workload = AgentWorkload(options: options)
        let body = workload.nextRequest().bytes
        let spans = try body.withUnsafeBytes { try TracesDataDecoder.decode($0) { _, _ in true } }
        for run in Set(spans.compactMap { s in s.attributes.first { $0.key == "agent.run.id" }?.value.scalarString }) {
            out.append(
                RunGraph(
                    runID: run,
                    spans: spans.filter { s in
                        s.attributes.first { $0.key == "agent.run.id" }?.value.scalarString == run
                    }))
        }
        return out
    }

    @Test func everyViewIsWhatJSONEncoderMakesOfIt() throws {
        let graphs = try Self.graphs()
        #expect(graphs.count > 4)
        for g in graphs {
            let graph = g.graph()
            #expect(Self.written(graph) == (try Self.encoded(graph)))
            let critical = g.criticalPath()
            #expect(Self.written(critical) == (try Self.encoded(critical)))
            for i in g.spans.indices {
                let path = g.path(to: i)
                #expect(Self.written(path) == (try Self.encoded(path)))
            }
        }
    }

    @Test func writtenJSONParsesBack() throws {
        for g in try Self.graphs() {
            let bytes = Data(Self.written(g.graph()).utf8)
            let back = try JSONDecoder().decode(RunGraph.GraphView.self, from: bytes)
            #expect(back.nodes.map(\.spanId) == g.graph().nodes.map(\.spanId))
            #expect(back.nodes.map(\.name) == g.graph().nodes.map(\.name))
        }
    }
}
