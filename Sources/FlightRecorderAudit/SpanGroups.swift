import COTLP
import FlightRecorderCore
import FlightRecorderEvidence
import FlightRecorderOTLP

#if canImport(Glibc)
import Glibc
#endif

/// Reads an audit bundle's span groups one after another. Each message of `spans.otlp.pb` is
/// a `TracesData` of one resource group holding one scope group of one or more spans, in the
/// form protobuf-c encodes (each field once and in field order, the spans one after another,
/// nothing else); the line of `spans.otlp.jsonl` at the same position must be exactly its
/// OTLP/JSON. Each span's leaf is assembled from the message's own parts (its resource, scope,
/// span and schema URLs: `SpanLeaves.assemble`, as ingest does) and hashed.
///
/// Consecutive groups mostly share their resource and scope: when a message has the same
/// resource and scope bytes as the one before, the JSON around its spans and its resource
/// record are the ones already made (unpacking is a function of those bytes).
struct SpanGroupReader {
    /// The message's fields other than its spans, of the last message read.
    private var key: [UInt8] = []
    private var scratch: [UInt8] = []
    private var cached: (frame: OTLPJSONEncoder.GroupFrame, resource: ResourceRecord)?
    private var leaf: [UInt8] = []
    private var shape = Shape()
    private var strings = StringInterner()

    /// Where a group message's parts are.
    struct Shape {
        var resource: Range<Int>?
        var scope: Range<Int>?
        var spans: [Range<Int>] = []
        var scopeSchema: Range<Int>?
        var schema: Range<Int>?

        /// The leaf message of the span at `span` (one of `spans`), appended to `out`.
        func leaf(_ span: Range<Int>, of message: UnsafeRawBufferPointer, into out: inout [UInt8]) {
            func part(_ r: Range<Int>?) -> UnsafeRawBufferPointer? {
                r.map { UnsafeRawBufferPointer(rebasing: message[$0]) }
            }
            SpanLeaves.assemble(
                resource: part(resource), scope: part(scope), span: part(span)!, scopeSchema: part(scopeSchema),
                schema: part(schema), into: &out)
        }
    }

    enum Failure: Error { case shape, json }

    /// Appends each span's record and leaf hash; `.json` when the line is not exactly the
    /// message's OTLP/JSON (the spans are appended all the same), `.shape` when the message is
    /// not a group as described (nothing appended).
    mutating func read(
        _ message: UnsafeRawBufferPointer, line: UnsafeRawBufferPointer, salts: [LeafSalt] = [], next: inout Int,
        records: inout [SpanRecord], leaves: inout [TreeHash]
    ) -> Result<Void, Failure> {
        guard Self.walk(message, key: &scratch, shape: &shape) else {
            cached = nil
            return .failure(.shape)
        }
        let reuse = cached != nil && scratch == key
        if !reuse { swap(&key, &scratch) }
        let count = shape.spans.count
        // Built in place (not copied over from a second array: a copy retains each part of a
        // record), and taken back if the message turns out not to be a group.
        let before = records.count
        let unpacked: Bool?? = UnpackArena.withRequest(message) { request -> Bool? in
            let d = request.pointee
            guard d.n_resource_spans == 1, let rs = d.resource_spans[0], rs.pointee.n_scope_spans == 1,
                let ss = rs.pointee.scope_spans[0], ss.pointee.n_spans == count
            else { return nil }
            let group: (frame: OTLPJSONEncoder.GroupFrame, resource: ResourceRecord)
            if reuse, let cached {
                group = cached
            } else {
                group = (OTLPJSONEncoder.frame(rs, ss), TracesDataDecoder.resource(rs, ss))
                cached = group
            }
            // The line is the frame's prefix, the spans array, the frame's suffix: the spans are
            // compared in place (`JSONMatcher`), not written again.
            let (prefix, suffix) = (group.frame.prefix, group.frame.suffix)
            var spansJSON = JSONMatcher(line, at: prefix.count)
            let framed =
                line.count >= prefix.count + suffix.count
                && Self.same(UnsafeRawBufferPointer(rebasing: line[..<prefix.count]), prefix)
                && Self.same(UnsafeRawBufferPointer(rebasing: line[(line.count - suffix.count)...]), suffix)
            spansJSON.beginArray()
            for i in 0..<count {
                guard let span = ss.pointee.spans[i], let traceID = TraceID(bytes: span.pointee.trace_id.rawBuffer),
                    let spanID = SpanID(bytes: span.pointee.span_id.rawBuffer)
                else { return nil }
                OTLPJSONEncoder.span(span, matching: &spansJSON)
                records.append(
                    TracesDataDecoder.record(
                        span.pointee, traceID: traceID, spanID: spanID, resource: group.resource, strings: &strings))
            }
            spansJSON.endArray()
            return framed && spansJSON.matches && spansJSON.at == line.count - suffix.count
        }
        guard let unpacked, let matched = unpacked else {
            records.removeLast(records.count - before)
            cached = nil
            return .failure(.shape)
        }
        for span in shape.spans {
            leaf.removeAll(keepingCapacity: true)
            shape.leaf(span, of: message, into: &leaf)
            let salt = next < salts.count ? salts[next] : .none
            next += 1
            leaves.append(leaf.withUnsafeBytes { TreeHash.leaf(salt: salt, $0) })
        }
        return matched ? .success(()) : .failure(.json)
    }

