public import FlightRecorderEvidence
import Foundation

/// `flightrec verify --data`: checks a store against its evidence log, offline, with the
/// daemon stopped or running. Recomputes every span's leaf from the segments and checks:
/// every block against the log's block records and tiles, every checkpoint's signature, and
/// every checkpoint's root against the tree the segments give (which also shows consecutive
/// checkpoints consistent: both are prefixes of one tree).
public enum EvidenceVerifier {
    public struct Problem: Sendable, CustomStringConvertible {
        public var segment: Int64?
        public var offset: Int?
        /// The checkpoint concerned: its number in the file (from 1), size and signed time.
        public var checkpoint: (number: Int, size: UInt64, time: UInt64?)?
        public var message: String

        public var description: String {
            var place: [String] = []
            if let segment { place.append("segment \(segment)") }
            if let offset { place.append("offset \(offset)") }
            if let c = checkpoint {
                place.append("checkpoint \(c.number) (size \(c.size)\(c.time.map { ", signed at \($0)" } ?? ""))")
            }
            return (place.isEmpty ? "" : place.joined(separator: ", ") + ": ") + message
        }
    }

    public struct Report: Sendable {
        public var problems: [Problem] = []
        public var blocks = 0
        public var leaves: UInt64 = 0
        public var checkpoints = 0
        /// Segments that expired with a signed receipt (`ExpiryReceipt`), and their leaves:
        /// the tree over them was checked from the receipts' kept leaves and the log's tiles.
        public var expiredSegments = 0
        public var expiredLeaves: UInt64 = 0
        /// Checkpoints whose size fell inside an expired range: signed and checked for
        /// order, but their root can no longer be recomputed.
        public var checkpointsWithinExpired = 0
        /// Spans erased by `flightrec erase` (holes a signed `SegmentRewrite` names), the
        /// segments they were erased from, and the erasures completed (`ErasureReceipt`).
        public var erasedLeaves: UInt64 = 0
        public var rewrittenSegments = 0
        public var erasureReceipts: [ErasureReceipt] = []
        /// The largest time between consecutive signed checkpoints, and where it ends.
        public var longestGap: (seconds: UInt64, endingAt: UInt64)?
        /// The newest checkpoint that verified, as stored.
        public var latest: SignedNote?
        public var ok: Bool { problems.isEmpty }
    }

    struct StoredCheckpoint {
        var number: Int
        var note: SignedNote
        var checkpoint: Checkpoint
        var time: UInt64?
    }

    /// The checkpoints file's notes, each a decimal length line then the note.
    static func readCheckpoints(_ bytes: [UInt8]) -> (notes: [String], damagedAt: Int?) {
        var notes: [String] = []
        var at = 0
        while at < bytes.count {
            guard let newline = bytes[at...].firstIndex(of: 0x0A), newline - at <= 8,
                let length = Int(String(decoding: bytes[at..<newline], as: UTF8.self))
            else { return (notes, at) }
            // The last note, still being written by a running daemon: not damage.
            if newline + 1 + length > bytes.count { return (notes, nil) }
            notes.append(String(decoding: bytes[(newline + 1)..<(newline + 1 + length)], as: UTF8.self))
            at = newline + 1 + length
        }
        return (notes, nil)
    }

