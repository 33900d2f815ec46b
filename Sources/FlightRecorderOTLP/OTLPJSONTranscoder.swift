import FlightRecorderCore
public import Foundation

/// Converts an OTLP/JSON `ExportTraceServiceRequest` into the protobuf wire format, so both
/// encodings share one ingest path after this step.
///
/// Follows the OTLP/JSON mapping: lowerCamelCase keys (snake_case accepted too), trace and
/// span IDs as hex strings, int64 values as strings or numbers, enums as integers (names
/// accepted), `bytesValue` as base64, and unknown fields ignored.
public enum OTLPJSONTranscoder {

    public static func transcodeExportRequest(_ data: Data) throws(OTLPJSONError) -> [UInt8] {
        let result = data.withUnsafeBytes { raw in
            Result { () throws(OTLPJSONError) in try transcodeExportRequest(raw) }
        }
        return try result.get()
    }

    public static func transcodeExportRequest(_ bytes: UnsafeRawBufferPointer) throws(OTLPJSONError) -> [UInt8] {
        let root: JSONValue
        do {
            root = try JSONValue.parse(bytes)
        } catch {
            throw OTLPJSONError(path: "", reason: "body is not valid JSON")
        }
        var w = ProtobufWriter(capacity: bytes.count)
        var t = Walker()
        try t.request(root, into: &w)
        return w.bytes
    }

    /// Walks JSON values and writes protobuf fields, tracking the path for error messages.
    struct Walker {
        /// Where the walk is: field names, with the index of an array's item. Formatted only
        /// when an error needs it.
        var path: [(name: String, index: Int?)] = []

        func fail(_ reason: String) -> OTLPJSONError {
            OTLPJSONError(
                path: path.map { p in p.index.map { "\(p.name)[\($0)]" } ?? p.name }.joined(separator: "."),
                reason: reason)
        }

        func object(_ v: JSONValue) throws(OTLPJSONError) -> [String: JSONValue] {
            guard case .object(let o) = v else { throw fail("expected an object") }
            return o
        }

        /// Looks a field up by its lowerCamelCase name, then its snake_case name.
        func field(_ o: [String: JSONValue], _ camel: String) -> JSONValue? {
            if let v = o[camel], v != .null { return v }
            if let v = o[Self.snake(camel)], v != .null { return v }
            return nil
        }

        /// `traceId` → `trace_id` (field names are ASCII).
        static func snake(_ camel: String) -> String {
            var out: [UInt8] = []
            out.reserveCapacity(camel.utf8.count + 4)
            for c in camel.utf8 {
                if c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z") {
                    out.append(UInt8(ascii: "_"))
                    out.append(c + 32)
                } else {
                    out.append(c)
                }
            }
            return String(decoding: out, as: UTF8.self)
        }

        mutating func each(
            _ o: [String: JSONValue], _ name: String, _ body: (inout Walker, JSONValue) throws(OTLPJSONError) -> Void
        ) throws(OTLPJSONError) {
            guard let v = field(o, name) else { return }
            guard case .array(let items) = v else {
                path.append((name, nil))
                throw fail("expected an array")
            }
            for (i, item) in items.enumerated() {
                path.append((name, i))
                try body(&self, item)
                path.removeLast()
            }
        }

        mutating func nested(
            _ o: [String: JSONValue], _ name: String, field number: Int, into w: inout ProtobufWriter,
            _ body: (inout Walker, [String: JSONValue], inout ProtobufWriter) throws(OTLPJSONError) -> Void
        ) throws(OTLPJSONError) {
            guard let v = field(o, name) else { return }
            path.append((name, nil))
            let inner = try object(v)
            var sub = ProtobufWriter()
            try body(&self, inner, &sub)
            w.bytesField(number, sub.bytes)
            path.removeLast()
        }

        mutating func repeatedMessage(
            _ o: [String: JSONValue], _ name: String, field number: Int, into w: inout ProtobufWriter,
            _ body: (inout Walker, [String: JSONValue], inout ProtobufWriter) throws(OTLPJSONError) -> Void
        ) throws(OTLPJSONError) {
            try each(o, name) { (walker: inout Walker, item: JSONValue) throws(OTLPJSONError) in
                let inner = try walker.object(item)
                var sub = ProtobufWriter()
                try body(&walker, inner, &sub)
                w.bytesField(number, sub.bytes)
            }
        }

        mutating func string(
            _ o: [String: JSONValue], _ name: String, field number: Int, into w: inout ProtobufWriter
        )
            throws(OTLPJSONError)
        {
            guard let v = field(o, name) else { return }
            guard case .string(let s) = v else {
                path.append((name, nil))
                throw fail("expected a string")
            }
            if !s.isEmpty { w.stringField(number, s) }
        }

        mutating func hexBytes(
            _ o: [String: JSONValue], _ name: String, field number: Int, into w: inout ProtobufWriter
        )
            throws(OTLPJSONError)
        {
            guard let v = field(o, name) else { return }
            path.append((name, nil))
            guard case .string(let s) = v else { throw fail("expected a hex string") }
            guard let bytes = Hex.decode(s) else { throw fail("is not a hex string") }
            if !bytes.isEmpty { w.bytesField(number, bytes) }
            path.removeLast()
        }

