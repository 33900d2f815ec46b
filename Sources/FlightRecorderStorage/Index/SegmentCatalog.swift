import FlightRecorderOTLP
import FlightRecorderSQLite
import Foundation

/// The segments whose indexes can be read: every sealed one with its Bloom filter, and the
/// active one (no filter: it is still growing). The indexer publishes a segment here when it
/// seals; readers take a snapshot and open their own connections.
///
/// `@unchecked Sendable`: `entries` is read and written only under `lock`.
final class SegmentCatalog: @unchecked Sendable {
    struct Entry: Sendable {
        var id: Int64
        /// nil for the active segment: every lookup reads its index.
        var bloom: BloomFilter?
        /// The active segment's attribute rows (`ActiveAttributes`); nil once sealed.
        var attributes: ActiveAttributes? = nil
        /// Bumped when the segment's index is replaced (rebuilt after damage): readers reopen it.
        var generation = 0

        func mayContain(_ probe: BloomFilter.Probe) -> Bool { bloom?.mayContain(probe) ?? true }
    }

    let directory: String
    private let lock = NSLock()
    private var entries: [Entry] = []

    init(directory: String) { self.directory = directory }

    /// Key groups (`KeyGroup`) by their first segment.
    private var groups: [Int64: KeyGroup] = [:]

    /// Oldest first.
    var snapshot: [Entry] { lock.withLock { entries } }

    /// Changes with every `publish`, so a reader can keep what it derived from a snapshot.
    private var version = 0

    /// The snapshot with the key groups (ordered by first segment), unless it is still the
    /// one of `version`.
    func snapshot(ifChangedSince known: Int) -> (entries: [Entry], groups: [KeyGroup], version: Int)? {
        lock.withLock {
            version == known ? nil : (entries, groups.values.sorted { $0.first < $1.first }, version)
        }
    }

    /// Publishes the rebuilt index of sealed segment `id`: readers close the old one and open
    /// the new one on next use.
    func replace(_ id: Int64, bloom: BloomFilter) {
        lock.withLock {
            version += 1
            guard let i = entries.firstIndex(where: { $0.id == id }) else {
                // A segment whose index start-up moved aside joins once rebuilt.
                entries.append(Entry(id: id, bloom: bloom))
                entries.sort { $0.id < $1.id }
                return
            }
            entries[i].bloom = bloom
            entries[i].attributes = nil
            entries[i].generation += 1
        }
    }

    /// Marks segment `id`'s index as replaced (the active one, rebuilt): readers reopen it.
    func renew(_ id: Int64) {
        lock.withLock {
            version += 1
            if let i = entries.firstIndex(where: { $0.id == id }) { entries[i].generation += 1 }
        }
    }

    /// Drops expired segment `id`: readers stop seeing it (and close its index when they next
    /// refresh their snapshot).
    func remove(_ id: Int64) {
        lock.withLock {
            version += 1
            entries.removeAll { $0.id == id }
        }
    }

    /// Publishes a key group, replacing the one with the same first segment (a group grows).
    func publish(group: KeyGroup) {
        lock.withLock {
            version += 1
            groups[group.first] = group
        }
    }

    func publish(_ entry: Entry) {
        lock.withLock {
            version += 1
            if let i = entries.firstIndex(where: { $0.id == entry.id }) {
                var entry = entry
                entry.generation = max(entry.generation, entries[i].generation)
                entries[i] = entry
            } else {
                entries.append(entry)
                entries.sort { $0.id < $1.id }
            }
        }
    }
}

/// Read-only queries over one segment's index. Not thread-safe: its owner serializes use.
final class SegmentIndexReader {
    let segment: Int64
    /// The catalog generation it was opened at (`SegmentCatalog.Entry.generation`).
    var generation = 0
    let db: SQLiteDatabase
    private var tenantNames: [Int64: String] = [:]
    private var tenantIDs: [String: Int64] = [:]
    private let runByID: SQLiteStatement
    private let runByIDTenant: SQLiteStatement
    private let namedRun: SQLiteStatement
    private let tracesOfRun: SQLiteStatement
    private let blocksOfTrace: SQLiteStatement
    private let selectTenants: SQLiteStatement
    private let traceByNumber: SQLiteStatement
    private var pagesOfHashStatement: SQLiteStatement?
    /// The active segment's attribute rows; nil for a sealed index, whose are in
    /// `attr_pages` (`IndexSchema.attributePages`).
    private let attributes: ActiveAttributes?

