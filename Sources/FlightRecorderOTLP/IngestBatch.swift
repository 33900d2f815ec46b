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

/// One indexed attribute value (an external ID or a searchable attribute) in one trace,
/// once per request: the decoder hashes and deduplicates on the ingest threads, so the
/// single indexer thread only binds integers.
public struct IndexedAttribute: Sendable, Hashable {
    /// What the index stores: `hash(key:value:)`.
    public var hash: Int64
    public var trace: TraceID
    /// Index into `IngestBatch.resources` (for the tenant).
    public var resource: Int32
    /// Start of the first span in the request that carries the value.
    public var startNanos: UInt64

    public init(key: String, value: String, trace: TraceID, resource: Int32, startNanos: UInt64) {
        self.init(hash: Self.hash(key: key, value: value), trace: trace, resource: resource, startNanos: startNanos)
    }

    package init(hash: Int64, trace: TraceID, resource: Int32, startNanos: UInt64) {
        self.hash = hash
        self.trace = trace
        self.resource = resource
        self.startNanos = startNanos
    }

    /// A 64-bit FNV-1a hash of `key`, a NUL and `value`. Stable across processes (it is
    /// persisted); a collision only makes a query read a trace that it then filters out,
    /// because every read checks the real attribute values.
    public static func hash(key: String, value: String) -> Int64 {
        var h = prefix(key)
        for byte in value.utf8 {
            h ^= UInt64(byte)
            h = h &* 0x0000_0100_0000_01B3
        }
        return Int64(bitPattern: h)
    }

    /// The hash state after `key` and the NUL: `hash(key:value:)` goes on from here.
    package static func prefix(_ key: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in key.utf8 {
            h ^= UInt64(byte)
            h = h &* 0x0000_0100_0000_01B3
        }
        return (h ^ 0) &* 0x0000_0100_0000_01B3
    }

    /// `hash(key:value:)` of an ASCII C string value, 1 to `limit` bytes long, from the key's
    /// `prefix`, without making a `String`; nil for anything else (empty, longer, or not
    /// ASCII: `String(cString:)` would repair invalid UTF-8, and the index hashes what a query
    /// reads back).
    @inline(__always)
    package static func hash(prefix: UInt64, asciiCString value: UnsafePointer<CChar>, limit: Int) -> Int64? {
        var h = prefix
        var n = 0
        while value[n] != 0 {
            guard n < limit, UInt8(truncatingIfNeeded: value[n]) < 0x80 else { return nil }
            h ^= UInt64(UInt8(truncatingIfNeeded: value[n]))
            h = h &* 0x0000_0100_0000_01B3
            n += 1
        }
        return n == 0 ? nil : Int64(bitPattern: h)
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
    public var indexed: [IndexedAttribute] = []
    /// Each span's evidence-log leaf hash (32 bytes each, in payload order); empty when ingest
    /// did not compute them.
    public var leafHashes: [UInt8] = []
    /// The leaf hashes were computed from `payload`'s own bytes
    /// (`SpanLeaves.hashBytes(canonicalPayload:)`), so whoever reads the payload back computes
    /// them the same way, without unpacking it.
    public var leavesFromPayload = false
    /// The random key the leaves were salted under (`SpanSalts`: span `i`'s salt derives from
    /// it), stored in the block's frame; empty when the leaves are unsalted.
    public var saltKey: [UInt8] = []
    /// What the batch's spans add to the agent metrics (`SpanMetrics`).
    public var metrics = SpanFamilyCounts()
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
