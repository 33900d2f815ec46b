/// What the index needs to know about one accepted span. Built on the ingest path straight
/// from protobuf-c structs, so no per-attribute Swift objects are made.
public struct SpanIndexEntry: Sendable, Equatable {
    public var traceID: TraceID
    public var spanID: SpanID
    /// Zero when the span is a root.
    public var parentSpanID: SpanID
    public var startNanos: UInt64
    public var endNanos: UInt64
    public var isError: Bool
    /// The run named on the span or its resource (`RunIdentity`); nil if neither names one.
    public var explicitRunID: String?
    /// Index into `IngestBatch.resources`.
    public var resource: Int32
    /// Values of the `IndexedKeys` present on the span.
    public var indexed: [IndexedAttribute] = []

    public init(
        traceID: TraceID, spanID: SpanID, parentSpanID: SpanID, startNanos: UInt64, endNanos: UInt64,
        isError: Bool, explicitRunID: String?, resource: Int32
    ) {
        self.traceID = traceID
        self.spanID = spanID
        self.parentSpanID = parentSpanID
        self.startNanos = startNanos
        self.endNanos = endNanos
        self.isError = isError
        self.explicitRunID = explicitRunID
        self.resource = resource
    }
}

/// One indexed attribute of a span (an external ID or a searchable attribute).
public struct IndexedAttribute: Sendable, Hashable {
    public var key: String
    public var value: String

    public init(key: String, value: String) {
        self.key = key
        self.value = value
    }
}

/// The resource facts that run summaries show.
public struct ResourceFacts: Sendable, Equatable {
    public var agent: String?
    public var tenant: String?

    public init(agent: String?, tenant: String?) {
        self.agent = agent
        self.tenant = tenant
    }

    /// The tenant of spans whose resource names none (single-tenant deployments).
    public static let defaultTenant = "default"

    /// The tenant the index files this resource's spans under. With tokens configured the
    /// daemon has stamped `tenant.id` from the token, so this is the authenticated tenant.
    public var tenantKey: String { tenant ?? Self.defaultTenant }
}

/// One decoded, validated export request, ready for the store: its spans as a serialized
/// `TracesData` fragment (a run of `resource_spans` fields) plus the facts the index needs.
public struct IngestBatch: Sendable {
    /// Serialized `resource_spans` fields. Fragments concatenate into a valid `TracesData`.
    public var payload: [UInt8]
    public var spans: [SpanIndexEntry]
    public var resources: [ResourceFacts]
    /// Spans left out because they were invalid, and why (for `partial_success`).
    public var rejectedSpans = 0
    public var rejectionMessage = ""
    /// Attribute values cut to the length limit, and attributes dropped over the count limit.
    public var truncatedValues = 0
    public var droppedAttributes = 0

    public init(payload: [UInt8], spans: [SpanIndexEntry], resources: [ResourceFacts]) {
        self.payload = payload
        self.spans = spans
        self.resources = resources
    }
}