    static let summaryColumns =
        "run_id, start_ns, end_ns, span_count, error_count, trace_count, agent, tenant, provisional, continued, folds"

    /// Opened on a sealed index, which never changes again (`SQLiteDatabase` `immutable`).
    let immutable: Bool

    init(
        directory: String, segment: Int64, immutable: Bool = false, attributes: ActiveAttributes? = nil
    ) throws(SQLiteError) {
        self.segment = segment
        self.immutable = immutable
        self.attributes = attributes
        db = try SQLiteDatabase(path: IndexSchema.path(directory, segment), readOnly: true, immutable: immutable)
        try db.execute(IndexSchema.readerPragmas)
        runByID = try db.prepare("SELECT \(Self.summaryColumns) FROM runs WHERE run_id = ?1")
        runByIDTenant = try db.prepare("SELECT \(Self.summaryColumns) FROM runs WHERE run_id = ?1 AND tenant = ?2")
        namedRun = try db.prepare(
            "SELECT tenant, named_run FROM traces WHERE trace_id = ?1 AND named_run IS NOT NULL ORDER BY tenant")
        tracesOfRun = try db.prepare(
            """
            SELECT t.trace_id FROM run_traces r JOIN traces t ON t.id = r.trace
            WHERE r.run_id = ?1 AND r.tenant = ?2
            """)
        blocksOfTrace = try db.prepare(
            """
            SELECT DISTINCT b.id, b.offset, b.length FROM traces t
            JOIN trace_blocks tb ON tb.trace = t.id JOIN blocks b ON b.id = tb.block WHERE t.trace_id = ?1
            """)
        selectTenants = try db.prepare("SELECT id, name FROM tenants")
        traceByNumber = try db.prepare("SELECT tenant, trace_id, start_ns FROM traces WHERE id = ?1")
    }

    /// The trace numbers carrying `hash` in this segment.
    private func traceNumbers(_ hash: Int64) throws(SQLiteError) -> [Int64] {
        if let attributes { return attributes.traces(hash) }
        return try pagedTraces(hash)
    }

    /// Trace numbers carrying `hash` in a sealed index, from its attribute pages.
    private func pagedTraces(_ hash: Int64) throws(SQLiteError) -> [Int64] {
        let short = IndexSchema.shortHash(hash)
        // From the last page that starts below the hash to the last that starts at or below
        // it: a rowid range found with two index probes.
        let q: SQLiteStatement
        if let prepared = pagesOfHashStatement {
            q = prepared
        } else {
            q = try db.prepare(
                """
                SELECT entries FROM attr_pages WHERE page BETWEEN
                  coalesce((SELECT page FROM attr_pages WHERE first_hash < ?1
                            ORDER BY first_hash DESC, page DESC LIMIT 1), 1)
                  AND coalesce((SELECT page FROM attr_pages WHERE first_hash <= ?1
                                ORDER BY first_hash DESC, page DESC LIMIT 1), 0)
                ORDER BY page
                """)
        }
        pagesOfHashStatement = q
        q.bind(1, Int64(short))
        defer { q.reset() }
        var out: [Int64] = []
        while try q.step() {
            let blob = q.blob(0)
            blob.withUnsafeBytes { b in
                let n = b.count / 8
                // Binary search for the first entry with this hash, then read while it matches.
                var lo = 0
                var hi = n
                while lo < hi {
                    let mid = (lo + hi) / 2
                    if UInt32(littleEndian: b.loadUnaligned(fromByteOffset: mid * 8, as: UInt32.self)) < short {
                        lo = mid + 1
                    } else {
                        hi = mid
                    }
                }
                while lo < n, UInt32(littleEndian: b.loadUnaligned(fromByteOffset: lo * 8, as: UInt32.self)) == short {
                    out.append(
                        Int64(UInt32(littleEndian: b.loadUnaligned(fromByteOffset: lo * 8 + 4, as: UInt32.self))))
                    lo += 1
                }
            }
        }
        return out
    }

    /// The runs (tenant, run ID) with spans in the blocks overlapping `offset..<end`.
    func runs(inBlocksOverlapping offset: Int, _ end: Int) throws(SQLiteError) -> [(tenant: String, run: String)] {
        let q = try db.prepare(
            """
            SELECT DISTINCT r.tenant, r.run_id FROM blocks b JOIN trace_blocks tb ON tb.block = b.id
            JOIN run_traces r ON r.trace = tb.trace WHERE b.offset < ?2 AND b.offset + b.length > ?1
            """)
        q.bind(1, Int64(offset)).bind(2, Int64(end))
        var out: [(String, String)] = []
        while try q.step() { out.append((try tenantName(q.int64(0)), q.text(1) ?? "")) }
        return out
    }

