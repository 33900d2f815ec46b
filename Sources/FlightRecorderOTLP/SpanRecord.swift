/// The resource and instrumentation scope shared by a group of spans.
public final class ResourceRecord: Sendable {
    public let attributes: [Attribute]
    public let scopeName: String
    public let scopeVersion: String
    /// The `tenant.id` attribute (ingest stamps it from the token), else the default tenant;
    /// read once, since every query and export asks it of every span.
    public let tenant: String

    public init(attributes: [Attribute], scopeName: String, scopeVersion: String) {
        self.attributes = attributes
        self.scopeName = scopeName
        self.scopeVersion = scopeVersion
        tenant = attributes["tenant.id"]?.scalarString ?? ResourceFacts.defaultTenant
    }
}

/// One stored span, decoded from a block for the query path.
public struct SpanRecord: Sendable {
    public struct Event: Sendable, Codable {
        public var timeUnixNano: UInt64
        public var name: String
        public var attributes: [Attribute]
    }

    public struct Link: Sendable, Codable {
        public var traceID: TraceID
        public var spanID: SpanID
        public var traceState: String
        public var attributes: [Attribute]
    }

    public enum StatusCode: Int, Sendable, CaseIterable {
        case unset = 0, ok = 1, error = 2

        public var name: String {
            switch self {
            case .unset: "UNSET"
            case .ok: "OK"
            case .error: "ERROR"
            }
        }
    }

    public var traceID: TraceID
    public var spanID: SpanID
    public var parentSpanID: SpanID?
    public var traceState: String
    public var name: String
    public var kind: Int
    public var startNanos: UInt64
    public var endNanos: UInt64
    public var attributes: [Attribute]
    public var droppedAttributesCount: UInt32
    public var events: [Event]
    public var links: [Link]
    public var statusCode: StatusCode
    public var statusMessage: String
    public var resource: ResourceRecord

    public var durationNanos: UInt64 { endNanos >= startNanos ? endNanos - startNanos : 0 }

    static let kindNames = ["UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"]
    public var kindName: String { kind >= 0 && kind < Self.kindNames.count ? Self.kindNames[kind] : String(kind) }
}

// Key order of the JSON the query API returns for a span; its clients decode the same shape.
extension SpanRecord: Codable {
    enum CodingKeys: String, CodingKey {
        case traceId, spanId, parentSpanId, traceState, name, kind, startTimeUnixNano, endTimeUnixNano
        case durationNanos, attributes, droppedAttributesCount, events, links, status, resource, scope
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(traceID.hex, forKey: .traceId)
        try c.encode(spanID.hex, forKey: .spanId)
        try c.encode(parentSpanID?.hex, forKey: .parentSpanId)
        if !traceState.isEmpty { try c.encode(traceState, forKey: .traceState) }
        try c.encode(name, forKey: .name)
        try c.encode(kindName, forKey: .kind)
        try c.encode(String(startNanos), forKey: .startTimeUnixNano)
        try c.encode(String(endNanos), forKey: .endTimeUnixNano)
        try c.encode(durationNanos, forKey: .durationNanos)
        try c.encode(AttributeMap(attributes), forKey: .attributes)
        if droppedAttributesCount > 0 { try c.encode(droppedAttributesCount, forKey: .droppedAttributesCount) }
        try c.encode(events, forKey: .events)
        try c.encode(links, forKey: .links)
        try c.encode(["code": statusCode.name, "message": statusMessage], forKey: .status)
        try c.encode(AttributeMap(resource.attributes), forKey: .resource)
        try c.encode(["name": resource.scopeName, "version": resource.scopeVersion], forKey: .scope)
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func id<T>(_ key: CodingKeys, _ make: (String) -> T?) throws -> T {
            guard let v = make(try c.decode(String.self, forKey: key)) else {
                throw DecodingError.dataCorruptedError(forKey: key, in: c, debugDescription: "not a hex ID")
            }
            return v
        }
        func nanos(_ key: CodingKeys) throws -> UInt64 {
            guard let v = UInt64(try c.decode(String.self, forKey: key)) else {
                throw DecodingError.dataCorruptedError(forKey: key, in: c, debugDescription: "not Unix nanoseconds")
            }
            return v
        }
        traceID = try id(.traceId) { TraceID(hex: $0) }
        spanID = try id(.spanId) { SpanID(hex: $0) }
        parentSpanID = try c.decodeIfPresent(String.self, forKey: .parentSpanId).flatMap { SpanID(hex: $0) }
        traceState = try c.decodeIfPresent(String.self, forKey: .traceState) ?? ""
        name = try c.decode(String.self, forKey: .name)
        let kindText = try c.decode(String.self, forKey: .kind)
        kind = Self.kindNames.firstIndex(of: kindText) ?? Int(kindText) ?? 0
        startNanos = try nanos(.startTimeUnixNano)
        endNanos = try nanos(.endTimeUnixNano)
        attributes = try c.decode(AttributeMap.self, forKey: .attributes).attributes
        droppedAttributesCount = try c.decodeIfPresent(UInt32.self, forKey: .droppedAttributesCount) ?? 0
        events = try c.decode([Event].self, forKey: .events)
        links = try c.decode([Link].self, forKey: .links)
        let status = try c.decode([String: String].self, forKey: .status)
        statusCode = StatusCode.allCases.first { $0.name == status["code"] } ?? .unset
        statusMessage = status["message"] ?? ""
        let scope = try c.decode([String: String].self, forKey: .scope)
        resource = ResourceRecord(
            attributes: try c.decode(AttributeMap.self, forKey: .resource).attributes, scopeName: scope["name"] ?? "",
            scopeVersion: scope["version"] ?? "")
    }
}

extension SpanRecord.Event {
    enum CodingKeys: String, CodingKey { case timeUnixNano, name, attributes }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(String(timeUnixNano), forKey: .timeUnixNano)
        try c.encode(name, forKey: .name)
        try c.encode(AttributeMap(attributes), forKey: .attributes)
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        timeUnixNano = UInt64(try c.decode(String.self, forKey: .timeUnixNano)) ?? 0
        name = try c.decode(String.self, forKey: .name)
        attributes = try c.decode(AttributeMap.self, forKey: .attributes).attributes
    }
}

extension SpanRecord.Link {
    enum CodingKeys: String, CodingKey { case traceId, spanId, traceState, attributes }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(traceID.hex, forKey: .traceId)
        try c.encode(spanID.hex, forKey: .spanId)
        if !traceState.isEmpty { try c.encode(traceState, forKey: .traceState) }
        try c.encode(AttributeMap(attributes), forKey: .attributes)
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        guard let trace = TraceID(hex: try c.decode(String.self, forKey: .traceId)),
            let span = SpanID(hex: try c.decode(String.self, forKey: .spanId))
        else { throw DecodingError.dataCorruptedError(forKey: .traceId, in: c, debugDescription: "not a hex ID") }
        traceID = trace
        spanID = span
        traceState = try c.decodeIfPresent(String.self, forKey: .traceState) ?? ""
        attributes = try c.decode(AttributeMap.self, forKey: .attributes).attributes
    }
}

extension SpanRecord {
    /// The tenant this span is filed under (see `ResourceFacts.tenantKey`).
    public var tenant: String { resource.tenant }
}
