package import FlightRecorderOTLP
package import FlightRecorderSQLite

/// A block's location, as the index records it.
public struct BlockRef: Hashable, Sendable {
    public var id: Int64
    public var segment: Int64
    public var offset: Int
    public var length: Int
}

/// Read-only queries over the index. One connection; callers serialize access (the store
/// guards it with a lock) and call from a thread pool, never an event loop.
package final class IndexReader {
    let db: SQLiteDatabase
    private let runByID: SQLiteStatement
    private let runOfTrace: SQLiteStatement
    private let tracesOfRun: SQLiteStatement
    private let blocksOfTrace: SQLiteStatement
    private let tracesByAttribute: SQLiteStatement

    static let summaryColumns =
        "run_id, start_ns, end_ns, span_count, error_count, trace_count, agent, tenant, provisional"

    init(path: String) throws(SQLiteError) {
        db = try SQLiteDatabase(path: path, readOnly: true)
        runByID = try db.prepare("SELECT \(Self.summaryColumns) FROM runs WHERE run_id = ?1 ORDER BY tenant")
        runOfTrace = try db.prepare("SELECT tenant, run_id FROM traces WHERE trace_id = ?1 ORDER BY tenant")
        tracesOfRun = try db.prepare("SELECT trace_id FROM run_traces WHERE run_id = ?1 AND tenant = ?2")
        tracesByAttribute = try db.prepare(
            "SELECT tenant, trace_id, start_ns FROM attr_index WHERE hash = ?1 ORDER BY tenant LIMIT ?2")
        blocksOfTrace = try db.prepare(
            """
            SELECT b.id, b.segment_id, b.offset, b.length FROM trace_blocks t JOIN blocks b ON b.id = t.block_id
            WHERE t.trace_id = ?1
            """)
    }

    private func summary(_ s: SQLiteStatement) -> RunSummary {
        RunSummary(
            runID: s.text(0) ?? "", startNanos: s.int64(1), endNanos: s.int64(2), spanCount: s.int64(3),
            errorCount: s.int64(4), traceCount: s.int64(5), agent: s.text(6), tenant: s.text(7),
            provisional: s.int64(8) != 0)
    }

    package func listRuns(
        since: Int64?, until: Int64?, limit: Int, scope: TenantScope
    ) throws(SQLiteError) -> [RunSummary] {
        var tenantFilter = ""
        var tenants: [String] = []
        if case .only(let set) = scope {
            if set.isEmpty { return [] }
            tenants = set.sorted()
            tenantFilter = " AND tenant IN (" + tenants.indices.map { "?\($0 + 4)" }.joined(separator: ", ") + ")"
        }
        let q = try db.prepare(
            """
            SELECT \(Self.summaryColumns) FROM runs WHERE start_ns >= ?1 AND start_ns < ?2\(tenantFilter)
            ORDER BY start_ns DESC, run_id, tenant LIMIT ?3
            """)
        q.bind(1, since ?? .min).bind(2, until ?? .max).bind(3, Int64(limit))
        for (i, t) in tenants.enumerated() { _ = q.bind(Int32(i + 4), t) }
        var out: [RunSummary] = []
        while try q.step() { out.append(summary(q)) }
        return out
    }

    /// The runs named `id` within `scope`, one per tenant, ordered by tenant.
    package func runs(_ id: String, scope: TenantScope) throws(SQLiteError) -> [RunSummary] {
        runByID.bind(1, id)
        defer { runByID.reset() }
        var out: [RunSummary] = []
        while try runByID.step() {
            let s = summary(runByID)
            if scope.contains(s.tenant ?? "") { out.append(s) }
        }
        return out
    }

    /// The runs that `trace`'s unnamed spans belong to, per tenant within `scope`.
    package func runs(ofTrace trace: TraceID, scope: TenantScope) throws(SQLiteError) -> [(tenant: String, run: String)]
    {
        runOfTrace.bind(1, blob: trace.bytes)
        defer { runOfTrace.reset() }
        var out: [(String, String)] = []
        while try runOfTrace.step() {
            let tenant = runOfTrace.text(0) ?? ""
            if scope.contains(tenant) { out.append((tenant, runOfTrace.text(1) ?? "")) }
        }
        return out
    }

    /// Traces (with their tenant) in which some span carries `key = value`.
    package func traces(
        withAttribute key: String, value: String, scope: TenantScope, limit: Int
    ) throws(SQLiteError)
        -> [(tenant: String, trace: TraceID, start: Int64)]
    {
        tracesByAttribute.bind(1, IndexedAttribute.hash(key: key, value: value)).bind(2, Int64(limit))
        defer { tracesByAttribute.reset() }
        var out: [(String, TraceID, Int64)] = []
        while try tracesByAttribute.step() {
            let tenant = tracesByAttribute.text(0) ?? ""
            guard scope.contains(tenant),
                let t = tracesByAttribute.blob(1).withUnsafeBytes({ TraceID(bytes: $0) })
            else { continue }
            out.append((tenant, t, tracesByAttribute.int64(2)))
        }
        return out
    }

    package func traces(ofRun run: String, tenant: String) throws(SQLiteError) -> [TraceID] {
        tracesOfRun.bind(1, run).bind(2, tenant)
        defer { tracesOfRun.reset() }
        var out: [TraceID] = []
        while try tracesOfRun.step() {
            let b = tracesOfRun.blob(0)
            if let t = b.withUnsafeBytes({ TraceID(bytes: $0) }) { out.append(t) }
        }
        return out
    }

    package func blocks(ofTrace trace: TraceID) throws(SQLiteError) -> [BlockRef] {
        blocksOfTrace.bind(1, blob: trace.bytes)
        defer { blocksOfTrace.reset() }
        var out: [BlockRef] = []
        while try blocksOfTrace.step() {
            out.append(
                BlockRef(
                    id: blocksOfTrace.int64(0), segment: blocksOfTrace.int64(1), offset: Int(blocksOfTrace.int64(2)),
                    length: Int(blocksOfTrace.int64(3))))
        }
        return out
    }

    /// Row counts, for tests and `flightrec reindex` reports.
    package func counts() throws(SQLiteError) -> [String: Int64] {
        var out: [String: Int64] = [:]
        for table in ["blocks", "trace_blocks", "traces", "run_traces", "runs", "segments", "attr_index"] {
            let q = try db.prepare("SELECT count(*) FROM \(table)")
            _ = try q.step()
            out[table] = q.int64(0)
        }
        return out
    }
}