    /// Every short hash of a sealed index's attribute pages, ascending (repeats side by
    /// side), to rebuild its `AttributeFilterFile`.
    func attributeShortHashes() throws(SQLiteError) -> [UInt32] {
        let q = try db.prepare("SELECT entries FROM attr_pages ORDER BY page")
        var out: [UInt32] = []
        while try q.step() {
            q.blob(0).withUnsafeBytes { b in
                for i in 0..<(b.count / 8) {
                    out.append(UInt32(littleEndian: b.loadUnaligned(fromByteOffset: i * 8, as: UInt32.self)))
                }
            }
        }
        return out
    }

    private func traceRows(_ numbers: [Int64]) throws(SQLiteError) -> [(tenant: String, trace: TraceID, start: Int64)] {
        var out: [(String, TraceID, Int64)] = []
        // Many traces (a common value): one pass over their range of the table costs less
        // than a probe each.
        if numbers.count > 256, let low = numbers.min(), let high = numbers.max() {
            let wanted = Set(numbers)
            let q = try db.prepare("SELECT id, tenant, trace_id, start_ns FROM traces WHERE id BETWEEN ?1 AND ?2")
            q.bind(1, low).bind(2, high)
            while try q.step() {
                guard wanted.contains(q.int64(0)), let t = q.blob(2).withUnsafeBytes({ TraceID(bytes: $0) })
                else { continue }
                out.append((try tenantName(q.int64(1)), t, q.int64(3)))
            }
            return out
        }
        for n in numbers {
            traceByNumber.bind(1, n)
            defer { traceByNumber.reset() }
            guard try traceByNumber.step(),
                let t = traceByNumber.blob(1).withUnsafeBytes({ TraceID(bytes: $0) })
            else { continue }
            out.append((try tenantName(traceByNumber.int64(0)), t, traceByNumber.int64(2)))
        }
        return out
    }

    /// A run's totals over one segment, as `runs` holds them.
    struct Partial {
        var segment: Int64
        var summary: RunSummary
        var continued: Bool
        var folds: Bool
    }

    private func loadTenants() throws(SQLiteError) {
        defer { selectTenants.reset() }
        while try selectTenants.step() {
            let name = selectTenants.text(1) ?? ""
            tenantNames[selectTenants.int64(0)] = name
            tenantIDs[name] = selectTenants.int64(0)
        }
    }

    func tenantName(_ id: Int64) throws(SQLiteError) -> String {
        if let n = tenantNames[id] { return n }
        try loadTenants()
        return tenantNames[id] ?? ""
    }

    func tenantID(_ name: String) throws(SQLiteError) -> Int64? {
        if let id = tenantIDs[name] { return id }
        try loadTenants()
        return tenantIDs[name]
    }

    /// The runs that start in this segment in `tenant`; nil when the segment holds none of its spans.
    func runCount(tenant: String) throws(SQLiteError) -> Int? {
        guard let id = try tenantID(tenant) else { return nil }
        let q = try db.prepare("SELECT count(*) FROM runs WHERE continued = 0 AND tenant = ?1")
        q.bind(1, id)
        _ = try q.step()
        return Int(q.int64(0))
    }

    func partial(_ s: SQLiteStatement) throws(SQLiteError) -> Partial {
        Partial(
            segment: segment,
            summary: RunSummary(
                runID: s.text(0) ?? "", startNanos: s.int64(1), endNanos: s.int64(2), spanCount: s.int64(3),
                errorCount: s.int64(4), traceCount: s.int64(5), agent: s.text(6), tenant: try tenantName(s.int64(7)),
                provisional: s.int64(8) != 0),
            continued: s.int64(9) != 0, folds: s.int64(10) != 0)
    }

    func runs(_ id: String) throws(SQLiteError) -> [Partial] {
        runByID.bind(1, id)
        defer { runByID.reset() }
        var out: [Partial] = []
        while try runByID.step() { out.append(try partial(runByID)) }
        return out
    }

    func run(_ id: String, tenant: String) throws(SQLiteError) -> Partial? {
        guard let t = try tenantID(tenant) else { return nil }
        runByIDTenant.bind(1, id).bind(2, t)
        defer { runByIDTenant.reset() }
        return try runByIDTenant.step() ? try partial(runByIDTenant) : nil
    }

