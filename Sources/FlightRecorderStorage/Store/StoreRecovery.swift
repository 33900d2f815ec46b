import FlightRecorderCore
import FlightRecorderOTLP
import FlightRecorderSQLite
import Foundation
public import Logging

/// What start-up (or `reindex`) had to read to bring the index up to date.
public struct RecoveryReport: Sendable {
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
    /// Indexes found damaged, moved aside and rebuilt from their segments.
    public var rebuiltIndexes = 0
    /// Sealed segments whose damaged index was moved aside at start-up, to rebuild online.
    public var deferredRepairs: [Int64] = []
    /// Sealed segments whose header and last block are read after start-up (`verifySealed`).
    public var sealedToVerify: [(id: Int64, lastBlock: (offset: Int, length: Int)?)] = []
    /// Segments whose index start-up could not write (a full disk), oldest first: the indexer
    /// indexes them, and queries answer 503 until it has.
    public var pendingSegments: [Int64] = []
}

/// Brings every segment's index up to date with the segments at start-up.
///
/// Only what the indexes have not covered is read: a sealed segment whose sealed index
/// covers its whole file is not opened, only its index's Bloom filter is loaded. The tail past
/// the indexed size is scanned block by block; a torn tail (an append cut off by a crash)
/// fails its checksum and is truncated, with the byte count logged. Damage followed by valid
/// blocks is corruption, not a crash: it is logged and skipped, never truncated. Segments are
/// indexed oldest first, since a segment's index consults the older ones.
struct StoreRecovery {
    let configuration: StoreConfiguration
    let catalog: SegmentCatalog
    let older: IndexReader
    let damage: DamageLog
    let logger: Logger
    /// A damaged sealed index is left to be rebuilt online after start-up (the daemon), not
    /// before it (`reindex`, which must build every index).
    var deferDamagedSealed = false

