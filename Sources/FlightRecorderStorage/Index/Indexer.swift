import FlightRecorderCore
import FlightRecorderOTLP
import FlightRecorderSQLite
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// The indexer thread: takes the durable groups and indexes them into the active segment's
/// index, one transaction per round. When the writer seals a segment, the indexer seals its
/// index (Bloom filter stored, checkpointed, synced) and publishes it in the catalog, then
/// opens the next segment's. The index may lag the segments, never lead them.
///
/// `@unchecked Sendable`: only its thread touches the writers and `older` until `run`
/// returns; `close` runs after that, ordered by the queue's lock (`awaitDrained`).
final class Indexer: @unchecked Sendable {
    /// How long the indexer gathers blocks into one transaction when nobody is waiting.
    static let gatherInterval: Double = 0.1

    let queue: WriteQueue
    let catalog: SegmentCatalog
    let logger: Logger
    /// Lookups into the sealed segments (the run of a trace named earlier, runs that continue).
    let older: IndexReader
    private(set) var active: SegmentIndexWriter?
    /// The key group the segments this process seals join (`KeyGroup`); the ones sealed
    /// before it started are grouped by `KeyGroupBuilder.rebuild`.
    private var groups = KeyGroupBuilder()
    /// The newest segment whose index this indexer (or start-up) sealed; a retried round skips
    /// its entries and blocks.
    private var sealedThrough: Int64
    /// One log line per interval while a failure repeats.
    private let limiter = LogLimiter()

    /// Rebuilds a damaged active index from its segment (`StoreRecovery.catchUp`).
    let recovery: StoreRecovery
    /// Called after the active index was rebuilt (or its rebuild failed), with its segment.
    let onRebuilt: @Sendable (Int64) -> Void
    /// Called when a round meets a damaged index of an older, sealed segment: the store
    /// rebuilds it (`SpanStore.repair`), and the retried round reopens it.
    let onDamagedOlder: @Sendable (Int64, String) -> Void
    /// Segments whose index start-up could not write (`RecoveryReport.pendingSegments`).
    let startupSegments: [Int64]
    /// The segments whose index is being rebuilt now (the store's repair set).
    let repairing: @Sendable () -> Set<Int64>
    /// The segment the writer appends to at start-up.
    let activeSegment: Int64

    init(
        queue: WriteQueue, catalog: SegmentCatalog, older: IndexReader, active: SegmentIndexWriter?,
        activeSegment: Int64,
        recovery: StoreRecovery, startupSegments: [Int64] = [], logger: Logger,
        onRebuilt: @escaping @Sendable (Int64) -> Void = { _ in },
        onDamagedOlder: @escaping @Sendable (Int64, String) -> Void = { _, _ in },
        repairing: @escaping @Sendable () -> Set<Int64> = { [] }
    ) {
        self.repairing = repairing
        self.onDamagedOlder = onDamagedOlder
        self.recovery = recovery
        self.onRebuilt = onRebuilt
        self.startupSegments = startupSegments
        self.activeSegment = activeSegment
        self.queue = queue
        self.catalog = catalog
        self.older = older
        self.active = active
        self.logger = logger
        sealedThrough = (startupSegments.first ?? activeSegment) - 1
    }

