import COTLP
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What the agent metrics read from spans, and how: which attributes name the agent version
/// and the task type, and the price table for cost. One value for ingest, recovery and
/// `flightrec reindex`, so all three derive the same counts from the same stored spans.
///
/// A class: ingest reads it for every span attribute, and copying a struct of nine arrays
/// there was 2 % of the daemon's samples (`perf`).
public final class MetricRules: Sendable, Equatable {
    public static let defaultVersionKeys = ["gen_ai.agent.version", "agent.version"]
    public static let defaultTaskTypeKeys = ["agent.task.type", "gen_ai.agent.name"]

    /// US dollars per million tokens.
    public struct Price: Sendable, Equatable {
        public var input: Double
        public var output: Double

        public init(input: Double, output: Double) {
            self.input = input
            self.output = output
        }
    }

    /// Looked for on the span, then on its run's root span, then on its resource, then
    /// `service.version` on the resource (the span families, the run families and the `where`
    /// language alike). A span that names neither its own version nor, for a tool execution,
    /// its own task type is counted by the run analyser, which knows its run's root, once the
    /// run has settled; every other span at ingest.
    public let versionKeys: [String]
    /// Looked for on the span, then on its run's root span, then on its resource.
    public let taskTypeKeys: [String]
    /// By model name (`gen_ai.response.model`, else `gen_ai.request.model`).
    public let prices: [String: Price]

    /// Every attribute key the metrics read, looked up once per span attribute.
    package let table: CKeyTable
    /// Slots of `versionKeys` and `taskTypeKeys`: buffers, not arrays, so reading them for
    /// every span retains nothing (freed in `deinit`).
    nonisolated(unsafe) let versionSlots: UnsafeBufferPointer<Int>
    nonisolated(unsafe) let taskSlots: UnsafeBufferPointer<Int>
    /// The label values ingest uses for every span, held here rather than as statics, which
    /// cost a lazy-initialisation check on each use.
    let literals = LabelRef.Literals.shared
    /// `AgentKeys.modelOperations`, compared with each span's `gen_ai.operation.name`.
    let modelOperations = AgentKeys.modelOperations.map(CKey.init)

    /// The fixed keys, in slot order (`Slot`).
    static let fixedKeys = [
        AgentKeys.operationName, AgentKeys.toolName, AgentKeys.toolTier, "tool.execution.status", "error.type",
        AgentKeys.policyOutcome, AgentKeys.policyRule, "approval.decision", AgentKeys.requestModel,
        AgentKeys.responseModel, AgentKeys.inputTokens, AgentKeys.outputTokens, "gen_ai.usage.cost",
        "flightrec.redacted.rules", AgentKeys.legacyInputTokens, AgentKeys.legacyOutputTokens,
    ]

    enum Slot: Int {
        case operation = 0, tool, tier, status, errorType, policyOutcome, policyRule, approval, requestModel,
            responseModel, inputTokens, outputTokens, cost, redactedRules, legacyInputTokens, legacyOutputTokens
    }

    public init(
        versionKeys: [String] = MetricRules.defaultVersionKeys,
        taskTypeKeys: [String] = MetricRules.defaultTaskTypeKeys,
        prices: [String: Price] = [:]
    ) {
        self.versionKeys = versionKeys
        self.taskTypeKeys = taskTypeKeys
        self.prices = prices
        var names = Self.fixedKeys
        func slot(_ k: String) -> Int {
            if let i = names.firstIndex(of: k) { return i }
            names.append(k)
            return names.count - 1
        }
        func buffer(_ a: [Int]) -> UnsafeBufferPointer<Int> {
            let b = UnsafeMutableBufferPointer<Int>.allocate(capacity: a.count)
            _ = b.initialize(from: a)
            return UnsafeBufferPointer(b)
        }
        versionSlots = buffer(versionKeys.map(slot))
        taskSlots = buffer(taskTypeKeys.map(slot))
        table = CKeyTable(names.map(CKey.init))
    }

    deinit {
        versionSlots.deallocate()
        taskSlots.deallocate()
    }

    public static func == (a: MetricRules, b: MetricRules) -> Bool {
        a.versionKeys == b.versionKeys && a.taskTypeKeys == b.taskTypeKeys && a.prices == b.prices
    }

    var slotCount: Int { table.keys.count }
}

