/// Which attribute keys name a span's run. A run is one agent task and may span several traces.
///
/// A span's run is the first of `keys` found on the span, then on its resource. A span with
/// none of them belongs to its trace's run once any span of that trace names one; until
/// then it is listed under its trace ID. The index applies the trace rule; this type
/// answers only the per-span part, identically on the ingest (C) and query (Swift) paths.
public struct RunIdentity: Sendable {
    public static let defaultKeys = ["agent.run.id", "gen_ai.conversation.id", "session.id"]

    public let keys: [String]
    package let cKeys: [CKey]
    /// `cKeys`, by position: a lower position wins.
    package let table: CKeyTable

    public init(keys: [String] = RunIdentity.defaultKeys) {
        self.keys = keys
        self.cKeys = keys.map(CKey.init)
        table = CKeyTable(cKeys)
    }

    /// The run named on the span itself or, failing that, on its resource.
    public func explicitRunID(span: [Attribute], resource: [Attribute]) -> String? {
        for key in keys { if let s = span[key]?.scalarString { return s } }
        for key in keys { if let s = resource[key]?.scalarString { return s } }
        return nil
    }
}

/// The attribute keys whose values the index records per trace at ingest: external IDs
/// (so a side effect leads back to its run) and the attributes `where` searches narrow by.
public struct IndexedKeys: Sendable, Equatable {
    public static let defaultKeys = AgentKeys.defaultExternalIDKeys + AgentKeys.defaultSearchKeys

    public let keys: [String]
    package let cKeys: [CKey]
    package let table: CKeyTable
    /// `IndexedAttribute.prefix` of each key.
    package let hashPrefixes: [UInt64]

    public init(keys: [String] = IndexedKeys.defaultKeys) {
        var unique: [String] = []
        for k in keys where !unique.contains(k) { unique.append(k) }
        self.keys = unique
        self.cKeys = unique.map(CKey.init)
        table = CKeyTable(cKeys)
        hashPrefixes = unique.map(IndexedAttribute.prefix)
    }

    public static func == (a: IndexedKeys, b: IndexedKeys) -> Bool { a.keys == b.keys }
}
