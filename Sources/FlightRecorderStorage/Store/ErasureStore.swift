import FlightRecorderCore
import FlightRecorderEvidence
public import FlightRecorderOTLP
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// An erasure request (`flightrec erase`): a tombstone hiding a run, a tenant or a data
/// subject's runs from every read, from the moment it is durable.
///
/// It never holds the value it erases: a run ID or a subject's value is kept as a digest
/// (`Erasure.digest`), so the record itself does not reveal what it removed. While it hides
/// data it keeps the traces it covers (random IDs, not subject data), which is what reads
/// filter on.
public struct Erasure: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable {
        /// Every span of one run (within `tenant`).
        case run
        /// Every span of a tenant.
        case tenant
        /// Every run with a span whose `key` has the (stored, so pseudonymised) value.
        case subject
    }

    public enum State: String, Codable, Sendable {
        /// Durable and hiding: no answer, search, export or statistic includes the data; its
        /// bytes are still in some segment.
        case hidden
        /// Its bytes are gone from every segment and index, and a signed receipt is in the
        /// evidence log.
        case erased
    }

    public var id: String
    public var kind: Kind
    /// The tenant erased, or the tenant the run or subject was erased in.
    public var tenant: String?
    /// For a subject: the attribute key matched (`enduser.id`).
    public var key: String?
    /// `Erasure.digest` of the run ID or the subject's value; nil for a tenant.
    public var valueDigest: String?
    public var reason: String
    /// The token's name that asked for it (never the token).
    public var requestedBy: String
    /// Unix seconds.
    public var requestedAt: Int64
    public var state: State
    /// What it covered when it was made: runs, traces and spans.
    public var runs: Int
    public var traces: Int
    public var spans: Int
    /// The segments holding its spans.
    public var segments: [Int64]
    /// The traces hidden (tenant, trace ID in hex), for a run or subject erasure.
    public var hiddenTraces: [HiddenTrace]
    /// `Erasure.digest(tenant:run:)` of every run hidden (kept once erased: digests only).
    public var hiddenRuns: [String]
    /// The tenants of `hiddenRuns`.
    public var runTenants: [String]?
    /// The newest segment when it was made: later ones hold only spans that came after.
    public var lastSegment: Int64?
    /// The segment being written when it was made: sealed before it can complete.
    public var activeSegment: Int64?
    /// Unix seconds, once erased.
    public var completedAt: Int64?

    public init(
        id: String, kind: Kind, tenant: String?, key: String?, valueDigest: String?, reason: String,
        requestedBy: String, requestedAt: Int64, state: State, runs: Int, traces: Int, spans: Int,
        segments: [Int64], hiddenTraces: [HiddenTrace], hiddenRuns: [String]
    ) {
        self.id = id
        self.kind = kind
        self.tenant = tenant
        self.key = key
        self.valueDigest = valueDigest
        self.reason = reason
        self.requestedBy = requestedBy
        self.requestedAt = requestedAt
        self.state = state
        self.runs = runs
        self.traces = traces
        self.spans = spans
        self.segments = segments
        self.hiddenTraces = hiddenTraces
        self.hiddenRuns = hiddenRuns
    }

    public struct HiddenTrace: Codable, Sendable, Hashable {
        public var tenant: String
        public var trace: String

        public init(tenant: String, trace: String) {
            self.tenant = tenant
            self.trace = trace
        }
    }

    /// SHA-256 (RFC 9162 leaf hashing, so domain-separated from everything else hashed) of
    /// `label` and `value`, in hex: how an erasure names what it erased without keeping it.
    public static func digest(_ label: String, _ value: String) -> String {
        TreeHash.leaf(Array("flightrec-erasure\u{0}\(label)\u{0}\(value)".utf8)).description
    }

    public static func digest(tenant: String, run: String) -> String { digest("run", tenant + "\u{1F}" + run) }
}

/// What the erasures in force hide, in sets reads test against.
struct HiddenSet: Sendable {
    var tenants: Set<String> = []
    var runs: Set<String> = []
    var traces: Set<TenantTrace> = []
    /// The tenants of the runs hidden one by one.
    var runTenants: Set<String> = []

