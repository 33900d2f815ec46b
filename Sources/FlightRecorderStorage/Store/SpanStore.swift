public import FlightRecorderOTLP
import FlightRecorderSQLite
import Foundation
public import Logging
import NIOPosix
public import ServiceLifecycle
import Synchronization

/// The storage engine: durable, compressed, append-only segments, each with its own SQLite index.
///
/// Two threads, one job each, sharing a `WriteQueue`:
/// - `GroupCommitWriter` frames everything queued into LZ4 blocks, appends and fsyncs once
///   per group, then acknowledges the group's callers;
/// - `Indexer` indexes the durable blocks into the active segment's index, and seals it
///   (with a Bloom filter of its keys) when the segment seals.
///
/// The index may lag the segments, never lead them; `read` waits for everything
/// acknowledged before it, so a responder always sees every acknowledged span. The
/// indexer's backlog is bounded: when it is full the writer waits, the queue fills, and
/// clients get a retryable refusal, so memory never grows without bound. The queries
/// themselves live in FlightRecorderQuery; this type only stores and hands out readers.
///
/// `@unchecked Sendable`: shared mutable state is in `WriteQueue` (its own lock); the writer
/// and the indexer are touched only by their threads, and the reader only under `readerLock`.
public final class SpanStore: Service, @unchecked Sendable {
    public let configuration: StoreConfiguration
    let logger: Logger
    /// What start-up read to bring the index up to date with the segments.
    public let recoveryReport: RecoveryReport
    /// Damaged regions of the segments found so far, at start-up or by queries.
    public let damage: DamageLog

    let queue: WriteQueue
    private let writer: GroupCommitWriter
    private let indexer: Indexer
    let readerLock = NSLock()
    private let reader: IndexReader
    let segmentReader: SegmentReader
    /// A second index reader and block cache, with a lock of their own, for background work
    /// (`readInBackground`).
    let backgroundLock = NSLock()
    var backgroundReader: (index: IndexReader, segments: SegmentReader)?
    /// Wakes the purge thread (`startPurge`): an erasure was recorded.
    let purgeWake = DispatchSemaphore(value: 0)
    /// Held by an expiry pass and a purge pass: one deletes segments the other rewrites.
    let maintenance = NSLock()
    private let lock: DirectoryLock
    let stopRebuild = StopFlag()
    let catalog: SegmentCatalog
    /// Segments whose damaged index is being rebuilt; queries answer 503 until it is done.
    let repairs = Repairs()
    private let keyGroupsRebuilt: DispatchGroup
    /// The evidence log, when configured (`StoreConfiguration.evidence`).
    public let evidenceLog: EvidenceLog?
    /// The legal holds in force: expiry never deletes what they cover.
    public let holds: HoldStore
    /// The erasures: what they hide no read returns (`ErasureStore`).
    public let erasures: ErasureStore
    /// Set by an expiry pass that found the store over `retention.maxBytes` with nothing more
    /// allowed to expire: why appends are refused until a later pass finds room.
    let capacityRefusal = Mutex<String?>(nil)
    /// What expiry deleted since start-up: segments, spans, bytes (for `/metrics`).
    let expiredTotals = Mutex<(segments: Int, spans: Int, bytes: Int64)>((0, 0, 0))

    /// Retention's figures for `/metrics`: what expiry deleted since start-up, whether ingest
    /// is refused at `max_bytes`, and the legal holds in force.
    public var retentionGauges: (segments: Int, spans: Int, bytes: Int64, refusing: Bool, holds: Int) {
        let t = expiredTotals.withLock { $0 }
        return (t.segments, t.spans, t.bytes, capacityRefusal.withLock { $0 } != nil, holds.all.count)
    }