/// A label value as the metrics may show it: attribute values become label values only for
/// the bounded labels, and only when they look like identifiers (ASCII letters, digits and
/// `._-:/+`, at most 64 bytes). Anything else (free text, an e-mail address, a redaction
/// mask) becomes `other`, so no attribute value that could be sensitive reaches a label and
/// the series stay bounded.
public enum MetricLabel {
    public static let missing = "unknown"
    public static let other = "other"
    static let maxBytes = 64

    /// ASCII letters, digits and `._-:/+`, as a bitmap of bytes 0-63 and 64-127: one shift a
    /// byte, where the ranges were a chain of compares on every byte of every label value.
    @inline(__always)
    static func allowed(_ b: UInt8) -> Bool {
        b < 128 && ((b < 64 ? 0x07FF_E800_0000_0000 : 0x07FF_FFFE_87FF_FFFE as UInt64) >> (b & 63)) & 1 != 0
    }

    public static func value(_ s: String?) -> String {
        guard let s, !s.isEmpty else { return missing }
        guard s.utf8.count <= maxBytes, s.utf8.allSatisfy(allowed) else { return other }
        return s
    }

    static func value(_ c: UnsafePointer<CChar>) -> String {
        var n = 0
        while c[n] != 0 {
            guard n < maxBytes, allowed(UInt8(truncatingIfNeeded: c[n])) else { return other }
            n += 1
        }
        return n == 0 ? missing : String(cString: c)
    }
}

/// A label value with the hash the accumulator keys series by: FNV-1a over its bytes, made
/// straight from a C string without a `String`, which is made only for a series the request
/// has not met yet.
///
/// Plain data (a hash and a pointer), so the label values a span's families share are copied
/// without reference counting, which had been a third of the span families' cost (`perf`).
/// The pointer is a span attribute's (the request's arena), or a `LabelStrings`' that the
/// request holds, or a constant's.
struct LabelRef: @unchecked Sendable {  // immutable; what it points at outlives its use
    let hash: UInt64
    let cString: UnsafePointer<CChar>

    /// `MetricLabel.value` of a C string, hashed in the same pass that checks it.
    init(_ c: UnsafePointer<CChar>?) {
        guard let c, c.pointee != 0 else {
            self = LabelRef.missing
            return
        }
        var h = SeriesKey.fnvBasis
        var n = 0
        while c[n] != 0 {
            let b = UInt8(truncatingIfNeeded: c[n])
            guard n < MetricLabel.maxBytes, MetricLabel.allowed(b) else {
                self = LabelRef.other
                return
            }
            h = (h ^ UInt64(b)) &* SeriesKey.fnvPrime
            n += 1
        }
        hash = h
        cString = c
    }

    private init(constant s: String) {
        cString = UnsafePointer(strdup(s)!)  // never freed: a constant
        hash = SeriesKey.fnv(s)
    }

    var string: String { String(cString: cString) }

    static let missing = LabelRef(constant: MetricLabel.missing)
    static let other = LabelRef(constant: MetricLabel.other)

    struct Literals: Sendable {
        /// Made once: the constants' C strings are never freed.
        static let shared = Literals()

        let missing = LabelRef.missing
        let ok = LabelRef(constant: "ok")
        let error = LabelRef(constant: "error")
        let timeout = LabelRef(constant: "timeout")
        let granted = LabelRef(constant: "granted")
        let denied = LabelRef(constant: "denied")
        let input = LabelRef(constant: "input")
        let output = LabelRef(constant: "output")
    }
}

/// C copies of the label values requests take from `String`s (their resources' tenants and
/// agents), made once per value: each thread keeps its own (`SeriesKeyCache.labels`), so a
/// request's resources cost a dictionary lookup each rather than a copy. Freed whole, between
/// requests, past `limit` values.
final class LabelStrings {
    private var made: [String: LabelRef] = [:]
    private var owned: [UnsafeMutablePointer<CChar>] = []
    static let limit = 4096

    func label(_ s: String) -> LabelRef {
        if let l = made[s] { return l }
        let copy = strdup(MetricLabel.value(s))!
        owned.append(copy)
        let l = LabelRef(UnsafePointer(copy))
        made[s] = l
        return l
    }

    /// Frees the copies once there are over `limit`: only while no request holds a label.
    func trim() {
        guard made.count > Self.limit else { return }
        for p in owned { free(p) }
        owned.removeAll()
        made.removeAll()
    }

