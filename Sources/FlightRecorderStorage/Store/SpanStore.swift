import FlightRecorderSQLite
public import FlightRecorderOTLP
import Foundation
public import Logging
import NIOPosix
public import ServiceLifecycle

/// The storage engine: durable, compressed, append-only segments plus a SQLite index.
///
/// Two threads, one job each:
/// - the writer takes everything queued, frames it into LZ4 blocks, appends them to the active
///   segment and fsyncs once for the whole group (group commit), then resumes every waiting
///   caller. An acknowledged span is therefore always in a synced block.
/// - the indexer takes the durable blocks and indexes them in large SQLite transactions
///   (random span-ID keys make small transactions rewrite many B-tree pages). The index may
///   lag the segments, never lead them; queries call `awaitIndexed()` first, so a responder
///   always sees every span acknowledged before the query began.
/// The indexer's backlog is bounded: when it is full the writer waits, the queue fills, and
/// clients get a retryable refusal, so memory never grows without bound.
///
/// `@unchecked Sendable`: mutable state is guarded by `queueLock` (queue, backlog, sequence
/// numbers) or `readerLock`, or touched only by its own thread (`segment` by the writer,
/// `indexWriter` by the indexer).
public final class SpanStore: Service, @unchecked Sendable {
    public let configuration: StoreConfiguration
    let logger: Logger
    /// What start-up read to bring the index up to date with the segments.
    public let recoveryReport: RecoveryReport

    private struct Pending {
        var batch: IngestBatch
        var continuation: CheckedContinuation<Void, any Error>
    }

    private enum State { case running, draining, closed }

    private let queueLock = NSCondition()
    private var pending: [Pending] = []
    private var queuedBytes = 0
    private var state = State.running
    private var writerDone = false

    /// Durable groups waiting for the indexer, and the sequence numbers that let queries wait for them.
    private struct DurableGroup {
        var seq: Int64
        var blocks: [DurableBlock]
        var segments: [(id: Int64, indexedBytes: Int, sealed: Bool)]
        var spans: Int
    }

    private var indexBacklog: [DurableGroup] = []
    private var indexBacklogSpans = 0
    private var durableSeq: Int64 = 0
    private var indexedSeq: Int64 = 0
    private var indexWaiters: [(seq: Int64, continuation: CheckedContinuation<Void, Never>)] = []
    private var indexerDone = false
    private var indexFailure: StorageError?
    /// Most spans the indexer may lag by before the writer waits for it.
    static let maxIndexBacklogSpans = 400_000
    /// How long the indexer gathers blocks into one transaction when nobody is waiting.
    static let indexGatherInterval: Double = 0.25

    private var segment: SegmentWriter
    private let indexWriter: IndexWriter
    private let readerLock = NSLock()
    private let reader: IndexReader
    private let segmentReader: SegmentReader
    private let lock: DirectoryLock

    /// Opens (or creates) the data directory, takes its lock, brings the index up to date with
    /// the segments (truncating a torn tail), and starts the writer thread.
    public init(configuration: StoreConfiguration, logger: Logger) throws(StorageError) {
        self.configuration = configuration
        self.logger = logger
        for dir in [configuration.directory, configuration.segmentDirectory] {
            if mkdir(dir, 0o750) != 0 && errno != EEXIST { throw .io("create \(dir)") }
        }
        lock = try sqlite { () throws(SQLiteError) in try DirectoryLock(directory: configuration.directory) }
        do {
            indexWriter = try sqlite { () throws(SQLiteError) in try IndexWriter(path: configuration.indexPath) }
            if let old = indexWriter.replacedSchemaVersion {
                logger.notice(
                    "index schema changed; rebuilding the index from the segments",
                    metadata: ["from": "\(old)", "to": "\(IndexSchema.version)"])
            }
            let recovery = try StoreRecovery(configuration: configuration, index: indexWriter, logger: logger)
                .runReporting()
            recoveryReport = recovery.report
            let activeID = recovery.activeSegment
            segment = try SegmentWriter(directory: configuration.segmentDirectory, id: activeID)
            reader = try sqlite { () throws(SQLiteError) in try IndexReader(path: configuration.indexPath) }
            segmentReader = SegmentReader(directory: configuration.segmentDirectory)
        } catch {
            lock.release()
            throw error
        }
        let writer = Thread { [self] in self.writerLoop() }
        writer.name = "flightrec-writer"
        writer.start()
        let indexer = Thread { [self] in self.indexerLoop() }
        indexer.name = "flightrec-indexer"
        indexer.start()
    }

    // MARK: Ingest