    /// Returns the index writer of the segment to append to next (nil when start-up left that
    /// segment to the indexer: `report.pendingSegments` then lists it) and that segment's ID.
    func runReporting() throws(StorageError) -> (
        active: SegmentIndexWriter?, activeSegment: Int64, report: RecoveryReport
    ) {
        let dir = configuration.segmentDirectory
        var ids = SegmentFile.list(dir)
        if ids.isEmpty { ids = [1] }
        var report = RecoveryReport()
        var active: SegmentIndexWriter?
        // A long rebuild (indexes lost or damaged) says how far it is, every few seconds.
        let progress = LogLimiter(interval: .seconds(3))
        let sealed = Self.sealedStates(directory: catalog.directory, ids: ids.dropLast())
        for (n, id) in ids.enumerated() {
            let isLast = id == ids.last
            let scannedBefore = report.scannedSegments
            defer {
                if report.scannedSegments > scannedBefore {
                    progress.log(
                        logger, .notice, reason: "progress", "indexing segments from their files",
                        metadata: [
                            "segment": "\(id)", "done": "\(n + 1)", "of": "\(ids.count)",
                            "spans": "\(report.indexedSpans)",
                        ])
                }
            }
            do throws(StorageError) {
                // Once one segment is left to the indexer, later ones that need writing are too,
                // so segments are still indexed oldest first.
                let done = try recover(
                    id, isLast: isLast, sealed: sealed[id], report: &report, active: &active,
                    readOnly: !report.pendingSegments.isEmpty)
                if !done { report.pendingSegments.append(id) }
            } catch  where error.isRetryable {
                // A full disk or a failing device must not keep the daemon from starting: the
                // spans are in the segments, the indexer indexes them once it can, and queries
                // answer 503 naming what is not indexed until then.
                logger.error(
                    "start-up could not write a segment's index; the indexer retries",
                    metadata: ["segment": "\(id)", "error": "\(error.message)"])
                report.pendingSegments.append(id)
                if isLast {
                    active = nil
                    try truncateTornTail(id)
                }
            } catch {
                throw StorageError(code: error.code, message: "segment \(id): \(error.message)")
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
        return (active, ids.last!, report)
    }

    /// The states of the sealed indexes of `ids` (`SegmentIndexWriter.sealedState`), read by
    /// several threads at once. On a cold page cache each is a few small reads of its own
    /// file; one after another they were most of the time to the API after the host dropped its
    /// cache (about 0.7 s for 62 segments), and the disk serves several reads at once.
    static func sealedStates(
        directory: String, ids: ArraySlice<Int64>
    ) -> [Int64: SegmentIndexWriter.SealedState] {
        final class Shared: @unchecked Sendable {
            let lock = NSLock()
            var next = 0
            var states: [Int64: SegmentIndexWriter.SealedState] = [:]
        }
        let ids = Array(ids)
        let shared = Shared()
        let done = DispatchGroup()
        for _ in 0..<min(8, ids.count) {
            done.enter()
            Thread {
                while true {
                    let i = shared.lock.withLock {
                        defer { shared.next += 1 }
                        return shared.next
                    }
                    guard i < ids.count else { break }
                    guard let state = SegmentIndexWriter.sealedState(directory: directory, segment: ids[i]) else {
                        continue
                    }
                    shared.lock.withLock { shared.states[ids[i]] = state }
                }
                done.leave()
            }.start()
        }
        done.wait()
        return shared.lock.withLock { shared.states }
    }

    /// Brings segment `id`'s index up to date; false when it is left to the indexer. With
    /// `readOnly` only a sealed index that covers its segment is taken; anything that needs
    /// writing answers false. `sealed` is its sealed index's state, if it has one.
    private func recover(
        _ id: Int64, isLast: Bool, sealed: SegmentIndexWriter.SealedState?, report: inout RecoveryReport,
        active: inout SegmentIndexWriter?, readOnly: Bool
    ) throws(StorageError) -> Bool {
        let dir = configuration.segmentDirectory
        let path = SegmentFile.path(dir, id)
        let size = SegmentFile.fileSize(path: path)
        let indexPath = IndexSchema.path(catalog.directory, id)
        if isLast { Self.verifyHeader(id, path: path, size: size, damage: damage) }
        if !isLast, let sealed, sealed.indexedBytes >= size {
            // A sealed segment shorter than its index lost its end: the index keeps naming
            // those runs, whose lost blocks read as damage, so nothing becomes "unknown".
            if sealed.indexedBytes > size {
                reportTruncation(id, size: size, indexed: sealed.indexedBytes)
            } else {
                // Nothing is appended to a sealed segment: its header and last block are read
                // after start-up, on a thread of their own (`verifySealed`), not on the API's
                // way up.
                report.sealedToVerify.append((id, sealed.lastBlock))
            }
            catalog.publish(.init(id: id, bloom: sealed.bloom))
            report.skippedSegments += 1
            return true
        }
        if readOnly {
            if isLast { try truncateTornTail(id) }
            return false
        }
        if let reason = IndexSchema.check(indexPath) {
            let aside = IndexSchema.quarantine(indexPath)
            report.rebuiltIndexes += 1
            if deferDamagedSealed && !isLast {
                // Rebuilt after start-up, while the daemon serves (`SpanStore.repair`).
                logger.error(
                    "segment index is damaged; moved aside, rebuilt from the segment once the daemon is up",
                    metadata: ["segment": "\(id)", "reason": "\(reason)", "moved_to": "\(aside)"])
                report.deferredRepairs.append(id)
                return true
            }
            logger.error(
                "segment index is damaged; moved aside and rebuilt from the segment",
                metadata: ["segment": "\(id)", "reason": "\(reason)", "moved_to": "\(aside)"])
        }
        let index = try sqlite { () throws(SQLiteError) in
            try SegmentIndexWriter(directory: catalog.directory, segment: id, older: older)
        }
        if index.needsMetricsRecount, let rules = configuration.metricRules {
            try recountMetrics(id, path: path, into: index, rules: rules)
        }
        if index.indexedBytes > size {
            // The segment lost bytes the index recorded (truncated while the daemon was
            // down). The file is extended back to the indexed length with zeros, so new
            // blocks never land at offsets the index gives to lost ones: those read as
            // damage, and their runs stay known.
            reportTruncation(id, size: size, indexed: index.indexedBytes)
            guard truncate(path, off_t(index.indexedBytes)) == 0 else { throw .io("extend \(path)") }
        } else if index.indexedBytes == size,
            let last = try sqlite({ () throws(SQLiteError) in try SegmentIndexWriter.lastBlock(index.db) })
        {
            Self.verifyBlock(id, path: path, last, damage: damage)
        }
        if size <= SegmentFile.headerSize || index.indexedBytes >= size {
            report.skippedSegments += 1
        } else {
            try scan(id, path: path, size: size, isLast: isLast, into: index, report: &report)
        }
        if isLast {
            catalog.publish(.init(id: id, bloom: nil, attributes: index.attributes))
            active = index
        } else {
            let bloom = try sqlite { () throws(SQLiteError) in try index.seal().bloom }
            catalog.publish(.init(id: id, bloom: bloom))
        }
        return true
    }

    /// Cuts a torn tail off the last segment without touching its index (left to the indexer),
    /// so appends continue on a block boundary.
    private func truncateTornTail(_ id: Int64) throws(StorageError) {
        let path = SegmentFile.path(configuration.segmentDirectory, id)
        let scan = try SegmentScanner(path: path).scan(from: SegmentFile.headerSize)
        guard scan.tornBytes > 0 else { return }
        guard truncate(path, off_t(scan.validEnd)) == 0 else { throw .io("truncate \(path)") }
        logger.warning(
            "truncated torn tail of segment",
            metadata: ["segment": "\(id)", "bytes": "\(scan.tornBytes)", "offset": "\(scan.validEnd)"])
    }

    /// Reads the header and last block of each sealed segment start-up skipped, reporting
    /// damage; runs after start-up, on the caller's thread.
    static func verifySealed(
        _ segments: [(id: Int64, lastBlock: (offset: Int, length: Int)?)], directory: String, damage: DamageLog,
        stop: StopFlag
    ) {
        for (id, last) in segments where !stop.isSet {
            let path = SegmentFile.path(directory, id)
            verifyHeader(id, path: path, size: SegmentFile.fileSize(path: path), damage: damage)
            if let last { verifyBlock(id, path: path, last, damage: damage) }
        }
    }

    /// A segment whose header is not its own (a flipped byte, zeros): reported, not fatal,
    /// since every block carries its own header and checksum.
    private static func verifyHeader(_ id: Int64, path: String, size: Int, damage: DamageLog) {
        guard size >= SegmentFile.headerSize else { return }
        // (A segment retention deleted meanwhile is not damaged.)
        if !SegmentFile.hasOwnHeader(path: path, id: id) && access(path, F_OK) == 0 {
            damage.report(
                .init(segment: id, offset: 0, length: SegmentFile.headerSize, reason: "segment header damaged"))
        }
    }

    /// Reads the last block the index records and verifies its checksum, so damage at a
    /// segment's end is reported at start-up, before anything is appended after it.
    private static func verifyBlock(_ id: Int64, path: String, _ block: (offset: Int, length: Int), damage: DamageLog) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var frame = [UInt8](repeating: 0, count: block.length)
        let n = frame.withUnsafeMutableBytes { SegmentFile.preadFully(fd, $0, at: block.offset) }
        if n != block.length || frame.withUnsafeBytes({ BlockCodec.verify(frame: $0) }) == nil {
            damage.report(
                .init(segment: id, offset: block.offset, length: block.length, reason: "last block fails its checksum"))
        }
    }

    /// A segment shorter than its index says: the lost range is reported; the runs it held
    /// are flagged once a query resolves them through the index.
    private func reportTruncation(_ id: Int64, size: Int, indexed: Int) {
        damage.report(
            .init(
                segment: id, offset: size, length: indexed - size,
                reason: "segment is shorter than its index (truncated): \(indexed - size) bytes lost"))
    }

    /// Builds sealed segment `id`'s index afresh in `catalog.directory` (a scratch directory)
    /// from the whole segment, and seals it; returns its Bloom filter.
    func rebuildSealed(_ id: Int64, segmentDirectory: String? = nil) throws(StorageError) -> BloomFilter {
        let path = SegmentFile.path(segmentDirectory ?? configuration.segmentDirectory, id)
        IndexSchema.remove(IndexSchema.path(catalog.directory, id))
        let index = try sqlite { () throws(SQLiteError) in
            try SegmentIndexWriter(directory: catalog.directory, segment: id, older: older)
        }
        var report = RecoveryReport()
        try scan(
            id, path: path, size: SegmentFile.fileSize(path: path), isLast: false, into: index, report: &report,
            segmentDirectory: segmentDirectory)
        return try sqlite { () throws(SQLiteError) in try index.seal().bloom }
    }

    /// Indexes the active segment `index` from where it stands up to `durableEnd`, while the
    /// writer appends beyond it: nothing is truncated, and only whole, durable blocks are read.
    func catchUp(_ index: SegmentIndexWriter, durableEnd: Int) throws(StorageError) {
        let path = SegmentFile.path(configuration.segmentDirectory, index.segment)
        if index.needsMetricsRecount, let rules = configuration.metricRules {
            try recountMetrics(index.segment, path: path, into: index, rules: rules)
        }
        var report = RecoveryReport()
        try scan(index.segment, path: path, size: durableEnd, isLast: false, into: index, report: &report, live: true)
    }

    /// Counts the metrics of the blocks `index` indexed after its `metrics` rows were last
    /// written (the daemon stopped without closing the index), from the segment.
    private func recountMetrics(
        _ id: Int64, path: String, into index: SegmentIndexWriter, rules: MetricRules
    ) throws(StorageError) {
        let scan = try SegmentScanner(path: path).scan(
            from: max(index.metricsBytes, SegmentFile.headerSize), to: index.indexedBytes)
        let reader = SegmentReader(directory: configuration.segmentDirectory)
        var d = MetricDeltas()
        for block in scan.blocks {
            let raw = try reader.readBlock(segment: id, offset: block.offset, length: block.header.frameLength)
            if let facts = IndexFacts.extract(
                raw, runIdentity: configuration.runIdentity, indexedKeys: configuration.indexedKeys, metrics: rules)
            {
                d.add(facts.metrics)
            }
        }
        index.recountedMetrics(d)
        logger.info(
            "recounted the metrics of blocks indexed after the last metrics write",
            metadata: ["segment": "\(id)", "blocks": "\(scan.blocks.count)"])
    }

    private func scan(
        _ id: Int64, path: String, size: Int, isLast: Bool, into index: SegmentIndexWriter,
        report: inout RecoveryReport,
        live: Bool = false, segmentDirectory: String? = nil
    ) throws(StorageError) {
        let dir = segmentDirectory ?? configuration.segmentDirectory
        report.scannedSegments += 1
        let start = max(index.indexedBytes, SegmentFile.headerSize)
        let scan = try SegmentScanner(path: path).scan(from: start, to: live ? size : nil)
        for region in scan.corruptRegions {
            report.corruptBytes += region.length
            damage.report(
                .init(
                    segment: id, offset: region.offset, length: region.length,
                    reason: "damaged bytes followed by valid blocks (skipped, not truncated)"))
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
                damage.report(
                    .init(
                        segment: id, offset: scan.validEnd, length: scan.tornBytes,
                        reason: "sealed segment ends in damaged bytes (left in place)"))
            }
        }
        // Index in chunks so memory stays bounded on large segments.
        var chunk: [DurableBlock] = []
        let reader = SegmentReader(directory: dir)
        for (n, block) in scan.blocks.enumerated() {
            let raw = try reader.readBlock(segment: id, offset: block.offset, length: block.header.frameLength)
            if let facts = IndexFacts.extract(
                raw, runIdentity: configuration.runIdentity, indexedKeys: configuration.indexedKeys,
                metrics: configuration.metricRules)
            {
                var batch = IngestBatch(payload: [], spans: facts.spans, resources: facts.resources)
                batch.indexed = facts.indexed
                batch.metrics = facts.metrics
                chunk.append(
                    DurableBlock(
                        segment: id, offset: block.offset, length: block.header.frameLength,
                        spanCount: batch.spans.count, batches: [batch]))
                report.indexedSpans += batch.spans.count
            } else {
                damage.report(
                    .init(
                        segment: id, offset: block.offset, length: block.header.frameLength,
                        reason: "block passes its checksum but does not decode (skipped)"))
            }
            report.indexedBlocks += 1
            if chunk.count == 64 || n == scan.blocks.count - 1 {
                let upTo = n == scan.blocks.count - 1 ? validEnd : block.offset + block.header.frameLength
                try sqlite { () throws(SQLiteError) in try index.index(chunk, indexedBytes: upTo) }
                chunk.removeAll()
            }
        }
        if scan.blocks.isEmpty {
            try sqlite { () throws(SQLiteError) in try index.index([], indexedBytes: validEnd) }
        }
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

    /// Requires the data directory to be free (no running daemon). Every segment's index is
    /// built afresh in a scratch directory, then moved over the old ones.
    public static func rebuild(configuration: StoreConfiguration, logger: Logger) throws(StorageError) -> Summary {
        let lock = try sqlite { () throws(SQLiteError) in try DirectoryLock(directory: configuration.directory) }
        defer { lock.release() }
        let scratch = configuration.directory + "/reindex.tmp"
        Self.removeIndexes(in: scratch)
        rmdir(scratch)
        guard mkdir(scratch, 0o750) == 0 else { throw .io("create \(scratch)") }
        let report: RecoveryReport
        do {
            let catalog = SegmentCatalog(directory: scratch)
            let older = IndexReader(catalog: catalog, sealedOnly: true)
            let damage = DamageLog(path: configuration.damageLogPath, logger: logger)
            let recovery = StoreRecovery(
                configuration: configuration, catalog: catalog, older: older, damage: damage, logger: logger)
            let (active, _, r) = try recovery.runReporting()
            guard let active, r.pendingSegments.isEmpty else {
                throw .sqlite(
                    "could not write the rebuilt index of segments \(r.pendingSegments.map(String.init).joined(separator: ", ")) (the log says why)"
                )
            }
            active.checkpoint()
            report = r
        }
        Self.removeIndexes(in: configuration.segmentDirectory)
        for id in SegmentFile.list(configuration.segmentDirectory) {
            let from = IndexSchema.path(scratch, id)
            guard access(from, F_OK) == 0 else { continue }
            let to = IndexSchema.path(configuration.segmentDirectory, id)
            // The attribute log (active) or filter (sealed) first: the index names the log's length.
            for (companion, what) in [
                (IndexSchema.attributesPath, "attribute log"), (IndexSchema.attributeFilterPath, "attribute filter"),
            ] {
                let path = companion(from)
                if access(path, F_OK) == 0, rename(path, companion(to)) != 0 {
                    throw .io("replace the \(what) of segment \(id)")
                }
            }
            guard rename(from, to) == 0 else { throw .io("replace the index of segment \(id)") }
        }
        Self.removeIndexes(in: scratch)
        rmdir(scratch)
        return Summary(
            segments: report.scannedSegments + report.skippedSegments, blocks: report.indexedBlocks,
            spans: report.indexedSpans, truncatedBytes: report.truncatedBytes, corruptBytes: report.corruptBytes)
    }

    static func removeIndexes(in directory: String) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for n in names
        where [".idx", ".idx-wal", ".idx-shm", ".attrs", ".attrfilter", ".attrfilter.tmp"].contains(where: n.hasSuffix)
        {
            unlink(directory + "/" + n)
        }
    }
}