    deinit { for p in owned { free(p) } }
}

/// The running hash of a series' label values (`SeriesKey.id` once `id(_:)` adds the family),
/// so the values shared by a span's families (tenant, agent, version) are hashed once.
struct LabelHash {
    var h: UInt64 = SeriesKey.fnvBasis

    @inline(__always)
    func adding(_ l: LabelRef) -> LabelHash { LabelHash(h: SeriesKey.combine(h, l.hash)) }

    @inline(__always)
    func id(_ family: MetricFamily) -> UInt64 { SeriesKey.finish(h, family) }
}

/// The keys of the series one ingest thread's requests counted, by id: a request's counts
/// carry ids alone, and the indexer takes the key of a series new to it from here.
///
/// Hand-written sharing rather than a `Mutex` around the map: only the thread that owns the
/// store writes to it (under `lock`, once a request, at `MetricAccumulator.finish`), so that
/// thread reads it without the lock, and others (the indexer) read it under the lock. A
/// store is never emptied: the owner starts a new one past `SeriesKeyCache.limit` keys, and
/// the counts that name series of the old one keep it alive until the indexer has them.
/// (Requests used to carry each series' key, copied from the thread's cache: that copy's
/// retain, and the indexer's release of it on another core, were a quarter of the span
/// families' cost in the daemon, `perf`.)
final class SeriesKeyStore: @unchecked Sendable {  // see above: one writer, under the lock
    private var keys = SeriesMap<Bool>()
    private let lock = Mutex(())

    var count: Int { keys.count }

    /// The owner thread's lookup, without the lock.
    @inline(__always)
    func contains(id: UInt64, family: MetricFamily) -> Bool { keys.contains(id: id, family: family) }

    /// The owner thread adds the keys its request made.
    func add(_ new: [SeriesKey]) {
        guard !new.isEmpty else { return }
        lock.withLock { _ in for k in new { keys[k] = true } }
    }

    /// Any thread: the key of series `id` of `family`, if the store has it.
    func key(id: UInt64, family: MetricFamily) -> SeriesKey? {
        lock.withLock { _ in keys.key(id: id, family: family) }
    }
}

/// What one ingest thread keeps between its requests (`extract` never suspends, so a
/// request has its thread's to itself, and no lock is taken): the keys of the series its
/// requests met (`store`), the tables its last request counted into, and label strings.
final class SeriesKeyCache {
    private(set) var store = SeriesKeyStore()
    /// Keys the request at hand made for series new to `store`, added at its end.
    var made: [SeriesKey] = []
    static let limit = 1 << 14
    /// The tables this thread's last request counted into, emptied: the next request on the
    /// thread counts into them while they are still in its cache (the shared pool handed
    /// out whichever it held, last used on another core).
    var spare: SpanFamilyCounts.Tables?
    /// The label strings this thread's requests made.
    let labels = LabelStrings()

    private static let slot: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key) { p in
            if let p { Unmanaged<SeriesKeyCache>.fromOpaque(p).release() }
        }
        return key
    }()

    /// This thread's cache.
    static var current: SeriesKeyCache {
        if let p = pthread_getspecific(slot) { return Unmanaged<SeriesKeyCache>.fromOpaque(p).takeUnretainedValue() }
        let cache = SeriesKeyCache()
        pthread_setspecific(slot, Unmanaged.passRetained(cache).toOpaque())
        return cache
    }

    /// At a request's start: a new store once this one holds `limit` keys (the old one
    /// lives on in the counts that use it).
    func begin() {
        if store.count >= Self.limit { store = SeriesKeyStore() }
    }

    /// A series new to the request: its key is made (`make`) only when new to the store.
    @inline(__always)
    func meet(_ id: UInt64, _ family: MetricFamily, _ make: () -> SeriesKey) {
        if !store.contains(id: id, family: family) { made.append(make()) }
    }

    /// At a request's end: the keys it made join the store, which its counts then name.
    func end() -> SeriesKeyStore {
        store.add(made)
        made.removeAll(keepingCapacity: true)
        return store
    }
}

