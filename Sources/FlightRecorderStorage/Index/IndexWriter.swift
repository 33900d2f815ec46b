import FlightRecorderOTLP
import FlightRecorderSQLite

/// A block just made durable, with the spans it holds.
struct DurableBlock {
    var segment: Int64
    var offset: Int
    var length: Int
    var spanCount: Int
    var batches: [IngestBatch]
}

/// Writes index rows for durable blocks. Owned by the store's writer thread; one transaction
/// per group commit, so the index never leads the segments and never double-counts a block.
final class IndexWriter {
    let db: SQLiteDatabase
    private let insertBlock: SQLiteStatement
    private let insertTraceBlock: SQLiteStatement
    private let selectTraceRun: SQLiteStatement
    private let insertTraceRun: SQLiteStatement
    private let selectRunTrace: SQLiteStatement
    private let deleteRunTrace: SQLiteStatement
    private let deleteRun: SQLiteStatement
    private let upsertRunTrace: SQLiteStatement
    private let refreshRun: SQLiteStatement
    private let upsertSegment: SQLiteStatement
    private let insertAttribute: SQLiteStatement
    /// Known trace → run assignments, and traces known to have none yet. Only this writer
    /// changes `traces`, so the cache cannot go stale; it is cleared when it grows large.
    private var traceRuns: [TraceKey: String?] = [:]
    /// The schema version found on disk when it differed from this build's; the index was
    /// then dropped and rebuilt from the segments.
    private(set) var replacedSchemaVersion: String?

    /// A trace within one tenant: tenants never share run assignments.
    struct TraceKey: Hashable {
        var trace: TraceID
        var tenant: String
    }

    init(path: String) throws(SQLiteError) {
        db = try SQLiteDatabase(path: path)
        try db.execute(IndexSchema.pragmas)
        if let found = try Self.schemaVersion(db), found != IndexSchema.version {
            replacedSchemaVersion = found
            for table in IndexSchema.allTables { try db.execute("DROP TABLE IF EXISTS \(table)") }
        }
        try db.execute(IndexSchema.tables)
        try db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', '\(IndexSchema.version)')")
        insertBlock = try db.prepare(
            "INSERT INTO blocks(segment_id, offset, length, span_count) VALUES (?1, ?2, ?3, ?4)")
        insertTraceBlock = try db.prepare("INSERT OR IGNORE INTO trace_blocks(trace_id, block_id) VALUES (?1, ?2)")
        selectTraceRun = try db.prepare("SELECT run_id FROM traces WHERE trace_id = ?1 AND tenant = ?2")
        insertTraceRun = try db.prepare("INSERT OR IGNORE INTO traces(trace_id, tenant, run_id) VALUES (?1, ?2, ?3)")
        selectRunTrace = try db.prepare(
            """
            SELECT span_count, error_count, start_ns, end_ns, agent FROM run_traces
            WHERE run_id = ?1 AND tenant = ?2 AND trace_id = ?3
            """)
        deleteRunTrace = try db.prepare("DELETE FROM run_traces WHERE run_id = ?1 AND tenant = ?2 AND trace_id = ?3")
        deleteRun = try db.prepare("DELETE FROM runs WHERE run_id = ?1 AND tenant = ?2")
        upsertRunTrace = try db.prepare(
            """
            INSERT INTO run_traces(run_id, tenant, trace_id, span_count, error_count, start_ns, end_ns, agent)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
            ON CONFLICT(run_id, tenant, trace_id) DO UPDATE SET
              span_count = span_count + excluded.span_count, error_count = error_count + excluded.error_count,
              start_ns = min(start_ns, excluded.start_ns), end_ns = max(end_ns, excluded.end_ns),
              agent = coalesce(agent, excluded.agent)
            """)
        refreshRun = try db.prepare(
            """
            INSERT OR REPLACE INTO runs(run_id, tenant, start_ns, end_ns, span_count, error_count, trace_count, agent, provisional)
            SELECT run_id, tenant, min(start_ns), max(end_ns), sum(span_count), sum(error_count), count(*), max(agent), ?3
            FROM run_traces WHERE run_id = ?1 AND tenant = ?2 GROUP BY run_id, tenant
            """)
        insertAttribute = try db.prepare(
            "INSERT OR IGNORE INTO attr_index(hash, tenant, trace_id, start_ns) VALUES (?1, ?2, ?3, ?4)")
        upsertSegment = try db.prepare(
            """
            INSERT INTO segments(id, indexed_bytes, sealed) VALUES (?1, ?2, ?3)
            ON CONFLICT(id) DO UPDATE SET indexed_bytes = excluded.indexed_bytes, sealed = max(sealed, excluded.sealed)
            """)
    }

