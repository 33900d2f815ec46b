import FlightRecorderOTLP
import FlightRecorderSQLite

#if canImport(Glibc)
import Glibc
#endif

/// A block just made durable, with the spans it holds.
struct DurableBlock {
    var segment: Int64
    var offset: Int
    var length: Int
    var spanCount: Int
    var batches: [IngestBatch]
}

/// What a segment's index needs to know about the segments before it.
protocol OlderSegments {
    /// The run the earliest older segment that names one assigns to `trace` in `tenant`.
    func namedRun(trace: TraceID, tenant: String) throws(SQLiteError) -> String?
    /// Whether an older segment holds spans of `run` in `tenant`.
    func holdsRun(_ run: String, tenant: String) throws(SQLiteError) -> Bool
}

/// Writes one segment's index (`IndexSchema`). Owned by the indexer thread; one
/// transaction per indexing round, recording how far the segment is indexed in the same
/// transaction, so the index never leads the segment and never double-counts a block.
final class SegmentIndexWriter {
    let segment: Int64
    let path: String
    let db: SQLiteDatabase
    private let older: any OlderSegments
    private let insertBlock: SQLiteStatement
    private let insertTrace: SQLiteStatement
    private let nameTrace: SQLiteStatement
    private let insertTraceBlock: SQLiteStatement
    private let selectRunTrace: SQLiteStatement
    private let deleteRunTrace: SQLiteStatement
    private let deleteRun: SQLiteStatement
    private let upsertRunTrace: SQLiteStatement
    private let refreshRun: SQLiteStatement
    private let insertTenant: SQLiteStatement
    private let setMeta: SQLiteStatement
    private let upsertMetric: SQLiteStatement
    /// The agent metrics the segment's indexed spans add (the `metrics` rows), and what the
    /// rounds committed since the indexer last took them added (with exemplars).
    private(set) var metrics = MetricDeltas()
    private var unpublished = MetricDeltas()
    /// How much of the segment the `metrics` rows count (meta `metrics_bytes`): they are
    /// written at most every `metricsWriteInterval`, at seal and at a clean close, not every
    /// round (a row per series per round was the metrics' largest cost on the indexer thread,
    /// `perf`). After a crash, start-up counts the blocks between this and `indexedBytes`
    /// again from the segment (`recountMetrics`), so the totals stay exact.
    private(set) var metricsBytes: Int
    /// Series whose total in `metrics` is not in the rows yet.
    private var unwrittenMetrics = SeriesMap<Bool>()
    private var metricsWritten = ContinuousClock.now
    /// 5 s: a second wrote every series' row once a second, about 1 % of a saturated
    /// daemon's CPU with a few thousand series (`perf`); a crash recounts at most the blocks
    /// indexed in the last 5 s.
    static let metricsWriteInterval = Duration.seconds(5)
    /// Opened on an index whose rows count less than it indexed: start-up must recount.
    private(set) var needsMetricsRecount = false
    /// The runs (tenant, run ID) the rounds committed since the indexer last took them touched.
    private var unpublishedRuns: Set<RunKey> = []
    /// The runs of the round being written (`indexRows`), kept once it commits.
    private var roundRuns: Set<RunKey> = []
    /// The segment is bounded, so everything it holds fits in memory: tenant numbers, trace
    /// numbers, the run of every trace seen, and whether a run continues an older segment's.
    private var tenants: [String: Int64] = [:]
    private var traces: [TraceKey: Int64] = [:]
    private var traceRuns: [TraceKey: String?] = [:]
    private var continuedRuns: [RunKey: Bool] = [:]
    private var foldingRuns: Set<RunKey> = []
    private(set) var indexedBytes: Int
    private(set) var sealed: Bool
    /// The segment's indexed attribute rows while it is active (`ActiveAttributes`), and the
    /// log they are appended to: `attributeLogBytes` of it are committed.
    let attributes = ActiveAttributes()
    private let attributeLog: Int32
    private var attributeLogBytes: Int

