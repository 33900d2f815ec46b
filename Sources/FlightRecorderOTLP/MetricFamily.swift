/// The agent metric families FlightRecorder derives from stored spans, with their names,
/// labels and buckets. Span families are counted from each span: at ingest (`SpanMetrics`)
/// when the span names its own version and task type, else by the run analyser once its run
/// has settled; run families by the run analyser. The names are the ones the
/// README, the Prometheus rules and the Grafana dashboard use.
public enum MetricFamily: UInt8, CaseIterable, Sendable, Hashable {
    // Tool and dependency.
    case toolCalls = 1
    case toolCallDuration
    case uncertainWrites
    // Safety.
    case policyDecisions
    case approvals
    case redactions
    // Loop, per model call.
    case tokenUsage
    case operationDuration
    case cost
    // Per run (the run analyser).
    case runs
    case escalations
    case runDuration
    case runSteps
    case repeatedCalls
    case findings

    public var name: String {
        switch self {
        case .toolCalls: "flightrec_tool_calls_total"
        case .toolCallDuration: "flightrec_tool_call_duration_seconds"
        case .uncertainWrites: "flightrec_tool_uncertain_writes_total"
        case .policyDecisions: "flightrec_policy_decisions_total"
        case .approvals: "flightrec_approvals_total"
        case .redactions: "flightrec_redactions_total"
        case .tokenUsage: "flightrec_gen_ai_client_token_usage"
        case .operationDuration: "flightrec_gen_ai_client_operation_duration_seconds"
        case .cost: "flightrec_agent_cost_usd_total"
        case .runs: "flightrec_agent_runs_total"
        case .escalations: "flightrec_agent_run_escalations_total"
        case .runDuration: "flightrec_agent_run_duration_seconds"
        case .runSteps: "flightrec_agent_run_steps"
        case .repeatedCalls: "flightrec_tool_repeated_calls_total"
        case .findings: "flightrec_findings_total"
        }
    }

    public var help: String {
        switch self {
        case .toolCalls: "Tool executions (gen_ai.operation.name=execute_tool) by outcome: ok, error or timeout."
        case .toolCallDuration: "Duration of tool executions."
        case .uncertainWrites: "Write-tier tool executions that timed out or ended in an unknown state."
        case .policyDecisions: "Policy decisions (policy.outcome) by outcome and rule."
        case .approvals: "Approval decisions (approval.decision) by decision: granted or denied."
        case .redactions: "Stored spans in which a redaction rule masked at least one value."
        case .tokenUsage: "Tokens used per model call (GenAI gen_ai.client.token.usage), by token_type."
        case .operationDuration: "Duration of model calls (GenAI gen_ai.client.operation.duration)."
        case .cost: "Cost of model calls in US dollars: the span's gen_ai.usage.cost, else metrics.prices."
        case .runs: "Settled runs by outcome: error when the run's root span failed (any span, without a root)."
        case .escalations: "Settled runs with at least one approval_required policy decision."
        case .runDuration: "Duration of settled runs, first span start to last span end."
        case .runSteps: "Model and tool steps per settled run."
        case .repeatedCalls: "Tool calls repeating an earlier call of the same run (same tool and arguments)."
        case .findings: "Findings of settled runs by kind (unapproved_write, duplicate_execution, ...)."
        }
    }

    /// Label names, in the order `SeriesKey.labels` holds their values.
    public var labels: [String] {
        switch self {
        case .toolCalls: ["tenant", "agent", "agent_version", "task_type", "tool", "risk_tier", "outcome"]
        case .toolCallDuration, .uncertainWrites: ["tenant", "agent", "agent_version", "tool", "risk_tier"]
        case .policyDecisions: ["tenant", "agent", "agent_version", "tool", "risk_tier", "outcome", "rule"]
        case .approvals: ["tenant", "agent", "agent_version", "tool", "decision"]
        case .redactions: ["tenant", "rule"]
        case .tokenUsage: ["tenant", "agent", "agent_version", "model", "token_type"]
        case .operationDuration, .cost: ["tenant", "agent", "agent_version", "model"]
        case .runs: ["tenant", "agent", "agent_version", "task_type", "outcome"]
        case .escalations, .runDuration, .runSteps: ["tenant", "agent", "agent_version", "task_type"]
        case .repeatedCalls: ["tenant", "agent", "agent_version", "tool"]
        case .findings: ["tenant", "agent", "agent_version", "kind"]
        }
    }