    static func schemaVersion(_ db: SQLiteDatabase) throws(SQLiteError) -> String? {
        let exists = try db.prepare("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'")
        guard try exists.step(), exists.int64(0) > 0 else { return nil }
        let q = try db.prepare("SELECT value FROM meta WHERE key = 'schema_version'")
        return try q.step() ? q.text(0) : nil
    }

    /// Index positions recorded so far, per segment.
    func segmentStates() throws(SQLiteError) -> [Int64: (indexedBytes: Int, sealed: Bool)] {
        let q = try db.prepare("SELECT id, indexed_bytes, sealed FROM segments")
        var out: [Int64: (Int, Bool)] = [:]
        while try q.step() { out[q.int64(0)] = (Int(q.int64(1)), q.int64(2) != 0) }
        return out
    }

    /// Running totals for one (run, trace) pair within a group.
    struct Delta {
        var spans: Int64 = 0
        var errors: Int64 = 0
        var start: Int64 = .max
        var end: Int64 = .min
        var agent: String?

        mutating func merge(_ o: Delta) {
            spans += o.spans
            errors += o.errors
            start = min(start, o.start)
            end = max(end, o.end)
            agent = agent ?? o.agent
        }
    }

    struct RunKey: Hashable {
        var run: String
        var tenant: String
    }

    struct RunTraceKey: Hashable {
        var run: String
        var tenant: String
        var trace: TraceID
        var runKey: RunKey { RunKey(run: run, tenant: tenant) }
    }

    /// Indexes `blocks` and records segment positions, in one transaction.
    func index(_ blocks: [DurableBlock], segments: [(id: Int64, indexedBytes: Int, sealed: Bool)]) throws(SQLiteError) {
        try db.execute("BEGIN IMMEDIATE")
        do throws(SQLiteError) {
            try indexRows(blocks)
            for s in segments {
                upsertSegment.bind(1, s.id).bind(2, Int64(s.indexedBytes)).bind(3, s.sealed ? 1 : 0)
                try upsertSegment.run()
            }
            try db.execute("COMMIT")
        } catch {
            try? db.execute("ROLLBACK")
            traceRuns.removeAll()
            throw error
        }
        if traceRuns.count > 500_000 { traceRuns.removeAll() }
    }