    struct TraceKey: Hashable {
        var trace: TraceID
        var tenant: String
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

    /// Opens (or creates) the index of `segment`; an index of another schema version, or one
    /// that does not open, is thrown away (`replaced` says so) and started afresh.
    init(directory: String, segment: Int64, older: any OlderSegments) throws(SQLiteError) {
        self.segment = segment
        self.older = older
        path = IndexSchema.path(directory, segment)
        var opened: SQLiteDatabase?
        // A sealed index is never written again: re-indexing its segment starts afresh.
        let logPath = IndexSchema.attributesPath(path)
        if let db = try? SQLiteDatabase(path: path), (try? db.execute(IndexSchema.writerPragmas)) != nil,
            (try? Self.meta(db, "schema_version")) == IndexSchema.version, (try? Self.meta(db, "sealed")) != "1",
            let committed = try? Self.meta(db, "attr_log_bytes").flatMap({ Int($0) }) ?? 0,
            SegmentFile.fileSize(path: logPath) >= committed
        {
            opened = db
        } else {
            // Another schema, sealed, damaged, or an attribute log shorter than committed
            // (lost in a crash): rebuilt from the segment.
            IndexSchema.remove(path)
        }
        if let opened { db = opened } else { db = try SQLiteDatabase(path: path) }
        try db.execute(IndexSchema.writerPragmas)
        try db.execute(IndexSchema.tables)
        try db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', '\(IndexSchema.version)')")
        let stored = try Self.meta(db, "indexed_bytes")
        if stored == nil {
            // A new index: its rows count nothing yet (an index without this key is older,
            // from when rows were written every round).
            try db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('metrics_bytes', '0')")
        }
        indexedBytes = Int(stored.flatMap { Int64($0) } ?? 0)
        sealed = try Self.meta(db, "sealed") == "1"
        attributeLogBytes = Int(try Self.meta(db, "attr_log_bytes").flatMap { Int64($0) } ?? 0)
        // An index from before `metrics_bytes` wrote its rows every round.
        metricsBytes = Int(try Self.meta(db, "metrics_bytes").flatMap { Int64($0) } ?? Int64(indexedBytes))
        needsMetricsRecount = metricsBytes < indexedBytes && !sealed
        attributeLog = open(logPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o640)
        guard attributeLog >= 0 else { throw SQLiteError("open \(logPath): \(String(cString: strerror(errno)))") }
        insertBlock = try db.prepare("INSERT INTO blocks(offset, length, span_count) VALUES (?1, ?2, ?3)")
        insertTrace = try db.prepare("INSERT INTO traces(trace_id, tenant, start_ns) VALUES (?1, ?2, ?3)")
        nameTrace = try db.prepare("UPDATE traces SET named_run = ?2 WHERE id = ?1")
        insertTraceBlock = try db.prepare("INSERT OR IGNORE INTO trace_blocks(trace, block) VALUES (?1, ?2)")
        selectRunTrace = try db.prepare(
            """
            SELECT span_count, error_count, start_ns, end_ns, agent FROM run_traces
            WHERE run_id = ?1 AND tenant = ?2 AND trace = ?3
            """)
        deleteRunTrace = try db.prepare("DELETE FROM run_traces WHERE run_id = ?1 AND tenant = ?2 AND trace = ?3")
        deleteRun = try db.prepare("DELETE FROM runs WHERE run_id = ?1 AND tenant = ?2")
        upsertRunTrace = try db.prepare(
            """
            INSERT INTO run_traces(run_id, tenant, trace, span_count, error_count, start_ns, end_ns, agent)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
            ON CONFLICT(run_id, tenant, trace) DO UPDATE SET
              span_count = span_count + excluded.span_count, error_count = error_count + excluded.error_count,
              start_ns = min(start_ns, excluded.start_ns), end_ns = max(end_ns, excluded.end_ns),
              agent = coalesce(agent, excluded.agent)
            """)
        refreshRun = try db.prepare(
            """
            INSERT OR REPLACE INTO runs(
              run_id, tenant, start_ns, end_ns, span_count, error_count, trace_count, agent, provisional, continued,
              folds)
            SELECT run_id, tenant, min(start_ns), max(end_ns), sum(span_count), sum(error_count), count(*), max(agent),
              ?3, ?4, ?5
            FROM run_traces WHERE run_id = ?1 AND tenant = ?2 GROUP BY run_id, tenant
            """)
        insertTenant = try db.prepare("INSERT INTO tenants(name) VALUES (?1)")
        setMeta = try db.prepare("INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)")
        upsertMetric = try db.prepare(
            "INSERT OR REPLACE INTO metrics(family, labels, value, histogram) VALUES (?1, ?2, ?3, ?4)")
        try loadState()
    }