    /// Upper bounds of a histogram's buckets (without +Inf); nil for a counter.
    ///
    /// Made once: ingest asks for every histogram observation, and a new array each time
    /// was an allocation per span.
    @inline(__always)
    public var buckets: [Double]? { Self.bucketTable[Int(rawValue)] }

    /// `buckets` by raw value as buffers (empty for a counter), for ingest: reading one
    /// retains nothing. Made once, never freed.
    nonisolated(unsafe) static let bounds: UnsafePointer<UnsafeBufferPointer<Double>> = {
        let table = UnsafeMutablePointer<UnsafeBufferPointer<Double>>.allocate(capacity: bucketTable.count)
        for (i, b) in bucketTable.enumerated() {
            let buffer = UnsafeMutableBufferPointer<Double>.allocate(capacity: b?.count ?? 0)
            _ = buffer.initialize(from: b ?? [])
            (table + i).initialize(to: UnsafeBufferPointer(buffer))
        }
        return UnsafePointer(table)
    }()

    private static let bucketTable: [[Double]?] = (0...Int(MetricFamily.allCases.map(\.rawValue).max()!)).map {
        MetricFamily(rawValue: UInt8($0))?.makeBuckets
    }

    private var makeBuckets: [Double]? {
        switch self {
        case .toolCallDuration: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]
        // The GenAI semantic conventions' advised boundaries.
        case .tokenUsage:
            [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262_144, 1_048_576, 4_194_304, 16_777_216, 67_108_864]
        case .operationDuration:
            [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
        case .runDuration: [1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600]
        case .runSteps: [1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233]
        default: nil
        }
    }

    public var isHistogram: Bool { buckets != nil }

    /// Observed by the run analyser, not per span.
    public var isRunFamily: Bool { rawValue >= MetricFamily.runs.rawValue }
}

/// One series: a family and its label values (in `MetricFamily.labels` order).
///
/// Hashed by `id`, a 64-bit FNV-1a of the family and the values' bytes computed once: the
/// indexer and the registry add thousands of series a second, and hashing the strings each
/// time was most of the metrics' cost (`perf`).
public struct SeriesKey: Hashable, Sendable {
    public let family: MetricFamily
    public let labels: [String]
    public let id: UInt64

    public init(_ family: MetricFamily, _ labels: [String]) {
        var h = Self.fnvBasis
        for l in labels { h = Self.combine(h, Self.fnv(l)) }
        self.init(family: family, labels: labels, id: Self.finish(h, family))
    }

    package init(family: MetricFamily, labels: [String], id: UInt64) {
        self.family = family
        self.labels = labels
        self.id = id
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(id) }

    /// Two series are the same when their families and 64-bit ids are: comparing the values
    /// again on every lookup cost as much as the hashing did. Distinct label sets would have to
    /// collide in 64 bits of FNV-1a to be taken for one.
    public static func == (a: SeriesKey, b: SeriesKey) -> Bool { a.id == b.id && a.family == b.family }

    package static let fnvBasis: UInt64 = 0xcbf2_9ce4_8422_2325
    package static let fnvPrime: UInt64 = 0x0000_0100_0000_01B3

    package static func fnv(_ s: String) -> UInt64 {
        var h = fnvBasis
        for b in s.utf8 { h = (h ^ UInt64(b)) &* fnvPrime }
        return h
    }