    /// Returns once `batch` is durable and indexed. Throws `overloaded` when the queue is full
    /// (the caller answers with a retryable error) and `shuttingDown` while draining.
    public func append(_ batch: IngestBatch) async throws {
        guard !batch.spans.isEmpty else { return }
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            queueLock.lock()
            defer { queueLock.unlock() }
            guard state == .running else {
                c.resume(throwing: StorageError.shuttingDown)
                return
            }
            guard queuedBytes + batch.payload.count <= configuration.maxQueueBytes || queuedBytes == 0 else {
                c.resume(throwing: StorageError.overloaded)
                return
            }
            queuedBytes += batch.payload.count
            pending.append(Pending(batch: batch, continuation: c))
            // Broadcast: the writer and the indexer wait on the same condition.
            queueLock.broadcast()
        }
    }

    private func writerLoop() {
        while true {
            queueLock.lock()
            while pending.isEmpty && state == .running { queueLock.wait() }
            if pending.isEmpty {
                writerDone = true
                queueLock.broadcast()
                queueLock.unlock()
                return
            }
            // Back-pressure: wait while the indexer is too far behind.
            while indexBacklogSpans > Self.maxIndexBacklogSpans && indexFailure == nil { queueLock.wait() }
            // Take up to 32 MiB: everything that queued while the last group was syncing.
            var taken: [Pending] = []
            var bytes = 0
            while let first = pending.first, taken.isEmpty || bytes + first.batch.payload.count <= 32 << 20 {
                bytes += first.batch.payload.count
                taken.append(pending.removeFirst())
            }
            queueLock.unlock()

            let result: Result<Void, StorageError>
            do throws(StorageError) {
                try commit(taken.map(\.batch))
                result = .success(())
            } catch {
                logger.error("storage write failed; requests answered with a retryable error", metadata: ["error": "\(error)"])
                result = .failure(error)
            }
            queueLock.lock()
            queuedBytes -= bytes
            queueLock.unlock()
            for p in taken {
                switch result {
                case .success: p.continuation.resume()
                case .failure(let e): p.continuation.resume(throwing: e)
                }
            }
        }
    }

    /// One group commit: frame, append, sync; then hand the blocks to the indexer.
    private func commit(_ batches: [IngestBatch]) throws(StorageError) {
        var frames: [UInt8] = []
        var blocks: [DurableBlock] = []
        var raw: [UInt8] = []
        var rawSpans = 0
        var members: [IngestBatch] = []
        func flushBlock() {
            guard !members.isEmpty else { return }
            let start = frames.count
            raw.withUnsafeBytes { BlockCodec.encode($0, spanCount: rawSpans, into: &frames) }
            blocks.append(
                DurableBlock(segment: 0, offset: start, length: frames.count - start, spanCount: rawSpans, batches: members))
            raw.removeAll(keepingCapacity: true)
            rawSpans = 0
            members.removeAll()
        }
        for batch in batches {
            if !raw.isEmpty && raw.count + batch.payload.count > configuration.blockBytes { flushBlock() }
            raw.append(contentsOf: batch.payload)
            rawSpans += batch.spans.count
            members.append(batch)
        }
        flushBlock()

        var segmentStates: [(id: Int64, indexedBytes: Int, sealed: Bool)] = []
        if segment.size > SegmentFile.headerSize && segment.size + frames.count > configuration.segmentBytes {
            try segment.sync()
            segment.close()
            segmentStates.append((segment.id, segment.size, true))
            segment = try SegmentWriter(directory: configuration.segmentDirectory, id: segment.id + 1)
            logger.info("sealed segment", metadata: ["segment": "\(segment.id - 1)"])
        }
        let base = segment.size
        do throws(StorageError) {
            _ = try segment.append(frames)
            if configuration.durability == .fsync { try segment.sync() }
        } catch {
            segment.truncate(to: base)
            throw error
        }
        for i in blocks.indices {
            blocks[i].segment = segment.id
            blocks[i].offset += base
        }
        segmentStates.append((segment.id, segment.size, false))
        // The indexer needs only the span facts, not the payload bytes.
        var spans = 0
        for i in blocks.indices {
            spans += blocks[i].spanCount
            for j in blocks[i].batches.indices { blocks[i].batches[j].payload = [] }
        }
        queueLock.withLock {
            durableSeq += 1
            indexBacklog.append(DurableGroup(seq: durableSeq, blocks: blocks, segments: segmentStates, spans: spans))
            indexBacklogSpans += spans
            queueLock.broadcast()
        }
    }

    private func indexerLoop() {
        var lastCommit = Date()
        while true {
            queueLock.lock()
            while true {
                let urgent = !indexWaiters.isEmpty || state != .running || indexBacklogSpans > Self.maxIndexBacklogSpans / 4
                if !indexBacklog.isEmpty && (urgent || Date().timeIntervalSince(lastCommit) >= Self.indexGatherInterval) {
                    break
                }
                if indexBacklog.isEmpty && writerDone {
                    indexerDone = true
                    queueLock.broadcast()
                    queueLock.unlock()
                    return
                }
                if indexBacklog.isEmpty {
                    queueLock.wait()
                } else {
                    _ = queueLock.wait(until: lastCommit.addingTimeInterval(Self.indexGatherInterval))
                }
            }
            let groups = indexBacklog
            indexBacklog.removeAll()
            queueLock.unlock()

            var blocks: [DurableBlock] = []
            var segments: [Int64: (indexedBytes: Int, sealed: Bool)] = [:]
            var spans = 0
            for g in groups {
                blocks += g.blocks
                spans += g.spans
                for s in g.segments {
                    let old = segments[s.id]
                    segments[s.id] = (max(old?.indexedBytes ?? 0, s.indexedBytes), (old?.sealed ?? false) || s.sealed)
                }
            }
            do throws(StorageError) {
                try sqlite { () throws(SQLiteError) in
                    try indexWriter.index(blocks, segments: segments.map { ($0.key, $0.value.indexedBytes, $0.value.sealed) })
                }
            } catch {
                // The segments hold the spans; the next start-up re-indexes them from there.
                logger.error("indexing failed; restart to re-index from the segments", metadata: ["error": "\(error.message)"])
                queueLock.withLock { indexFailure = error }
            }
            lastCommit = Date()
            queueLock.lock()
            indexBacklogSpans -= spans
            indexedSeq = groups.last!.seq
            let ready = indexWaiters.filter { $0.seq <= indexedSeq }
            indexWaiters.removeAll { $0.seq <= indexedSeq }
            queueLock.broadcast()
            queueLock.unlock()
            for w in ready { w.continuation.resume() }
        }
    }

    /// Returns once everything acknowledged before the call is indexed. Queries call it first,
    /// so a responder always sees every acknowledged span.
    public func awaitIndexed() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            queueLock.lock()
            let target = durableSeq
            if indexedSeq >= target || indexFailure != nil || indexerDone {
                queueLock.unlock()
                c.resume()
                return
            }
            indexWaiters.append((target, c))
            queueLock.broadcast()
            queueLock.unlock()
        }
    }

    // MARK: Lifecycle

    public func run() async throws {
        try? await gracefulShutdown()
        await close()
    }

    /// Stops accepting, drains and syncs everything queued, and closes the files.
    public func close() async {
        guard beginDraining() else { return }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let waiter = Thread { [self] in
                queueLock.lock()
                while !(writerDone && indexerDone) { queueLock.wait() }
                queueLock.unlock()
                c.resume()
            }
            waiter.start()
        }
        try? segment.sync()
        segment.close()
        try? indexWriter.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        queueLock.withLock { state = .closed }
        lock.release()
        logger.info("store closed cleanly")
    }

    private func beginDraining() -> Bool {
        queueLock.withLock {
            guard state == .running else { return false }
            state = .draining
            queueLock.broadcast()
            return true
        }
    }

    // MARK: Queries (blocking work runs on NIO's thread pool, never on an event loop)

    func withReader<T: Sendable>(_ body: @escaping @Sendable (IndexReader, SegmentReader) throws -> T) async throws -> T {
        await awaitIndexed()
        return try await NIOThreadPool.singleton.runIfActive { [self] in
            readerLock.lock()
            defer { readerLock.unlock() }
            return try body(reader, segmentReader)
        }
    }

    public func listRuns(
        since: Int64? = nil, until: Int64? = nil, limit: Int = 100, scope: TenantScope = .all
    ) async throws -> [RunSummary] {
        try await withReader { r, _ in try r.listRuns(since: since, until: until, limit: limit, scope: scope) }
    }

    /// The run `id`, with all its spans sorted by start time; nil if unknown within `scope`.
    /// A trace ID whose run has since been named resolves to that run. When tenants in scope
    /// share a run ID, the first tenant in order answers and a warning says so.
    public func run(_ id: String, scope: TenantScope = .all) async throws -> RunDetail? {
        let identity = configuration.runIdentity
        return try await withReader { r, segments in
            var candidates = try r.runs(id, scope: scope)
            if candidates.isEmpty, let trace = TraceID(hex: id) {
                for (tenant, named) in try r.runs(ofTrace: trace, scope: scope) {
                    candidates += try r.runs(named, scope: .only([tenant]))
                }
            }
            guard let summary = candidates.first else { return nil }
            let runID = summary.runID
            let tenant = summary.tenant ?? ResourceFacts.defaultTenant
            let traces = try r.traces(ofRun: runID, tenant: tenant)
            var defaults: [TraceID: String] = [:]
            for t in traces {
                defaults[t] = try r.runs(ofTrace: t, scope: .only([tenant])).first?.run ?? t.hex
            }
            var (spans, warnings) = try Self.readSpans(traces: traces, reader: r, segments: segments) { span in
                guard span.tenant == tenant else { return false }
                let explicit = identity.explicitRunID(span: span.attributes, resource: span.resource.attributes)
                return (explicit ?? defaults[span.traceID]) == runID
            }
            if candidates.count > 1 {
                let others = candidates.dropFirst().compactMap(\.tenant).joined(separator: ", ")
                warnings.append("run ID \(runID) also exists in tenant(s) \(others); showing tenant \(tenant)")
            }
            return RunDetail(summary: summary, spans: spans, warnings: warnings)
        }
    }

    /// The stored spans of one trace within `scope`, sorted by start time; empty if unknown.
    public func trace(_ id: TraceID, scope: TenantScope = .all) async throws -> (spans: [SpanRecord], warnings: [String]) {
        try await withReader { r, segments in
            try Self.readSpans(traces: [id], reader: r, segments: segments) { scope.contains($0.tenant) }
        }
    }

    /// Spans within `scope` that carry `key = value` (an indexed key), with the run each
    /// belongs to, oldest first.
    public func lookup(key: String, value: String, scope: TenantScope, limit: Int = 100) async throws -> [AttributeMatch] {
        let identity = configuration.runIdentity
        return try await withReader { r, segments in
            var out: [AttributeMatch] = []
            for (tenant, trace, _) in try r.traces(withAttribute: key, value: value, scope: scope, limit: limit) {
                let (spans, _) = try Self.readSpans(traces: [trace], reader: r, segments: segments) { span in
                    span.tenant == tenant && span.attributes.contains { $0.key == key && $0.value.scalarString == value }
                }
                let traceRun = try r.runs(ofTrace: trace, scope: .only([tenant])).first?.run ?? trace.hex
                for span in spans {
                    let run = identity.explicitRunID(span: span.attributes, resource: span.resource.attributes) ?? traceRun
                    out.append(AttributeMatch(runID: run, tenant: tenant, span: span))
                }
            }
            return Array(out.sorted { $0.span.startNanos < $1.span.startNanos }.prefix(limit))
        }
    }

    /// Runs within `scope` with at least one span for which `matches` holds, newest first,
    /// each with its matching spans. `narrow` lists indexed `key = value` pairs every match
    /// carries: the index then limits the work to traces that have them all. Without it, runs
    /// are scanned newest first, at most `scanLimit` of them. Candidate traces are read newest
    /// first in small batches, and reading stops once `limit` runs have matched, so a page
    /// costs the same however large the store is.
    public func search(
        narrow: [(key: String, value: String)], scope: TenantScope, since: Int64?, until: Int64?, limit: Int,
        scanLimit: Int = 20_000, matches: @escaping @Sendable (SpanRecord) -> Bool
    ) async throws -> SearchResult {
        let identity = configuration.runIdentity
        return try await withReader { r, segments in
            var candidates: [(key: TraceKey, start: Int64)] = []
            var complete = true
            if !narrow.isEmpty {
                var set: [TraceKey: Int64]?
                for (key, value) in narrow {
                    var found: [TraceKey: Int64] = [:]
                    for c in try r.traces(withAttribute: key, value: value, scope: scope, limit: 10_000_000) {
                        found[TraceKey(tenant: c.tenant, trace: c.trace)] = c.start
                    }
                    set = set.map { $0.filter { found[$0.key] != nil } } ?? found
                    if set?.isEmpty == true { break }
                }
                // A run starts no later than any of its spans, so a trace whose indexed span
                // starts before `since` belongs to a run that started before it too.
                candidates = (set ?? [:]).filter { (since == nil || $0.value >= since!) && (until == nil || $0.value < until!) }
                    .map { ($0.key, $0.value) }
            } else {
                let runs = try r.listRuns(since: since, until: until, limit: scanLimit, scope: scope)
                complete = runs.count < scanLimit
                for run in runs {
                    let tenant = run.tenant ?? ResourceFacts.defaultTenant
                    for t in try r.traces(ofRun: run.runID, tenant: tenant) {
                        candidates.append((TraceKey(tenant: tenant, trace: t), run.startNanos))
                    }
                }
            }
            candidates.sort { ($0.start, $0.key.trace) > ($1.start, $1.key.trace) }
            var byRun: [RunKeyOut: [SpanRecord]] = [:]
            var hits: [SearchHit] = []
            var warnings: [String] = []
            var next = 0
            while next < candidates.count && hits.count < limit {
                let batch = candidates[next..<min(candidates.count, next + 32)]
                next += batch.count
                var traceRun: [TraceKey: String] = [:]
                for c in batch {
                    traceRun[c.key] = try r.runs(ofTrace: c.key.trace, scope: .only([c.key.tenant])).first?.run
                        ?? c.key.trace.hex
                }
                let tenantsOf = Dictionary(grouping: batch.map(\.key), by: \.trace).mapValues { Set($0.map(\.tenant)) }
                let (spans, w) = try Self.readSpans(traces: Array(tenantsOf.keys), reader: r, segments: segments) { span in
                    tenantsOf[span.traceID]?.contains(span.tenant) == true && matches(span)
                }
                warnings += w
                var touched: [RunKeyOut] = []
                for span in spans {
                    let tenant = span.tenant
                    let run =
                        identity.explicitRunID(span: span.attributes, resource: span.resource.attributes)
                        ?? traceRun[TraceKey(tenant: tenant, trace: span.traceID)] ?? span.traceID.hex
                    let key = RunKeyOut(run: run, tenant: tenant)
                    if byRun[key] == nil { touched.append(key) }
                    byRun[key, default: []].append(span)
                }
                for key in touched {
                    guard let summary = try r.runs(key.run, scope: .only([key.tenant])).first else { continue }
                    if let since, summary.startNanos < since { continue }
                    if let until, summary.startNanos >= until { continue }
                    hits.append(SearchHit(run: summary, spans: []))
                }
            }
            for i in hits.indices {
                hits[i].spans = byRun[RunKeyOut(run: hits[i].run.runID, tenant: hits[i].run.tenant ?? "")] ?? []
            }
            hits.sort { ($0.run.startNanos, $0.run.runID) > ($1.run.startNanos, $1.run.runID) }
            return SearchResult(
                hits: Array(hits.prefix(limit)), candidateTraces: candidates.count,
                complete: complete && next >= candidates.count, warnings: warnings)
        }
    }

    struct TraceKey: Hashable {
        var tenant: String
        var trace: TraceID
    }

    struct RunKeyOut: Hashable {
        var run: String
        var tenant: String
    }

    static func readSpans(
        traces: [TraceID], reader: IndexReader, segments: SegmentReader, keep: (SpanRecord) -> Bool
    ) throws -> (spans: [SpanRecord], warnings: [String]) {
        let wanted = Set(traces)
        var blocks: [BlockRef] = []
        var seenBlocks: Set<Int64> = []
        for t in traces {
            for b in try reader.blocks(ofTrace: t) where seenBlocks.insert(b.id).inserted { blocks.append(b) }
        }
        blocks.sort { ($0.segment, $0.offset) < ($1.segment, $1.offset) }
        var spans: [SpanRecord] = []
        var seen: Set<SpanKey> = []
        var warnings: [String] = []
        for b in blocks {
            let raw: [UInt8]
            do {
                raw = try segments.readBlock(segment: b.segment, offset: b.offset, length: b.length)
            } catch {
                warnings.append(error.message)
                continue
            }
            let decoded = try raw.withUnsafeBytes {
                try TracesDataDecoder.decode($0, traces: wanted) { t, _ in wanted.contains(t) }
            }
            for s in decoded where keep(s) && seen.insert(SpanKey(trace: s.traceID, span: s.spanID)).inserted {
                spans.append(s)
            }
        }
        spans.sort { ($0.startNanos, $0.spanID.value) < ($1.startNanos, $1.spanID.value) }
        return (spans, warnings)
    }

    struct SpanKey: Hashable {
        var trace: TraceID
        var span: SpanID
    }

    /// Row counts of the index tables (tests, `reindex` report).
    public func indexCounts() async throws -> [String: Int64] {
        try await withReader { r, _ in try r.counts() }
    }
}

/// One run that matched a search, with the spans that matched.
public struct SearchHit: Sendable {
    public var run: RunSummary
    public var spans: [SpanRecord]
}

public struct SearchResult: Sendable {
    public var hits: [SearchHit]
    /// Traces that could match (all of them carry the indexed values): an upper bound.
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