    struct TenantTrace: Hashable, Sendable {
        var tenant: String
        var trace: TraceID
    }

    var isEmpty: Bool { tenants.isEmpty && runs.isEmpty && traces.isEmpty }

    /// Whether a span of `trace` in `tenant` is hidden (by its tenant or its trace).
    func hidesSpan(tenant: String, trace: TraceID) -> Bool {
        tenants.contains(tenant) || traces.contains(TenantTrace(tenant: tenant, trace: trace))
    }

    mutating func add(_ e: Erasure) {
        // Once erased its runs stay named (by digest): an exemplar or a late span of one
        // never brings its ID back into an answer.
        runs.formUnion(e.hiddenRuns)
        runTenants.formUnion(e.runTenants ?? [])
        guard e.state == .hidden else { return }
        if e.kind == .tenant, let t = e.tenant { tenants.insert(t) }
        for t in e.hiddenTraces {
            if let id = TraceID(hex: t.trace) { traces.insert(TenantTrace(tenant: t.tenant, trace: id)) }
        }
    }
}

/// The erasures (`DATA/erasures.json`), replaced whole on every change like the holds
/// (`SegmentFile.replaceDurably`), so a crash leaves the old list or the new one: an
/// erasure is durable, and hides its data, before the call that made it returns. Reads ask
/// `hides…` through the query readers (`IndexReader`, the span decoders, the exporter), which
/// cost nothing while no erasure is in force.
public final class ErasureStore: Sendable {
    public let path: String
    private let erasures: Mutex<[Erasure]>
    private let hidden: Mutex<HiddenSet>
    private let anyHidden: Atomic<Bool>

    /// Loads the erasures; a file that does not parse stops start-up rather than show erased data.
    public init(directory: String) throws(StorageError) {
        path = directory + "/erasures.json"
        let list = try SegmentFile.readJSON([Erasure].self, at: path, why: "an erasure must never be undone") ?? []
        var set = HiddenSet()
        for e in list { set.add(e) }
        erasures = Mutex(list)
        anyHidden = Atomic(!set.isEmpty)
        hidden = Mutex(set)
    }

    /// Every erasure, oldest first.
    public var all: [Erasure] { erasures.withLock { $0 } }

    public func erasure(_ id: String) -> Erasure? { erasures.withLock { $0.first { $0.id == id } } }

    /// Records an erasure (its `id` assigned here), durable and hiding before it returns.
    public func add(_ draft: Erasure) throws(StorageError) -> Erasure {
        let result: Result<Erasure, StorageError> = erasures.withLock { list in
            var e = draft
            e.id = "erasure-\(list.count + 1)"
            do throws(StorageError) {
                try write(list + [e])
            } catch {
                return .failure(error)
            }
            list.append(e)
            hidden.withLock { $0.add(e) }
            anyHidden.store(true, ordering: .releasing)
            return .success(e)
        }
        return try result.get()
    }

    /// Marks erasure `id` erased: its bytes are gone, so only its runs' digests still hide (an
    /// exemplar, a late span), and the traces it listed are dropped from the record.
    func markErased(_ id: String, at: Int64) throws(StorageError) {
        let result: Result<Void, StorageError> = erasures.withLock { list in
            guard let i = list.firstIndex(where: { $0.id == id }) else { return .success(()) }
            var next = list
            next[i].state = .erased
            next[i].completedAt = at
            next[i].hiddenTraces = []
            do throws(StorageError) {
                try write(next)
            } catch {
                return .failure(error)
            }
            list = next
            var set = HiddenSet()
            for e in next { set.add(e) }
            hidden.withLock { $0 = set }
            anyHidden.store(!set.isEmpty, ordering: .releasing)
            return .success(())
        }
        try result.get()
    }

    /// What the erasures still hiding their data cover, as a test on a span's tenant and trace.
    func dataFilter() -> (String, TraceID) -> Bool {
        let set = hidden.withLock { $0 }
        return { tenant, trace in set.hidesSpan(tenant: tenant, trace: trace) }
    }