    deinit { close(attributeLog) }

    /// What start-up needs of a sealed index: its Bloom filter, how many bytes of its segment
    /// it covers, and where its last block is (verified against the segment).
    struct SealedState: Sendable {
        var bloom: BloomFilter
        var indexedBytes: Int
        var lastBlock: (offset: Int, length: Int)?
    }

    /// The state of the sealed index of `segment`; nil when there is none (missing, damaged,
    /// another schema, or not sealed).
    static func sealedState(directory: String, segment: Int64) -> SealedState? {
        let path = IndexSchema.path(directory, segment)
        // Immutable: a sealed index was checkpointed and never changes, and nothing is written
        // to read it (no -shm), which matters on a full disk. One whose seal is still in its
        // WAL reads as not sealed here, and is sealed again.
        guard access(path, R_OK) == 0, let db = try? SQLiteDatabase(path: path, immutable: true),
            (try? meta(db, "schema_version")) == IndexSchema.version, (try? meta(db, "sealed")) == "1",
            let indexed = (try? meta(db, "indexed_bytes")).flatMap({ $0.flatMap { Int($0) } }),
            let q = try? db.prepare("SELECT value FROM meta WHERE key = 'bloom'"), (try? q.step()) == true,
            let bloom = BloomFilter(serialized: q.blob(0))
        else { return nil }
        let last = try? lastBlock(db)
        // A sealed index holds its attribute rows as pages; a log left by a crash while
        // sealing is not needed.
        unlink(IndexSchema.attributesPath(path))
        return SealedState(bloom: bloom, indexedBytes: indexed, lastBlock: last)
    }

    /// The last block an index records, to verify against its segment at start-up. Blocks are
    /// indexed in the order of their offsets, so the last row is the last block (one probe of
    /// the rowid B-tree; `ORDER BY offset` read the whole table).
    static func lastBlock(_ db: SQLiteDatabase) throws(SQLiteError) -> (offset: Int, length: Int)? {
        let b = try db.prepare("SELECT offset, length FROM blocks ORDER BY id DESC LIMIT 1")
        return try b.step() ? (Int(b.int64(0)), Int(b.int64(1))) : nil
    }

    /// The hashes of an index's trace and run keys (`IndexKey`), as its Bloom filter holds them.
    static func keyHashes(_ db: SQLiteDatabase) throws(SQLiteError) -> [UInt64] {
        var keys: [UInt64] = []
        let t = try db.prepare("SELECT DISTINCT trace_id FROM traces")
        while try t.step() { keys.append(IndexKey.trace(t.blob(0))) }
        let r = try db.prepare("SELECT DISTINCT run_id FROM runs")
        while try r.step() { keys.append(IndexKey.run(r.text(0) ?? "")) }
        return keys
    }

    static func meta(_ db: SQLiteDatabase, _ key: String) throws(SQLiteError) -> String? {
        let q = try db.prepare("SELECT value FROM meta WHERE key = ?1")
        q.bind(1, key)
        return try q.step() ? q.text(0) : nil
    }

