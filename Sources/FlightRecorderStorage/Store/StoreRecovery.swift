import FlightRecorderOTLP
import FlightRecorderSQLite
import Foundation
public import Logging

/// What start-up (or `reindex`) had to read to bring the index up to date.
public struct RecoveryReport: Sendable, Equatable {
    /// Segments whose unindexed tail was read.
    public var scannedSegments = 0
    /// Segments the index already covered; not opened.
    public var skippedSegments = 0
    public var indexedBlocks = 0
    public var indexedSpans = 0
    /// Bytes of torn tail cut off the last segment.
    public var truncatedBytes = 0
    /// Bytes of damage skipped (never truncated).
    public var corruptBytes = 0
}

/// Brings the index up to date with the segments at start-up.
///
/// Only what the index has not covered is read: a sealed segment whose indexed size equals
/// its file size is skipped without being opened. The tail past the indexed size is scanned
/// block by block; a torn tail (an append cut off by a crash) fails its checksum and is
/// truncated, with the byte count logged. Damage followed by valid blocks is corruption, not
/// a crash: it is logged and skipped, never truncated.
struct StoreRecovery {
    let configuration: StoreConfiguration
    let index: IndexWriter
    let logger: Logger

    /// Returns the id of the segment to append to next.
    func runReporting() throws(StorageError) -> (activeSegment: Int64, report: RecoveryReport) {
        let dir = configuration.segmentDirectory
        let ids = SegmentFile.list(dir)
        let states = try sqlite { () throws(SQLiteError) in try index.segmentStates() }
        var report = RecoveryReport()
        for id in ids {
            let path = SegmentFile.path(dir, id)
            let isLast = id == ids.last
            let size = Self.fileSize(path)
            let state = states[id]
            if let state, state.indexedBytes == size, state.sealed || isLast {
                report.skippedSegments += 1
                continue
            }
            report.scannedSegments += 1
            let start = state?.indexedBytes ?? SegmentFile.headerSize
            let scan = try SegmentScanner(path: path).scan(from: start)
            for region in scan.corruptRegions {
                report.corruptBytes += region.length
                logger.error(
                    "segment has a damaged region; skipped (not truncated)",
                    metadata: ["segment": "\(id)", "offset": "\(region.offset)", "bytes": "\(region.length)"])
            }
            var validEnd = scan.validEnd
            if scan.tornBytes > 0 {
                if isLast {
                    guard truncate(path, off_t(scan.validEnd)) == 0 else { throw .io("truncate \(path)") }
                    report.truncatedBytes += scan.tornBytes
                    logger.warning(
                        "truncated torn tail of segment",
                        metadata: ["segment": "\(id)", "bytes": "\(scan.tornBytes)", "offset": "\(scan.validEnd)"])
                } else {
                    report.corruptBytes += scan.tornBytes
                    validEnd = size
                    logger.error(
                        "sealed segment ends in damaged bytes; left in place",
                        metadata: ["segment": "\(id)", "bytes": "\(scan.tornBytes)"])
                }
            }
            // Index in chunks so memory stays bounded on large segments.
            var chunk: [DurableBlock] = []
            let reader = SegmentReader(directory: dir)
            for (n, block) in scan.blocks.enumerated() {
                let raw = try reader.readBlock(segment: id, offset: block.offset, length: block.header.frameLength)
                if let facts = IndexFacts.extract(
                    raw, runIdentity: configuration.runIdentity, indexedKeys: configuration.indexedKeys)
                {
                    var batch = IngestBatch(payload: [], spans: facts.spans, resources: facts.resources)
                    batch.indexed = facts.indexed
                    chunk.append(
                        DurableBlock(
                            segment: id, offset: block.offset, length: block.header.frameLength,
                            spanCount: batch.spans.count, batches: [batch]))
                    report.indexedSpans += batch.spans.count
                } else {
                    logger.error(
                        "stored block does not decode; skipped",
                        metadata: ["segment": "\(id)", "offset": "\(block.offset)"])
                }
                report.indexedBlocks += 1
                if chunk.count == 64 || n == scan.blocks.count - 1 {
                    let upTo = n == scan.blocks.count - 1 ? validEnd : block.offset + block.header.frameLength
                    try sqlite { () throws(SQLiteError) in try index.index(chunk, segments: [(id, upTo, !isLast)]) }
                    chunk.removeAll()
                }
            }
            if scan.blocks.isEmpty {
                try sqlite { () throws(SQLiteError) in try index.index([], segments: [(id, validEnd, !isLast)]) }
            }
        }
        if report.scannedSegments > 0 {
            logger.info(
                "index caught up with segments",
                metadata: [
                    "scanned_segments": "\(report.scannedSegments)", "skipped_segments": "\(report.skippedSegments)",
                    "blocks": "\(report.indexedBlocks)", "spans": "\(report.indexedSpans)",
                ])
        }
        return (ids.last ?? 1, report)
    }

    static func fileSize(_ path: String) -> Int {
        var st = stat()
        return stat(path, &st) == 0 ? Int(st.st_size) : 0
    }
}

/// Rebuilds the index from the segments alone, into a new file swapped in atomically.
public enum Reindexer {
    public struct Summary: Sendable {
        public var segments: Int
        public var blocks: Int
        public var spans: Int
        public var truncatedBytes: Int
        public var corruptBytes: Int
    }

    /// Requires the data directory to be free (no running daemon).
    public static func rebuild(configuration: StoreConfiguration, logger: Logger) throws(StorageError) -> Summary {
        let lock = try sqlite { () throws(SQLiteError) in try DirectoryLock(directory: configuration.directory) }
        defer { lock.release() }
        let fresh = configuration.indexPath + ".rebuild"
        for suffix in ["", "-wal", "-shm"] { unlink(fresh + suffix) }
        let report: RecoveryReport
        do {
            let writer = try sqlite { () throws(SQLiteError) in try IndexWriter(path: fresh) }
            report = try StoreRecovery(configuration: configuration, index: writer, logger: logger).runReporting()
                .report
            try sqlite { () throws(SQLiteError) in try writer.db.execute("PRAGMA wal_checkpoint(TRUNCATE)") }
        }
        for suffix in ["-wal", "-shm"] { unlink(configuration.indexPath + suffix) }
        guard rename(fresh, configuration.indexPath) == 0 else { throw .io("replace \(configuration.indexPath)") }
        for suffix in ["-wal", "-shm"] { unlink(fresh + suffix) }
        return Summary(
            segments: report.scannedSegments + report.skippedSegments, blocks: report.indexedBlocks,
            spans: report.indexedSpans, truncatedBytes: report.truncatedBytes, corruptBytes: report.corruptBytes)
    }
}
