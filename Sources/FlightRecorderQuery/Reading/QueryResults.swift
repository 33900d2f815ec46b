public import FlightRecorderOTLP
public import FlightRecorderStorage

/// One run that matched a search, with the spans that matched.
public struct SearchHit: Sendable {
    public var run: RunSummary
    public var spans: [SpanRecord]
}

public struct SearchResult: Sendable {
    public var hits: [SearchHit]
    /// Traces examined that could match (they carry the indexed values): with an indexed
    /// search, those of the segments read before the page filled; all of them when `complete`.
    public var candidateTraces: Int
    /// True when every candidate was examined, so `hits` are all the matching runs.
    public var complete: Bool
    public var warnings: [String]
}

/// A span found by an indexed attribute, and the run it belongs to.
public struct AttributeMatch: Sendable {
    public var runID: String
    public var tenant: String
    public var span: SpanRecord
}

/// A run and its spans, as `GET /api/v1/runs/{id}` returns it.
public struct RunDetail: Sendable {
    public var summary: RunSummary
    public var spans: [SpanRecord]
    /// Blocks that could not be read (for example a failed checksum); their spans are missing.
    public var warnings: [String]
}