    /// Reopening a partly indexed segment (after a crash): its tenants and traces, back into memory.
    private func loadState() throws(SQLiteError) {
        try loadRows()
        metrics = try IndexSchema.metrics(db)
        // The committed attribute rows; anything after them was never committed.
        var log = [UInt8](repeating: 0, count: attributeLogBytes)
        let n = log.withUnsafeMutableBytes { SegmentFile.preadFully(attributeLog, $0, at: 0) }
        guard n == attributeLogBytes else { throw SQLiteError("read \(IndexSchema.attributesPath(path))") }
        ftruncate(attributeLog, off_t(attributeLogBytes))
        attributes.load(log: log)
    }

    /// The committed tenants, trace numbers, named runs and run flags.
    private func loadRows() throws(SQLiteError) {
        let t = try db.prepare("SELECT id, name FROM tenants")
        while try t.step() { tenants[t.text(1) ?? ""] = t.int64(0) }
        let names = Dictionary(uniqueKeysWithValues: tenants.map { ($0.value, $0.key) })
        let q = try db.prepare("SELECT id, trace_id, tenant, named_run FROM traces")
        while try q.step() {
            guard let trace = q.blob(1).withUnsafeBytes({ TraceID(bytes: $0) }) else { continue }
            let key = TraceKey(trace: trace, tenant: names[q.int64(2)] ?? "")
            traces[key] = q.int64(0)
            if let run = q.text(3) { traceRuns[key] = .some(run) }
        }
        let r = try db.prepare("SELECT run_id, tenant, continued, folds FROM runs")
        while try r.step() {
            let key = RunKey(run: r.text(0) ?? "", tenant: names[r.int64(1)] ?? "")
            continuedRuns[key] = r.int64(2) != 0
            if r.int64(3) != 0 { foldingRuns.insert(key) }
        }
    }

    /// Indexes `blocks` (all of this segment) and records that the segment is indexed up to
    /// `indexedBytes`, in one transaction.
    func index(_ blocks: [DurableBlock], indexedBytes: Int) throws(SQLiteError) {
        try db.execute("BEGIN IMMEDIATE")
        do throws(SQLiteError) {
            let rows = try indexRows(blocks)
            var round = MetricDeltas()
            for block in blocks { for batch in block.batches where !batch.metrics.isEmpty { round.add(batch.metrics) } }
            let writesMetrics = ContinuousClock.now - metricsWritten >= Self.metricsWriteInterval
            if writesMetrics { try writeMetrics(round, indexedBytes: indexedBytes) }
            // The round's attribute rows go to the log first; the transaction records how far
            // it is committed, so a failed round's rows are cut off again.
            var bytes: [UInt8] = []
            bytes.reserveCapacity(rows.count * 12)
            for r in rows {
                withUnsafeBytes(of: r.hash.littleEndian) { bytes.append(contentsOf: $0) }
                withUnsafeBytes(of: r.trace.littleEndian) { bytes.append(contentsOf: $0) }
            }
            let written = bytes.withUnsafeBytes { b in
                b.isEmpty ? 0 : pwrite(attributeLog, b.baseAddress, b.count, off_t(attributeLogBytes))
            }
            guard written == bytes.count else {
                ftruncate(attributeLog, off_t(attributeLogBytes))
                throw SQLiteError("write \(IndexSchema.attributesPath(path)): \(String(cString: strerror(errno)))")
            }
            setMeta.bind(1, "indexed_bytes").bind(2, String(indexedBytes))
            try setMeta.run()
            setMeta.bind(1, "attr_log_bytes").bind(2, String(attributeLogBytes + bytes.count))
            try setMeta.run()
            do throws(SQLiteError) {
                if FaultInjection.take(.indexCommit, path: path) != nil {
                    throw SQLiteError("index: database or disk is full (injected)", resultCode: 13)
                }
                try db.execute("COMMIT")
            } catch {
                ftruncate(attributeLog, off_t(attributeLogBytes))
                throw error
            }
            attributeLogBytes += bytes.count
            attributes.add(rows)
            unpublished.add(round)
            unpublishedRuns.formUnion(roundRuns)
            metrics.add(round)
            if writesMetrics {
                wroteMetrics(upTo: indexedBytes)
            } else {
                unwrittenMetrics.insertKeys(of: round.counters, value: true)
                unwrittenMetrics.insertKeys(of: round.histograms, value: true)
            }
            self.indexedBytes = indexedBytes
        } catch {
            try? db.execute("ROLLBACK")
            // The round's numbers and names were rolled back with it: reload what is committed
            // (copying the maps before every round instead cost a copy of the segment's traces
            // per round).
            tenants = [:]
            traces = [:]
            traceRuns = [:]
            continuedRuns = [:]
            foldingRuns = []
            try loadRows()
            throw error
        }
    }