/// One request's span-family counts (`SpanMetrics`), carried by its `IngestBatch` until the
/// indexer adds them into its round (`MetricDeltas.add(_:)`): only the series the request
/// counted, in flat arrays (a histogram's buckets one after another in `bucketCounts`).
///
/// A request counts into `Tables` of its own series, emptied for the next request with their
/// storage kept (by the thread that counted, or a shared pool), and the counts take the
/// tables' arrays whole. The tables hold each series' id and family alone (a key with no
/// labels); a series' key is made once per thread, in its `SeriesKeyStore`, which the counts
/// name for the indexer. (The tables used to keep every series the
/// thread had met, and each request copied the ones it counted out and zeroed them; a copy
/// of the tables left alive made that zeroing copy them whole, `perf`. The span families'
/// cost per span measured the same either way: `--extract-bench`, Bench/README.)
public final class SpanFamilyCounts: Sendable {
    struct Tables {
        var counters = SeriesMap<Double>()
        var histograms = SeriesMap<HistogramSlot>()
        /// Every histogram series' bucket counts one after another (`buckets + 1` of its
        /// family's each), in the order of `histograms`.
        var buckets: [UInt64] = []
        /// The exemplar of each histogram bucket's first observation, chained per series
        /// from its slot (so merging them costs no lookup of their series again).
        var exemplars: [ChainedExemplar] = []
    }

    struct ChainedExemplar {
        let exemplar: HistogramDelta.BucketExemplar
        /// The series' next exemplar in `exemplars`; -1 after its last.
        let next: Int32
    }

    /// A histogram series in `Tables`: its sum, where its counts are in `buckets`, and its
    /// first exemplar in `exemplars` (-1: none).
    struct HistogramSlot {
        var sum = 0.0
        let offset: Int32
        var exemplars: Int32 = -1
    }

    /// Ids and families (no labels: `store` has each series' key).
    let counterKeys: [SeriesKey]
    let counterValues: [Double]
    let histogramKeys: [SeriesKey]
    let histogramSlots: [HistogramSlot]
    let histogramExemplars: [ChainedExemplar]
    /// Each histogram's counts in turn, `buckets + 1` of its family's each.
    let bucketCounts: [UInt64]

    /// Tables kept for reuse, and how large a table may grow and still be kept: a pool holds
    /// about as many as requests are counted at once.
    private static let pool = Mutex<[Tables]>([])
    static let poolLimit = 32
    static let seriesLimit = 4096

    /// Tables from the pool, or new ones.
    static func reuse() -> Tables { pool.withLock { $0.popLast() } ?? Tables() }

    /// Empties `tables` and keeps them for the next request (tables that never held a series,
    /// without metric rules, are not worth keeping).
    static func giveBack(_ tables: consuming Tables) {
        guard keeps(tables) else { return }
        tables.reset()
        let t = tables
        pool.withLock { if $0.count < poolLimit { $0.append(t) } }
    }

    static func keeps(_ tables: borrowing Tables) -> Bool {
        let series = tables.counters.count + tables.histograms.count
        return series > 0 && series <= seriesLimit
    }

    /// Where the counted series' keys are (nil when none were counted).
    let store: SeriesKeyStore?

    /// The series `tables` counted (their arrays shared, not copied: emptying the tables
    /// gives them new ones), their keys in `store`.
    init(_ tables: borrowing Tables, store: SeriesKeyStore?) {
        self.store = store
        counterKeys = tables.counters.keys
        counterValues = tables.counters.values
        histogramKeys = tables.histograms.keys
        histogramSlots = tables.histograms.values
        histogramExemplars = tables.exemplars
        bucketCounts = tables.buckets
    }

    public convenience init() { self.init(Tables(), store: nil) }

    /// The key, with its labels, of a series these counts name (`counterKeys`,
    /// `histogramKeys`).
    func key(_ series: SeriesKey) -> SeriesKey {
        if let k = store?.key(id: series.id, family: series.family) { return k }
        // Not reached: a request's series are in its store before its counts leave it.
        assertionFailure("a counted series without a key")
        return SeriesKey(series.family, series.family.labels.map { _ in MetricLabel.other })
    }

    public var isEmpty: Bool { counterKeys.isEmpty && histogramKeys.isEmpty }

    /// The counted series as `MetricDeltas` (a copy).
    public var deltas: MetricDeltas {
        var d = MetricDeltas()
        d.add(self)
        return d
    }

