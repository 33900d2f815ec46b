import FlightRecorderOTLP
import FlightRecorderTesting
import Foundation
import Testing

@testable import FlightRecorderEvidence

/// An audit bundle's `spans.otlp.jsonl` line is a span's leaf message as OTLP/JSON; a reader
/// recomputes the leaf from the line. So JSON out (`OTLPJSONEncoder`) and back in
/// (`OTLPJSONTranscoder`, then protobuf-c) must give the same leaf, for every kind of field.
@Suite struct ExportLineTests {
    /// Every field and value kind, escapes, extreme numbers, events, links, flags, entity refs.
    static func everyField() -> [UInt8] {
        var w = ProtobufWriter()
        w.messageField(1) { rs in
            rs.messageField(1) { r in
                RequestBuilder.keyValue(&r, 1, "service.name", .string("agent \"quoted\" \\ /\n\t é ✓ 🚀"))
                r.varintField(2, 3)
                r.messageField(3) { e in
                    e.stringField(1, "https://schema")
                    e.stringField(2, "service")
                    e.stringField(3, "service.name")
                    e.stringField(3, "service.namespace")
                    e.stringField(4, "service.version")
                }
            }
            rs.messageField(2) { ss in
                ss.messageField(1) { sc in
                    sc.stringField(1, "lib")
                    sc.stringField(2, "2.0")
                    RequestBuilder.keyValue(&sc, 3, "scope.attr", .bool(false))
                    sc.varintField(4, 1)
                }
                ss.messageField(2) { p in
                    p.bytesField(1, RequestBuilder.traceID(1))
                    p.bytesField(2, RequestBuilder.spanID(1))
                    p.stringField(3, "vendor=abc,other=x")
                    p.bytesField(4, RequestBuilder.spanID(9))
                    p.stringField(5, "execute_tool open_ticket")
                    p.varintField(6, 3)
                    p.fixed64Field(7, 1_767_000_000_123_456_789)
                    p.fixed64Field(8, UInt64.max)
                    for (k, v) in [
                        ("s", TestValue.string("")), ("i", .int(Int64.min)), ("j", .int(Int64.max)), ("z", .int(0)),
                        ("d1", .double(0.1)), ("d2", .double(1e300)), ("d3", .double(-0.0)), ("d4", .double(.nan)),
                        ("d5", .double(.infinity)), ("d6", .double(-.infinity)),
                        ("d7", .double(.leastNonzeroMagnitude)),
                        ("d8", .double(123456789.125)), ("b", .bytes([0, 1, 2, 255])), ("e", .bytes([])),
                        ("a", .array([.string("x"), .int(1), .array([]), .kvlist([("k", .double(2.5))])])),
                        ("m", .kvlist([("inner", .bool(true)), ("deep", .kvlist([]))])),
                    ] {
                        RequestBuilder.keyValue(&p, 9, k, v)
                    }
                    p.messageField(9) { kv in kv.stringField(1, "no-value") }
                    p.messageField(9) { kv in
                        kv.stringField(1, "empty-value")
                        kv.messageField(2) { _ in }
                    }
                    p.varintField(10, 7)
                    p.messageField(11) { e in
                        e.fixed64Field(1, 42)
                        e.stringField(2, "exception")
                        RequestBuilder.keyValue(&e, 3, "exception.message", .string("bad\u{1}thing"))
                        e.varintField(4, 2)
                    }
                    p.messageField(11) { _ in }
                    p.varintField(12, 1)
                    p.messageField(13) { l in
                        l.bytesField(1, RequestBuilder.traceID(2))
                        l.bytesField(2, RequestBuilder.spanID(2))
                        l.stringField(3, "k=v")
                        RequestBuilder.keyValue(&l, 4, "link.kind", .string("grant"))
                        l.varintField(5, 1)
                        l.fixed32Field(6, 0x301)
                    }
                    p.varintField(14, 4)
                    p.messageField(15) { st in
                        st.stringField(2, "timed out")
                        st.varintField(3, 2)
                    }
                    p.fixed32Field(16, 0x101)
                }
                ss.messageField(2) { p in
                    p.bytesField(1, RequestBuilder.traceID(3))
                    p.bytesField(2, RequestBuilder.spanID(3))
                    p.messageField(15) { _ in }
                }
                ss.stringField(3, "https://opentelemetry.io/schemas/1.26.0")
            }
            rs.stringField(3, "https://opentelemetry.io/schemas/1.27.0")
        }
        w.messageField(1) { rs in
            rs.messageField(2) { ss in
                ss.messageField(2) { p in
                    p.bytesField(1, RequestBuilder.traceID(4))
                    p.bytesField(2, RequestBuilder.spanID(4))
                }
            }
        }
        return w.bytes
    }

    func roundTrip(_ payload: [UInt8]) throws -> Int {
        try withUnpackedRequest(payload) { request in
            let messages = SpanLeaves.messages(request)
            for m in messages {
                let json = try #require(OTLPJSONEncoder.tracesData(m))
                let back = try OTLPJSONTranscoder.transcodeExportRequest(Data(json))
                try withUnpackedRequest(back) { r in
                    let line = String(decoding: json, as: UTF8.self)
                    #expect(SpanLeaves.messages(r) == [m], "\(line)")
                    #expect(SpanLeaves.hashes(r) == [TreeHash.leaf(m)])
                }
            }
            return messages.count
        }
    }

    @Test func everyKindOfFieldSurvivesTheJSONLine() throws {
        #expect(try roundTrip(Self.everyField()) == 3)
    }

    @Test func generatedAgentTrafficSurvivesTheJSONLine() throws {
        var options = AgentWorkload.Options()
        options.spansPerRequest = 200
        var workload = AgentWorkload(options: options)
        for _ in 0..<5 { #expect(try roundTrip(workload.nextRequest().bytes) == 200) }
    }
}