    /// Marks the segment sealed and stores the Bloom filter of its keys, then checkpoints
    /// and syncs the index: from here on it is read-only and durable.
    func seal() throws(SQLiteError) -> (bloom: BloomFilter, keys: [UInt64]) {
        let keys = try Self.keyHashes(db)
        // A seal retried after its transaction committed (the vacuum or sync failed, on a
        // full disk say) only finishes the vacuum and sync.
        if try Self.meta(db, "sealed") == "1" {
            let q = try db.prepare("SELECT value FROM meta WHERE key = 'bloom'")
            let bloom = try q.step() ? BloomFilter(serialized: q.blob(0)) : nil
            q.reset()  // a statement left open keeps a read lock that VACUUM cannot take
            if let bloom {
                try finishSeal()
                return (bloom, keys)
            }
        }
        var bloom = BloomFilter(expectedKeys: keys.count)
        for k in keys { bloom.insert(k) }
        let entries = try sortedLogEntries()
        // The attribute filter is in place before the index says sealed; a crash between the
        // two seals the segment again, and writes the filter again.
        do {
            try AttributeFilterFile.write(
                sortedShortHashes: entries.lazy.map { UInt32(truncatingIfNeeded: $0 >> 32) },
                to: IndexSchema.attributeFilterPath(path))
        } catch {
            throw SQLiteError(error.message)
        }
        try db.execute("BEGIN IMMEDIATE")
        do throws(SQLiteError) {
            try db.execute(IndexSchema.attributePages)
            let page = try db.prepare("INSERT INTO attr_pages(first_hash, entries) VALUES (?1, ?2)")
            var start = 0
            while start < entries.count {
                let slice = entries[start..<min(entries.count, start + IndexSchema.entriesPerPage)]
                var blob: [UInt8] = []
                blob.reserveCapacity(slice.count * 8)
                for e in slice {
                    withUnsafeBytes(of: UInt32(truncatingIfNeeded: e >> 32).littleEndian) {
                        blob.append(contentsOf: $0)
                    }
                    withUnsafeBytes(of: UInt32(truncatingIfNeeded: e).littleEndian) { blob.append(contentsOf: $0) }
                }
                page.bind(1, Int64(slice.first! >> 32)).bind(2, blob: blob)
                try page.run()
                start += slice.count
            }
            try writeMetrics(MetricDeltas(), indexedBytes: indexedBytes)
            setMeta.bind(1, "sealed").bind(2, "1")
            try setMeta.run()
            let b = try db.prepare("INSERT OR REPLACE INTO meta(key, value) VALUES ('bloom', ?1)")
            b.bind(1, blob: bloom.serialized)
            try b.run()
            try db.execute("COMMIT")
        } catch {
            try? db.execute("ROLLBACK")
            throw error
        }
        wroteMetrics(upTo: indexedBytes)
        try finishSeal()
        return (bloom, keys)
    }

    /// Packs the sealed index into as few pages as it needs, then makes it durable.
    private func finishSeal() throws(SQLiteError) {
        if FaultInjection.take(.indexSeal, path: path) != nil {
            throw SQLiteError("index: database or disk is full (injected)", resultCode: 13)
        }
        try db.execute(
            "PRAGMA wal_checkpoint(TRUNCATE); VACUUM; PRAGMA synchronous=FULL; PRAGMA wal_checkpoint(TRUNCATE);")
        // The pages hold the attribute rows now.
        unlink(IndexSchema.attributesPath(path))
        sealed = true
    }