    /// Opens (or creates) the data directory, takes its lock, brings the index up to date with
    /// the segments (truncating a torn tail), and starts the writer and indexer threads.
    public init(configuration: StoreConfiguration, logger: Logger) throws(StorageError) {
        self.configuration = configuration
        self.logger = logger
        for dir in [configuration.directory, configuration.segmentDirectory] {
            if mkdir(dir, 0o750) != 0 && errno != EEXIST { throw .io("create \(dir)") }
        }
        lock = try sqlite { () throws(SQLiteError) in try DirectoryLock(directory: configuration.directory) }
        queue = WriteQueue(
            maxQueueBytes: configuration.maxQueueBytes, maxIndexBacklogSpans: configuration.maxIndexBacklogSpans)
        damage = DamageLog(path: configuration.damageLogPath, logger: logger)
        do {
            // A segment rewrite a crash interrupted is finished before anything reads the segments.
            Self.rollForwardRewrites(configuration: configuration, logger: logger)
            holds = try HoldStore(directory: configuration.directory)
            erasures = try ErasureStore(directory: configuration.directory)
            // Before per-segment indexes there was one index for the whole store.
            if access(configuration.legacyIndexPath, F_OK) == 0 {
                for suffix in ["", "-wal", "-shm"] { unlink(configuration.legacyIndexPath + suffix) }
                logger.notice("index layout changed to one index per segment; rebuilding it from the segments")
            }
            let catalog = SegmentCatalog(directory: configuration.segmentDirectory)
            let older = IndexReader(
                catalog: catalog, sealedOnly: true, maxOpenSegments: configuration.maxOpenSegmentIndexes)
            let recovering = StoreRecovery(
                configuration: configuration, catalog: catalog, older: older, damage: damage, logger: logger,
                deferDamagedSealed: true)
            let recovery = try recovering.runReporting()
            recoveryReport = recovery.report
            self.catalog = catalog
            let segment = try SegmentWriter(directory: configuration.segmentDirectory, id: recovery.activeSegment)
            // After recovery cut any torn tail, before the writer appends: the log covers
            // exactly the blocks the segments hold.
            let log = try configuration.evidence.map { (e) throws(StorageError) in
                try EvidenceLog(
                    directory: configuration.evidenceDirectory, segmentDirectory: configuration.segmentDirectory,
                    signer: e.signer, logger: logger)
            }
            evidenceLog = log
            writer = GroupCommitWriter(
                configuration: configuration, queue: queue, segment: segment, log: log, logger: logger)
            let repairs = self.repairs
            indexer = Indexer(
                queue: queue, catalog: catalog, older: older, active: recovery.active,
                activeSegment: recovery.activeSegment, recovery: recovering,
                startupSegments: recovery.report.pendingSegments, logger: logger,
                onRebuilt: { id in _ = repairs.ids.withLock { $0.remove(id) } },
                onDamagedOlder: { id, reason in repairs.request(id, reason) },
                repairing: { repairs.ids.withLock { $0 } })
            reader = IndexReader(
                catalog: catalog, maxOpenSegments: configuration.maxOpenSegmentIndexes,
                filterMemoryBytes: configuration.attributeFilterMemoryBytes)
            reader.erasures = erasures
            segmentReader = SegmentReader(
                directory: configuration.segmentDirectory, cacheBytes: configuration.blockCacheBytes, damage: damage)
            // Segments whose index is rebuilt after start-up are in the list too: their keys
            // cannot be read yet, which ends a group there, so none spans them without their keys.
            keyGroupsRebuilt = KeyGroupBuilder.rebuild(
                segments: (catalog.snapshot.filter { $0.bloom != nil }.map(\.id) + recovery.report.deferredRepairs)
                    .sorted(),
                catalog: catalog, logger: logger, stop: stopRebuild)
        } catch {
            lock.release()
            throw error
        }
        if let first = recoveryReport.pendingSegments.first {
            queue.markIndexFailing(
                .indexBehind(
                    "the index is behind the segments: segments \(first) to \(recoveryReport.pendingSegments.last!) "
                        + "are stored but not indexed yet (start-up could not write the index); retry later"))
        }
        repairs.handler.withLock { h in h = { [weak self] id, reason in self?.repair(segment: id, reason: reason) } }
        let deferred = recoveryReport.deferredRepairs
        if !deferred.isEmpty {
            // Oldest first, one at a time: each consults the older ones. Queries answer 503
            // until they are done; the indexer treats them as absent meanwhile.
            repairs.ids.withLock { $0.formUnion(deferred) }
            let thread = Thread { [self] in
                for id in deferred {
                    // Until it is rebuilt the segment is not in the catalog: keep trying (queries
                    // answer 503 meanwhile, so none answers without its spans).
                    var delay = 1.0
                    while !stopRebuild.isSet {
                        let result = rebuildSealed(id)
                        if result.rebuilt { break }
                        if let other = result.damagedOlder {
                            repair(segment: other, reason: "an older index the rebuild of \(id) read")
                        }
                        Thread.sleep(forTimeInterval: delay)
                        delay = min(delay * 2, 10)
                    }
                    _ = repairs.ids.withLock { $0.remove(id) }
                }
            }
            thread.name = "flightrec-repair"
            thread.start()
        }
        let sealed = recoveryReport.sealedToVerify
        if !sealed.isEmpty {
            let verifier = Thread { [damage, stopRebuild, configuration] in
                StoreRecovery.verifySealed(
                    sealed, directory: configuration.segmentDirectory, damage: damage, stop: stopRebuild)
            }
            verifier.name = "flightrec-verify"
            verifier.start()
        }
        if let onMetrics = configuration.onMetrics {
            // The totals the index holds: the active index's rows now, the sealed ones' read on
            // a thread of their own (counts only add, so live rounds may come first).
            let active = indexer.active?.metrics ?? MetricDeltas()
            _ = indexer.active?.takeUnpublishedMetrics()
            _ = indexer.active?.takeTouchedRuns()
            let sealed = catalog.snapshot.filter { $0.bloom != nil }.map(\.id)
            let directory = configuration.segmentDirectory
            let loader = Thread { [logger] in
                var startup = active
                var failed = 0
                for id in sealed {
                    guard let db = try? SQLiteDatabase(path: IndexSchema.path(directory, id), immutable: true),
                        let rows = try? IndexSchema.metrics(db)
                    else {
                        failed += 1
                        continue
                    }
                    startup.add(rows)
                }
                if failed > 0 {
                    logger.warning(
                        "metrics: some sealed indexes could not be read; their counts are missing until restart",
                        metadata: ["segments": "\(failed)"])
                }
                onMetrics(startup)
            }
            loader.name = "flightrec-metrics-load"
            loader.start()
        }
        if let evidenceLog, let interval = configuration.evidence?.checkpointInterval {
            evidenceLog.startTimer(interval: interval)
        }
        let writerThread = Thread { [writer] in writer.run() }
        writerThread.name = "flightrec-writer"
        writerThread.start()
        let indexerThread = Thread { [indexer] in indexer.run() }
        indexerThread.name = "flightrec-indexer"
        indexerThread.start()
        startExpiry(onExpired: configuration.onExpired)
        startPurge()
    }