    /// Verifies the store in `dataDirectory` against the checkpoints `key` signed.
    public static func verify(dataDirectory: String, key: NoteVerifier) -> Report {
        var report = Report()
        let configuration = StoreConfiguration(directory: dataDirectory)
        let logDirectory = configuration.evidenceDirectory
        func problem(_ message: String, segment: Int64? = nil, offset: Int? = nil, checkpoint: StoredCheckpoint? = nil)
        {
            report.problems.append(
                Problem(
                    segment: segment, offset: offset,
                    checkpoint: checkpoint.map { ($0.number, $0.checkpoint.size, $0.time) }, message: message))
        }

        // Checkpoints: signed by the key, for this log, sizes never shrinking.
        let (notes, damagedAt) = readCheckpoints(EvidenceLog.readFile(logDirectory + "/checkpoints"))
        if let damagedAt { problem("log/checkpoints is damaged at byte \(damagedAt); later checkpoints unread") }
        var checkpoints: [StoredCheckpoint] = []
        for (i, text) in notes.enumerated() {
            let number = i + 1
            do {
                let note = try SignedNote(parsing: text)
                let verified = try key.verify(note)
                let c = try Checkpoint(text: note.text)
                let stored = StoredCheckpoint(number: number, note: note, checkpoint: c, time: verified.time)
                if c.origin != key.name {
                    problem("checkpoint of another log (origin \(c.origin))", checkpoint: stored)
                    continue
                }
                if let previous = checkpoints.last {
                    if c.size < previous.checkpoint.size {
                        problem(
                            "the tree shrank from \(previous.checkpoint.size) leaves (checkpoint \(previous.number))",
                            checkpoint: stored)
                    }
                    if let t = stored.time, let p = previous.time {
                        if t < p { problem("signed before checkpoint \(previous.number)", checkpoint: stored) }
                        if t > p, t - p > (report.longestGap?.seconds ?? 0) { report.longestGap = (t - p, t) }
                    }
                }
                checkpoints.append(stored)
            } catch {
                report.problems.append(
                    Problem(segment: nil, offset: nil, checkpoint: (number, 0, nil), message: error.description))
            }
        }
        report.checkpoints = checkpoints.count
        guard !checkpoints.isEmpty else {
            problem("no checkpoint signed by \(key.encoded)")
            return report
        }

        // The log's own records and tiles.
        let recordBytes = EvidenceLog.readFile(logDirectory + "/blocks")
        let (records, validBytes) = EvidenceLog.readRecords(recordBytes)
        if validBytes < recordBytes.count {
            problem("log/blocks: record \(validBytes / EvidenceLog.recordBytes + 1) is damaged or out of sequence")
        }
        let tiles = EvidenceLog.readTiles(EvidenceLog.readFile(logDirectory + "/tiles"))
        var byChecksum: [UInt32: [Int]] = [:]
        for (i, r) in records.enumerated() { byChecksum[r.checksum, default: []].append(i) }

        // Every block the segments hold, in order, against the records; the tree they give.
        var frontier = TreeFrontier()
        var next = 0  // the record the next block should match
        var pendingCheckpoints = checkpoints[...]
        func blocksOf(tile: Int) -> String {
            let first = UInt64(tile) * EvidenceLog.tileLeaves
            let last = first + EvidenceLog.tileLeaves
            let names = records.filter { $0.firstLeaf < last && $0.endLeaf > first }.map {
                "segment \($0.segment) offset \($0.offset)"
            }
            return names.isEmpty ? "no recorded block" : names.joined(separator: "; ")
        }
        func checkRoots() {
            while let c = pendingCheckpoints.first, c.checkpoint.size <= frontier.size {
                if c.checkpoint.size == frontier.size, frontier.root != c.checkpoint.root {
                    problem(
                        "the segments do not give the signed root: spans covered by this checkpoint were changed, "
                            + "removed, added or reordered",
                        checkpoint: c)
                }
                pendingCheckpoints.removeFirst()
            }
        }
        checkRoots()
        let segmentDirectory = configuration.segmentDirectory
        let segments = SegmentFile.list(segmentDirectory)
        let present = Set(segments)
        let (receiptList, receiptProblems) = ExpiryReceipt.read(directory: logDirectory, verifier: key)
        for p in receiptProblems { problem(p) }
        var receipts: [Int64: ExpiryReceipt] = [:]
        for r in receiptList { receipts[r.segment] = r }
        let (rewriteList, rewriteProblems) = SegmentRewrite.read(directory: logDirectory, verifier: key)
        for p in rewriteProblems { problem(p) }
        let (rewritten, erasedLeaves) = SegmentRewrite.latest(rewriteList)
        report.rewrittenSegments = rewritten.count
        let (erasureList, erasureProblems) = ErasureReceipt.read(directory: logDirectory, verifier: key)
        for p in erasureProblems { problem(p) }
        report.erasureReceipts = erasureList
        /// Holes at `next`: leaves an erasure removed, taken from the signed rewrites.
        func holes() {
            while next < records.count, records[next].isHole {
                let r = records[next]
                for leaf in r.firstLeaf..<r.endLeaf {
                    guard let hash = erasedLeaves[leaf] else {
                        problem(
                            "leaf \(leaf) is recorded as erased, but no signed rewrite names it (removed by hand?)",
                            segment: r.segment)
                        return
                    }
                    appendLeaf(hash)
                }
                report.erasedLeaves += UInt64(r.spans)
                next += 1
            }
        }
        /// Records of expired segments at `next`: their leaves are taken from the receipt
        /// (kept leaves) and the tiles (whole tiles), the segment being gone.
        func expiredRecords() {
            while next < records.count, !present.contains(records[next].segment),
                let receipt = receipts[records[next].segment]
            {
                let segment = receipt.segment
                var end = next
                while end < records.count, records[end].segment == segment { end += 1 }
                let (a, b) = (records[next].firstLeaf, records[end - 1].endLeaf)
                guard receipt.firstLeaf == a, receipt.endLeaf == b, frontier.size == a else {
                    problem(
                        "the expiry receipt names leaves \(receipt.firstLeaf)..<\(receipt.endLeaf), "
                            + "the log's records \(a)..<\(b)", segment: segment)
                    return
                }
                var leaf = a
                while leaf < b {
                    if let kept = receipt.keptLeaf(leaf) {
                        appendLeaf(kept)
                        leaf += 1
                        continue
                    }
                    let tile = Int(leaf / EvidenceLog.tileLeaves)
                    guard tile < tiles.count else {
                        problem("tile \(tile) of the expired leaves is missing from log/tiles", segment: segment)
                        return
                    }
                    let before = pendingCheckpoints.count
                    frontier.append(subtree: tiles[tile], level: EvidenceLog.tileHeight)
                    while let c = pendingCheckpoints.first, c.checkpoint.size < frontier.size {
                        pendingCheckpoints.removeFirst()
                    }
                    report.checkpointsWithinExpired += before - pendingCheckpoints.count
                    checkRoots()
                    leaf += EvidenceLog.tileLeaves
                }
                report.expiredSegments += 1
                report.expiredLeaves += b - a
                next = end
            }
        }
        func appendLeaf(_ leaf: TreeHash) {
            frontier.append(leaf) { level, index, hash in
                guard level == EvidenceLog.tileHeight else { return }
                let i = Int(index)
                if i < tiles.count, tiles[i] != hash {
                    problem(
                        "spans \(UInt64(i) * EvidenceLog.tileLeaves)..<\(UInt64(i + 1) * EvidenceLog.tileLeaves) "
                            + "differ from the log's tile \(i): changed in \(blocksOf(tile: i))")
                }
            }
            checkRoots()
        }
        for id in segments {
            expiredRecords()
            let path = SegmentFile.path(segmentDirectory, id)
            let scan: SegmentScanner.Result
            do {
                scan = try SegmentScanner(path: path).scan(from: 0)
            } catch {
                problem("cannot read: \(error.message)", segment: id)
                continue
            }
            for region in scan.corruptRegions {
                problem(
                    "\(region.length) bytes fail their checksum (changed or damaged)", segment: id,
                    offset: region.offset)
            }
            if scan.tornBytes > 0, id != segments.last {
                problem("\(scan.tornBytes) bytes at the end form no block", segment: id, offset: scan.validEnd)
            }
            for block in scan.blocks {
                holes()
                let atRecord =
                    next < records.count && records[next].segment == id && records[next].offset == block.offset
                let leaves: [TreeHash]
                do {
                    // Read as the record here says it was hashed (either way gives a canonical
                    // block's leaves; the payload's own bytes are the faster).
                    leaves = try BlockLeaves.of(
                        frame: SegmentReader.readFrame(
                            path: path, offset: block.offset, length: block.header.frameLength),
                        canonical: atRecord && records[next].canonical)
                } catch {
                    problem("block does not decode: \(error.message)", segment: id, offset: block.offset)
                    continue
                }
                func same(_ r: EvidenceLog.Record) -> Bool {
                    r.frameLength == block.header.frameLength && r.checksum == block.header.checksum
                        && r.spans == leaves.count
                }
                if atRecord && same(records[next]) {
                    next += 1
                } else if let j = byChecksum[block.header.checksum]?.first(where: { $0 > next && same(records[$0]) }) {
                    // Records skipped over: blocks the log holds that the segments lost.
                    for r in records[next..<j] {
                        problem(
                            "the block the log recorded here (leaves \(r.firstLeaf)..<\(r.endLeaf)) is missing",
                            segment: r.segment, offset: r.offset)
                    }
                    if (records[j].segment, records[j].offset) != (id, block.offset) {
                        problem(
                            "block was recorded at segment \(records[j].segment) offset \(records[j].offset) (moved)",
                            segment: id, offset: block.offset)
                    }
                    next = j + 1
                } else if atRecord {
                    problem(
                        "block differs from the one the log recorded here (changed or replaced)", segment: id,
                        offset: block.offset)
                    next += 1
                } else if next < records.count || frontier.size < checkpoints.last!.checkpoint.size {
                    problem(
                        "block is not in the evidence log (added, changed or moved)", segment: id, offset: block.offset)
                }
                report.blocks += 1
                for leaf in leaves { appendLeaf(leaf) }
            }
        }
        holes()
        expiredRecords()
        holes()
        for r in records[next...] {
            problem(
                "the block the log recorded here (leaves \(r.firstLeaf)..<\(r.endLeaf)) is missing (truncated?)",
                segment: r.segment, offset: r.offset)
        }
        for c in pendingCheckpoints {
            problem("signed for \(c.checkpoint.size) spans, but the segments hold \(frontier.size)", checkpoint: c)
        }
        report.leaves = frontier.size
        report.latest = checkpoints.last?.note
        return report
    }
}
