/// Cuts a serialized `TracesData` down to the spans of some traces, at the wire level.
///
/// A stored block holds thousands of spans from many runs; a query wants a few hundred.
/// Unpacking the whole block with protobuf-c mallocs every field of every span, which
/// profiling showed to be most of a query's time. This pass reads only each span's trace ID
/// (field 1) and copies the wanted spans, with their resource and scope, into a small
/// message that protobuf-c then unpacks. Hand-written: protobuf-c has no partial or lazy
/// decoding, and the walk is the same varint arithmetic as `WireDepthGuard`.
///
/// The walk allocates nothing for a scope none of whose spans is wanted, and compares trace
/// IDs as two integers against a short list (a query wants one trace or a few): reading a
/// 200-span run walks tens of blocks of other runs' spans, and a per-scope field array and a
/// hashed set lookup per span were a quarter of a lookup's time (`perf`, 50 M spans).
enum TraceWireFilter {
    /// The span's trace ID (field 1). Exporters write it first, so the walk usually stops
    /// at the first field; any order is read.
    static func traceID(_ b: UnsafeRawBufferPointer, _ range: Range<Int>) -> TraceID? {
        // The common shape, read without the general walk: tag 0x0A, length 16, the ID.
        if range.count >= 18 && b[range.lowerBound] == 0x0A && b[range.lowerBound + 1] == 16 {
            return TraceID(
                high: UInt64(bigEndianBytes: b, at: range.lowerBound + 2),
                low: UInt64(bigEndianBytes: b, at: range.lowerBound + 10))
        }
        var cursor = WireCursor(b, range)
        while !cursor.atEnd {
            guard let f = cursor.field() else { return nil }
            if f.number == 1 && f.wireType == 2 {
                return TraceID(bytes: UnsafeRawBufferPointer(rebasing: b[f.payload]))
            }
        }
        return nil
    }

    /// The wanted traces: a short list compared in place, a set beyond a few.
    struct Wanted {
        let few: [TraceID]
        let many: Set<TraceID>?

        init(_ traces: Set<TraceID>) {
            if traces.count <= 8 {
                few = Array(traces)
                many = nil
            } else {
                few = []
                many = traces
            }
        }

        func contains(_ id: TraceID) -> Bool {
            if let many { return many.contains(id) }
            for t in few where t.low == id.low && t.high == id.high { return true }
            return false
        }
    }

    /// The `TracesData` holding only spans whose trace is in `traces`; nil when the input is
    /// not valid wire format (the caller then decodes it whole and reports the error).
    static func filter(_ b: UnsafeRawBufferPointer, traces: Set<TraceID>) -> [UInt8]? {
        let wanted = Wanted(traces)
        var w = ProtobufWriter(capacity: 16 << 10)
        var spans: [Range<Int>] = []
        var scopes: [(scope: Range<Int>, spans: Range<Int>)] = []  // into `spans`
        var top = WireCursor(b, 0..<b.count)
        while !top.atEnd {
            guard let rs = top.field() else { return nil }
            guard rs.number == 1, rs.wireType == 2 else { continue }
            spans.removeAll(keepingCapacity: true)
            scopes.removeAll(keepingCapacity: true)
            var rsCursor = WireCursor(b, rs.payload)
            while !rsCursor.atEnd {
                guard let ss = rsCursor.field() else { return nil }
                guard ss.number == 2, ss.wireType == 2 else { continue }
                let first = spans.count
                var ssCursor = WireCursor(b, ss.payload)
                while !ssCursor.atEnd {
                    guard let span = ssCursor.field() else { return nil }
                    guard span.number == 2, span.wireType == 2 else { continue }
                    if let id = traceID(b, span.payload), wanted.contains(id) { spans.append(span.range) }
                }
                if spans.count > first { scopes.append((ss.payload, first..<spans.count)) }
            }
            guard !scopes.isEmpty else { continue }
            // The resource's and the scopes' other fields (attributes, schema URL), in any
            // position: walked again only for the few scopes that hold wanted spans.
            w.messageField(1) { out in
                var header = WireCursor(b, rs.payload)
                while let f = header.field() {
                    if f.number != 2 { out.raw(UnsafeRawBufferPointer(rebasing: b[f.range])) }
                }
                for scope in scopes {
                    out.messageField(2) { ss in
                        var c = WireCursor(b, scope.scope)
                        while let f = c.field() {
                            if f.number != 2 { ss.raw(UnsafeRawBufferPointer(rebasing: b[f.range])) }
                        }
                        for r in spans[scope.spans] { ss.raw(UnsafeRawBufferPointer(rebasing: b[r])) }
                    }
                }
            }
        }
        return w.bytes
    }
}