    /// Every committed attribute row as the sealed pages hold it (the high 32 bits of the hash,
    /// then the trace number, in one integer), sorted, each once. Read from the attribute log
    /// front to back, which costs less than walking `attributes`' chains.
    private func sortedLogEntries() throws(SQLiteError) -> [UInt64] {
        let total = attributeLogBytes / 12 * 12
        var out: [UInt64] = []
        out.reserveCapacity(total / 12)
        var chunk = [UInt8](repeating: 0, count: 12 << 16)
        var offset = 0
        while offset < total {
            let n = min(chunk.count, total - offset)
            let got = chunk.withUnsafeMutableBytes {
                SegmentFile.preadFully(attributeLog, UnsafeMutableRawBufferPointer(rebasing: $0[0..<n]), at: offset)
            }
            guard got == n else { throw SQLiteError("read \(IndexSchema.attributesPath(path))") }
            chunk.withUnsafeBytes { b in
                for i in 0..<(n / 12) {
                    let hash = Int64(littleEndian: b.loadUnaligned(fromByteOffset: i * 12, as: Int64.self))
                    let trace = UInt32(littleEndian: b.loadUnaligned(fromByteOffset: i * 12 + 8, as: UInt32.self))
                    out.append(UInt64(IndexSchema.shortHash(hash)) << 32 | UInt64(trace))
                }
            }
            offset += n
        }
        out.sort()
        var kept = 0
        for i in out.indices where kept == 0 || out[kept - 1] != out[i] {
            out[kept] = out[i]
            kept += 1
        }
        out.removeLast(out.count - kept)
        return out
    }

    /// What the rounds committed since the last call added to the metrics.
    func takeUnpublishedMetrics() -> MetricDeltas {
        defer { unpublished = MetricDeltas() }
        return unpublished
    }

    /// The runs the rounds committed since the last call touched, as (tenant, run ID).
    func takeTouchedRuns() -> [(tenant: String, run: String)] {
        defer { unpublishedRuns = [] }
        return unpublishedRuns.map { ($0.tenant, $0.run) }
    }

    /// Writes the totals of the series `round` touches and of those not written since, with
    /// `round` added, and that the rows count the segment up to `indexedBytes` (within the
    /// caller's transaction).
    private func writeMetrics(_ round: MetricDeltas, indexedBytes: Int) throws(SQLiteError) {
        func counter(_ key: SeriesKey, _ total: Double) throws(SQLiteError) {
            upsertMetric.bind(1, Int64(key.family.rawValue)).bind(2, key.joinedLabels).bind(3, double: total)
                .bindNull(4)
            try upsertMetric.run()
        }
        func histogram(_ key: SeriesKey, _ total: HistogramDelta) throws(SQLiteError) {
            upsertMetric.bind(1, Int64(key.family.rawValue)).bind(2, key.joinedLabels).bind(3, double: 0)
                .bind(4, blob: total.serialized)
            try upsertMetric.run()
        }
        for (key, n) in round.counters { try counter(key, metrics.counters[key, default: 0] + n) }
        for (key, h) in round.histograms {
            var total = metrics.histograms[key] ?? HistogramDelta(buckets: h.counts.count - 1)
            total.add(h)
            try histogram(key, total)
        }
        for key in unwrittenMetrics.keys {
            if key.family.isHistogram {
                if round.histograms.index(of: key) == nil, let total = metrics.histograms[key] {
                    try histogram(key, total)
                }
            } else if round.counters.index(of: key) == nil, let total = metrics.counters[key] {
                try counter(key, total)
            }
        }
        setMeta.bind(1, "metrics_bytes").bind(2, String(indexedBytes))
        try setMeta.run()
    }

    /// After the transaction that wrote the rows up to `indexedBytes` committed.
    private func wroteMetrics(upTo indexedBytes: Int) {
        unwrittenMetrics = SeriesMap()
        metricsBytes = indexedBytes
        metricsWritten = ContinuousClock.now
    }

