import COTLP
public import FlightRecorderRedaction

/// Decodes and validates an OTLP `ExportTraceServiceRequest` in protobuf wire format.
public struct ExportRequestDecoder: Sendable {
    public struct Failure: Error, CustomStringConvertible, Equatable {
        public var description: String
    }

    public var runIdentity: RunIdentity
    public var maxDepth: Int
    /// Applied after decoding and before anything is extracted or stored; nil stores as sent.
    public var redaction: RequestRedactor?
    static let agentKeys = [CKey("gen_ai.agent.name"), CKey("service.name")]
    static let tenantKeys = [CKey("tenant.id")]

    public init(runIdentity: RunIdentity = RunIdentity(), maxDepth: Int = 128, redaction: RequestRedactor? = nil) {
        self.runIdentity = runIdentity
        self.maxDepth = maxDepth
        self.redaction = redaction
    }

    /// Validates `body` and extracts the index facts. Every span must have a 16-byte non-zero
    /// trace ID, an 8-byte non-zero span ID, and a parent ID that is empty or 8 bytes.
    public func decode(_ body: [UInt8]) throws(Failure) -> IngestBatch {
        let result: Result<IngestBatch, Failure> = body.withUnsafeBytes { raw in
            do throws(Failure) {
                return .success(try decode(raw, payload: body))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    func decode(_ raw: UnsafeRawBufferPointer, payload: [UInt8]) throws(Failure) -> IngestBatch {
        do throws(WireDepthGuard.Failure) {
            try WireDepthGuard.check(raw, maxDepth: maxDepth)
        } catch {
            switch error {
            case .tooDeep(let depth): throw Failure(description: "message nests deeper than \(depth) levels")
            case .malformed(let offset): throw Failure(description: "malformed protobuf at byte \(offset)")
            }
        }
        guard
            let request = opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack(
                nil, raw.count, raw.baseAddress?.assumingMemoryBound(to: UInt8.self))
        else {
            throw Failure(description: "body is not a valid ExportTraceServiceRequest")
        }
        defer { opentelemetry__proto__collector__trace__v1__export_trace_service_request__free_unpacked(request, nil) }
        var payload = payload
        if let redaction, redaction.redact(UnsafeMutableRawPointer(request)).count > 0 {
            // Something changed: store the redacted message, never the bytes as sent.
            let size = opentelemetry__proto__collector__trace__v1__export_trace_service_request__get_packed_size(request)
            payload = [UInt8](repeating: 0, count: size)
            let written = payload.withUnsafeMutableBufferPointer {
                opentelemetry__proto__collector__trace__v1__export_trace_service_request__pack(request, $0.baseAddress)
            }
            precondition(written == size, "protobuf-c packed a different size than it measured")
        }

        var spans: [SpanIndexEntry] = []
        var resources: [ResourceFacts] = []
        let req = request.pointee
        for r in 0..<req.n_resource_spans {
            guard let rs = req.resource_spans[r]?.pointee else { continue }
            let resource = rs.resource?.pointee
            let attrs = resource?.attributes
            let n = resource?.n_attributes ?? 0
            let resourceRun = firstValue(of: runIdentity.cKeys, in: attrs, count: n)
            resources.append(
                ResourceFacts(
                    agent: firstValue(of: Self.agentKeys, in: attrs, count: n),
                    tenant: firstValue(of: Self.tenantKeys, in: attrs, count: n)))
            let resourceIndex = Int32(resources.count - 1)
            for s in 0..<rs.n_scope_spans {
                guard let ss = rs.scope_spans[s]?.pointee else { continue }
                for i in 0..<ss.n_spans {
                    guard let span = ss.spans[i]?.pointee else { continue }
                    let where_ = "resourceSpans[\(r)].scopeSpans[\(s)].spans[\(i)]"
                    guard let traceID = TraceID(bytes: span.trace_id.rawBuffer), !traceID.isZero else {
                        throw Failure(
                            description:
                                "\(where_): invalid trace ID (\(span.trace_id.len) bytes; must be 16 bytes, not all zero)")
                    }
                    guard let spanID = SpanID(bytes: span.span_id.rawBuffer), !spanID.isZero else {
                        throw Failure(
                            description:
                                "\(where_): invalid span ID (\(span.span_id.len) bytes; must be 8 bytes, not all zero)")
                    }
                    var parent = SpanID(0)
                    if span.parent_span_id.len != 0 {
                        guard let p = SpanID(bytes: span.parent_span_id.rawBuffer) else {
                            throw Failure(
                                description:
                                    "\(where_): invalid parent span ID (\(span.parent_span_id.len) bytes; must be empty or 8 bytes)"
                            )
                        }
                        parent = p
                    }
                    let run =
                        firstValue(of: runIdentity.cKeys, in: span.attributes, count: span.n_attributes)
                        ?? resourceRun
                    spans.append(
                        SpanIndexEntry(
                            traceID: traceID, spanID: spanID, parentSpanID: parent,
                            startNanos: span.start_time_unix_nano, endNanos: span.end_time_unix_nano,
                            isError: span.status?.pointee.code.rawValue == 2,
                            explicitRunID: run, resource: resourceIndex))
                }
            }
        }
        return IngestBatch(payload: payload, spans: spans, resources: resources)
    }
}