    /// Counters then histograms this request counted, with their values (a histogram's
    /// counts as a part of `bucketCounts`). A series is lent as its id and family
    /// (`keys[position]`, without labels: `key(_:)` has them).
    func forEachCounter(_ body: (_ keys: UnsafeBufferPointer<SeriesKey>, _ position: Int, Double) -> Void) {
        counterKeys.withUnsafeBufferPointer { keys in
            for i in keys.indices { body(keys, i, counterValues[i]) }
        }
    }

    func forEachHistogram(
        _ body: (
            _ keys: UnsafeBufferPointer<SeriesKey>, _ position: Int, _ counts: UnsafeBufferPointer<UInt64>,
            _ sum: Double, _ exemplars: Int32
        ) -> Void
    ) {
        histogramKeys.withUnsafeBufferPointer { keys in
            bucketCounts.withUnsafeBufferPointer { counts in
                var at = 0
                for i in keys.indices {
                    let n = MetricFamily.bounds[Int(keys[i].family.rawValue)].count + 1
                    body(
                        keys, i, UnsafeBufferPointer(rebasing: counts[at..<at + n]), histogramSlots[i].sum,
                        histogramSlots[i].exemplars)
                    at += n
                }
            }
        }
    }

    /// A histogram's exemplars, from the first `forEachHistogram` gave.
    @inline(__always)
    func forEachExemplar(from first: Int32, _ body: (HistogramDelta.BucketExemplar) -> Void) {
        var at = first
        while at >= 0 {
            body(histogramExemplars[Int(at)].exemplar)
            at = histogramExemplars[Int(at)].next
        }
    }
}

extension SpanFamilyCounts.Tables {
    /// Empties the tables for the next request, keeping their storage.
    mutating func reset() {
        counters.removeAll()
        histograms.removeAll()
        buckets.removeAll(keepingCapacity: true)
        exemplars.removeAll(keepingCapacity: true)
    }

    @inline(__always)
    mutating func count(id: UInt64, family: MetricFamily, by n: Double, key: () -> SeriesKey) {
        counters.update(id: id, family: family, key: key, initial: { 0 }) { $0 += n }
    }

    /// `exemplar` is asked for once per bucket of a series and request: the first observation's
    /// run in each bucket (one a series, as this once took, left a slow call's bucket without
    /// its run whenever a faster call of another run came first in the same request).
    @inline(__always)
    mutating func observe(
        id: UInt64, family: MetricFamily, _ value: Double, bounds: UnsafeBufferPointer<Double>,
        exemplar: () -> HistogramDelta.Exemplar?, key: () -> SeriesKey
    ) {
        let series = histograms.count
        let i = histograms.position(
            id: id, family: family, key: key, initial: SpanFamilyCounts.HistogramSlot(offset: Int32(buckets.count)))
        let first = histograms.count > series
        if first { buckets.append(contentsOf: repeatElement(0, count: bounds.count + 1)) }
        let bucket = HistogramDelta.bucket(of: value, bounds: bounds)
        let at = Int(histograms.values[i].offset) + bucket
        let fresh = buckets.withUnsafeMutableBufferPointer { b in
            b[at] += 1
            return b[at] == 1
        }
        histograms.modify(at: i) { $0.sum += value }
        if fresh, let e = exemplar() {
            exemplars.append(.init(exemplar: .init(bucket: bucket, exemplar: e), next: histograms.values[i].exemplars))
            let head = Int32(exemplars.count - 1)
            histograms.modify(at: i) { $0.exemplars = head }
        }
    }
}

/// Counts one request's spans into recycled `SpanFamilyCounts` tables: a span costs a few hash
/// steps and one `SeriesMap` probe per family; a series the request's tables lack costs a
/// probe of the thread's `SeriesKeyStore` too, and its key is made only when new there.
/// A struct the request's loop owns, so its writes need no exclusivity checks at run time
/// (a class's stored tables had them: `perf`).
struct MetricAccumulator {
    var tables: SpanFamilyCounts.Tables
    let cache = SeriesKeyCache.current

    /// Without `counting` (no metric rules) it takes no tables from the pool.
    init(counting: Bool) {
        guard counting else {
            tables = SpanFamilyCounts.Tables()
            return
        }
        let cache = cache
        cache.begin()
        if let spare = cache.spare {
            cache.spare = nil
            tables = spare
        } else {
            tables = SpanFamilyCounts.reuse()
        }
    }

