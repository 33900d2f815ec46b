import COTLP
public import FlightRecorderOTLP
import FlightRecorderRedaction

/// Decodes and validates an OTLP `ExportTraceServiceRequest` in protobuf wire format.
public struct ExportRequestDecoder: Sendable {

    public var runIdentity: RunIdentity
    public var indexedKeys: IndexedKeys
    public var maxDepth: Int
    public var limits: IngestLimits
    /// Applied after decoding and before anything is extracted or stored; nil stores as sent.
    public var redaction: RequestRedactor?

    public init(
        runIdentity: RunIdentity = RunIdentity(), indexedKeys: IndexedKeys = IndexedKeys(), maxDepth: Int = 128,
        limits: IngestLimits = IngestLimits(), redaction: RequestRedactor? = nil
    ) {
        self.runIdentity = runIdentity
        self.indexedKeys = indexedKeys
        self.maxDepth = maxDepth
        self.limits = limits
        self.redaction = redaction
    }

    /// Validates `body`, applies the tenant stamp, redaction and limits, and extracts the
    /// index facts. A span is rejected (and counted in `rejectedSpans`, the others kept) unless
    /// it has a 16-byte non-zero trace ID, an 8-byte non-zero span ID, a parent ID that is
    /// empty or 8 bytes, and an end time not before its start time.
    ///
    /// `tenant`, when given, overwrites every `tenant.id` the client sent: the token decides
    /// the tenant, never the payload.
    public func decode(_ body: [UInt8], tenant: String? = nil) throws(ExportRequestError) -> IngestBatch {
        let result: Result<IngestBatch, ExportRequestError> = body.withUnsafeBytes { raw in
            do throws(ExportRequestError) {
                return .success(try decode(raw, payload: body, tenant: tenant))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    func decode(
        _ raw: UnsafeRawBufferPointer, payload: [UInt8], tenant: String?
    ) throws(ExportRequestError) -> IngestBatch {
        do throws(WireFormatError) {
            try WireDepthGuard.check(raw, maxDepth: maxDepth)
        } catch {
            throw ExportRequestError(description: error.description)
        }
        guard
            let request = opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack(
                nil, raw.count, raw.baseAddress?.assumingMemoryBound(to: UInt8.self))
        else {
            throw ExportRequestError(description: "body is not a valid ExportTraceServiceRequest")
        }
        defer { opentelemetry__proto__collector__trace__v1__export_trace_service_request__free_unpacked(request, nil) }

        var total = 0
        for r in 0..<request.pointee.n_resource_spans {
            guard let rs = request.pointee.resource_spans[r]?.pointee else { continue }
            for s in 0..<rs.n_scope_spans { total += rs.scope_spans[s]?.pointee.n_spans ?? 0 }
        }
        guard total <= limits.maxSpansPerRequest else {
            throw .tooManySpans("request has \(total) spans; the limit is \(limits.maxSpansPerRequest) per request")
        }

        // Validate first, so rejected spans are never redacted, counted or stored.
        var rejected: [(r: Int, s: Int, i: Int)] = []
        var reasons: [String] = []
        for r in 0..<request.pointee.n_resource_spans {
            guard let rs = request.pointee.resource_spans[r]?.pointee else { continue }
            for s in 0..<rs.n_scope_spans {
                guard let ss = rs.scope_spans[s]?.pointee else { continue }
                for i in 0..<ss.n_spans {
                    guard let span = ss.spans[i]?.pointee, let problem = Self.problem(with: span) else { continue }
                    rejected.append((r, s, i))
                    if reasons.count < 3 {
                        reasons.append("resourceSpans[\(r)].scopeSpans[\(s)].spans[\(i)]: \(problem)")
                    }
                }
            }
        }
        var changed = false
        if !rejected.isEmpty {
            let set = Set(rejected.map { "\($0.r).\($0.s).\($0.i)" })
            RequestNormalizer.removeSpans(request) { r, s, i in set.contains("\(r).\(s).\(i)") }
            changed = true
        }
        // The tenant decides which redaction rule set applies, so it is stamped first, and
        // again afterwards in case a rule rewrote it.
        if let tenant { changed = RequestNormalizer.stampTenant(request, tenant: tenant) || changed }
        if let redaction, redaction.redact(UnsafeMutableRawPointer(request)).count > 0 {
            changed = true
            if let tenant { _ = RequestNormalizer.stampTenant(request, tenant: tenant) }
        }
        let limited = RequestNormalizer.applyLimits(request, limits, bodyBytes: raw.count)
        changed = changed || limited.changed

        var payload = payload
        if changed {
            // Store the message as changed, never the bytes as sent.
            let size = opentelemetry__proto__collector__trace__v1__export_trace_service_request__get_packed_size(
                request)
            payload = [UInt8](repeating: 0, count: size)
            let written = payload.withUnsafeMutableBufferPointer {
                opentelemetry__proto__collector__trace__v1__export_trace_service_request__pack(request, $0.baseAddress)
            }
            precondition(written == size, "protobuf-c packed a different size than it measured")
        }

        let facts = IndexFacts.extract(request, runIdentity: runIdentity, indexedKeys: indexedKeys)
        var batch = IngestBatch(payload: payload, spans: facts.spans, resources: facts.resources)
        batch.indexed = facts.indexed
        batch.rejectedSpans = rejected.count
        if !rejected.isEmpty {
            let more = rejected.count > reasons.count ? "; and \(rejected.count - reasons.count) more" : ""
            batch.rejectionMessage =
                "\(rejected.count) of \(total) spans rejected: " + reasons.joined(separator: "; ") + more
        }
        batch.truncatedValues = limited.truncatedValues
        batch.droppedAttributes = limited.droppedAttributes
        return batch
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
}

/// Why a request was refused whole; `description` names the problem.
public struct ExportRequestError: Error, CustomStringConvertible, Equatable, Sendable {
    private enum Code: Sendable { case malformed, tooManySpans }
    private var code: Code = .malformed
    public let description: String

    /// More spans than `limits.maxSpansPerRequest` (413, not 400: split the batch).
    public var isTooManySpans: Bool { code == .tooManySpans }

    init(description: String) { self.description = description }

    static func tooManySpans(_ description: String) -> ExportRequestError {
        var f = ExportRequestError(description: description)
        f.code = .tooManySpans
        return f
    }
}
