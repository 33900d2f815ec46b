import FlightRecorderIngest
import FlightRecorderOTLP
import FlightRecorderRedaction
import FlightRecorderTesting
import Foundation
import Testing

@Suite struct ExportRequestDecoderTests {
    let decoder = ExportRequestDecoder()
    let trace = RequestBuilder.traceID(1)

    @Test func extractsIndexFactsFromEverySpan() throws {
        let body = RequestBuilder.request(
            resource: [("service.name", .string("support-agent")), ("tenant.id", .string("acme"))],
            spans: [
                TestSpan(
                    trace: trace, span: RequestBuilder.spanID(1), start: 10, end: 20,
                    attributes: [("agent.run.id", .string("r1"))]),
                TestSpan(
                    trace: trace, span: RequestBuilder.spanID(2), parent: RequestBuilder.spanID(1), start: 11, end: 15,
                    statusCode: 2),
            ])
        let batch = try decoder.decode(body)
        #expect(batch.spans.count == 2)
        #expect(batch.payload == body)
        #expect(batch.resources == [ResourceFacts(agent: "support-agent", tenant: "acme")])
        #expect(batch.spans[0].explicitRunID == "r1")
        #expect(batch.spans[0].parentSpanID.isZero)
        #expect(batch.spans[1].explicitRunID == nil)
        #expect(batch.spans[1].parentSpanID.hex == "cd00000000000001")
        #expect(batch.spans[1].isError)
        #expect(!batch.spans[0].isError)
        #expect(batch.spans[0].traceID.hex == "ab000000000000000000000000000001")
        #expect(batch.spans[0].startNanos == 10 && batch.spans[0].endNanos == 20)
    }

    @Test func runKeysFollowConfiguredOrderSpanBeforeResource() throws {
        let d = ExportRequestDecoder(runIdentity: RunIdentity(keys: ["a", "b"]))
        let body = RequestBuilder.request(
            resource: [("a", .string("from-resource"))],
            spans: [
                TestSpan(trace: trace, span: RequestBuilder.spanID(1), attributes: [("b", .string("span-b"))]),
                TestSpan(
                    trace: trace, span: RequestBuilder.spanID(2),
                    attributes: [("b", .int(7)), ("a", .string("span-a"))]),
                TestSpan(trace: trace, span: RequestBuilder.spanID(3)),
            ])
        let runs = try d.decode(body).spans.map(\.explicitRunID)
        #expect(runs == ["span-b", "span-a", "from-resource"])
    }

    @Test(arguments: [
        (Array(repeating: UInt8(0), count: 16), RequestBuilder.spanID(1), [UInt8](), "invalid trace ID (16 bytes"),
        (Array(repeating: UInt8(1), count: 8), RequestBuilder.spanID(1), [UInt8](), "invalid trace ID (8 bytes"),
        (RequestBuilder.traceID(1), [UInt8](repeating: 0, count: 8), [UInt8](), "invalid span ID (8 bytes"),
        (RequestBuilder.traceID(1), [UInt8](repeating: 1, count: 4), [UInt8](), "invalid span ID (4 bytes"),
        (
            RequestBuilder.traceID(1), RequestBuilder.spanID(1), [UInt8](repeating: 1, count: 3),
            "invalid parent span ID (3 bytes"
        ),
    ])
    func rejectsInvalidSpansNamingThemAndKeepsTheRest(
        trace: [UInt8], span: [UInt8], parent: [UInt8], expected: String
    )
        throws
    {
        let body = RequestBuilder.request(spans: [
            TestSpan(trace: RequestBuilder.traceID(9), span: RequestBuilder.spanID(9)),
            TestSpan(trace: trace, span: span, parent: parent),
            TestSpan(trace: RequestBuilder.traceID(9), span: RequestBuilder.spanID(10)),
        ])
        let batch = try decoder.decode(body)
        #expect(batch.rejectedSpans == 1)
        #expect(batch.spans.map(\.spanID.hex) == ["cd00000000000009", "cd0000000000000a"])
        #expect(batch.rejectionMessage.contains("1 of 3 spans rejected"))
        #expect(batch.rejectionMessage.contains("resourceSpans[0].scopeSpans[0].spans[1]: " + expected))
        // The stored payload holds only the valid spans.
        let stored = try batch.payload.withUnsafeBytes { try TracesDataDecoder.decode($0) { _, _ in true } }
        #expect(stored.map(\.spanID) == batch.spans.map(\.spanID))
    }