    // MARK: Ingest

    /// Returns once `batch` is durable. Throws `overloaded` when the queue is full (the caller
    /// answers with a retryable error) and `shuttingDown` while draining.
    public func append(_ batch: IngestBatch) async throws {
        guard !batch.spans.isEmpty else { return }
        if let refusal = capacityRefusal.withLock({ $0 }) { throw StorageError(code: .atCapacity, message: refusal) }
        try await withCheckedThrowingContinuation { queue.enqueue(batch, $0) }
    }

    /// Returns once everything acknowledged before the call is indexed. Throws `indexBehind`
    /// (retryable) while the indexer fails and retries: the spans are in the segments, and a
    /// query of the index would not see them.
    public func awaitIndexed() async throws {
        try await withCheckedThrowingContinuation { queue.awaitIndexed($0) }
    }

    /// Returns once the key groups of the segments sealed before start-up are rebuilt, with
    /// the segment ranges of every group (tests).
    package func keyGroups() async -> [ClosedRange<Int64>] {
        await withCheckedContinuation { c in keyGroupsRebuilt.notify(queue: .global()) { c.resume() } }
        return reader.catalog.snapshot(ifChangedSince: -1)?.groups.map { $0.first...$0.last } ?? []
    }

    // MARK: Lifecycle

    public func run() async throws {
        try? await gracefulShutdown()
        await close()
    }

    /// Stops accepting, drains and syncs everything queued, and closes the files.
    public func close() async {
        guard queue.beginDraining() else { return }
        stopRebuild.set()
        await withCheckedContinuation { queue.awaitDrained($0) }
        // An expiry or purge pass under way finishes first (a rewrite stops at its next block).
        maintenance.withLock {
            writer.close()
            evidenceLog?.close()
            indexer.close()
            queue.markClosed()
            lock.release()
        }
        logger.info("store closed cleanly")
    }

    // MARK: Reading (blocking work runs on NIO's thread pool, never on an event loop)