    /// (tenant, run) for each tenant in which this segment names the trace's run.
    func namedRuns(_ trace: TraceID) throws(SQLiteError) -> [(tenant: String, run: String)] {
        namedRun.bind(1, blob: trace.bytes)
        defer { namedRun.reset() }
        var out: [(String, String)] = []
        while try namedRun.step() { out.append((try tenantName(namedRun.int64(0)), namedRun.text(1) ?? "")) }
        return out
    }

    func traces(ofRun run: String, tenant: String) throws(SQLiteError) -> [TraceID] {
        guard let t = try tenantID(tenant) else { return [] }
        tracesOfRun.bind(1, run).bind(2, t)
        defer { tracesOfRun.reset() }
        var out: [TraceID] = []
        while try tracesOfRun.step() {
            if let id = tracesOfRun.blob(0).withUnsafeBytes({ TraceID(bytes: $0) }) { out.append(id) }
        }
        return out
    }

    func blocks(ofTrace trace: TraceID) throws(SQLiteError) -> [BlockRef] {
        blocksOfTrace.bind(1, blob: trace.bytes)
        defer { blocksOfTrace.reset() }
        var out: [BlockRef] = []
        while try blocksOfTrace.step() {
            out.append(
                BlockRef(
                    id: segment << 32 | blocksOfTrace.int64(0), segment: segment,
                    offset: Int(blocksOfTrace.int64(1)), length: Int(blocksOfTrace.int64(2))))
        }
        return out
    }

    func traces(withAttributeHash hash: Int64) throws(SQLiteError) -> [(tenant: String, trace: TraceID, start: Int64)] {
        try traceRows(traceNumbers(hash))
    }

    /// Traces (with tenant and start) that carry every one of `hashes` in this segment, newest first.
    func traces(
        withAll hashes: [Int64], since: Int64, until: Int64
    ) throws(SQLiteError)
        -> [(tenant: String, trace: TraceID, start: Int64)]
    {
        if let attributes {
            return try traceRows(attributes.traces(withAll: hashes)).filter { $0.start >= since && $0.start < until }
                .sorted { $0.start > $1.start }
        }
        var common: Set<Int64>?
        for h in hashes {
            let set = Set(try traceNumbers(h))
            common = common.map { $0.intersection(set) } ?? set
            if common?.isEmpty == true { return [] }
        }
        return try traceRows(Array(common ?? [])).filter { $0.start >= since && $0.start < until }
            .sorted { $0.start > $1.start }
    }

    /// Runs that start in this segment (not continued from an older one), newest first.
    func firstRuns(
        since: Int64, until: Int64, tenants: [String]?, excluding: [String] = [], limit: Int
    ) throws(SQLiteError) -> [Partial] {
        var filter = ""
        if let tenants {
            var ids: [Int64] = []
            for t in tenants { if let id = try tenantID(t) { ids.append(id) } }
            if ids.isEmpty { return [] }
            filter = " AND tenant IN (" + ids.map(String.init).joined(separator: ", ") + ")"
        }
        var excluded: [Int64] = []
        for t in excluding { if let id = try tenantID(t) { excluded.append(id) } }
        if !excluded.isEmpty {
            filter += " AND tenant NOT IN (" + excluded.map(String.init).joined(separator: ", ") + ")"
        }
        let q = try db.prepare(
            """
            SELECT \(Self.summaryColumns) FROM runs WHERE continued = 0 AND start_ns >= ?1 AND start_ns < ?2\(filter)
            ORDER BY start_ns DESC LIMIT ?3
            """)
        q.bind(1, since).bind(2, until).bind(3, Int64(limit))
        var out: [Partial] = []
        while try q.step() { out.append(try partial(q)) }
        return out
    }

    /// The latest start of a run that starts in this segment.
    func latestFirstStart() throws(SQLiteError) -> Int64? {
        let q = try db.prepare("SELECT max(start_ns) FROM runs WHERE continued = 0")
        return try q.step() && !q.isNull(0) ? q.int64(0) : nil
    }

    func counts() throws(SQLiteError) -> [String: Int64] {
        var out: [String: Int64] = [:]
        for table in ["blocks", "trace_blocks", "traces", "run_traces", "runs"] {
            let q = try db.prepare("SELECT count(*) FROM \(table)")
            _ = try q.step()
            out[table] = q.int64(0)
        }
        if let attributes {
            out["attrs"] = Int64(attributes.count)
        } else {
            let q = try db.prepare("SELECT coalesce(sum(length(entries)), 0) / 8 FROM attr_pages")
            _ = try q.step()
            out["attrs"] = q.int64(0)
        }
        return out
    }
}