    /// Found by FuzzOTLPProtobuf: field number 0 with a non-minimal key (`85 00`) passed
    /// protobuf-c, but its re-encoding did not unpack, so the stored block became unreadable.
    @Test(arguments: [[UInt8]([0x85, 0x00]), [0x05], [0x80, 0x80, 0x00]])
    func fieldNumberZeroIsRefusedInEveryMessage(key: [UInt8]) throws {
        var w = ProtobufWriter()
        w.messageField(1) { rs in
            rs.messageField(2) { ss in
                ss.messageField(2) { span in
                    span.bytesField(1, RequestBuilder.traceID(1))
                    span.bytesField(2, RequestBuilder.spanID(1))
                    span.raw(key + (key.last! & 7 == 5 ? [1, 1, 0, 0] : [0]))
                }
            }
        }
        #expect(throws: ExportRequestError.self) { try decoder.decode(w.bytes, tenant: "acme") }
    }

    /// Whatever a request carries, what ingest stores decodes again (the fuzzers' invariant).
    @Test func storedPayloadsAlwaysDecodeAgain() throws {
        for file in try FileManager.default.contentsOfDirectory(atPath: Self.corpus) {
            guard let body = FileManager.default.contents(atPath: Self.corpus + "/" + file),
                let batch = try? decoder.decode(Array(body), tenant: "acme")
            else { continue }
            #expect(throws: Never.self) {
                try batch.payload.withUnsafeBytes { try TracesDataDecoder.decode($0) { _, _ in true } }
            }
        }
    }

    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fuzz/Corpus/FuzzOTLPProtobuf").path

    @Test func rejectsEndBeforeStartAndReportsEveryRejection() throws {
        var spans = (1...100).map { TestSpan(trace: RequestBuilder.traceID(1), span: RequestBuilder.spanID(UInt8($0))) }
        spans[41].start = 2_000
        spans[41].end = 1_000
        let batch = try decoder.decode(RequestBuilder.request(spans: spans))
        #expect(batch.spans.count == 99 && batch.rejectedSpans == 1)
        #expect(batch.rejectionMessage.contains("spans[41]: end time is before start time"))
    }

    @Test func tooManySpansRefusesTheWholeRequest() {
        let d = ExportRequestDecoder(limits: IngestLimits(maxSpansPerRequest: 2))
        let body = RequestBuilder.request(
            spans: (1...3).map { TestSpan(trace: RequestBuilder.traceID(1), span: RequestBuilder.spanID(UInt8($0))) })
        #expect {
            _ = try d.decode(body)
        } throws: { error in
            (error as? ExportRequestError)?.isTooManySpans == true
                && "\(error)".contains("request has 3 spans; the limit is 2")
        }
    }

    @Test func tenantFromTheTokenOverwritesEveryClaim() throws {
        let body = RequestBuilder.request(
            resource: [("service.name", .string("agent")), ("tenant.id", .string("globex"))],
            spans: [
                TestSpan(trace: trace, span: RequestBuilder.spanID(1), attributes: [("tenant.id", .string("initech"))])
            ])
        let batch = try decoder.decode(body, tenant: "acme")
        #expect(batch.resources == [ResourceFacts(agent: "agent", tenant: "acme")])
        let span = try #require(
            try batch.payload.withUnsafeBytes { try TracesDataDecoder.decode($0) { _, _ in true } }.first)
        #expect(span.attributes.first { $0.key == "tenant.id" }?.value == .string("acme"))
        #expect(span.resource.attributes.filter { $0.key == "tenant.id" }.map(\.value) == [.string("acme")])
        // A resource that names no tenant gets one.
        let bare = try decoder.decode(
            RequestBuilder.request(spans: [TestSpan(trace: trace, span: RequestBuilder.spanID(1))]), tenant: "acme")
        #expect(bare.resources.map(\.tenant) == ["acme"])
    }

    @Test func capsAttributesAndTruncatesLongValuesWithAMarker() throws {
        let d = ExportRequestDecoder(limits: IngestLimits(maxAttributesPerSpan: 3, maxAttributeValueBytes: 16))
        let long = String(repeating: "é", count: 20)  // 40 bytes; the cut must not split a character
        let attrs: [(String, TestValue)] =
            [("a", .string(long)), ("b", .int(1)), ("c", .string("short"))]
            + (0..<5).map { ("x\($0)", .int(Int64($0))) }
        let batch = try d.decode(
            RequestBuilder.request(spans: [TestSpan(trace: trace, span: RequestBuilder.spanID(1), attributes: attrs)]))
        #expect(batch.truncatedValues == 1 && batch.droppedAttributes == 5)
        let span = try #require(
            try batch.payload.withUnsafeBytes { try TracesDataDecoder.decode($0) { _, _ in true } }.first)
        #expect(span.droppedAttributesCount == 5)
        #expect(span.attributes.map(\.key) == ["a", "b", "c", IngestLimits.truncatedCountKey])
        #expect(span.attributes[0].value == .string(String(repeating: "é", count: 8) + IngestLimits.truncationMarker))
        #expect(span.attributes[3].value == .int(1))
    }

    @Test func limitsNeverDropRedactionEvidence() throws {
        let redactor = try Redactor(policy: .secureDefault)
        let d = ExportRequestDecoder(
            limits: IngestLimits(maxAttributesPerSpan: 2), redaction: RequestRedactor(redactor: redactor))
        let attrs: [(String, TestValue)] = [("a", .int(1)), ("b", .int(2)), ("c", .string("mail bob@example.com"))]
        let batch = try d.decode(
            RequestBuilder.request(spans: [TestSpan(trace: trace, span: RequestBuilder.spanID(1), attributes: attrs)]))
        let span = try #require(
            try batch.payload.withUnsafeBytes { try TracesDataDecoder.decode($0) { _, _ in true } }.first)
        #expect(span.attributes.map(\.key) == ["a", "b", RequestRedactor.countKey, RequestRedactor.rulesKey])
        #expect(span.droppedAttributesCount == 1)
    }

    @Test func rejectsGarbageAndTruncatedBodies() {
        let body = RequestBuilder.request(spans: [TestSpan(trace: trace, span: RequestBuilder.spanID(1))])
        #expect(throws: ExportRequestError.self) { try decoder.decode(Array(body.dropLast(3))) }
        #expect(throws: ExportRequestError.self) { try decoder.decode([0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]) }
    }

    @Test func rejectsHostileNestingBeforeProtobufC() {
        // 5,000 nested arrays in one attribute: protobuf-c would recurse that deep and
        // overflow the stack. Built inside out, iteratively.
        var any = ProtobufWriter()
        any.stringField(1, "x")
        for _ in 0..<5_000 {
            var array = ProtobufWriter()
            array.bytesField(1, any.bytes)
            var outer = ProtobufWriter()
            outer.bytesField(5, array.bytes)
            any = outer
        }
        var kv = ProtobufWriter()
        kv.stringField(1, "deep")
        kv.bytesField(2, any.bytes)
        var span = ProtobufWriter()
        span.bytesField(1, trace)
        span.bytesField(2, RequestBuilder.spanID(1))
        span.bytesField(9, kv.bytes)
        var scope = ProtobufWriter()
        scope.bytesField(2, span.bytes)
        var resource = ProtobufWriter()
        resource.bytesField(2, scope.bytes)
        var request = ProtobufWriter()
        request.bytesField(1, resource.bytes)
        let body = request.bytes
        #expect {
            _ = try decoder.decode(body)
        } throws: { error in
            (error as? ExportRequestError)?.description.contains("nests deeper than 128") == true
        }
        var shallow = TestValue.string("x")
        for _ in 0..<20 { shallow = .kvlist([("k", shallow)]) }
        let ok = RequestBuilder.request(spans: [
            TestSpan(trace: trace, span: RequestBuilder.spanID(1), attributes: [("nested", shallow)])
        ])
        #expect((try? decoder.decode(ok))?.spans.count == 1)
    }
}

