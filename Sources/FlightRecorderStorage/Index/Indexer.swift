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

    init(queue: WriteQueue, catalog: SegmentCatalog, older: IndexReader, active: SegmentIndexWriter, logger: Logger) {
        self.queue = queue
        self.catalog = catalog
        self.older = older
        self.active = active
        self.logger = logger
    }

    /// The thread's body; returns once the writer is done and everything is indexed.
    func run() {
        var lastCommit = Date()
        while let groups = queue.takeBacklog(lastCommit: lastCommit, interval: Self.gatherInterval) {
            var failure: StorageError?
            do throws(SQLiteError) {
                try index(groups)
            } catch {
                // The segments hold the spans; the next start-up re-indexes them from there.
                logger.error(
                    "indexing failed; restart to re-index from the segments", metadata: ["error": "\(error.message)"])
                failure = StorageError(error)
            }
            lastCommit = Date()
            queue.markIndexed(groups, failure: failure)
        }
    }

    private func index(_ groups: [WriteQueue.DurableGroup]) throws(SQLiteError) {
        var pending: [DurableBlock] = []
        var pendingBytes = 0
        func flush() throws(SQLiteError) {
            guard let active, !pending.isEmpty || pendingBytes > active.indexedBytes else { return }
            try active.index(pending, indexedBytes: pendingBytes)
            pending.removeAll()
        }
        for g in groups {
            for s in g.segments {
                if s.sealed {
                    try flush()
                    if let a = active, a.segment == s.id {
                        try seal(a, indexedBytes: s.indexedBytes)
                        active = nil
                    }
                } else {
                    if active?.segment != s.id {
                        try flush()
                        active = try Self.open(segment: s.id, catalog: catalog, older: older)
                    }
                    pendingBytes = s.indexedBytes
                }
            }
            pending += g.blocks
        }
        try flush()
    }

    /// Seals `writer`'s index at `indexedBytes` and publishes it with its filter.
    func seal(_ writer: SegmentIndexWriter, indexedBytes: Int) throws(SQLiteError) {
        if indexedBytes > writer.indexedBytes { try writer.index([], indexedBytes: indexedBytes) }
        let started = ContinuousClock.now
        let (bloom, keys) = try writer.seal()
        catalog.publish(.init(id: writer.segment, bloom: bloom))
        catalog.publish(group: groups.add(segment: writer.segment, keys: keys))
        logger.info(
            "sealed segment index",
            metadata: ["segment": "\(writer.segment)", "elapsed": "\(ContinuousClock.now - started)"])
        // Sealing freed the segment's in-memory rows and its sort buffers; hand the pages
        // back to the system rather than keep them in the heap's free lists.
        #if os(Linux)
        _ = glibcMallocTrim(0)
        #endif
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

#if os(Linux)
/// glibc's `malloc_trim` (declared in `malloc.h`, which the Glibc module does not export).
@_silgen_name("malloc_trim")
private func glibcMallocTrim(_ pad: Int) -> Int32
#endif