    /// The id of a family's series from its values' combined hashes (the family last, so
    /// the values families share are hashed once).
    package static func finish(_ h: UInt64, _ family: MetricFamily) -> UInt64 {
        combine(h, UInt64(family.rawValue) &+ 1)
    }

    package static func combine(_ h: UInt64, _ label: UInt64) -> UInt64 {
        (h ^ label) &* fnvPrime &+ 0x9E37_79B9_7F4A_7C15
    }

    /// The label values joined by U+001F, which `MetricLabel` never lets into a value: how
    /// the index stores a series.
    public var joinedLabels: String { labels.joined(separator: "\u{1F}") }

    public init?(family raw: Int, joinedLabels: String) {
        guard let family = MetricFamily(rawValue: UInt8(clamping: raw)) else { return nil }
        let labels = joinedLabels.split(separator: "\u{1F}", omittingEmptySubsequences: false).map(String.init)
        guard labels.count == family.labels.count else { return nil }
        self.init(family, labels)
    }
}

/// A histogram's observations: per-bucket counts (the last is +Inf, not cumulative), sum,
/// count, and the latest run observed in each bucket (OpenMetrics exemplars; not persisted).
public struct HistogramDelta: Sendable, Equatable {
    public var counts: [UInt64]
    public var sum: Double = 0
    /// At most one a bucket, the latest kept: a slow call's bucket keeps its own run even when
    /// faster calls of other runs are counted in the same delta after it.
    public var exemplars: [BucketExemplar] = []

    public struct BucketExemplar: Sendable, Equatable {
        public var bucket: Int
        public var exemplar: Exemplar
    }

    public struct Exemplar: Sendable, Equatable {
        public var runID: String
        public var value: Double
        /// Unix seconds of the span's end.
        public var time: Double

        public init(runID: String, value: Double, time: Double) {
            self.runID = runID
            self.value = value
            self.time = time
        }
    }

    public init(buckets: Int) { counts = Array(repeating: 0, count: buckets + 1) }

    public var count: UInt64 { counts.reduce(0, +) }

    public mutating func observe(_ value: Double, bounds: [Double], exemplar: Exemplar?) {
        bounds.withUnsafeBufferPointer { observe(value, bounds: $0, exemplar: exemplar) }
    }

    /// The first bucket whose bound holds `value`; +Inf (and NaN) past the last.
    @inline(__always)
    static func bucket(of value: Double, bounds: UnsafeBufferPointer<Double>) -> Int {
        for n in 0..<bounds.count where value <= bounds[n] { return n }
        return bounds.count
    }

    @inline(__always)
    mutating func observe(_ value: Double, bounds: UnsafeBufferPointer<Double>, exemplar: Exemplar?) {
        let i = Self.bucket(of: value, bounds: bounds)
        counts[i] += 1
        sum += value
        if let exemplar { keep(BucketExemplar(bucket: i, exemplar: exemplar)) }
    }

    /// `e` as its bucket's exemplar, in place of the one it had.
    @inline(__always)
    public mutating func keep(_ e: BucketExemplar) {
        if let i = exemplars.firstIndex(where: { $0.bucket == e.bucket }) {
            exemplars[i] = e
        } else {
            // Room for every bucket at once: grown one at a time, the array was allocated
            // again at 1, 2, 4 and 8 as a series' buckets took their first run.
            if exemplars.isEmpty { exemplars.reserveCapacity(counts.count) }
            exemplars.append(e)
        }
    }

    public mutating func add(_ o: HistogramDelta) {
        o.counts.withUnsafeBufferPointer { add(counts: $0, sum: o.sum) }
        for e in o.exemplars { keep(e) }
    }

    mutating func add(counts o: UnsafeBufferPointer<UInt64>, sum s: Double) {
        if counts.count != o.count { counts = Array(repeating: 0, count: max(counts.count, o.count)) }
        counts.withUnsafeMutableBufferPointer { c in for i in 0..<min(c.count, o.count) { c[i] += o[i] } }
        sum += s
    }

