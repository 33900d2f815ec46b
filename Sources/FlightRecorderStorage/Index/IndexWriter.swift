import FlightRecorderOTLP

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
    private let insertSpan: SQLiteStatement
    private let insertTraceBlock: SQLiteStatement
    private let selectTraceRun: SQLiteStatement
    private let insertTraceRun: SQLiteStatement
    private let selectRunTrace: SQLiteStatement
    private let deleteRunTrace: SQLiteStatement
    private let deleteRun: SQLiteStatement
    private let upsertRunTrace: SQLiteStatement
    private let refreshRun: SQLiteStatement
    private let upsertSegment: SQLiteStatement
    /// Known trace → run assignments, and traces known to have none yet. Only this writer
    /// changes `traces`, so the cache cannot go stale; it is cleared when it grows large.
    private var traceRuns: [TraceID: String?] = [:]

    init(path: String) throws(StorageError) {
        db = try SQLiteDatabase(path: path)
        try db.execute(IndexSchema.pragmas)
        try db.execute(IndexSchema.tables)
        try db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', '\(IndexSchema.version)')")
        insertBlock = try db.prepare(
            "INSERT INTO blocks(segment_id, offset, length, span_count) VALUES (?1, ?2, ?3, ?4)")
        insertSpan = try db.prepare("INSERT OR IGNORE INTO spans(span_id, block_id) VALUES (?1, ?2)")
        insertTraceBlock = try db.prepare("INSERT OR IGNORE INTO trace_blocks(trace_id, block_id) VALUES (?1, ?2)")
        selectTraceRun = try db.prepare("SELECT run_id FROM traces WHERE trace_id = ?1")
        insertTraceRun = try db.prepare("INSERT OR IGNORE INTO traces(trace_id, run_id) VALUES (?1, ?2)")
        selectRunTrace = try db.prepare(
            "SELECT span_count, error_count, start_ns, end_ns, agent, tenant FROM run_traces WHERE run_id = ?1 AND trace_id = ?2"
        )
        deleteRunTrace = try db.prepare("DELETE FROM run_traces WHERE run_id = ?1 AND trace_id = ?2")
        deleteRun = try db.prepare("DELETE FROM runs WHERE run_id = ?1")
        upsertRunTrace = try db.prepare(
            """
            INSERT INTO run_traces(run_id, trace_id, span_count, error_count, start_ns, end_ns, agent, tenant)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
            ON CONFLICT(run_id, trace_id) DO UPDATE SET
              span_count = span_count + excluded.span_count, error_count = error_count + excluded.error_count,
              start_ns = min(start_ns, excluded.start_ns), end_ns = max(end_ns, excluded.end_ns),
              agent = coalesce(agent, excluded.agent), tenant = coalesce(tenant, excluded.tenant)
            """)
        refreshRun = try db.prepare(
            """
            INSERT OR REPLACE INTO runs(run_id, start_ns, end_ns, span_count, error_count, trace_count, agent, tenant, provisional)
            SELECT run_id, min(start_ns), max(end_ns), sum(span_count), sum(error_count), count(*), max(agent), max(tenant), ?2
            FROM run_traces WHERE run_id = ?1 GROUP BY run_id
            """)
        upsertSegment = try db.prepare(
            """
            INSERT INTO segments(id, indexed_bytes, sealed) VALUES (?1, ?2, ?3)
            ON CONFLICT(id) DO UPDATE SET indexed_bytes = excluded.indexed_bytes, sealed = max(sealed, excluded.sealed)
            """)
    }

    /// Index positions recorded so far, per segment.
    func segmentStates() throws(StorageError) -> [Int64: (indexedBytes: Int, sealed: Bool)] {
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
        var tenant: String?

        mutating func merge(_ o: Delta) {
            spans += o.spans
            errors += o.errors
            start = min(start, o.start)
            end = max(end, o.end)
            agent = agent ?? o.agent
            tenant = tenant ?? o.tenant
        }
    }

    struct RunTraceKey: Hashable {
        var run: String
        var trace: TraceID
    }

    /// Indexes `blocks` and records segment positions, in one transaction.
    func index(_ blocks: [DurableBlock], segments: [(id: Int64, indexedBytes: Int, sealed: Bool)]) throws(StorageError) {
        try db.execute("BEGIN IMMEDIATE")
        do throws(StorageError) {
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

    private func indexRows(_ blocks: [DurableBlock]) throws(StorageError) {
        var deltas: [RunTraceKey: Delta] = [:]
        var touchedRuns: Set<String> = []
        // Pass 1: block rows, and any trace whose run becomes known in this group.
        for block in blocks {
            insertBlock.bind(1, block.segment).bind(2, Int64(block.offset)).bind(3, Int64(block.length))
                .bind(4, Int64(block.spanCount))
            try insertBlock.run()
            let blockID = db.lastInsertRowID
            var tracesInBlock: Set<TraceID> = []
            for batch in block.batches {
                for span in batch.spans {
                    insertSpan.bind(1, Int64(bitPattern: span.spanID.value)).bind(2, blockID)
                    try insertSpan.run()
                    tracesInBlock.insert(span.traceID)
                    if let run = span.explicitRunID, try runOfTrace(span.traceID) == nil {
                        try assign(trace: span.traceID, to: run, deltas: &deltas, touched: &touchedRuns)
                    }
                }
            }
            for trace in tracesInBlock {
                insertTraceBlock.bind(1, blob: trace.bytes).bind(2, blockID)
                try insertTraceBlock.run()
            }
        }
        // Pass 2: per (run, trace) totals.
        for block in blocks {
            for batch in block.batches {
                for span in batch.spans {
                    var run = span.explicitRunID
                    if run == nil { run = try runOfTrace(span.traceID) }
                    let runID = run ?? span.traceID.hex
                    let facts = batch.resources[Int(span.resource)]
                    var d = Delta(
                        spans: 1, errors: span.isError ? 1 : 0,
                        start: Int64(clamping: span.startNanos), end: Int64(clamping: span.endNanos),
                        agent: facts.agent, tenant: facts.tenant)
                    d.merge(deltas[RunTraceKey(run: runID, trace: span.traceID), default: Delta()])
                    deltas[RunTraceKey(run: runID, trace: span.traceID)] = d
                    touchedRuns.insert(runID)
                }
            }
        }
        for (key, d) in deltas {
            upsertRunTrace.bind(1, key.run).bind(2, blob: key.trace.bytes).bind(3, d.spans).bind(4, d.errors)
                .bind(5, d.start).bind(6, d.end).bind(7, d.agent).bind(8, d.tenant)
            try upsertRunTrace.run()
        }
        for run in touchedRuns {
            let provisional = TraceID(hex: run).map { (try? runOfTrace($0)) == nil } ?? false
            refreshRun.bind(1, run).bind(2, provisional ? 1 : 0)
            try refreshRun.run()
        }
    }

    /// The run a trace's unnamed spans belong to, if any span of it has named one.
    private func runOfTrace(_ trace: TraceID) throws(StorageError) -> String? {
        if let cached = traceRuns[trace] { return cached }
        selectTraceRun.bind(1, blob: trace.bytes)
        defer { selectTraceRun.reset() }
        let run = try selectTraceRun.step() ? selectTraceRun.text(0) : nil
        traceRuns[trace] = .some(run)
        return run
    }

    /// Records that `trace` belongs to `run`, moving what was counted under the trace's
    /// provisional run (its hex ID) into the named run.
    private func assign(
        trace: TraceID, to run: String, deltas: inout [RunTraceKey: Delta], touched: inout Set<String>
    ) throws(StorageError) {
        insertTraceRun.bind(1, blob: trace.bytes).bind(2, run)
        try insertTraceRun.run()
        traceRuns[trace] = .some(run)
        let provisional = trace.hex
        guard provisional != run else { return }
        selectRunTrace.bind(1, provisional).bind(2, blob: trace.bytes)
        var moved: Delta?
        if try selectRunTrace.step() {
            moved = Delta(
                spans: selectRunTrace.int64(0), errors: selectRunTrace.int64(1), start: selectRunTrace.int64(2),
                end: selectRunTrace.int64(3), agent: selectRunTrace.text(4), tenant: selectRunTrace.text(5))
        }
        selectRunTrace.reset()
        if let moved {
            deleteRunTrace.bind(1, provisional).bind(2, blob: trace.bytes)
            try deleteRunTrace.run()
            deleteRun.bind(1, provisional)
            try deleteRun.run()
            deltas[RunTraceKey(run: run, trace: trace), default: Delta()].merge(moved)
            touched.insert(run)
        }
        // Spans of this group already counted provisionally are moved too.
        if let pending = deltas.removeValue(forKey: RunTraceKey(run: provisional, trace: trace)) {
            deltas[RunTraceKey(run: run, trace: trace), default: Delta()].merge(pending)
        }
        touched.remove(provisional)
    }
}
