public import FlightRecorderOTLP

/// Builds OTLP `ExportTraceServiceRequest` bytes for tests, one span at a time.
public struct TestSpan: Sendable {
    public var trace: [UInt8]
    public var span: [UInt8]
    public var parent: [UInt8]
    public var name: String
    public var start: UInt64
    public var end: UInt64
    public var attributes: [(String, TestValue)]
    public var statusCode: UInt64
    public var statusMessage: String
    public var links: [(trace: [UInt8], span: [UInt8])]
    /// Span events (an exception an SDK recorded), each with its name and attributes.
    public var events: [(name: String, attributes: [(String, TestValue)])]

    public init(
        trace: [UInt8], span: [UInt8], parent: [UInt8] = [], name: String = "step", start: UInt64 = 1_000,
        end: UInt64 = 2_000, attributes: [(String, TestValue)] = [], statusCode: UInt64 = 0, statusMessage: String = "",
        links: [(trace: [UInt8], span: [UInt8])] = [], events: [(name: String, attributes: [(String, TestValue)])] = []
    ) {
        self.trace = trace
        self.span = span
        self.parent = parent
        self.name = name
        self.start = start
        self.end = end
        self.attributes = attributes
        self.statusCode = statusCode
        self.statusMessage = statusMessage
        self.links = links
        self.events = events
    }
}

public indirect enum TestValue: Sendable {
    case string(String), int(Int64), bool(Bool), double(Double), bytes([UInt8])
    case array([TestValue]), kvlist([(String, TestValue)])
}

public enum RequestBuilder {
    /// A trace ID of 16 bytes whose last byte is `n`.
    public static func traceID(_ n: UInt8, _ m: UInt8 = 0xAB) -> [UInt8] { [m] + Array(repeating: 0, count: 14) + [n] }
    /// A span ID of 8 bytes whose last byte is `n`.
    public static func spanID(_ n: UInt8, _ m: UInt8 = 0xCD) -> [UInt8] { [m] + Array(repeating: 0, count: 6) + [n] }

    public static func request(
        resource: [(String, TestValue)] = [("service.name", .string("agent"))], scope: [(String, TestValue)] = [],
        spans: [TestSpan]
    ) -> [UInt8] {
        var w = ProtobufWriter()
        w.messageField(1) { rs in
            rs.messageField(1) { r in for (k, v) in resource { keyValue(&r, 1, k, v) } }
            rs.messageField(2) { ss in
                ss.messageField(1) { sc in
                    sc.stringField(1, "test")
                    for (k, v) in scope { keyValue(&sc, 3, k, v) }
                }
                for s in spans { span(&ss, s) }
            }
        }
        return w.bytes
    }

    /// `s` as field 2 of a `ScopeSpans` being written.
    public static func span(_ ss: inout ProtobufWriter, _ s: TestSpan) {
        ss.messageField(2) { p in
            p.bytesField(1, s.trace)
            p.bytesField(2, s.span)
            if !s.parent.isEmpty { p.bytesField(4, s.parent) }
            p.stringField(5, s.name)
            p.fixed64Field(7, s.start)
            p.fixed64Field(8, s.end)
            for (k, v) in s.attributes { keyValue(&p, 9, k, v) }
            for e in s.events {
                p.messageField(11) { ew in
                    ew.fixed64Field(1, s.end)
                    ew.stringField(2, e.name)
                    for (k, v) in e.attributes { keyValue(&ew, 3, k, v) }
                }
            }
            for l in s.links {
                p.messageField(13) { lw in
                    lw.bytesField(1, l.trace)
                    lw.bytesField(2, l.span)
                }
            }
            if s.statusCode != 0 || !s.statusMessage.isEmpty {
                p.messageField(15) { st in
                    if !s.statusMessage.isEmpty { st.stringField(2, s.statusMessage) }
                    st.varintField(3, s.statusCode)
                }
            }
        }
    }

    public static func keyValue(_ w: inout ProtobufWriter, _ field: Int, _ key: String, _ value: TestValue) {
        w.messageField(field) { kv in
            kv.stringField(1, key)
            kv.messageField(2) { v in anyValue(&v, value) }
        }
    }

    static func anyValue(_ v: inout ProtobufWriter, _ value: TestValue) {
        switch value {
        case .string(let s): v.stringField(1, s)
        case .bool(let b): v.varintField(2, b ? 1 : 0)
        case .int(let i): v.int64Field(3, i)
        case .double(let d): v.doubleField(4, d)
        case .array(let items):
            v.messageField(5) { a in for item in items { a.messageField(1) { x in anyValue(&x, item) } } }
        case .kvlist(let pairs):
            v.messageField(6) { l in for (k, x) in pairs { keyValue(&l, 1, k, x) } }
        case .bytes(let b): v.bytesField(7, b)
        }
    }
}