    /// Writes the totals not written yet (a clean close), in a transaction of its own.
    func writePendingMetrics() throws(SQLiteError) {
        guard !sealed, metricsBytes < indexedBytes || !unwrittenMetrics.isEmpty else { return }
        try db.execute("BEGIN IMMEDIATE")
        do throws(SQLiteError) {
            try writeMetrics(MetricDeltas(), indexedBytes: indexedBytes)
            try db.execute("COMMIT")
        } catch {
            try? db.execute("ROLLBACK")
            throw error
        }
        wroteMetrics(upTo: indexedBytes)
    }

    /// Adds what the blocks between `metricsBytes` and `indexedBytes` count (start-up, after a
    /// crash: `needsMetricsRecount`). They are written with the next rows.
    func recountedMetrics(_ d: MetricDeltas) {
        metrics.add(d)
        unwrittenMetrics.insertKeys(of: d.counters, value: true)
        unwrittenMetrics.insertKeys(of: d.histograms, value: true)
        needsMetricsRecount = false
    }

    /// Folds the WAL into the index file (clean shutdown).
    func checkpoint() {
        try? writePendingMetrics()
        try? db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    }

    // MARK: Rows

    private func tenantID(_ name: String) throws(SQLiteError) -> Int64 {
        if let id = tenants[name] { return id }
        insertTenant.bind(1, name)
        try insertTenant.run()
        let id = db.lastInsertRowID
        tenants[name] = id
        return id
    }

    private func traceNumber(_ key: TraceKey, start: UInt64) throws(SQLiteError) -> Int64 {
        if let n = traces[key] { return n }
        insertTrace.bind(1, blob: key.trace.bytes).bind(2, try tenantID(key.tenant)).bind(3, Int64(clamping: start))
        try insertTrace.run()
        let n = db.lastInsertRowID
        traces[key] = n
        return n
    }

    /// Running totals for one (run, trace) pair within a round.
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