    /// Counts then sum, little-endian: how the index stores a histogram.
    public var serialized: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(counts.count * 8 + 8)
        for c in counts { withUnsafeBytes(of: c.littleEndian) { out.append(contentsOf: $0) } }
        withUnsafeBytes(of: sum.bitPattern.littleEndian) { out.append(contentsOf: $0) }
        return out
    }

    public init?(serialized b: [UInt8], buckets: Int) {
        guard b.count == (buckets + 2) * 8 else { return nil }
        self.init(buckets: buckets)
        b.withUnsafeBytes { raw in
            for i in 0...buckets {
                counts[i] = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self))
            }
            sum = Double(
                bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: (buckets + 1) * 8, as: UInt64.self)))
        }
    }
}

/// Series and a value each, found by `SeriesKey.id`: an open-addressed table of positions
/// over keys and values kept in insertion order.
///
/// Hand-written rather than a `Dictionary`: ingest adds a few hundred series per request and
/// the indexer merges every request's, and with a `Dictionary` hashing the id again (SipHash)
/// and retaining each key copied from one table to another were most of the metrics' cost
/// (`perf`). Here a lookup is one multiply and a probe, and a merge copies a key only when
/// the series is new.
public struct SeriesMap<Value: Sendable>: Sendable, Sequence {
    public private(set) var keys: [SeriesKey] = []
    public private(set) var values: [Value] = []
    /// Each series' id, family and position in `keys` (-1 where empty); a power of two, at
    /// most half full. A lookup compares ids here and touches `keys` only for a new series.
    private var slots: [Slot] = []
    private var shift: UInt64 = 64

    private struct Slot {
        var id: UInt64 = 0
        var index: Int32 = -1
        var family: UInt8 = 0
    }

    public init() {}

    public var count: Int { keys.count }
    public var isEmpty: Bool { keys.isEmpty }

    /// The slot to start probing at: the id's high bits after a Fibonacci multiply (the ids'
    /// low bits are the least mixed).
    @inline(__always)
    private func home(_ id: UInt64) -> Int { Int(truncatingIfNeeded: (id &* 0x9E37_79B9_7F4A_7C15) >> shift) }

    /// The position of the series, or the empty slot where it would go.
    @inline(__always)
    private func find(_ id: UInt64, _ family: MetricFamily) -> (slot: Int, index: Int?) {
        if slots.isEmpty { return (-1, nil) }
        let mask = slots.count - 1
        var i = home(id)
        while true {
            let s = slots[i]
            if s.index < 0 { return (i, nil) }
            if s.id == id && s.family == family.rawValue { return (i, Int(s.index)) }
            i = (i + 1) & mask
        }
    }

    public func index(of key: SeriesKey) -> Int? { find(key.id, key.family).index }

    /// The key of series `id` of `family`, if the map holds it.
    public func key(id: UInt64, family: MetricFamily) -> SeriesKey? { find(id, family).index.map { keys[$0] } }

    /// Whether the map holds series `id` of `family`.
    @inline(__always)
    public func contains(id: UInt64, family: MetricFamily) -> Bool { find(id, family).index != nil }

    /// Adds `value` under `key` (not in the map), into `slot` when it is still free.
    private mutating func insert(_ key: SeriesKey, _ value: Value, slot: Int) {
        keys.append(key)
        values.append(value)
        if slot >= 0 && keys.count * 2 <= slots.count {
            slots[slot] = Slot(id: key.id, index: Int32(keys.count - 1), family: key.family.rawValue)
        } else {
            rehash(capacity: keys.count)
        }
    }

    private mutating func rehash(capacity: Int) {
        var size = 16
        while size < capacity * 2 { size *= 2 }
        shift = UInt64(64 - size.trailingZeroBitCount)
        slots = [Slot](repeating: Slot(), count: size)
        for (n, k) in keys.enumerated() {
            var i = home(k.id)
            while slots[i].index >= 0 { i = (i + 1) & (size - 1) }
            slots[i] = Slot(id: k.id, index: Int32(n), family: k.family.rawValue)
        }
    }

