import FlightRecorderCore
import FlightRecorderEvidence
import FlightRecorderOTLP
import FlightRecorderTesting
import Testing

@testable import FlightRecorderAudit

/// A bundle's spans are groups: one message and one line per scope group of a block
/// (`SpanGroupReader`). The exporter assembles a group's message from the parts ingest hashed
/// and writes its line as the group's frame around its spans; a verifier gets each span's leaf
/// back from the message. Both must agree with what ingest computed and with `tracesData`.
@Suite struct SpanGroupTests {
    struct Group {
        var message: [UInt8]
        var line: [UInt8]
        /// The leaves ingest computed for the group's spans.
        var leaves: [TreeHash]
        var spans: Int
    }

    static func payloads() -> [[UInt8]] {
        var options = AgentWorkload.Options()
        options.spansPerRequest = 120
        var workload = AgentWorkload(options: options)
        var odd = ProtobufWriter()
        for (n, schema) in [(UInt8(7), "https://opentelemetry.io/schemas/1.27.0"), (8, "")] {
            odd.messageField(1) { rs in
                rs.messageField(1) { r in
                    // A string that is not UTF-8 (protobuf-c does not check): written as Swift repairs it.
                    r.messageField(1) { kv in
                        kv.stringField(1, "bad.utf8")
                        kv.messageField(2) { v in v.bytesField(1, [0x61, 0xFF, 0x62]) }
                    }
                }
                rs.messageField(2) { ss in
                    ss.messageField(1) { sc in sc.stringField(1, "lib \"x\"") }
                    for k in 0..<3 {
                        ss.messageField(2) { p in
                            p.bytesField(1, RequestBuilder.traceID(n))
                            p.bytesField(2, RequestBuilder.spanID(n &+ UInt8(k) &* 16))
                            p.stringField(5, "caf\u{E9} \"q\" \(k)")
                        }
                    }
                    if !schema.isEmpty { ss.stringField(3, schema) }
                }
                if !schema.isEmpty { rs.stringField(3, schema) }
            }
        }
        return [workload.nextRequest().bytes, workload.nextRequest().bytes, odd.bytes]
    }

    /// Every scope group of the payloads, as the exporter writes it.
    static func groups() throws -> [Group] {
        var out: [Group] = []
        for payload in payloads() {
            let found: [Group]? = payload.withUnsafeBytes { raw in
                UnpackArena.withRequest(raw) { request in
                    var groups: [Group] = []
                    var current: (rs: UnsafeRawPointer, ss: UnsafeRawPointer)?
                    var kept = AuditExporter.KeptGroup()
                    var block = AuditExporter.BlockOutput()
                    var leaves: [TreeHash] = []
                    func close() {
                        let before = (block.json.count, block.proto.count)
                        kept.flush(into: &block)
                        guard block.json.count > before.0 else { return }
                        let line = Array(block.json[before.0..<(block.json.count - 1)])
                        let delimited = Array(block.proto[before.1...])
                        let message = delimited.withUnsafeBytes { d in
                            Array(UnsafeRawBufferPointer(rebasing: d[SpanLines.messageRanges(d)[0]]))
                        }
                        groups.append(Group(message: message, line: line, leaves: leaves, spans: leaves.count))
                        leaves = []
                    }
                    SpanLeaves.forEachSpanWithParts(request) { message, parts, rs, ss, span in
                        if current.map({ $0.rs != UnsafeRawPointer(rs) || $0.ss != UnsafeRawPointer(ss) }) ?? true {
                            close()
                            current = (UnsafeRawPointer(rs), UnsafeRawPointer(ss))
                        }
                        kept.add(span, parts: parts, rs: rs, ss: ss)
                        leaves.append(TreeHash.leaf(message))
                    }
                    close()
                    return groups
                }
            }
            out += try #require(found)
        }
        return out
    }

    @Test func aGroupsLineIsItsMessagesJSONAndItsLeavesAreIngests() throws {
        let groups = try Self.groups()
        #expect(groups.count >= 4)
        #expect(groups.reduce(0) { $0 + $1.spans } == 240 + 6)
        for g in groups {
            #expect(OTLPJSONEncoder.tracesData(g.message) == g.line)
            let leaves = try #require(g.message.withUnsafeBytes { SpanGroupReader.leafMessages($0) })
            #expect(leaves.map { $0.withUnsafeBytes { TreeHash.leaf($0) } } == g.leaves)
        }
    }

    @Test func theReaderAcceptsExactlyTheGroupsLine() throws {
        let groups = try Self.groups()
        var rng = SystemRandomNumberGenerator()
        var reader = SpanGroupReader()
        for g in groups + groups.reversed() + groups.shuffled(using: &rng) {
            var records: [SpanRecord] = []
            var leaves: [TreeHash] = []
            var next = 0
            let ok = g.message.withUnsafeBytes { m in
                g.line.withUnsafeBytes { reader.read(m, line: $0, next: &next, records: &records, leaves: &leaves) }
            }
            #expect((try? ok.get()) != nil)
            #expect(leaves == g.leaves && records.count == g.spans)
            let text = String(decoding: g.line, as: UTF8.self)
            #expect(records.allSatisfy { text.contains("\"spanId\":\"\($0.spanID.hex)\"") })
            // One byte of the line changed anywhere (in the shared frame too): no match.
            var bad = g.line
            bad[Int.random(in: 0..<bad.count, using: &rng)] ^= 0x01
            var badRecords: [SpanRecord] = []
            var badLeaves: [TreeHash] = []
            let badRead = g.message.withUnsafeBytes { m in
                bad.withUnsafeBytes { reader.read(m, line: $0, next: &next, records: &badRecords, leaves: &badLeaves) }
            }
            if case .failure(.json) = badRead {} else { Issue.record("a changed line was accepted") }
        }
    }

    /// Messages not in the form leaves are assembled in are refused, not read some other way:
    /// a resource twice (protobuf merges them), an empty schema URL field, no span.
    @Test func otherShapesAreRefused() throws {
        func message(resources: Int = 1, emptySchema: Bool = false, spans: Int = 1) -> [UInt8] {
            var w = ProtobufWriter()
            w.messageField(1) { rs in
                for k in 0..<resources {
                    rs.messageField(1) { r in RequestBuilder.keyValue(&r, 1, "a\(k)", .string("1")) }
                }
                rs.messageField(2) { ss in
                    for k in 0..<spans {
                        ss.messageField(2) { p in
                            p.bytesField(1, RequestBuilder.traceID(5))
                            p.bytesField(2, RequestBuilder.spanID(UInt8(5 + k)))
                        }
                    }
                }
                if emptySchema { rs.stringField(3, "") }
            }
            return w.bytes
        }
        var reader = SpanGroupReader()
        func read(_ m: [UInt8]) -> Result<Void, SpanGroupReader.Failure> {
            let line = OTLPJSONEncoder.tracesData(m) ?? []
            var records: [SpanRecord] = []
            var leaves: [TreeHash] = []
            var next = 0
            return m.withUnsafeBytes { mb in
                line.withUnsafeBytes { reader.read(mb, line: $0, next: &next, records: &records, leaves: &leaves) }
            }
        }
        #expect((try? read(message()).get()) != nil)
        #expect((try? read(message(spans: 3)).get()) != nil)
        for bad in [message(resources: 2), message(emptySchema: true), message(spans: 0)] {
            if case .failure(.shape) = read(bad) {} else { Issue.record("accepted a message of another shape") }
        }
        #expect((try? read(message()).get()) != nil)
    }
}