        func unsigned(_ v: JSONValue) throws(OTLPJSONError) -> UInt64 {
            switch v {
            case .int(let i) where i >= 0: return UInt64(i)
            case .uint(let u): return u
            case .string(let s):
                if let u = UInt64(s) { return u }
                throw fail("expected an unsigned integer (\(s.count) characters given)")
            default: throw fail("expected an unsigned integer")
            }
        }

        func signed(_ v: JSONValue) throws(OTLPJSONError) -> Int64 {
            switch v {
            case .int(let i): return i
            case .string(let s):
                if let i = Int64(s) { return i }
                throw fail("expected an integer (\(s.count) characters given)")
            default: throw fail("expected an integer")
            }
        }

        mutating func fixed64(
            _ o: [String: JSONValue], _ name: String, field number: Int, into w: inout ProtobufWriter
        )
            throws(OTLPJSONError)
        {
            guard let v = field(o, name) else { return }
            path.append((name, nil))
            let u = try unsigned(v)
            if u != 0 { w.fixed64Field(number, u) }
            path.removeLast()
        }

        /// A 32-bit unsigned field: `uint32` (varint) or `fixed32`; zero (the default) is not written.
        mutating func uint32(
            _ o: [String: JSONValue], _ name: String, field number: Int, fixed: Bool = false,
            into w: inout ProtobufWriter
        ) throws(OTLPJSONError) {
            guard let v = field(o, name) else { return }
            path.append((name, nil))
            let u = try unsigned(v)
            guard u <= UInt64(UInt32.max) else { throw fail("out of range for a 32-bit field") }
            if u != 0 {
                if fixed { w.fixed32Field(number, UInt32(u)) } else { w.varintField(number, u) }
            }
            path.removeLast()
        }

        mutating func enumeration(
            _ o: [String: JSONValue], _ name: String, field number: Int, names: [String], into w: inout ProtobufWriter
        ) throws(OTLPJSONError) {
            guard let v = field(o, name) else { return }
            path.append((name, nil))
            let value: UInt64
            if case .string(let s) = v, let i = names.firstIndex(of: s) {
                value = UInt64(i)
            } else if case .string(let s) = v, UInt64(s) == nil {
                throw fail("unknown enum value; expected one of \(names.joined(separator: ", ")) or an integer")
            } else {
                value = try unsigned(v)
            }
            if value != 0 { w.varintField(number, value) }
            path.removeLast()
        }

        // MARK: Messages

        mutating func request(_ v: JSONValue, into w: inout ProtobufWriter) throws(OTLPJSONError) {
            let o = try object(v)
            try repeatedMessage(o, "resourceSpans", field: 1, into: &w) { t, rs, w throws(OTLPJSONError) in
                try t.nested(rs, "resource", field: 1, into: &w) { t, r, w throws(OTLPJSONError) in
                    try t.keyValues(r, "attributes", field: 1, into: &w)
                    try t.uint32(r, "droppedAttributesCount", field: 2, into: &w)
                    try t.repeatedMessage(r, "entityRefs", field: 3, into: &w) { t, e, w throws(OTLPJSONError) in
                        try t.string(e, "schemaUrl", field: 1, into: &w)
                        try t.string(e, "type", field: 2, into: &w)
                        for (name, number) in [("idKeys", 3), ("descriptionKeys", 4)] {
                            try t.each(e, name) { (t: inout Walker, item: JSONValue) throws(OTLPJSONError) in
                                guard case .string(let key) = item else { throw t.fail("expected a string") }
                                w.stringField(number, key)
                            }
                        }
                    }
                }
                try t.repeatedMessage(rs, "scopeSpans", field: 2, into: &w) { t, ss, w throws(OTLPJSONError) in
                    try t.nested(ss, "scope", field: 1, into: &w) { t, sc, w throws(OTLPJSONError) in
                        try t.string(sc, "name", field: 1, into: &w)
                        try t.string(sc, "version", field: 2, into: &w)
                        try t.keyValues(sc, "attributes", field: 3, into: &w)
                        try t.uint32(sc, "droppedAttributesCount", field: 4, into: &w)
                    }
                    try t.repeatedMessage(ss, "spans", field: 2, into: &w) { t, s, w throws(OTLPJSONError) in
                        try t.span(s, into: &w)
                    }
                    try t.string(ss, "schemaUrl", field: 3, into: &w)
                }
                try t.string(rs, "schemaUrl", field: 3, into: &w)
            }
        }

        static let spanKinds = [
            "SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER", "SPAN_KIND_CLIENT",
            "SPAN_KIND_PRODUCER", "SPAN_KIND_CONSUMER",
        ]
        static let statusCodes = ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"]

