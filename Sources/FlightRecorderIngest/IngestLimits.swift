/// Per-request limits applied on ingest. Each has a safe default; `limits:` in the config
/// overrides them.
public struct IngestLimits: Sendable, Equatable {
    /// More spans than this in one request refuses the whole request (the client should
    /// split its batches). Default 10,000; OpenTelemetry SDKs batch 512 by default.
    public var maxSpansPerRequest: Int
    /// Attributes kept per span, event and link; the rest are dropped and counted in the
    /// span's `dropped_attributes_count`, as the OpenTelemetry SDKs do. Default 128.
    public var maxAttributesPerSpan: Int
    /// Longest string or bytes attribute value, in bytes; longer values are cut at a UTF-8
    /// boundary, end with `truncationMarker`, and are counted in
    /// `flightrec.truncated.count` on the span. Default 64 KiB.
    public var maxAttributeValueBytes: Int

    public init(
        maxSpansPerRequest: Int = 10_000, maxAttributesPerSpan: Int = 128, maxAttributeValueBytes: Int = 64 << 10
    ) {
        self.maxSpansPerRequest = maxSpansPerRequest
        self.maxAttributesPerSpan = maxAttributesPerSpan
        self.maxAttributeValueBytes = maxAttributeValueBytes
    }

    /// No limits: used when re-reading what was already accepted (recovery, reindex).
    public static let unlimited = IngestLimits(
        maxSpansPerRequest: .max, maxAttributesPerSpan: .max, maxAttributeValueBytes: .max)

    public static let truncationMarker = "…[truncated]"
    /// Span attribute counting the values truncated in that span (and its events and links).
    public static let truncatedCountKey = "flightrec.truncated.count"
}
