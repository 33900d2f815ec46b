import COTLP
import CProtobufC
import FlightRecorderOTLP

#if canImport(Glibc)
import Glibc
#endif

/// Stage 2 of ingest: a span is stored only with a 16-byte non-zero trace ID, an 8-byte
/// non-zero span ID, a parent ID that is empty or 8 bytes, and an end not before its start.
/// Invalid spans are removed (and reported in `partial_success`) before anything else sees
/// them, so they are never redacted, counted or stored.
enum SpanValidation {
    struct Outcome {
        var total = 0
        var rejected = 0
        /// Up to three rejected spans by path and reason.
        var reasons: [String] = []

        var message: String {
            guard rejected > 0 else { return "" }
            let more = rejected > reasons.count ? "; and \(rejected - reasons.count) more" : ""
            return "\(rejected) of \(total) spans rejected: " + reasons.joined(separator: "; ") + more
        }
    }

    /// Refuses a request over `maxSpans`; removes its invalid spans.
    static func apply(
        _ request: UnsafeMutablePointer<CExportRequest>, maxSpans: Int
    ) throws(ExportRequestError) -> Outcome {
        var outcome = Outcome()
        let req = request.pointee
        for r in 0..<req.n_resource_spans {
            guard let rs = req.resource_spans[r]?.pointee else { continue }
            for s in 0..<rs.n_scope_spans { outcome.total += rs.scope_spans[s]?.pointee.n_spans ?? 0 }
        }
        guard outcome.total <= maxSpans else {
            throw .tooManySpans("request has \(outcome.total) spans; the limit is \(maxSpans) per request")
        }
        var rejected: Set<[Int]> = []
        for r in 0..<req.n_resource_spans {
            guard let rs = req.resource_spans[r]?.pointee else { continue }
            for s in 0..<rs.n_scope_spans {
                guard let ss = rs.scope_spans[s]?.pointee else { continue }
                for i in 0..<ss.n_spans {
                    guard let span = ss.spans[i]?.pointee, let problem = problem(with: span) else { continue }
                    rejected.insert([r, s, i])
                    if outcome.reasons.count < 3 {
                        outcome.reasons.append("resourceSpans[\(r)].scopeSpans[\(s)].spans[\(i)]: \(problem)")
                    }
                }
            }
        }
        outcome.rejected = rejected.count
        if !rejected.isEmpty { removeSpans(request) { r, s, i in rejected.contains([r, s, i]) } }
        return outcome
    }

    /// Why a span cannot be stored, or nil if it can.
    static func problem(with span: CSpan) -> String? {
        guard let trace = TraceID(bytes: span.trace_id.rawBuffer), !trace.isZero else {
            return "invalid trace ID (\(span.trace_id.len) bytes; must be 16 bytes, not all zero)"
        }
        guard let id = SpanID(bytes: span.span_id.rawBuffer), !id.isZero else {
            return "invalid span ID (\(span.span_id.len) bytes; must be 8 bytes, not all zero)"
        }
        if span.parent_span_id.len != 0 && span.parent_span_id.len != 8 {
            return "invalid parent span ID (\(span.parent_span_id.len) bytes; must be empty or 8 bytes)"
        }
        if span.end_time_unix_nano < span.start_time_unix_nano {
            return "end time is before start time"
        }
        return nil
    }

    /// Frees and removes the spans `reject` marks, keeping the others in order.
    static func removeSpans(
        _ req: UnsafeMutablePointer<CExportRequest>, _ reject: (_ resource: Int, _ scope: Int, _ span: Int) -> Bool
    ) {
        for r in 0..<req.pointee.n_resource_spans {
            guard let rs = req.pointee.resource_spans[r] else { continue }
            for s in 0..<rs.pointee.n_scope_spans {
                guard let ss = rs.pointee.scope_spans[s], let spans = ss.pointee.spans else { continue }
                var kept = 0
                for i in 0..<ss.pointee.n_spans {
                    if reject(r, s, i) {
                        if let span = spans[i] { CMessage.free(span) }
                    } else {
                        spans[kept] = spans[i]
                        kept += 1
                    }
                }
                ss.pointee.n_spans = kept
            }
        }
    }
}