    /// The thread's body; returns once the writer is done and everything is indexed.
    ///
    /// A round that fails (a full disk, an I/O error) is kept and retried with back-off,
    /// together with whatever arrived meanwhile, until it succeeds: its blocks are never
    /// skipped, so the index never records a segment as indexed past blocks it lacks. Until
    /// then queries answer `indexBehind` (a retryable 503 naming the range), and once the
    /// backlog is full the writer waits and ingest is refused with a retryable error. When the
    /// store drains for shutdown while a round still fails, the indexer stops: the segments
    /// hold the spans, and the next start-up indexes them from where the index stopped.
    func run() {
        var lastCommit = Date()
        var held: [WriteQueue.DurableGroup] = []
        var failures = 0
        if !startupSegments.isEmpty {
            // Start-up could not write these segments' indexes: the first round does, each
            // read from its segment (`flush` never indexes past a gap) and sealed but the last.
            var states: [(id: Int64, indexedBytes: Int, sealed: Bool)] = []
            for id in startupSegments {
                let size = SegmentFile.fileSize(path: SegmentFile.path(recovery.configuration.segmentDirectory, id))
                states.append((id, size, false))
                if id != activeSegment { states.append((id, size, true)) }
            }
            held = [.init(seq: 0, blocks: [], segments: states, spans: 0)]
            failures = 1
        }
        while true {
            let retryAt = held.isEmpty ? nil : lastCommit.addingTimeInterval(Self.retryDelay(failures: failures))
            guard
                let groups = queue.takeBacklog(lastCommit: lastCommit, interval: Self.gatherInterval, retryAt: retryAt)
            else { break }
            let round = held + groups
            older.unavailable = repairing()
            if let requested = queue.takeActiveRebuildRequest() {
                if let a = active, a.segment == requested {
                    try? rebuildActive(
                        a, durableEnd: Self.durableEnd(of: round, segment: a.segment, after: a.indexedBytes))
                }
                // Done or not, queries stop waiting for it; a query that meets damage again asks again.
                onRebuilt(requested)
            }
            do throws(SQLiteError) {
                do throws(SQLiteError) {
                    try index(round)
                } catch  where error.isDamaged && active != nil && error.path == active?.path {
                    // The active index is damaged: it is derived data, so it is moved aside and
                    // rebuilt from the segment's durable blocks, then the round is tried again.
                    let a = active!
                    try rebuildActive(
                        a, durableEnd: Self.durableEnd(of: round, segment: a.segment, after: a.indexedBytes))
                    try index(round)
                }
                if failures > 0 {
                    logger.notice(
                        "indexing recovered; the index has caught up", metadata: ["failed_rounds": "\(failures)"])
                }
                held = []
                failures = 0
                lastCommit = Date()
                queue.markIndexed(round)
                recheckSkipped()
            } catch {
                if error.isDamaged, let path = error.path, path != active?.path,
                    let id = IndexSchema.segment(ofPath: path)
                {
                    onDamagedOlder(id, error.message)
                }
                held = round
                failures += 1
                lastCommit = Date()
                let behind = Self.describe(round, error: error)
                limiter.log(
                    logger, .error, reason: "index", "indexing failed; retrying, queries answer 503 until it succeeds",
                    metadata: [
                        "error": "\(error.message)", "failed_rounds": "\(failures)",
                        "file": "\(error.path.map { $0.split(separator: "/").last.map(String.init) ?? $0 } ?? "-")",
                    ])
                queue.markIndexFailing(.indexBehind(behind))
                if queue.isDraining && groups.isEmpty {
                    logger.error(
                        "shutting down with spans not indexed; the next start-up indexes them from the segments",
                        metadata: ["error": "\(error.message)"])
                    queue.markIndexerStopped()
                    return
                }
            }
        }
    }

    /// Once no index is being rebuilt, asks again what lookups skipped meanwhile. Nearly all
    /// were Bloom filter false positives; a real match means a run's totals in a newer segment
    /// were counted apart from the rebuilt segment's (its spans are all there and read right;
    /// `flightrec reindex` makes the totals whole), and is logged.
    private func recheckSkipped() {
        guard let result = try? older.recheckSkipped() else { return }
        if result.found > 0 {
            logger.warning(
                "runs indexed while an older index was rebuilt continue from it; their totals may be split until `flightrec reindex`",
                metadata: ["runs_or_traces": "\(result.found)", "checked": "\(result.checked)"])
        } else {
            logger.info(
                "lookups that skipped a segment while its index was rebuilt were checked: none continued from it",
                metadata: ["checked": "\(result.checked)"])
        }
    }

    /// How far segment `segment` is durable, as far as the indexer has been told: the largest
    /// length a group of `round` reports for it, else `after` (what its index covered).
    static func durableEnd(of round: [WriteQueue.DurableGroup], segment: Int64, after: Int) -> Int {
        round.flatMap(\.segments).filter { $0.id == segment && !$0.sealed }.map(\.indexedBytes).max() ?? after
    }

    /// Moves the active index aside and builds it again from its segment up to `durableEnd`;
    /// queries answer 503 meanwhile (the store's repair set), ingest keeps being acknowledged.
    private func rebuildActive(_ a: SegmentIndexWriter, durableEnd: Int) throws(SQLiteError) {
        let id = a.segment
        let started = ContinuousClock.now
        active = nil
        let aside = IndexSchema.quarantine(a.path)
        logger.error(
            "active segment index is damaged; moved aside and rebuilding it from the segment",
            metadata: ["segment": "\(id)", "moved_to": "\(aside)"])
        let fresh = try Self.open(segment: id, catalog: catalog, older: older)
        do {
            try recovery.catchUp(fresh, durableEnd: durableEnd)
        } catch {
            throw SQLiteError(error.message)
        }
        // The rebuilt rows are the ones already published (the old index's), plus any block it
        // had not indexed yet: not published again, so nothing counts twice.
        _ = fresh.takeUnpublishedMetrics()
        _ = fresh.takeTouchedRuns()
        active = fresh
        catalog.renew(id)
        logger.notice(
            "rebuilt active segment index",
            metadata: ["segment": "\(id)", "elapsed": "\(ContinuousClock.now - started)"])
        onRebuilt(id)
    }

