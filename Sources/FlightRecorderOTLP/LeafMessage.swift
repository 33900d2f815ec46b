import COTLP
import FlightRecorderCore

#if canImport(Glibc)
import Glibc
#endif

/// Reads leaf messages (a `TracesData` holding one resource, one scope and one span, as the
/// evidence log hashes them) one after another: checks each one's OTLP/JSON line
/// (`OTLPJSONEncoder`) and gives its record. An audit bundle is written from these and checked
/// against them.
///
/// Consecutive leaves mostly share their resource and scope. When a message has the plain
/// shape protobuf-c packs (each field once, in field order, nothing else) and the same
/// resource and scope bytes as the message before, the JSON around its span and its resource
/// record are the ones already made: unpacking is a function of those bytes. Any other message
/// is read in full.
package struct LeafMessageReader {
    /// The resource and scope groups' bytes, span fields left out, of the last message read.
    private var key: [UInt8] = []
    private var scratch: [UInt8] = []
    private var cached: (frame: OTLPJSONEncoder.LeafFrame, resource: ResourceRecord)?
    private var spanJSON = JSONWriter(capacity: 4096)

    package init() {}

    /// nil when `bytes` is not a leaf message of exactly one span with valid IDs; otherwise
    /// whether `line` is exactly its OTLP/JSON, and its record.
    package mutating func read(
        _ bytes: UnsafeRawBufferPointer, line: UnsafeRawBufferPointer
    ) -> (matches: Bool, record: SpanRecord)? {
        let shaped = Self.groupKey(bytes, into: &scratch)
        let reuse = shaped && cached != nil && scratch == key
        if shaped && !reuse { swap(&key, &scratch) }
        if !shaped { key.removeAll(keepingCapacity: true) }
        let read: (matches: Bool, record: SpanRecord)?? = UnpackArena.withRequest(bytes) { request in
            let d = request.pointee
            guard d.n_resource_spans == 1, let rs = d.resource_spans[0], rs.pointee.n_scope_spans == 1,
                let ss = rs.pointee.scope_spans[0], ss.pointee.n_spans == 1, let span = ss.pointee.spans[0],
                let traceID = TraceID(bytes: span.pointee.trace_id.rawBuffer),
                let spanID = SpanID(bytes: span.pointee.span_id.rawBuffer)
            else { return nil }
            let group: (frame: OTLPJSONEncoder.LeafFrame, resource: ResourceRecord)
            if reuse, let cached {
                group = cached
            } else {
                let scope = ss.pointee.scope?.pointee
                group = (
                    OTLPJSONEncoder.frame(rs, ss),
                    ResourceRecord(
                        attributes: TracesDataDecoder.attributes(
                            rs.pointee.resource?.pointee.attributes, rs.pointee.resource?.pointee.n_attributes ?? 0),
                        scopeName: TracesDataDecoder.string(scope?.name),
                        scopeVersion: TracesDataDecoder.string(scope?.version))
                )
                cached = shaped ? group : nil
            }
            spanJSON.reset()
            OTLPJSONEncoder.span(span, into: &spanJSON)
            let matches = Self.isConcatenation(line, group.frame.prefix, spanJSON.bytes, group.frame.suffix)
            return (
                matches,
                TracesDataDecoder.record(span.pointee, traceID: traceID, spanID: spanID, resource: group.resource)
            )
        }
        guard let read, let read else {
            cached = nil
            return nil
        }
        return read
    }

    static func isConcatenation(_ line: UnsafeRawBufferPointer, _ a: [UInt8], _ b: [UInt8], _ c: [UInt8]) -> Bool {
        guard line.count == a.count + b.count + c.count, let base = line.baseAddress else { return false }
        var at = 0
        for part in [a, b, c] {
            let same = part.withUnsafeBytes { p in p.isEmpty || memcmp(base + at, p.baseAddress!, p.count) == 0 }
            guard same else { return false }
            at += part.count
        }
        return true
    }

    /// Writes into `key` the message's groups without their span: the resource group's fields
    /// other than `scope_spans`, then the scope group's other than `spans` (tags and lengths
    /// included, so a field's presence counts). False unless the message is exactly one
    /// resource group holding exactly one scope group holding exactly one span, every field
    /// once, in field order, nothing else.
    static func groupKey(_ bytes: UnsafeRawBufferPointer, into key: inout [UInt8]) -> Bool {
        key.removeAll(keepingCapacity: true)
        // TracesData: field 1 (resource_spans), once, the whole message.
        var at = 0
        guard let top = field(bytes, &at), top.number == 1, at == bytes.count else { return false }
        var resourceSpans: Range<Int>?
        at = top.value.lowerBound
        var last = 0
        while at < top.value.upperBound {
            let start = at
            guard let f = field(bytes, &at, end: top.value.upperBound), f.number > last, f.number <= 3 else {
                return false
            }
            last = f.number
            if f.number == 2 { resourceSpans = f.value } else { key += bytes[start..<at] }
        }
        guard let scopeSpans = resourceSpans else { return false }
        key.append(0xFF)  // not a tag a field can start with here: the groups' boundary
        at = scopeSpans.lowerBound
        last = 0
        var sawSpan = false
        while at < scopeSpans.upperBound {
            let start = at
            guard let f = field(bytes, &at, end: scopeSpans.upperBound), f.number > last, f.number <= 3 else {
                return false
            }
            last = f.number
            if f.number == 2 { sawSpan = true } else { key += bytes[start..<at] }
        }
        return sawSpan
    }

    /// A length-delimited field at `at` (within `end`): its number and value; nil for any
    /// other wire type, or one that runs past `end`.
    static func field(
        _ b: UnsafeRawBufferPointer, _ at: inout Int, end: Int? = nil
    ) -> (number: Int, value: Range<Int>)? {
        let end = end ?? b.count
        guard let tag = varint(b, &at, end), tag & 7 == 2, tag >> 3 > 0, tag >> 3 < 16,
            let length = varint(b, &at, end), length <= UInt64(end - at)
        else { return nil }
        let value = at..<at + Int(length)
        at = value.upperBound
        return (Int(tag >> 3), value)
    }

    static func varint(_ b: UnsafeRawBufferPointer, _ at: inout Int, _ end: Int) -> UInt64? {
        var v: UInt64 = 0
        var shift: UInt64 = 0
        while at < end, shift < 64 {
            let byte = b[at]
            at += 1
            v |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return v }
            shift += 7
        }
        return nil
    }
}