    /// Runs `body` with the index and segment readers once everything acknowledged before the
    /// call is indexed (read-your-writes). The query engine (FlightRecorderQuery) reads
    /// through this.
    package func read<T: Sendable>(
        _ body: @escaping @Sendable (IndexReader, SegmentReader) throws -> T
    ) async throws -> T {
        try await awaitIndexed()
        if let busy = repairs.ids.withLock({ $0.min() }) { throw StorageError.indexRebuilding(busy) }
        do {
            return try await NIOThreadPool.singleton.runIfActive { [self] in
                readerLock.lock()
                defer { readerLock.unlock() }
                return try body(reader, segmentReader)
            }
        } catch let error as SQLiteError where error.isDamaged {
            throw repairing(error)
        }
    }

    /// Runs `body` on the calling thread with an index reader and a block cache of its own
    /// (made on first use), over what is indexed now. For background work on a low-priority
    /// thread (the run analyser): it takes no lock a query or the writers take (`readerLock`,
    /// the queries' block cache), so a read the scheduler stretches under load holds up
    /// nobody. (It still takes the catalog's for a version check, and `repair`'s swap waits
    /// for it without holding `readerLock`.)
    package func readInBackground<T>(_ body: (IndexReader, SegmentReader) throws -> T) throws -> T {
        if let busy = repairs.ids.withLock({ $0.min() }) { throw StorageError.indexRebuilding(busy) }
        do {
            backgroundLock.lock()
            defer { backgroundLock.unlock() }
            let readers =
                backgroundReader
                ?? (
                    IndexReader(catalog: catalog, maxOpenSegments: max(1, configuration.maxOpenSegmentIndexes / 4)),
                    SegmentReader(
                        directory: configuration.segmentDirectory, cacheBytes: configuration.blockCacheBytes / 2,
                        damage: damage)
                )
            readers.index.erasures = erasures
            backgroundReader = readers
            return try body(readers.index, readers.segments)
        } catch let error as SQLiteError where error.isDamaged {
            throw repairing(error)
        }
    }

    /// What a read that met a damaged index answers: an index is derived data, so the damaged
    /// one is rebuilt from its segment (`repair`), and the read is told it is being rebuilt.
    private func repairing(_ error: SQLiteError) -> any Error {
        guard let path = error.path, let id = IndexSchema.segment(ofPath: path) else { return error }
        repair(segment: id, reason: error.message)
        return StorageError.indexRebuilding(id)
    }

    /// Moves segment `id`'s damaged index aside and rebuilds it from the segment: a sealed one
    /// on a thread of its own (into a scratch directory, then swapped in), the active one by
    /// the indexer. Ingest goes on; queries answer 503 with Retry-After until it is done.
    func repair(segment id: Int64, reason: String) {
        guard repairs.ids.withLock({ $0.insert(id).inserted }) else { return }
        guard let entry = catalog.snapshot.first(where: { $0.id == id }), entry.bloom != nil else {
            logger.error(
                "active segment index is damaged; the indexer rebuilds it",
                metadata: ["segment": "\(id)", "reason": "\(reason)"])
            queue.requestActiveRebuild(segment: id)
            return
        }
        logger.error(
            "segment index is damaged; rebuilding it from the segment while ingest goes on",
            metadata: ["segment": "\(id)", "reason": "\(reason)"])
        let thread = Thread { [self] in
            let result = rebuildSealed(id)
            _ = repairs.ids.withLock { $0.remove(id) }
            if let after = result.damagedOlder {
                repair(segment: after, reason: "an older index the rebuild of \(id) read")
            }
        }
        thread.name = "flightrec-repair"
        thread.start()
    }