    /// Empties the map, keeping its storage (its arrays' capacity, its slots' size).
    public mutating func removeAll() {
        keys.removeAll(keepingCapacity: true)
        values.removeAll(keepingCapacity: true)
        slots.withUnsafeMutableBufferPointer { $0.update(repeating: Slot()) }
    }

    public mutating func reserveCapacity(_ n: Int) {
        keys.reserveCapacity(n)
        values.reserveCapacity(n)
        if n * 2 > slots.count { rehash(capacity: n) }
    }

    /// Updates the series `id` of `family` in place, adding it first (`key()`, `initial()`)
    /// when it is new: how ingest counts without making a key for a series it has.
    @inline(__always)
    public mutating func update(
        id: UInt64, family: MetricFamily, key: () -> SeriesKey, initial: () -> Value, _ body: (inout Value) -> Void
    ) {
        let (slot, index) = find(id, family)
        if let index {
            body(&values[index])
        } else {
            var v = initial()
            body(&v)
            insert(key(), v, slot: slot)
        }
    }

    /// The position of series `id` of `family`, added first (`key()`, `initial`) when new.
    @inline(__always)
    public mutating func position(
        id: UInt64, family: MetricFamily, key: () -> SeriesKey, initial: @autoclosure () -> Value
    ) -> Int {
        let (slot, index) = find(id, family)
        if let index { return index }
        insert(key(), initial(), slot: slot)
        return keys.count - 1
    }

    /// Changes the value at `position` in place.
    @inline(__always)
    public mutating func modify(at position: Int, _ body: (inout Value) -> Void) { body(&values[position]) }

    /// Adds every series of `other` into this map: `combine` for the series both have.
    public mutating func merge(_ other: SeriesMap<Value>, _ combine: (inout Value, Value) -> Void) {
        if isEmpty {
            self = other
            return
        }
        if (count + other.count) * 2 > slots.count { reserveCapacity(count + other.count) }
        for n in 0..<other.keys.count {
            let (slot, index) = find(other.keys[n].id, other.keys[n].family)
            if let index {
                combine(&values[index], other.values[n])
            } else {
                insert(other.keys[n], other.values[n], slot: slot)
            }
        }
    }

    /// Adds every series of `other` this map lacks, with `value` (a key is copied only for a
    /// series new to this map).
    public mutating func insertKeys<Other>(of other: SeriesMap<Other>, value: Value) {
        for n in 0..<other.keys.count {
            let (slot, index) = find(other.keys[n].id, other.keys[n].family)
            if index == nil { insert(other.keys[n], value, slot: slot) }
        }
    }

    public subscript(key: SeriesKey) -> Value? {
        get { index(of: key).map { values[$0] } }
        set {
            let (slot, index) = find(key.id, key.family)
            switch (index, newValue) {
            case (let i?, let v?): values[i] = v
            case (nil, let v?): insert(key, v, slot: slot)
            case (let i?, nil):
                keys.remove(at: i)
                values.remove(at: i)
                rehash(capacity: keys.count)
            case (nil, nil): break
            }
        }
    }

    public subscript(key: SeriesKey, default value: @autoclosure () -> Value) -> Value {
        get { self[key] ?? value() }
        set { self[key] = newValue }
    }

    public func makeIterator() -> Iterator { Iterator(keys: keys, values: values) }

    /// A concrete iterator: a lazy `zip` behind an opaque type looked its tuple type's
    /// metadata up at run time on every loop (`getCache` in `perf` of the indexer's and the
    /// registry's loops over each round's series).
    public struct Iterator: IteratorProtocol {
        let keys: [SeriesKey]
        let values: [Value]
        var at = 0

        public mutating func next() -> (key: SeriesKey, value: Value)? {
            guard at < keys.count else { return nil }
            defer { at += 1 }
            return (keys[at], values[at])
        }
    }
}