    /// Whether any erasure hides anything: reads skip every other test when not.
    public var isActive: Bool { anyHidden.load(ordering: .acquiring) }

    /// The tenants hidden, and how many runs are hidden one by one.
    var hiddenCounts: (tenants: [String], runs: Int) {
        guard isActive else { return ([], 0) }
        return hidden.withLock { (Array($0.tenants), $0.runs.count) }
    }

    public func hides(tenant: String) -> Bool {
        isActive && hidden.withLock { $0.tenants.contains(tenant) }
    }

    /// Whether a span of `trace` in `tenant` is hidden.
    public func hides(tenant: String, trace: TraceID) -> Bool {
        guard isActive else { return false }
        return hidden.withLock { $0.hidesSpan(tenant: tenant, trace: trace) }
    }

    /// Whether the run `run` of `tenant` is hidden.
    public func hides(tenant: String, run: String) -> Bool {
        guard isActive else { return false }
        let (byTenant, anyRuns) = hidden.withLock { ($0.tenants.contains(tenant), !$0.runs.isEmpty) }
        if byTenant { return true }
        guard anyRuns else { return false }
        let d = Erasure.digest(tenant: tenant, run: run)
        return hidden.withLock { $0.runs.contains(d) }
    }

    /// Whether run `run` is hidden in `tenant`, or, with no tenant, in any tenant it could be
    /// hidden in (a metric series without a tenant label).
    public func hides(tenant: String?, run: String) -> Bool {
        guard isActive else { return false }
        if let tenant { return hides(tenant: tenant, run: run) }
        let (tenants, runs) = hidden.withLock { ($0.runTenants, $0.runs) }
        return tenants.contains { runs.contains(Erasure.digest(tenant: $0, run: run)) }
    }

    /// A filter over decoded spans, taken once per read: nil when nothing is hidden.
    public func spanFilter() -> (@Sendable (SpanRecord) -> Bool)? {
        guard isActive else { return nil }
        let set = hidden.withLock { $0 }
        // Only tenants and traces hide spans (erased runs' digests name no span): none, no filter.
        guard !set.tenants.isEmpty || !set.traces.isEmpty else { return nil }
        return { span in !set.hidesSpan(tenant: span.tenant, trace: span.traceID) }
    }

    // MARK: The export log

    /// `DATA/log/exports.jsonl`: one line per audit bundle exported (its ID, when, its tenants
    /// and its runs' digests), so an erasure's receipt can name the bundles that held its data.
    var exportsPath: String { (path as NSString).deletingLastPathComponent + "/log/exports.jsonl" }

    struct ExportLine: Codable {
        var id: String
        var at: Int64
        var tenants: [String]
        var runs: [String]
    }

    /// Notes an exported bundle (best effort: a failure is logged by the caller's absence of
    /// it in a receipt, never refuses the export, which has been sent).
    public func noteExport(id: String, tenants: [String], runDigests: [String], at: Int64) {
        guard let line = try? JSONEncoder().encode(ExportLine(id: id, at: at, tenants: tenants, runs: runDigests))
        else { return }
        let fd = open(exportsPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
        guard fd >= 0 else { return }
        defer { close(fd) }
        let bytes = [UInt8](line) + [0x0A]
        _ = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        fsync(fd)
    }

    /// The bundles exported before `e` that held any of its runs (or, for a tenant, any of
    /// its data), by ID.
    func bundles(holding e: Erasure) -> [String] {
        guard let data = FileManager.default.contents(atPath: exportsPath) else { return [] }
        let runs = Set(e.hiddenRuns)
        var out: [String] = []
        for line in data.split(separator: 0x0A) {
            guard let x = try? JSONDecoder().decode(ExportLine.self, from: Data(line)), x.at <= e.requestedAt + 1
            else { continue }
            let held =
                e.kind == .tenant ? x.tenants.contains(e.tenant ?? "") : x.runs.contains { runs.contains($0) }
            if held && !out.contains(x.id) { out.append(x.id) }
        }
        return out
    }

    private func write(_ list: [Erasure]) throws(StorageError) {
        try SegmentFile.replaceDurably(path, json: list, what: "erasures")
    }
}