    /// Rebuilds sealed segment `id`'s index from the segment in a scratch directory and swaps
    /// it in (the damaged one, if any, moved aside). Says whether it did, and which other
    /// segment's damaged index made it fail, to rebuild next.
    func rebuildSealed(_ id: Int64) -> (rebuilt: Bool, damagedOlder: Int64?) {
        let started = ContinuousClock.now
        var repairAfter: Int64?
        var rebuilt = false
        // One scratch directory per segment: two repairs may run at once.
        let scratch = configuration.segmentDirectory + "/repair-\(id).tmp"
        Reindexer.removeIndexes(in: scratch)
        mkdir(scratch, 0o750)
        do throws(StorageError) {
            let recovery = StoreRecovery(
                configuration: configuration, catalog: SegmentCatalog(directory: scratch),
                older: IndexReader(catalog: catalog, sealedOnly: true, before: id), damage: damage, logger: logger)
            let bloom = try recovery.rebuildSealed(id)
            let built = IndexSchema.path(scratch, id)
            let target = IndexSchema.path(configuration.segmentDirectory, id)
            // No query reads while the files are swapped (queries hold `readerLock`, background
            // reads `backgroundLock`). The background one first: a low-priority read may hold
            // it for long, and queries must not wait for that behind `readerLock`.
            backgroundLock.lock()
            readerLock.lock()
            let swapped = Result { () throws(StorageError) -> String in
                let aside = IndexSchema.quarantine(target)
                let filter = IndexSchema.attributeFilterPath(built)
                if access(filter, F_OK) == 0, rename(filter, IndexSchema.attributeFilterPath(target)) != 0 {
                    throw .io("replace the attribute filter of segment \(id)")
                }
                guard rename(built, target) == 0 else { throw .io("replace the index of segment \(id)") }
                catalog.replace(id, bloom: bloom)
                return aside
            }
            readerLock.unlock()
            backgroundLock.unlock()
            let aside = try swapped.get()
            rebuilt = true
            logger.notice(
                "rebuilt segment index; the damaged one is kept for diagnosis",
                metadata: [
                    "segment": "\(id)", "moved_to": "\(aside)", "elapsed": "\(ContinuousClock.now - started)",
                ])
        } catch {
            logger.error(
                "rebuilding a damaged segment index failed; a query that meets it again retries",
                metadata: ["segment": "\(id)", "error": "\(error.message)"])
            // Rebuilding reads the older segments' indexes: one of them may be the damaged one.
            if let other = error.damagedIndexPath.flatMap(IndexSchema.segment(ofPath:)), other != id {
                repairAfter = other
            }
        }
        Reindexer.removeIndexes(in: scratch)
        rmdir(scratch)
        return (rebuilt, repairAfter)
    }

    /// The store's health for operators (`GET /api/v1/storage/stats`): whether the index is
    /// failing and how far behind it is, and every damaged region found.
    public var health: StoreHealth {
        StoreHealth(
            indexError: queue.currentIndexFailure?.message, unindexedSpans: queue.unindexedSpans,
            damagedRegions: damage.regions.map {
                .init(segment: $0.segment, offset: $0.offset, bytes: $0.length, reason: $0.reason)
            })
    }

    /// The store's size and backlog, for `/metrics`: segment files and the bytes of everything
    /// under `segments/` (segments, indexes, filters), request bytes queued for the writer,
    /// acknowledged spans not indexed yet, damaged regions found.
    public var gauges: (segments: Int, bytes: Int64, queuedBytes: Int, unindexedSpans: Int, damagedRegions: Int) {
        let dir = configuration.segmentDirectory
        var segments = 0
        var bytes: Int64 = 0
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
            var st = stat()
            guard stat(dir + "/" + name, &st) == 0 else { continue }
            bytes += Int64(st.st_size)
            if name.hasSuffix(".frs") { segments += 1 }
        }
        return (segments, bytes, queue.bytesQueued, queue.unindexedSpans, damage.count)
    }

    /// Row counts of the index tables (tests, `reindex` report).
    public func indexCounts() async throws -> [String: Int64] {
        try await read { r, _ in try r.counts() }
    }
}

/// `GET /api/v1/storage/stats`: the index's state and the damaged regions found so far.
public struct StoreHealth: Sendable, Codable {
    public struct Region: Sendable, Codable {
        public var segment: Int64
        public var offset: Int
        public var bytes: Int
        public var reason: String
    }

    /// Why indexing fails, while it retries; nil when it keeps up.
    public var indexError: String?
    /// Acknowledged spans not indexed yet (queries wait for them, or answer 503 while
    /// indexing fails).
    public var unindexedSpans: Int
    public var damagedRegions: [Region]
}

/// The segments whose index is being rebuilt (shared with the indexer's callbacks), and who
/// rebuilds a damaged one the indexer meets (the store, set once it is initialized).
final class Repairs: Sendable {
    let ids = Mutex<Set<Int64>>([])
    let handler = Mutex<(@Sendable (Int64, String) -> Void)?>(nil)

    func request(_ id: Int64, _ reason: String) { handler.withLock { $0 }?(id, reason) }
}