@Suite struct TraceWireFilterTests {
    @Test func keepsExactlyTheWantedTracesWithTheirResourceAndScope() throws {
        let a = RequestBuilder.traceID(1)
        let b = RequestBuilder.traceID(2)
        let body = RequestBuilder.request(
            resource: [("service.name", .string("agent")), ("tenant.id", .string("acme"))],
            scope: [("scope.attr", .int(7))],
            spans: (1...50).map { n in
                TestSpan(
                    trace: n % 3 == 0 ? a : b, span: RequestBuilder.spanID(UInt8(n)),
                    attributes: [("n", .int(Int64(n)))])
            })
        let wanted: Set<TraceID> = [try #require(a.withUnsafeBytes { TraceID(bytes: $0) })]
        let all = try body.withUnsafeBytes { try TracesDataDecoder.decode($0) { _, _ in true } }
        let fast = try body.withUnsafeBytes {
            try TracesDataDecoder.decode($0, traces: wanted) { t, _ in wanted.contains(t) }
        }
        let slow = all.filter { wanted.contains($0.traceID) }
        #expect(fast.count == 16)
        #expect(fast.map(\.spanID) == slow.map(\.spanID))
        #expect(fast.map(\.attributes) == slow.map(\.attributes))
        #expect(
            fast.allSatisfy { $0.resource.attributes == slow[0].resource.attributes && $0.resource.scopeName == "test" }
        )
        let none: Set<TraceID> = [TraceID(high: 9, low: 9)]
        #expect(try body.withUnsafeBytes { try TracesDataDecoder.decode($0, traces: none) { _, _ in true } }.isEmpty)
    }