        mutating func span(_ s: [String: JSONValue], into w: inout ProtobufWriter) throws(OTLPJSONError) {
            try hexBytes(s, "traceId", field: 1, into: &w)
            try hexBytes(s, "spanId", field: 2, into: &w)
            try string(s, "traceState", field: 3, into: &w)
            try hexBytes(s, "parentSpanId", field: 4, into: &w)
            try string(s, "name", field: 5, into: &w)
            try enumeration(s, "kind", field: 6, names: Self.spanKinds, into: &w)
            try fixed64(s, "startTimeUnixNano", field: 7, into: &w)
            try fixed64(s, "endTimeUnixNano", field: 8, into: &w)
            try keyValues(s, "attributes", field: 9, into: &w)
            try uint32(s, "droppedAttributesCount", field: 10, into: &w)
            try repeatedMessage(s, "events", field: 11, into: &w) { t, e, w throws(OTLPJSONError) in
                try t.fixed64(e, "timeUnixNano", field: 1, into: &w)
                try t.string(e, "name", field: 2, into: &w)
                try t.keyValues(e, "attributes", field: 3, into: &w)
                try t.uint32(e, "droppedAttributesCount", field: 4, into: &w)
            }
            try uint32(s, "droppedEventsCount", field: 12, into: &w)
            try repeatedMessage(s, "links", field: 13, into: &w) { t, l, w throws(OTLPJSONError) in
                try t.hexBytes(l, "traceId", field: 1, into: &w)
                try t.hexBytes(l, "spanId", field: 2, into: &w)
                try t.string(l, "traceState", field: 3, into: &w)
                try t.keyValues(l, "attributes", field: 4, into: &w)
                try t.uint32(l, "droppedAttributesCount", field: 5, into: &w)
                try t.uint32(l, "flags", field: 6, fixed: true, into: &w)
            }
            try uint32(s, "droppedLinksCount", field: 14, into: &w)
            try nested(s, "status", field: 15, into: &w) { t, st, w throws(OTLPJSONError) in
                try t.string(st, "message", field: 2, into: &w)
                try t.enumeration(st, "code", field: 3, names: Self.statusCodes, into: &w)
            }
            try uint32(s, "flags", field: 16, fixed: true, into: &w)
        }

        mutating func keyValues(
            _ o: [String: JSONValue], _ name: String, field number: Int, into w: inout ProtobufWriter
        )
            throws(OTLPJSONError)
        {
            try repeatedMessage(o, name, field: number, into: &w) { t, kv, w throws(OTLPJSONError) in
                try t.string(kv, "key", field: 1, into: &w)
                try t.nested(kv, "value", field: 2, into: &w) { t, av, w throws(OTLPJSONError) in
                    try t.anyValue(av, into: &w)
                }
            }
        }

        mutating func anyValue(_ av: [String: JSONValue], into w: inout ProtobufWriter) throws(OTLPJSONError) {
            if let v = field(av, "stringValue") {
                guard case .string(let s) = v else { throw fail("stringValue: expected a string") }
                w.stringField(1, s)
            } else if let v = field(av, "boolValue") {
                guard case .bool(let b) = v else { throw fail("boolValue: expected true or false") }
                w.varintField(2, b ? 1 : 0)
            } else if let v = field(av, "intValue") {
                path.append(("intValue", nil))
                w.int64Field(3, try signed(v))
                path.removeLast()
            } else if let v = field(av, "doubleValue") {
                let d: Double
                switch v {
                case .double(let x): d = x
                case .int(let i): d = Double(i)
                case .uint(let u): d = Double(u)
                case .string(let s):
                    switch s {
                    case "NaN": d = .nan
                    case "Infinity": d = .infinity
                    case "-Infinity": d = -.infinity
                    default:
                        guard let x = Double(s) else { throw fail("doubleValue: expected a number") }
                        d = x
                    }
                default: throw fail("doubleValue: expected a number")
                }
                w.doubleField(4, d)
            } else if let v = field(av, "arrayValue") {
                path.append(("arrayValue", nil))
                let arr = try object(v)
                var sub = ProtobufWriter()
                try each(arr, "values") { (t: inout Walker, item: JSONValue) throws(OTLPJSONError) in
                    let inner = try t.object(item)
                    var itemWriter = ProtobufWriter()
                    try t.anyValue(inner, into: &itemWriter)
                    sub.bytesField(1, itemWriter.bytes)
                }
                w.bytesField(5, sub.bytes)
                path.removeLast()
            } else if let v = field(av, "kvlistValue") {
                path.append(("kvlistValue", nil))
                let list = try object(v)
                var sub = ProtobufWriter()
                try keyValues(list, "values", field: 1, into: &sub)
                w.bytesField(6, sub.bytes)
                path.removeLast()
            } else if let v = field(av, "bytesValue") {
                guard case .string(let s) = v, let data = Data(base64Encoded: s) else {
                    throw fail("bytesValue: expected base64")
                }
                w.bytesField(7, data)
            }
        }
    }
}

public struct OTLPJSONError: Error, CustomStringConvertible, Equatable {
    /// JSON path of the offending field, for example `resourceSpans[0].scopeSpans[1].spans[3].traceId`.
    public var path: String
    public var reason: String
    public var description: String { path.isEmpty ? reason : "\(path): \(reason)" }
}