    /// The request's counts, handed to its batch; the tables are kept for the thread's next
    /// request (or go back to the pool).
    consuming func finish() -> SpanFamilyCounts {
        let counts = SpanFamilyCounts(
            tables, store: tables.counters.isEmpty && tables.histograms.isEmpty ? nil : cache.end())
        if cache.spare == nil && SpanFamilyCounts.keeps(tables) {
            tables.reset()
            cache.spare = tables
        } else {
            SpanFamilyCounts.giveBack(tables)
        }
        return counts
    }

    @inline(__always)
    mutating func count(_ family: MetricFamily, _ hash: LabelHash, by n: Double = 1, labels: () -> [LabelRef]) {
        let id = hash.id(family)
        let cache = cache
        tables.count(id: id, family: family, by: n) {
            cache.meet(id, family) { SeriesKey(family: family, labels: labels().map(\.string), id: id) }
            return SeriesKey(family: family, labels: [], id: id)
        }
    }

    @inline(__always)
    mutating func observe(
        _ family: MetricFamily, _ hash: LabelHash, _ value: Double, exemplar: () -> HistogramDelta.Exemplar?,
        labels: () -> [LabelRef]
    ) {
        let id = hash.id(family)
        let cache = cache
        tables.observe(
            id: id, family: family, value, bounds: MetricFamily.bounds[Int(family.rawValue)], exemplar: exemplar
        ) {
            cache.meet(id, family) { SeriesKey(family: family, labels: labels().map(\.string), id: id) }
            return SeriesKey(family: family, labels: [], id: id)
        }
    }
}

/// Derives the span families of `MetricFamily` from one unpacked span, with the values of
/// the `MetricRules` keys its attributes hold (`values`, by slot).
enum SpanMetrics {
    /// Label values shared by every family of a resource's spans counted at ingest.
    struct ResourceLabels {
        var tenant: LabelRef
        var agent: LabelRef

        init(facts: ResourceFacts, strings: LabelStrings) {
            tenant = strings.label(facts.tenantKey)
            agent = strings.label(facts.agent ?? "")
        }
    }

    typealias Values = UnsafeMutableBufferPointer<UnsafeMutablePointer<CAnyValue>?>

    static func string(_ values: Values, _ slot: Int) -> UnsafePointer<CChar>? {
        guard let v = values[slot]?.pointee, v.value_case.rawValue == 1, let s = v.string_value, s.pointee != 0
        else { return nil }
        return UnsafePointer(s)
    }

    static func string(_ values: Values, _ slot: MetricRules.Slot) -> UnsafePointer<CChar>? {
        string(values, slot.rawValue)
    }

    static func number(_ values: Values, _ slot: Int) -> Double? {
        guard let v = values[slot]?.pointee else { return nil }
        switch v.value_case.rawValue {
        case 3: return Double(v.int_value)
        case 4: return v.double_value.isFinite ? v.double_value : nil
        case 1: return v.string_value.flatMap { strtod($0, nil) }
        default: return nil
        }
    }

    static func equals(_ s: UnsafePointer<CChar>?, _ literal: StaticString) -> Bool {
        guard let s else { return false }
        return literal.withUTF8Buffer { l in
            var i = 0
            while i < l.count {
                if UInt8(truncatingIfNeeded: s[i]) != l[i] { return false }
                i += 1
            }
            return s[l.count] == 0
        }
    }

    /// Whether the C string contains one of `AgentKeys.timeoutMarkers`, ignoring ASCII case:
    /// `AgentKeys.namesTimeout` over its bytes (the markers kept as byte arrays, not walked as
    /// Strings' UTF-8 views, which cost ingest about 1 % of its CPU: `--compare-metrics`).
    static func meansTimeout(_ s: UnsafePointer<CChar>?) -> Bool {
        guard let s else { return false }
        return AgentKeys.namesTimeout(bytes: bytes(s))
    }

    /// Whether the span's recorded exception names a timeout (`AgentKeys.failureNamesTimeout`,
    /// on the C structs). Asked of ERROR tool spans only.
    static func exceptionMeansTimeout(_ span: CSpan) -> Bool {
        for e in 0..<span.n_events {
            guard let event = span.events[e]?.pointee, equals(event.name, "exception") else { continue }
            for a in 0..<event.n_attributes {
                guard let kv = event.attributes[a]?.pointee,
                    equals(kv.key, "exception.type") || equals(kv.key, "exception.message"),
                    let v = kv.value?.pointee, v.value_case.rawValue == 1
                else { continue }
                if meansTimeout(v.string_value) { return true }
            }
        }
        return false
    }

