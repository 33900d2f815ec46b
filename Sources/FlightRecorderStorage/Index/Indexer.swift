import FlightRecorderSQLite
import Foundation
import Logging

/// The indexer thread: takes the durable groups and indexes them in large SQLite
/// transactions (random span-ID keys make small transactions rewrite many B-tree pages). The
/// index may lag the segments, never lead them.
///
/// `@unchecked Sendable`: only its thread touches the `IndexWriter` until `run` returns;
/// `close` runs after that, ordered by the queue's lock (`awaitDrained`).
final class Indexer: @unchecked Sendable {
    /// How long the indexer gathers blocks into one transaction when nobody is waiting.
    static let gatherInterval: Double = 0.25

    let queue: WriteQueue
    let writer: IndexWriter
    let logger: Logger

    init(queue: WriteQueue, writer: IndexWriter, logger: Logger) {
        self.queue = queue
        self.writer = writer
        self.logger = logger
    }

    /// The thread's body; returns once the writer is done and everything is indexed.
    func run() {
        var lastCommit = Date()
        while let groups = queue.takeBacklog(lastCommit: lastCommit, interval: Self.gatherInterval) {
            var blocks: [DurableBlock] = []
            var segments: [Int64: (indexedBytes: Int, sealed: Bool)] = [:]
            for g in groups {
                blocks += g.blocks
                for s in g.segments {
                    let old = segments[s.id]
                    segments[s.id] = (max(old?.indexedBytes ?? 0, s.indexedBytes), (old?.sealed ?? false) || s.sealed)
                }
            }
            var failure: StorageError?
            do throws(SQLiteError) {
                try writer.index(blocks, segments: segments.map { ($0.key, $0.value.indexedBytes, $0.value.sealed) })
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

    /// After `run` returned: folds the WAL into the database file.
    func close() {
        try? writer.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    }
}
