import COTLP
import FlightRecorderEvidence
public import FlightRecorderOTLP
import FlightRecorderRedaction

/// The ingest pipeline: an OTLP `ExportTraceServiceRequest` in protobuf wire format in, an
/// `IngestBatch` for the store out, through ordered stages, each in its own file:
/// 1. decode (`WireDepthGuard`, then protobuf-c)
/// 2. validate (`SpanValidation`)
/// 3. tenant stamp (`TenantStamp`)
/// 4. redact (`RequestRedactor`)
/// 5. limits (`AttributeLimits`)
/// 6. encode what changed (protobuf-c)
/// 7. extract the index facts (`IndexFacts`) and the evidence log's leaves (`SpanLeaves`)
public struct ExportRequestDecoder: Sendable {

    public var runIdentity: RunIdentity
    public var indexedKeys: IndexedKeys
    /// The agent metrics derived from each stored span; nil derives none.
    public var metrics: MetricRules?
    public var maxDepth: Int
    public var limits: IngestLimits
    /// Applied after decoding and before anything is extracted or stored; nil stores as sent.
    public var redaction: RequestRedactor?
    /// Whether each span's evidence-log leaf is computed here, on the ingest threads (the
    /// log computes it from the stored block otherwise).
    public var evidenceLeaves = true

    public init(
        runIdentity: RunIdentity = RunIdentity(), indexedKeys: IndexedKeys = IndexedKeys(), maxDepth: Int = 128,
        limits: IngestLimits = IngestLimits(), redaction: RequestRedactor? = nil, metrics: MetricRules? = nil
    ) {
        self.runIdentity = runIdentity
        self.indexedKeys = indexedKeys
        self.metrics = metrics
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
        // 1. Decode: the wire walk bounds nesting and lengths before protobuf-c unpacks.
        do throws(WireFormatError) {
            try WireDepthGuard.check(raw, maxDepth: maxDepth)
        } catch {
            throw ExportRequestError(description: error.description)
        }
        // Unpacked into an arena that every stage allocates from too (`CMessage`): the whole
        // request is freed with it, without a walk over its fields.
        let arena = UnpackArena(expectedBytes: raw.count * 4)
        return try arena.with { (allocator) throws(ExportRequestError) -> IngestBatch in
            guard
                let request = opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack(
                    allocator, raw.count, raw.baseAddress?.assumingMemoryBound(to: UInt8.self))
            else {
                throw ExportRequestError(description: "body is not a valid ExportTraceServiceRequest")
            }
            return try process(request, bodyBytes: raw.count, payload: payload, tenant: tenant)
        }
    }

    func process(
        _ request: UnsafeMutablePointer<Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest>,
        bodyBytes: Int, payload: [UInt8], tenant: String?
    ) throws(ExportRequestError) -> IngestBatch {

        // 2. Validate: the span count, then each span; invalid ones leave the request.
        let validation = try SpanValidation.apply(request, maxSpans: limits.maxSpansPerRequest)
        var changed = validation.rejected > 0
        // 3. Tenant stamp, before redaction: the tenant selects the rule set. Again after it,
        //    in case a rule rewrote the tenant.
        if let tenant { changed = TenantStamp.apply(request, tenant: tenant) || changed }
        // 4. Redact every string and bytes field.
        if let redaction, redaction.redact(UnsafeMutableRawPointer(request)).count > 0 {
            changed = true
            if let tenant { _ = TenantStamp.apply(request, tenant: tenant) }
        }
        // 5. Limits on attribute counts and value lengths.
        let limited = AttributeLimits.apply(request, limits, bodyBytes: bodyBytes)
        changed = changed || limited.changed
        // Fields this schema does not know are not stored: an export could not show them.
        changed = UnknownFields.strip(request) || changed

        // 6. Encode: store the message as changed, never the bytes as sent. With the evidence
        // log on, always: the stored bytes are then protobuf-c's own encoding, whose spans are
        // hashed as they stand, now and whenever the block is read back (an export, `verify`).
        var payload = payload
        if changed || evidenceLeaves {
            let size = opentelemetry__proto__collector__trace__v1__export_trace_service_request__get_packed_size(
                request)
            payload = [UInt8](repeating: 0, count: size)
            let written = payload.withUnsafeMutableBufferPointer {
                opentelemetry__proto__collector__trace__v1__export_trace_service_request__pack(request, $0.baseAddress)
            }
            precondition(written == size, "protobuf-c packed a different size than it measured")
        }

        // 7. Extract the index facts from what is stored.
        let facts = IndexFacts.extract(request, runIdentity: runIdentity, indexedKeys: indexedKeys, metrics: metrics)
        var batch = IngestBatch(payload: payload, spans: facts.spans, resources: facts.resources)
        batch.indexed = facts.indexed
        batch.metrics = facts.metrics
        if evidenceLeaves {
            // Salted leaves (`SpanSalts`): the key is stored in the block's frame, and an
            // erasure's rewrite drops it with the spans it erases.
            let key = SpanSalts.randomKey()
            var salts: [LeafSalt] = []
            SpanSalts.derive(key: key, count: facts.spans.count, into: &salts)
            if let hashes = payload.withUnsafeBytes({ SpanLeaves.hashBytes(canonicalPayload: $0, salts: salts) }) {
                batch.leafHashes = hashes
                batch.leavesFromPayload = true
            } else {
                batch.leafHashes = SpanLeaves.hashBytes(request, salts: salts)
            }
            batch.saltKey = key
        }
        batch.rejectedSpans = validation.rejected
        batch.rejectionMessage = validation.message
        batch.truncatedValues = limited.truncatedValues
        batch.droppedAttributes = limited.droppedAttributes
        return batch
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
