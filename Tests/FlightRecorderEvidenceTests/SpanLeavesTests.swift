import COTLP
import CProtobufC
import FlightRecorderOTLP
import FlightRecorderTesting
import Testing

@testable import FlightRecorderEvidence

/// Each span's leaf is its own single-span `TracesData`, encoded exactly as protobuf-c encodes
/// that whole message.
@Suite struct SpanLeavesTests {
    /// Two resource groups with schema URLs, one without a resource, scopes with and without a
    /// scope message, attributes of every kind, events and links.
    static func request() -> [UInt8] {
        let spans = (1...5).map { i in
            TestSpan(
                trace: RequestBuilder.traceID(UInt8(i)), span: RequestBuilder.spanID(UInt8(i)),
                parent: i == 1 ? [] : RequestBuilder.spanID(1), name: "step \(i)", start: 1_000 * UInt64(i),
                end: 5_000 * UInt64(i),
                attributes: [
                    ("s", .string(String(repeating: "x", count: i * 60))), ("i", .int(Int64(-i))), ("d", .double(0.5)),
                    ("b", .bool(true)), ("a", .array([.string("p"), .int(3)])),
                ],
                statusCode: UInt64(i % 3), statusMessage: i == 2 ? "bad" : "",
                links: i == 3 ? [(RequestBuilder.traceID(9), RequestBuilder.spanID(9))] : [])
        }
        var w = ProtobufWriter()
        w.raw(
            RequestBuilder.request(
                resource: [("service.name", .string("a")), ("tenant.id", .string("t"))], spans: Array(spans[0..<2])))
        w.messageField(1) { rs in
            rs.messageField(1) { r in RequestBuilder.keyValue(&r, 1, "service.name", .string("b")) }
            rs.messageField(2) { ss in
                ss.messageField(1) { sc in
                    sc.stringField(1, "lib")
                    sc.stringField(2, "1.0")
                }
                RequestBuilder.span(&ss, spans[2])
                ss.stringField(3, "https://opentelemetry.io/schemas/1.26.0")
            }
            rs.messageField(2) { ss in
                RequestBuilder.span(&ss, spans[3])
                ss.stringField(3, "scope-schema")
            }
            rs.stringField(3, "https://opentelemetry.io/schemas/1.27.0")
        }
        // A group without a resource whose scope spans have no scope message.
        w.messageField(1) { rs in
            rs.messageField(2) { ss in RequestBuilder.span(&ss, spans[4]) }
        }
        let body = w.bytes
        return body
    }

    @Test func leavesAreEachSpansOwnTracesDataAsProtobufCEncodesIt() throws {
        try withUnpackedRequest(Self.request()) { request in
            let messages = SpanLeaves.messages(request)
            #expect(messages.count == 5)
            var expected: [[UInt8]] = []
            for r in 0..<request.pointee.n_resource_spans {
                let rs = request.pointee.resource_spans[r]!
                for i in 0..<rs.pointee.n_scope_spans {
                    let ss = rs.pointee.scope_spans[i]!
                    for j in 0..<ss.pointee.n_spans {
                        let span = ss.pointee.spans[j]!
                        // The span alone in its scope, alone in its resource group.
                        var spanPointer: UnsafeMutablePointer<CSpan>? = UnsafeMutablePointer(mutating: span)
                        var scopeSpans = ss.pointee
                        var resourceSpans = rs.pointee
                        withUnsafeMutablePointer(to: &spanPointer) { sp in
                            scopeSpans.n_spans = 1
                            scopeSpans.spans = sp
                            withUnsafeMutablePointer(to: &scopeSpans) { scope in
                                var scopePointer: UnsafeMutablePointer<CScopeSpans>? = scope
                                withUnsafeMutablePointer(to: &scopePointer) { ssp in
                                    resourceSpans.n_scope_spans = 1
                                    resourceSpans.scope_spans = ssp
                                    withUnsafeMutablePointer(to: &resourceSpans) { group in
                                        var groupPointer: UnsafeMutablePointer<CResourceSpans>? = group
                                        withUnsafeMutablePointer(to: &groupPointer) { rsp in
                                            var data = CTracesData()
                                            opentelemetry__proto__trace__v1__traces_data__init(&data)
                                            data.n_resource_spans = 1
                                            data.resource_spans = rsp
                                            let size = opentelemetry__proto__trace__v1__traces_data__get_packed_size(
                                                &data)
                                            var out = [UInt8](repeating: 0, count: size)
                                            _ = opentelemetry__proto__trace__v1__traces_data__pack(&data, &out)
                                            expected.append(out)
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            #expect(messages == expected)
            // Hashed straight from protobuf-c's encoding of the whole request, as ingest does
            // for a request it re-encoded: the same leaves.
            let size = opentelemetry__proto__collector__trace__v1__export_trace_service_request__get_packed_size(
                request)
            var packed = [UInt8](repeating: 0, count: size)
            _ = opentelemetry__proto__collector__trace__v1__export_trace_service_request__pack(request, &packed)
            let direct = try #require(packed.withUnsafeBytes { SpanLeaves.hashBytes(canonicalPayload: $0) })
            #expect(direct == SpanLeaves.hashBytes(request))
            #expect(SpanLeaves.hashes(request) == messages.map { TreeHash.leaf($0) })
            // Every leaf differs (each span is distinct).
            #expect(Set(SpanLeaves.hashes(request)).count == 5)
        }
    }
}
