/// One row of `flightrec runs`: a run's extent and counts.
public struct RunSummary: Sendable, Codable, Equatable {
    public var runID: String
    public var startNanos: Int64
    public var endNanos: Int64
    public var spanCount: Int64
    public var errorCount: Int64
    public var traceCount: Int64
    public var agent: String?
    public var tenant: String?
    /// True while the run is listed under its trace ID because no span has named its run yet.
    public var provisional: Bool
    /// A damaged segment region held spans of this run: they cannot be read, and the counts
    /// above may include them (they come from the index, written before the damage). Encoded
    /// only when true.
    public var damaged = false

    public var durationNanos: Int64 { max(0, endNanos - startNanos) }

    enum CodingKeys: String, CodingKey {
        case runID = "runId", startNanos = "startTimeUnixNano", endNanos = "endTimeUnixNano"
        case spanCount, errorCount, traceCount, agent, tenant, provisional, durationNanos, damaged
    }

    public init(
        runID: String, startNanos: Int64, endNanos: Int64, spanCount: Int64, errorCount: Int64, traceCount: Int64,
        agent: String?, tenant: String?, provisional: Bool
    ) {
        self.runID = runID
        self.startNanos = startNanos
        self.endNanos = endNanos
        self.spanCount = spanCount
        self.errorCount = errorCount
        self.traceCount = traceCount
        self.agent = agent
        self.tenant = tenant
        self.provisional = provisional
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        runID = try c.decode(String.self, forKey: .runID)
        startNanos = Int64(try c.decode(String.self, forKey: .startNanos)) ?? 0
        endNanos = Int64(try c.decode(String.self, forKey: .endNanos)) ?? 0
        spanCount = try c.decode(Int64.self, forKey: .spanCount)
        errorCount = try c.decode(Int64.self, forKey: .errorCount)
        traceCount = try c.decode(Int64.self, forKey: .traceCount)
        agent = try c.decodeIfPresent(String.self, forKey: .agent)
        tenant = try c.decodeIfPresent(String.self, forKey: .tenant)
        provisional = try c.decode(Bool.self, forKey: .provisional)
        damaged = try c.decodeIfPresent(Bool.self, forKey: .damaged) ?? false
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(runID, forKey: .runID)
        try c.encode(String(startNanos), forKey: .startNanos)
        try c.encode(String(endNanos), forKey: .endNanos)
        try c.encode(durationNanos, forKey: .durationNanos)
        try c.encode(spanCount, forKey: .spanCount)
        try c.encode(errorCount, forKey: .errorCount)
        try c.encode(traceCount, forKey: .traceCount)
        try c.encode(agent, forKey: .agent)
        try c.encode(tenant, forKey: .tenant)
        try c.encode(provisional, forKey: .provisional)
        if damaged { try c.encode(true, forKey: .damaged) }
    }
}