    /// Whether the C string starts with `prefix`.
    @inline(__always)
    static func hasPrefix(_ s: UnsafePointer<CChar>?, _ prefix: StaticString) -> Bool {
        guard let s else { return false }
        let p = prefix.utf8Start
        for i in 0..<prefix.utf8CodeUnitCount where UInt8(truncatingIfNeeded: s[i]) != p[i] { return false }
        return true
    }

    /// The tool an `execute_tool {tool}` span name names, if it does.
    static func executedTool(_ name: UnsafePointer<CChar>?) -> UnsafePointer<CChar>? {
        guard let name, hasPrefix(name, "execute_tool "), name[13] != 0 else { return nil }
        return name + 13
    }

    /// A C string's bytes, without its NUL.
    @inline(__always)
    static func bytes(_ s: UnsafePointer<CChar>) -> UnsafeBufferPointer<UInt8> {
        UnsafeBufferPointer(start: UnsafeRawPointer(s).assumingMemoryBound(to: UInt8.self), count: strlen(s))
    }

    static func isModelOperation(_ s: UnsafePointer<CChar>, _ rules: MetricRules) -> Bool {
        rules.modelOperations.contains { $0.matches(s) }
    }

    /// Counts the span's families, unless their labels depend on its run's root (it names no
    /// agent version of its own, or is a tool execution naming no task type of its own): then
    /// only its redactions, and the run analyser counts the rest once the run has settled
    /// (`RunAggregate.SpanFamilies`, the same rules over the decoded span).
    static func observe(
        span: CSpan, values: Values, resource r: ResourceLabels, runID: () -> String, rules: MetricRules,
        into d: inout MetricAccumulator
    ) {
        let l = rules.literals
        var ownVersion: UnsafePointer<CChar>?
        for s in rules.versionSlots {
            if let c = string(values, s) {
                ownVersion = c
                break
            }
        }
        let operation = string(values, .operation)
        // A tool execution names its operation, or without one its span as the GenAI
        // conventions do ("execute_tool {tool}"); its tool is gen_ai.tool.name, else the span
        // name's. The stats' rule (`RunAggregate`); the findings' (`RunGraph`) also take a span
        // so named whatever operation it names.
        let isExecution =
            equals(operation, "execute_tool") || (operation == nil && hasPrefix(span.name, "execute_tool"))
        var ownTask: UnsafePointer<CChar>?
        if isExecution {
            for s in rules.taskSlots {
                if let c = string(values, s) {
                    ownTask = c
                    break
                }
            }
        }
        guard let ownVersion, !isExecution || ownTask != nil else {
            countRedactions(values, r, into: &d)
            return
        }
        let version = LabelRef(ownVersion)
        let endSeconds = Double(span.end_time_unix_nano) / 1e9
        let seconds = Double(span.end_time_unix_nano &- min(span.start_time_unix_nano, span.end_time_unix_nano)) / 1e9
        let toolName = string(values, .tool) ?? (isExecution ? executedTool(span.name) : nil)
        let tool = toolName.map { LabelRef($0) } ?? l.missing
        let tierName = string(values, .tier)
        let tier = tierName.map { LabelRef($0) } ?? l.missing
        // Tenant, agent and version lead every family's labels but the redactions'.
        let base = LabelHash().adding(r.tenant).adding(r.agent).adding(version)
        let toolTier = base.adding(tool).adding(tier)

        if isExecution {
            let status = string(values, .status)
            // An execution the sidecar blocked or left waiting for approval never ran.
            if !equals(status, "blocked") && !equals(status, "awaiting_approval") {
                let statusError = span.status?.pointee.code.rawValue == 2
                let failed = statusError || equals(status, "failed") || equals(status, "unknown")
                // The rule of `RunAggregate` (`AgentKeys.timeoutMarkers`); `RunGraph.outcome(of:)`
                // reads error.type and the message only on an ERROR span.
                let timedOut =
                    meansTimeout(status) || meansTimeout(string(values, .errorType))
                    || (statusError && (meansTimeout(span.status?.pointee.message) || exceptionMeansTimeout(span)))
                let outcome = timedOut ? l.timeout : failed ? l.error : l.ok
                let task = ownTask.map { LabelRef($0) } ?? l.missing
                d.count(.toolCalls, base.adding(task).adding(tool).adding(tier).adding(outcome)) {
                    [r.tenant, r.agent, version, task, tool, tier, outcome]
                }
                d.observe(
                    .toolCallDuration, toolTier, seconds,
                    exemplar: { .init(runID: runID(), value: seconds, time: endSeconds) }
                ) { [r.tenant, r.agent, version, tool, tier] }
                let write = tierName.map { AgentKeys.isWriteTier(bytes: bytes($0)) } ?? false
                if write && (timedOut || equals(status, "unknown")) {
                    d.count(.uncertainWrites, toolTier) { [r.tenant, r.agent, version, tool, tier] }
                }
            }
        }
        if let outcome = string(values, .policyOutcome) {
            let rule = string(values, .policyRule).map { LabelRef($0) } ?? l.missing
            let outcome = LabelRef(outcome)
            d.count(.policyDecisions, toolTier.adding(outcome).adding(rule)) {
                [r.tenant, r.agent, version, tool, tier, outcome, rule]
            }
        }
        var decision: LabelRef?
        if let s = string(values, .approval) {
            decision = equals(s, "granted") ? l.granted : equals(s, "denied") ? l.denied : nil
        } else if let name = span.name {
            decision = equals(name, "approval.granted") ? l.granted : equals(name, "approval.denied") ? l.denied : nil
        }
        if let label = decision {
            d.count(.approvals, base.adding(tool).adding(label)) { [r.tenant, r.agent, version, tool, label] }
        }

        let input =
            number(values, MetricRules.Slot.inputTokens.rawValue)
            ?? number(values, MetricRules.Slot.legacyInputTokens.rawValue)
        let output =
            number(values, MetricRules.Slot.outputTokens.rawValue)
            ?? number(values, MetricRules.Slot.legacyOutputTokens.rawValue)
        // Without gen_ai.operation.name: token usage, or a span named as a chat (`RunGraph`).
        let isModelCall =
            operation.map { isModelOperation($0, rules) }
            ?? (input != nil || output != nil || hasPrefix(span.name, "chat "))
        if isModelCall {
            let modelName = string(values, .responseModel) ?? string(values, .requestModel)
            let model = modelName.map { LabelRef($0) } ?? l.missing
            let modelHash = base.adding(model)
            func tokenUsage(_ tokens: Double?, _ type: LabelRef) {
                guard let tokens, tokens >= 0 else { return }
                d.observe(
                    .tokenUsage, modelHash.adding(type), tokens,
                    exemplar: { .init(runID: runID(), value: tokens, time: endSeconds) }
                ) { [r.tenant, r.agent, version, model, type] }
            }
            tokenUsage(input, l.input)
            tokenUsage(output, l.output)
            d.observe(
                .operationDuration, modelHash, seconds,
                exemplar: { .init(runID: runID(), value: seconds, time: endSeconds) }
            ) { [r.tenant, r.agent, version, model] }
            var cost = number(values, MetricRules.Slot.cost.rawValue)
            if cost == nil, !rules.prices.isEmpty, let modelName,
                let price = rules.prices[String(cString: modelName)]
                    ?? string(values, .requestModel).flatMap({ rules.prices[String(cString: $0)] })
            {
                cost = (input ?? 0) * price.input / 1e6 + (output ?? 0) * price.output / 1e6
            }
            if let cost, cost > 0 { d.count(.cost, modelHash, by: cost) { [r.tenant, r.agent, version, model] } }
        }
        countRedactions(values, r, into: &d)
    }

    /// The redactions family: labelled by tenant and rule alone, so always counted at ingest.
    static func countRedactions(_ values: Values, _ r: ResourceLabels, into d: inout MetricAccumulator) {
        if let v = values[MetricRules.Slot.redactedRules.rawValue]?.pointee, v.value_case.rawValue == 5,
            let array = v.array_value?.pointee
        {
            for i in 0..<array.n_values {
                guard let e = array.values[i]?.pointee, e.value_case.rawValue == 1, let s = e.string_value else {
                    continue
                }
                let rule = LabelRef(UnsafePointer(s))
                d.count(.redactions, LabelHash().adding(r.tenant).adding(rule)) { [r.tenant, rule] }
            }
        }
    }
}