    private func indexRows(_ blocks: [DurableBlock]) throws(SQLiteError) {
        var deltas: [RunTraceKey: Delta] = [:]
        var touchedRuns: Set<RunKey> = []
        // Pass 1: block rows, and any trace whose run becomes known in this group.
        for block in blocks {
            insertBlock.bind(1, block.segment).bind(2, Int64(block.offset)).bind(3, Int64(block.length))
                .bind(4, Int64(block.spanCount))
            try insertBlock.run()
            let blockID = db.lastInsertRowID
            var tracesInBlock: Set<TraceID> = []
            for batch in block.batches {
                for span in batch.spans {
                    tracesInBlock.insert(span.traceID)
                    if let run = span.explicitRunID {
                        let key = TraceKey(trace: span.traceID, tenant: batch.resources[Int(span.resource)].tenantKey)
                        if try runOfTrace(key) == nil {
                            try assign(trace: key, to: run, deltas: &deltas, touched: &touchedRuns)
                        }
                    }
                }
            }
            for trace in tracesInBlock {
                insertTraceBlock.bind(1, blob: trace.bytes).bind(2, blockID)
                try insertTraceBlock.run()
            }
        }
        // Indexed values arrive deduplicated per request; INSERT OR IGNORE keeps the first.
        for block in blocks {
            for batch in block.batches {
                for a in batch.indexed {
                    insertAttribute.bind(1, a.hash).bind(2, batch.resources[Int(a.resource)].tenantKey)
                        .bind(3, blob: a.trace.bytes).bind(4, Int64(clamping: a.startNanos))
                    try insertAttribute.run()
                }
            }
        }
        // Pass 2: per (run, trace) totals.
        for block in blocks {
            for batch in block.batches {
                for span in batch.spans {
                    let facts = batch.resources[Int(span.resource)]
                    let tenant = facts.tenantKey
                    var run = span.explicitRunID
                    if run == nil { run = try runOfTrace(TraceKey(trace: span.traceID, tenant: tenant)) }
                    let key = RunTraceKey(run: run ?? span.traceID.hex, tenant: tenant, trace: span.traceID)
                    var d = Delta(
                        spans: 1, errors: span.isError ? 1 : 0,
                        start: Int64(clamping: span.startNanos), end: Int64(clamping: span.endNanos),
                        agent: facts.agent)
                    d.merge(deltas[key, default: Delta()])
                    deltas[key] = d
                    touchedRuns.insert(key.runKey)
                }
            }
        }
        for (key, d) in deltas {
            upsertRunTrace.bind(1, key.run).bind(2, key.tenant).bind(3, blob: key.trace.bytes).bind(4, d.spans)
                .bind(5, d.errors).bind(6, d.start).bind(7, d.end).bind(8, d.agent)
            try upsertRunTrace.run()
        }
        for run in touchedRuns {
            let provisional =
                TraceID(hex: run.run).map { (try? runOfTrace(TraceKey(trace: $0, tenant: run.tenant))) == nil } ?? false
            refreshRun.bind(1, run.run).bind(2, run.tenant).bind(3, provisional ? 1 : 0)
            try refreshRun.run()
        }
    }

    /// The run a trace's unnamed spans belong to, if any span of it has named one.
    private func runOfTrace(_ key: TraceKey) throws(SQLiteError) -> String? {
        if let cached = traceRuns[key] { return cached }
        selectTraceRun.bind(1, blob: key.trace.bytes).bind(2, key.tenant)
        defer { selectTraceRun.reset() }
        let run = try selectTraceRun.step() ? selectTraceRun.text(0) : nil
        traceRuns[key] = .some(run)
        return run
    }

    /// Records that `trace` belongs to `run`, moving what was counted under the trace's
    /// provisional run (its hex ID) into the named run.
    private func assign(
        trace key: TraceKey, to run: String, deltas: inout [RunTraceKey: Delta], touched: inout Set<RunKey>
    ) throws(SQLiteError) {
        let trace = key.trace
        let tenant = key.tenant
        insertTraceRun.bind(1, blob: trace.bytes).bind(2, tenant).bind(3, run)
        try insertTraceRun.run()
        traceRuns[key] = .some(run)
        let provisional = trace.hex
        guard provisional != run else { return }
        let named = RunTraceKey(run: run, tenant: tenant, trace: trace)
        selectRunTrace.bind(1, provisional).bind(2, tenant).bind(3, blob: trace.bytes)
        var moved: Delta?
        if try selectRunTrace.step() {
            moved = Delta(
                spans: selectRunTrace.int64(0), errors: selectRunTrace.int64(1), start: selectRunTrace.int64(2),
                end: selectRunTrace.int64(3), agent: selectRunTrace.text(4))
        }
        selectRunTrace.reset()
        if let moved {
            deleteRunTrace.bind(1, provisional).bind(2, tenant).bind(3, blob: trace.bytes)
            try deleteRunTrace.run()
            deleteRun.bind(1, provisional).bind(2, tenant)
            try deleteRun.run()
            deltas[named, default: Delta()].merge(moved)
            touched.insert(named.runKey)
        }
        // Spans of this group already counted provisionally are moved too.
        if let pending = deltas.removeValue(forKey: RunTraceKey(run: provisional, tenant: tenant, trace: trace)) {
            deltas[named, default: Delta()].merge(pending)
        }
        touched.remove(RunKey(run: provisional, tenant: tenant))
    }
}
