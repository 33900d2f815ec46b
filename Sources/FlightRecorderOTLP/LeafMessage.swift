import COTLP
import FlightRecorderCore

/// One span's leaf message (a `TracesData` holding one resource, one scope and one span, as the
/// evidence log hashes it) read once: its OTLP/JSON line (`OTLPJSONEncoder`) and its record.
/// An audit bundle is written from these and checked against them.
package enum LeafMessage {
    /// nil when `bytes` is not a leaf message of exactly one span with valid IDs.
    package static func read(_ bytes: UnsafeRawBufferPointer) -> (json: [UInt8], record: SpanRecord)? {
        let read: (json: [UInt8], record: SpanRecord)?? = UnpackArena.withRequest(bytes) { request in
            let d = request.pointee
            guard d.n_resource_spans == 1, let rs = d.resource_spans[0]?.pointee, rs.n_scope_spans == 1,
                let ss = rs.scope_spans[0]?.pointee, ss.n_spans == 1, let span = ss.spans[0]?.pointee,
                let traceID = TraceID(bytes: span.trace_id.rawBuffer),
                let spanID = SpanID(bytes: span.span_id.rawBuffer)
            else { return nil }
            var w = JSONWriter(capacity: bytes.count * 3)
            OTLPJSONEncoder.write(d, &w)
            let scope = ss.scope?.pointee
            let resource = ResourceRecord(
                attributes: TracesDataDecoder.attributes(
                    rs.resource?.pointee.attributes, rs.resource?.pointee.n_attributes ?? 0),
                scopeName: TracesDataDecoder.string(scope?.name), scopeVersion: TracesDataDecoder.string(scope?.version)
            )
            return (w.bytes, TracesDataDecoder.record(span, traceID: traceID, spanID: spanID, resource: resource))
        }
        return read ?? nil
    }
}