    /// Each span's leaf message (what its leaf hashes), for a message `read` accepts.
    static func leafMessages(_ message: UnsafeRawBufferPointer) -> [[UInt8]]? {
        var key: [UInt8] = []
        var shape = Shape()
        guard walk(message, key: &key, shape: &shape) else { return nil }
        return shape.spans.map { span in
            var leaf: [UInt8] = []
            shape.leaf(span, of: message, into: &leaf)
            return leaf
        }
    }

    /// Whether `bytes` are `expected`.
    static func same(_ bytes: UnsafeRawBufferPointer, _ expected: [UInt8]) -> Bool {
        bytes.count == expected.count
            && expected.withUnsafeBytes { e in e.isEmpty || memcmp(bytes.baseAddress!, e.baseAddress!, e.count) == 0 }
    }

    /// Finds the parts of a group message, and writes into `key` its fields other than the
    /// spans (tags and lengths included, so presence counts). False unless the message is one
    /// resource group (field 1, the whole message) of fields 1 (resource), 2 (one scope group)
    /// and 3 (schema URL, not empty), each at most once and in that order, the scope group of
    /// fields 1 (scope), 2 (the spans, at least one, one after another) and 3 (schema URL, not
    /// empty) in that order: the form protobuf-c encodes, and the one leaves are assembled in.
    static func walk(_ bytes: UnsafeRawBufferPointer, key: inout [UInt8], shape: inout Shape) -> Bool {
        key.removeAll(keepingCapacity: true)
        shape.spans.removeAll(keepingCapacity: true)
        (shape.resource, shape.scope, shape.scopeSchema, shape.schema) = (nil, nil, nil, nil)
        /// The next field, if it is length-delimited and numbered 1 to 3.
        func next(_ c: inout WireCursor) -> WireCursor.Field? {
            guard let f = c.field(), f.wireType == 2, f.number <= 3 else { return nil }
            return f
        }
        var message = WireCursor(bytes, 0..<bytes.count)
        guard let top = next(&message), top.number == 1, message.atEnd else { return false }
        var scopeSpans: Range<Int>?
        var group = WireCursor(bytes, top.payload)
        var last: UInt64 = 0
        while !group.atEnd {
            guard let f = next(&group), f.number > last else { return false }
            last = f.number
            switch f.number {
            case 1: shape.resource = f.payload
            case 2: scopeSpans = f.payload
            default:
                guard !f.payload.isEmpty else { return false }
                shape.schema = f.payload
            }
            if f.number != 2 { key += bytes[f.range] }
        }
        guard let scopeSpans else { return false }
        key.append(0xFF)  // no field starts with this byte here: the groups' boundary
        var scope = WireCursor(bytes, scopeSpans)
        last = 0
        while !scope.atEnd {
            guard let f = next(&scope), f.number > last || (f.number == 2 && last == 2) else { return false }
            last = f.number
            switch f.number {
            case 1:
                shape.scope = f.payload
                key += bytes[f.range]
            case 2: shape.spans.append(f.payload)
            default:
                guard !f.payload.isEmpty else { return false }
                shape.scopeSchema = f.payload
                key += bytes[f.range]
            }
        }
        return !shape.spans.isEmpty
    }
}