    /// Writes the round's rows and returns its attribute rows (not yet in `attributes`).
    private func indexRows(_ blocks: [DurableBlock]) throws(SQLiteError) -> [(hash: Int64, trace: UInt32)] {
        let indexedCount = blocks.reduce(0) { n, b in b.batches.reduce(n) { $0 + $1.indexed.count } }
        var attributeRows: [(hash: Int64, trace: UInt32)] = []
        attributeRows.reserveCapacity(indexedCount)
        var roundRows: Set<AttributeRow> = []
        roundRows.reserveCapacity(indexedCount)
        var deltas: [RunTraceKey: Delta] = [:]
        var touchedRuns: Set<RunKey> = []
        // Pass 1: blocks, traces, and any trace whose run becomes known in this round.
        for block in blocks {
            insertBlock.bind(1, Int64(block.offset)).bind(2, Int64(block.length)).bind(3, Int64(block.spanCount))
            try insertBlock.run()
            let blockID = db.lastInsertRowID
            var tracesInBlock: Set<Int64> = []
            for batch in block.batches {
                for span in batch.spans {
                    let key = TraceKey(trace: span.traceID, tenant: batch.resources[Int(span.resource)].tenantKey)
                    let number = try traceNumber(key, start: span.startNanos)
                    tracesInBlock.insert(number)
                    if let run = span.explicitRunID, try runOfTrace(key) == nil {
                        try assign(trace: key, number: number, to: run, deltas: &deltas, touched: &touchedRuns)
                    }
                }
            }
            for trace in tracesInBlock {
                insertTraceBlock.bind(1, trace).bind(2, blockID)
                try insertTraceBlock.run()
            }
            // Indexed values arrive deduplicated per request; one row per trace per value is kept.
            for batch in block.batches {
                for a in batch.indexed {
                    let key = TraceKey(trace: a.trace, tenant: batch.resources[Int(a.resource)].tenantKey)
                    guard let number = traces[key] else { continue }
                    let row = AttributeRow(hash: a.hash, trace: UInt32(truncatingIfNeeded: number))
                    if roundRows.insert(row).inserted { attributeRows.append((row.hash, row.trace)) }
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
            guard let number = traces[TraceKey(trace: key.trace, tenant: key.tenant)] else { continue }
            upsertRunTrace.bind(1, key.run).bind(2, try tenantID(key.tenant)).bind(3, number).bind(4, d.spans)
                .bind(5, d.errors).bind(6, d.start).bind(7, d.end).bind(8, d.agent)
            try upsertRunTrace.run()
        }
        roundRuns = touchedRuns
        for run in touchedRuns {
            let provisional =
                try TraceID(hex: run.run).map { trace throws(SQLiteError) in
                    try runOfTrace(TraceKey(trace: trace, tenant: run.tenant)) == nil
                } ?? false
            let continued: Bool
            if let known = continuedRuns[run] {
                continued = known
            } else {
                continued = try older.holdsRun(run.run, tenant: run.tenant)
                continuedRuns[run] = continued
            }
            refreshRun.bind(1, run.run).bind(2, try tenantID(run.tenant)).bind(3, provisional ? 1 : 0)
                .bind(4, continued ? 1 : 0).bind(5, foldingRuns.contains(run) ? 1 : 0)
            try refreshRun.run()
        }
        return attributeRows
    }

    struct AttributeRow: Hashable {
        var hash: Int64
        var trace: UInt32
    }

    /// The run a trace's unnamed spans belong to, if any span of it has named one, here or
    /// in an older segment.
    private func runOfTrace(_ key: TraceKey) throws(SQLiteError) -> String? {
        if let cached = traceRuns[key] { return cached }
        let run = try older.namedRun(trace: key.trace, tenant: key.tenant)
        traceRuns[key] = .some(run)
        return run
    }

    /// Records that `trace` belongs to `run`, moving what this segment counted under the
    /// trace's provisional run (its hex ID) into the named run. What older segments counted
    /// provisionally stays there; readers fold it in (`IndexReader`).
    private func assign(
        trace key: TraceKey, number: Int64, to run: String, deltas: inout [RunTraceKey: Delta],
        touched: inout Set<RunKey>
    ) throws(SQLiteError) {
        let tenant = key.tenant
        let tenantNumber = try tenantID(tenant)
        nameTrace.bind(1, number).bind(2, run)
        try nameTrace.run()
        traceRuns[key] = .some(run)
        let provisional = key.trace.hex
        guard provisional != run else { return }
        let named = RunTraceKey(run: run, tenant: tenant, trace: key.trace)
        if try older.holdsRun(provisional, tenant: tenant) {
            foldingRuns.insert(named.runKey)
            touched.insert(named.runKey)
        }
        selectRunTrace.bind(1, provisional).bind(2, tenantNumber).bind(3, number)
        var moved: Delta?
        if try selectRunTrace.step() {
            moved = Delta(
                spans: selectRunTrace.int64(0), errors: selectRunTrace.int64(1), start: selectRunTrace.int64(2),
                end: selectRunTrace.int64(3), agent: selectRunTrace.text(4))
        }
        selectRunTrace.reset()
        if let moved {
            deleteRunTrace.bind(1, provisional).bind(2, tenantNumber).bind(3, number)
            try deleteRunTrace.run()
            deleteRun.bind(1, provisional).bind(2, tenantNumber)
            try deleteRun.run()
            continuedRuns[RunKey(run: provisional, tenant: tenant)] = nil
            deltas[named, default: Delta()].merge(moved)
            touched.insert(named.runKey)
        }
        // Spans of this round already counted provisionally are moved too.
        if let pending = deltas.removeValue(forKey: RunTraceKey(run: provisional, tenant: tenant, trace: key.trace)) {
            deltas[named, default: Delta()].merge(pending)
        }
        touched.remove(RunKey(run: provisional, tenant: tenant))
    }
}