    /// Wire shapes the fast path does not expect: a span whose trace ID is not its first
    /// field, scope and resource fields after the spans, a second scope with nothing wanted,
    /// and more wanted traces than the short list holds.
    @Test func readsAnyFieldOrderAndManyWantedTraces() throws {
        func id(_ n: UInt8) -> [UInt8] { [UInt8](repeating: 0, count: 15) + [n] }
        func span(trace: UInt8, span n: UInt8, idFirst: Bool) -> [UInt8] {
            var s = ProtobufWriter(capacity: 64)
            if idFirst { s.bytesField(1, id(trace)) }
            s.bytesField(2, [UInt8](repeating: n, count: 8))
            s.stringField(5, "s\(n)")
            if !idFirst { s.bytesField(1, id(trace)) }
            return s.bytes
        }
        var w = ProtobufWriter(capacity: 4096)
        w.messageField(1) { rs in
            for scope in ["first", "second"] {
                rs.messageField(2) { ss in
                    for n in UInt8(1)...40 {
                        let trace = scope == "second" ? 99 : n % 20
                        ss.bytesField(2, span(trace: trace, span: n, idFirst: n % 2 == 0))
                    }
                    ss.messageField(1) { sc in sc.stringField(1, scope) }  // the scope after its spans
                }
            }
            rs.messageField(1) { r in  // the resource after its scopes
                r.messageField(1) { kv in
                    kv.stringField(1, "service.name")
                    kv.messageField(2) { v in v.stringField(1, "late") }
                }
            }
        }
        let body = w.bytes
        let all = try body.withUnsafeBytes { try TracesDataDecoder.decode($0) { _, _ in true } }
        #expect(all.count == 80)
        for wanted in [Set([TraceID(high: 0, low: 3)]), Set((0..<12).map { TraceID(high: 0, low: UInt64($0)) })] {
            let fast = try body.withUnsafeBytes {
                try TracesDataDecoder.decode($0, traces: wanted) { t, _ in wanted.contains(t) }
            }
            let slow = all.filter { wanted.contains($0.traceID) }
            #expect(!fast.isEmpty)
            #expect(fast.map(\.spanID) == slow.map(\.spanID))
            #expect(fast.allSatisfy { $0.resource.scopeName == "first" })
            #expect(fast.allSatisfy { $0.resource.attributes == slow[0].resource.attributes })
            #expect(fast.allSatisfy { !$0.resource.attributes.isEmpty })
        }
    }
}
