public import FlightRecorderCore
public import FlightRecorderOTLP
public import FlightRecorderQuery
public import FlightRecorderStorage

// The bodies the query API answers with (`QueryAPI`), `Codable` so that its clients, the
// CLI first, decode the very types the daemon encodes. Memberwise initialisers are the
// daemon's; clients only decode.

/// `GET /api/v1/redaction/stats`: hits per rule since start-up; never values.
public struct RedactionStats: Sendable, Codable {
    public var enabled: Bool
    public var rules: [String: Int]
}

/// `GET /api/v1/runs`: run summaries, newest first.
public struct RunsPage: Sendable, Codable {
    public var runs: [RunSummary]
}

/// `GET /api/v1/runs?where=…`: the matching runs, each with the spans that matched.
public struct SearchBody: Sendable, Codable {
    public struct Match: Sendable, Codable {
        public var runId: String
        public var tenant: String?
        public var spans: [SpanRecord]
    }
    public var runs: [RunSummary]
    public var matches: [Match]
    /// Traces that carry every indexed value the expression requires (an upper bound).
    public var candidateTraces: Int
    /// True when every candidate was examined: `runs` are all the matching runs.
    public var complete: Bool
    public var warnings: [String]
}

/// `GET /api/v1/runs/{id}/findings`.
public struct FindingsBody: Sendable, Codable {
    public var runId: String
    public var findings: [Finding]
}

/// `GET /api/v1/lookup`: the spans carrying an external ID, each with its causal path.
public struct LookupBody: Sendable, Codable {
    public struct Match: Sendable, Codable {
        public var runId: String
        public var tenant: String
        public var spanId: String
        /// The incident card of this span (also in `path`).
        public var answer: IncidentCard?
        public var path: RunGraph.PathView
    }
    public var key: String
    public var value: String
    public var matches: [Match]
}

/// `GET /api/v1/runs/{id}`: the run and every span of it.
public struct RunBody: Sendable, Codable {
    public var run: RunSummary
    public var spans: [SpanRecord]
    public var warnings: [String]
}

/// `GET /api/v1/traces/{id}`.
public struct TraceBody: Sendable, Codable {
    public var traceId: String
    public var spans: [SpanRecord]
    public var warnings: [String]
}

// The lookup answer carries a causal path per match: written directly, like the paths
// themselves (`JSONWritable`, keys in sorted order; `QueryResponseJSONTests` compares).

extension LookupBody.Match: JSONWritable {
    public func writeJSON(to w: inout JSONWriter) {
        w.beginObject()
        w.member("answer", answer)
        w.member("path", path)
        w.member("runId", runId)
        w.member("spanId", spanId)
        w.member("tenant", tenant)
        w.endObject()
    }
}

extension LookupBody: JSONWritable {
    public func writeJSON(to w: inout JSONWriter) {
        w.beginObject()
        w.member("key", key)
        w.member("matches", matches)
        w.member("value", value)
        w.endObject()
    }
}

/// `GET /api/v1/runs/{id}/card?to=SPAN`: the incident card alone, without the causal path
/// (the web run view asks for it on every selection; a flat run's path can be megabytes).
public struct CardBody: Sendable, Codable, JSONWritable {
    public var runId: String
    public var answer: IncidentCard

    public func writeJSON(to w: inout JSONWriter) {
        w.beginObject()
        w.member("answer", answer)
        w.member("runId", runId)
        w.endObject()
    }
}