    /// Seconds before retrying a failed round: 0.1 s, doubling, at most 5 s.
    static func retryDelay(failures: Int) -> Double { min(5, 0.1 * Double(1 << min(failures - 1, 6))) }

    /// What a failed round leaves unindexed, for the queries' 503: spans and where they start.
    static func describe(_ round: [WriteQueue.DurableGroup], error: SQLiteError) -> String {
        let spans = round.reduce(0) { $0 + $1.spans }
        let what: String
        if let first = round.lazy.flatMap(\.blocks).first {
            what = "\(spans) acknowledged spans from segment \(first.segment) byte \(first.offset) are"
        } else {
            // Start-up's segments (no blocks handed over: they are read from the files).
            let ids = round.flatMap(\.segments).map(\.id)
            what = "segments \(ids.min() ?? 0) to \(ids.max() ?? 0) are"
        }
        return "the index is behind the segments: \(what) stored but not indexed yet (\(error.message)); retry later"
    }

    private func index(_ groups: [WriteQueue.DurableGroup]) throws(SQLiteError) {
        var pending: [DurableBlock] = []
        var pendingBytes = 0
        func flush() throws(SQLiteError) {
            guard let active else { return }
            // A retried round may hold blocks an earlier, partly successful try indexed.
            let fresh = pending.filter { $0.segment == active.segment && $0.offset >= active.indexedBytes }
            pending.removeAll()
            guard !fresh.isEmpty || pendingBytes > active.indexedBytes else { return }
            // Never index past a gap: durable blocks this indexer was not handed (start-up
            // could not index them) are read from the segment first.
            let start = fresh.first?.offset ?? pendingBytes
            if start > active.indexedBytes {
                do {
                    try recovery.catchUp(active, durableEnd: start)
                } catch {
                    throw SQLiteError(error.message, resultCode: 13)
                }
            }
            try active.index(fresh, indexedBytes: max(pendingBytes, active.indexedBytes))
            publishMetrics(active)
        }
        for g in groups {
            for s in g.segments where s.id > sealedThrough {
                if s.sealed {
                    try flush()
                    if let a = active, a.segment == s.id {
                        try seal(a, indexedBytes: s.indexedBytes)
                        active = nil
                        sealedThrough = s.id
                    }
                } else {
                    if active?.segment != s.id {
                        try flush()
                        active = try Self.open(segment: s.id, catalog: catalog, older: older)
                    }
                    pendingBytes = s.indexedBytes
                }
            }
            pending += g.blocks.filter { $0.segment > sealedThrough }
        }
        try flush()
    }

    /// Hands what `writer`'s committed rounds added to the metrics to the store's observer.
    private func publishMetrics(_ writer: SegmentIndexWriter) {
        let d = writer.takeUnpublishedMetrics()
        if !d.isEmpty, let onMetrics = recovery.configuration.onMetrics { onMetrics(d) }
        let runs = writer.takeTouchedRuns()
        if !runs.isEmpty, let onRuns = recovery.configuration.onRunsTouched { onRuns(runs) }
    }

    /// Seals `writer`'s index at `indexedBytes` and publishes it with its filter.
    func seal(_ writer: SegmentIndexWriter, indexedBytes: Int) throws(SQLiteError) {
        if indexedBytes > writer.indexedBytes { try writer.index([], indexedBytes: indexedBytes) }
        publishMetrics(writer)
        let started = ContinuousClock.now
        let (bloom, keys) = try writer.seal()
        catalog.publish(.init(id: writer.segment, bloom: bloom))
        catalog.publish(group: groups.add(segment: writer.segment, keys: keys))
        logger.info(
            "sealed segment index",
            metadata: ["segment": "\(writer.segment)", "elapsed": "\(ContinuousClock.now - started)"])
        // Sealing freed the segment's in-memory rows and its sort buffers; hand the pages
        // back to the system rather than keep them in the heap's free lists.
        trimHeap()
    }

    /// Opens (or creates) a segment's index and publishes it as the active segment.
    static func open(
        segment: Int64, catalog: SegmentCatalog, older: IndexReader
    ) throws(SQLiteError)
        -> SegmentIndexWriter
    {
        let w = try SegmentIndexWriter(directory: catalog.directory, segment: segment, older: older)
        catalog.publish(.init(id: segment, bloom: nil, attributes: w.attributes))
        return w
    }

    /// After `run` returned: folds the active index's WAL into its file.
    func close() {
        active?.checkpoint()
    }
}
