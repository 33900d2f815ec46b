/// Cuts a serialized `TracesData` down to the spans of some traces, at the wire level.
///
/// A stored block holds thousands of spans from many runs; a query wants a few hundred.
/// Unpacking the whole block with protobuf-c mallocs every field of every span, which
/// profiling showed to be most of a query's time. This pass reads only each span's trace ID
/// (field 1) and copies the wanted spans, with their resource and scope, into a small
/// message that protobuf-c then unpacks. Hand-written: protobuf-c has no partial or lazy
/// decoding, and the walk is the same varint arithmetic as `WireDepthGuard`.
enum TraceWireFilter {
    typealias Field = WireCursor.Field

    /// The fields of the message in `range`; nil if the bytes are not valid wire format.
    static func fields(_ b: UnsafeRawBufferPointer, _ range: Range<Int>) -> [Field]? {
        var cursor = WireCursor(b, range)
        var out: [Field] = []
        while !cursor.atEnd {
            guard let f = cursor.field() else { return nil }
            out.append(f)
        }
        return out
    }

    /// The span's trace ID (field 1). Exporters write it first, so the walk usually stops
    /// at the first field; any order is read.
    static func traceID(_ b: UnsafeRawBufferPointer, _ range: Range<Int>) -> TraceID? {
        var cursor = WireCursor(b, range)
        while !cursor.atEnd {
            guard let f = cursor.field() else { return nil }
            if f.number == 1 && f.wireType == 2 {
                return TraceID(bytes: UnsafeRawBufferPointer(rebasing: b[f.payload]))
            }
        }
        return nil
    }

    /// The `TracesData` holding only spans whose trace is in `traces`; nil when the input is
    /// not valid wire format (the caller then decodes it whole and reports the error).
    static func filter(_ b: UnsafeRawBufferPointer, traces: Set<TraceID>) -> [UInt8]? {
        guard let top = fields(b, 0..<b.count) else { return nil }
        var w = ProtobufWriter(capacity: 16 << 10)
        for rs in top {
            guard rs.number == 1, rs.wireType == 2 else { continue }
            guard let rsFields = fields(b, rs.payload) else { return nil }
            var scopes: [(header: [Field], spans: [Field])] = []
            for ss in rsFields where ss.number == 2 && ss.wireType == 2 {
                guard let ssFields = fields(b, ss.payload) else { return nil }
                var wanted: [Field] = []
                for span in ssFields where span.number == 2 && span.wireType == 2 {
                    if let id = traceID(b, span.payload), traces.contains(id) { wanted.append(span) }
                }
                if !wanted.isEmpty { scopes.append((ssFields.filter { $0.number != 2 }, wanted)) }
            }
            guard !scopes.isEmpty else { continue }
            w.messageField(1) { out in
                for f in rsFields where f.number != 2 { out.raw(UnsafeRawBufferPointer(rebasing: b[f.range])) }
                for scope in scopes {
                    out.messageField(2) { ss in
                        for f in scope.header { ss.raw(UnsafeRawBufferPointer(rebasing: b[f.range])) }
                        for f in scope.spans { ss.raw(UnsafeRawBufferPointer(rebasing: b[f.range])) }
                    }
                }
            }
        }
        return w.bytes
    }
}