extension SeriesMap: Equatable where Value: Equatable {
    public static func == (a: SeriesMap, b: SeriesMap) -> Bool {
        a.count == b.count && a.keys.indices.allSatisfy { b[a.keys[$0]] == a.values[$0] }
    }
}

/// What a batch of spans adds to the agent metrics: counter increments and histogram
/// observations per series.
public struct MetricDeltas: Sendable, Equatable {
    public var counters = SeriesMap<Double>()
    public var histograms = SeriesMap<HistogramDelta>()

    public init() {}

    public var isEmpty: Bool { counters.isEmpty && histograms.isEmpty }

    public mutating func count(_ family: MetricFamily, _ labels: [String], by n: Double = 1) {
        let key = SeriesKey(family, labels)
        counters.update(id: key.id, family: family, key: { key }, initial: { 0 }) { $0 += n }
    }

    public mutating func observe(
        _ family: MetricFamily, _ labels: [String], _ value: Double, exemplar: HistogramDelta.Exemplar? = nil
    ) {
        guard let bounds = family.buckets else { return }
        let key = SeriesKey(family, labels)
        histograms.update(id: key.id, family: family, key: { key }, initial: { HistogramDelta(buckets: bounds.count) })
        {
            $0.observe(value, bounds: bounds, exemplar: exemplar)
        }
    }

    /// Adds `n` to series `id` of `family` (`SeriesKey.finish` of its labels' combined hashes),
    /// its key made (`key`) only when the series is new here. Specialised in this module, so a
    /// caller elsewhere (the run analyser's span families) does not look up `SeriesMap`'s
    /// generic metadata on every call, which `perf` showed it did.
    public mutating func count(_ family: MetricFamily, id: UInt64, by n: Double = 1, key: () -> SeriesKey) {
        counters.update(id: id, family: family, key: key, initial: { 0 }) { $0 += n }
    }

    /// Observes `value` in histogram series `id` of `family` (as `count(_:id:by:key:)`).
    public mutating func observe(
        _ family: MetricFamily, id: UInt64, _ value: Double, exemplar: HistogramDelta.Exemplar?,
        key: () -> SeriesKey
    ) {
        guard let bounds = family.buckets else { return }
        histograms.update(id: id, family: family, key: key, initial: { HistogramDelta(buckets: bounds.count) }) {
            $0.observe(value, bounds: bounds, exemplar: exemplar)
        }
    }

    /// Sets one series from a stored row (the index's `metrics`, `stats.db`'s `metric_totals`):
    /// family, joined labels, a counter's value, a histogram's serialized counts. A row that
    /// names no known family, or whose histogram does not match its buckets, is skipped.
    public mutating func setStored(family: Int, joinedLabels: String, value: Double, histogram: [UInt8]) {
        guard let key = SeriesKey(family: family, joinedLabels: joinedLabels) else { return }
        if let bounds = key.family.buckets {
            if let h = HistogramDelta(serialized: histogram, buckets: bounds.count) { histograms[key] = h }
        } else {
            counters[key] = value
        }
    }

    public mutating func add(_ o: MetricDeltas) {
        counters.merge(o.counters) { $0 += $1 }
        histograms.merge(o.histograms) { $0.add($1) }
    }

    /// Adds the series a request counted: a key is looked up (`SpanFamilyCounts.key`) only
    /// for a series new to this map.
    public mutating func add(_ o: SpanFamilyCounts) {
        o.forEachCounter { keys, p, v in
            counters.update(id: keys[p].id, family: keys[p].family, key: { o.key(keys[p]) }, initial: { 0 }) { $0 += v }
        }
        o.forEachHistogram { keys, p, counts, sum, exemplars in
            histograms.update(
                id: keys[p].id, family: keys[p].family, key: { o.key(keys[p]) },
                initial: { HistogramDelta(buckets: counts.count - 1) }
            ) { h in
                h.add(counts: counts, sum: sum)
                o.forEachExemplar(from: exemplars) { h.keep($0) }
            }
        }
    }
}
