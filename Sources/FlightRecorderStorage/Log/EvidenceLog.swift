import CZlib
import Dispatch
import FlightRecorderCore
public import FlightRecorderEvidence
import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The evidence log: an append-only RFC 9162 Merkle tree over every stored span, one leaf per
/// span (`SpanLeaves`) in the order the segments hold them, with signed checkpoints.
///
/// Kept in `DATA/log/`:
/// - `blocks`: one 32-byte record per stored block (segment, offset, first leaf, span count,
///   the block's length and checksum, the record's CRC-32), which maps leaves to blocks and
///   names the exact block that changed;
/// - `tiles`: the hash of every complete subtree of 256 leaves, in order, from which the
///   tree's nodes above them are computed; nodes below are recomputed from the blocks;
/// - `checkpoints`: signed checkpoints (`Checkpoint`, `NoteSigner`), each a decimal length
///   line then the note.
///
/// The segments stay the source of truth: everything here can be recomputed from them except
/// the signatures, which is what makes an edit to the segments evident. Blocks are appended
/// after the writer's fsync, so a checkpoint never covers a span that was not durable, and
/// on its own queue, so acknowledging never waits for hashing. After a crash, start-up
/// recomputes what the files lack from the segments.
public final class EvidenceLog: @unchecked Sendable {  // state touched only on `queue`
    public struct Block: Sendable {
        public var segment: Int64
        public var offset: Int
        /// The block's frame length and checksum (`BlockCodec.Header`).
        public var frameLength: Int
        public var checksum: UInt32
        /// nil when they could not be computed: the log stops signing until a restart
        /// recomputes it from the segments.
        public var leaves: [TreeHash]?
        /// The leaves were computed from the payload's own bytes
        /// (`SpanLeaves.hashes(canonicalPayload:)`), so they are recomputed that way.
        public var canonical = false
    }

    public enum Reason: String, Sendable {
        case interval, seal, shutdown, startup, export
    }

    static let tileHeight = 8
    static let tileLeaves: UInt64 = 1 << 8
    static let recordBytes = 32

    let directory: String
    let segmentDirectory: String
    let signer: NoteSigner
    let logger: Logger
    private let queue = DispatchQueue(label: "flightrec.evidence-log")
    // Only the queue touches it, so no run-time exclusivity checks (`perf`: they showed).
    @exclusivity(unchecked) private var frontier = TreeFrontier()
    private var blocksFile: Int32 = -1
    private var tilesFile: Int32 = -1
    private var checkpointsFile: Int32 = -1
    private var blocksBytes = 0
    private var tilesBytes = 0
    private var timer: (any DispatchSourceTimer)?
    /// Set when a block's leaves could not be computed: the tree would be wrong, so nothing
    /// more is signed until a restart recomputes it from the segments.
    private var failed = false
    /// Records and tiles not yet written (a full or failing disk): kept, retried with every
    /// append and checkpoint; no checkpoint is signed while any are left.
    private var unwrittenRecords: [UInt8] = []
    private var unwrittenTiles: [UInt8] = []
    private let sizeBox = Mutex<UInt64>(0)
    /// One log line per interval while writes keep failing.
    private let limiter = LogLimiter()

    /// Leaves logged so far.
    public var size: UInt64 { sizeBox.withLock { $0 } }
    /// Unix seconds of the last checkpoint signed (0 before the first).
    public var lastCheckpoint: Double { lastCheckpointBox.withLock { $0 } }
    private let lastCheckpointBox = Mutex<Double>(0)

    var blocksPath: String { directory + "/blocks" }
    var tilesPath: String { directory + "/tiles" }
    var checkpointsPath: String { directory + "/checkpoints" }
    /// The frontier as of the last checkpoint signed (`saveFrontier`).
    var frontierPath: String { directory + "/frontier" }
    var expiredPath: String { directory + "/expired" }
    /// The signed receipts of the segments that expired (`expire`), by segment.
    private var receipts: [Int64: ExpiryReceipt] = [:]
    var rewritesPath: String { directory + "/rewrites" }
    var erasuresPath: String { directory + "/erasures" }
    /// The latest signed rewrite of each segment an erasure rewrote, and every erased leaf.
    private var rewrites: [Int64: SegmentRewrite] = [:]
    private var erasedLeaves: [UInt64: TreeHash] = [:]

    /// Opens the log in `directory`, brings it up to date with the segments in
    /// `segmentDirectory` (recomputing what a crash lost, or everything for a store written
    /// before the log), and signs a checkpoint. Call before the writer starts.
    init(directory: String, segmentDirectory: String, signer: NoteSigner, logger: Logger) throws(StorageError) {
        self.directory = directory
        self.segmentDirectory = segmentDirectory
        self.signer = signer
        self.logger = logger
        if mkdir(directory, 0o750) != 0 && errno != EEXIST { throw .io("create \(directory)") }
        blocksFile = try Self.openAppend(blocksPath)
        tilesFile = try Self.openAppend(tilesPath)
        checkpointsFile = try Self.openAppend(checkpointsPath)
        let started = ContinuousClock.now
        let (stored, problems) = ExpiryReceipt.read(directory: directory, verifier: signer.verifier)
        for p in problems { logger.error("evidence log: \(p)") }
        for r in stored { receipts[r.segment] = r }
        let (rewritten, rewriteProblems) = SegmentRewrite.read(directory: directory, verifier: signer.verifier)
        for p in rewriteProblems { logger.error("evidence log: \(p)") }
        (rewrites, erasedLeaves) = SegmentRewrite.latest(rewritten)
        try applyRewrites()
        let added = try recover(segmentDirectory: segmentDirectory)
        sizeBox.withLock { $0 = frontier.size }
        checkpointOnQueue(.startup)
        logger.info(
            "evidence log open",
            metadata: [
                "leaves": "\(frontier.size)", "recomputed_blocks": "\(added)",
                "elapsed": "\(ContinuousClock.now - started)",
            ])
    }

    deinit {
        for fd in [blocksFile, tilesFile, checkpointsFile] where fd >= 0 { Glibc.close(fd) }
    }

    static func openAppend(_ path: String) throws(StorageError) -> Int32 {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw .io("open \(path)") }
        return fd
    }

    /// Starts signing a checkpoint every `interval`, idle or not.
    func startTimer(interval: Duration) {
        queue.sync {
            let t = DispatchSource.makeTimerSource(queue: queue)
            let ns = Int(interval.components.seconds * 1_000_000_000 + interval.components.attoseconds / 1_000_000_000)
            t.schedule(deadline: .now() + .nanoseconds(ns), repeating: .nanoseconds(ns))
            t.setEventHandler { [weak self] in self?.checkpointOnQueue(.interval) }
            t.resume()
            timer = t
        }
    }

    /// Logs durable blocks, in the order the segments hold them.
    func append(_ blocks: [Block]) {
        guard !blocks.isEmpty else { return }
        queue.async { [self] in
            guard !failed else { return }
            do throws(StorageError) {
                try appendOnQueue(blocks)
            } catch {
                // The segments still hold every span; the next start-up recomputes the log.
                failed = true
                logger.error(
                    "evidence log: a block's spans could not be hashed; no more checkpoints until restart",
                    metadata: ["error": "\(error)"])
            }
        }
    }

    /// Signs a checkpoint of what is logged so far, after what is queued.
    func checkpoint(_ reason: Reason) { queue.async { [self] in checkpointOnQueue(reason) } }

    /// Signs a checkpoint now, covering every block queued before the call (so every span
    /// acknowledged before it), and returns it with the tree it signs: what an audit export
    /// proves its spans against.
    public func snapshot() throws(StorageError) -> EvidenceSnapshot {
        let signed: Result<SignedNote, StorageError> = queue.sync {
            guard !failed, checkpointsFile >= 0 else {
                return .failure(
                    .corrupt("the evidence log is not signing (see the daemon's log); restart to recompute it"))
            }
            do throws(StorageError) {
                return .success(try writeCheckpoint(.export))
            } catch {
                return .failure(error)
            }
        }
        let snapshot = try EvidenceSnapshot(
            directory: directory, segmentDirectory: segmentDirectory, note: signed.get(), signer: signer)
        let open = openSnapshots
        open.count.withLock { $0 += 1 }
        snapshot.onRelease = { open.count.withLock { $0 -= 1 } }
        return snapshot
    }

    /// Snapshots (audit exports) still in use: they read blocks by the records they were made
    /// with, so expiry deletes no segment file while any is open.
    public var snapshotsInUse: Int { openSnapshots.count.withLock { $0 } }
    private final class OpenSnapshots: Sendable { let count = Mutex<Int>(0) }
    private let openSnapshots = OpenSnapshots()

    /// Records that `segment` is about to be deleted: the leaves its blocks hold and the
    /// hashes of those sharing a tile with other segments' leaves, signed and synced to
    /// `log/expired` before the call returns, so the tree stays computable without it. nil
    /// when the log holds no block of the segment. Call while the segment is still on disk.
    public func expire(segment: Int64, reason: String, now: UInt64) throws(StorageError) -> ExpiryReceipt? {
        let result: Result<ExpiryReceipt?, StorageError> = queue.sync {
            do throws(StorageError) {
                return .success(try expireOnQueue(segment: segment, reason: reason, now: now))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    private func expireOnQueue(segment: Int64, reason: String, now: UInt64) throws(StorageError) -> ExpiryReceipt? {
        if let done = receipts[segment] { return done }
        guard !failed, checkpointsFile >= 0 else {
            throw .corrupt("the evidence log is not signing (see the daemon's log); restart to recompute it")
        }
        guard writeUnwritten() else { throw .io("write \(blocksPath)", errno: ENOSPC) }
        let records = Self.readRecords(Self.readFile(blocksPath)).records
        guard let first = records.firstIndex(where: { $0.segment == segment }) else { return nil }
        let last = records.lastIndex(where: { $0.segment == segment })!
        let tree = StoredTree(
            tiles: Self.readTiles(Self.readFile(tilesPath)), records: records,
            segmentDirectory: segmentDirectory, expired: receipts, erased: erasedLeaves)
        let (a, b) = (records[first].firstLeaf, records[last].endLeaf)
        var kept: [TreeHash] = []
        for r in ExpiryReceipt.keptRanges(a, b) { kept += try tree.leaves(r.lowerBound, r.upperBound) }
        let receipt = ExpiryReceipt(
            segment: segment, firstLeaf: a, endLeaf: b, expiredAt: now, reason: reason, kept: kept)
        try appendSigned(receipt.text(origin: signer.name), to: expiredPath, what: "an expiry receipt")
        receipts[segment] = receipt
        return receipt
    }

    // MARK: Erasure

    /// The records of `segment`'s blocks (holes included), after every queued append.
    func records(ofSegment segment: Int64) throws(StorageError) -> [Record] {
        let result: Result<[Record], StorageError> = queue.sync {
            guard writeUnwritten() else { return .failure(.io("write \(blocksPath)", errno: ENOSPC)) }
            return .success(Self.readRecords(Self.readFile(blocksPath)).records.filter { $0.segment == segment })
        }
        return try result.get()
    }

    /// Records a segment's rewrite: the signed `SegmentRewrite` is appended and synced first
    /// (so the erased leaves are kept before their bytes go), then `swap` puts the rewritten
    /// file in place, then the segment's records are replaced. On the log's queue throughout,
    /// so no snapshot (an audit export) starts in between; fails, before anything is written,
    /// while one is open (`busy`).
    func rewrite(
        segment: Int64, erasures: [String], records: [Record], erased: [UInt64: TreeHash], fileSize: Int,
        fileDigest: String, now: UInt64, swap: () throws(StorageError) -> Void
    ) throws(StorageError) {
        let result: Result<Void, StorageError> = queue.sync {
            do throws(StorageError) {
                guard openSnapshots.count.withLock({ $0 }) == 0 else {
                    throw .corrupt("an audit export is reading the log; the rewrite waits for it")
                }
                guard !failed, checkpointsFile >= 0 else {
                    throw .corrupt("the evidence log is not signing (see the daemon's log); restart to recompute it")
                }
                var all = erasedLeaves
                all.merge(erased) { a, _ in a }
                var mine = rewrites[segment]?.erased ?? [:]
                mine.merge(erased) { a, _ in a }
                let rewrite = SegmentRewrite(
                    segment: segment, erasures: erasures, time: now, fileSize: fileSize, fileDigest: fileDigest,
                    records: records, erased: mine)
                try appendSigned(rewrite.text(origin: signer.name), to: rewritesPath, what: "a segment rewrite")
                rewrites[segment] = rewrite
                erasedLeaves = all
                try swap()
                try applyRewrites()
                return .success(())
            } catch {
                return .failure(error)
            }
        }
        try result.get()
    }

    /// Appends a signed erasure receipt to `log/erasures`, synced before it returns.
    func appendErasureReceipt(_ receipt: ErasureReceipt) throws(StorageError) {
        let result: Result<Void, StorageError> = queue.sync {
            do throws(StorageError) {
                // Once per erasure (a crash between the receipt and the erasure's record asks again).
                let signed = ErasureReceipt.read(directory: directory, verifier: signer.verifier).receipts
                if signed.contains(where: { $0.id == receipt.id }) { return .success(()) }
                try appendSigned(receipt.text(origin: signer.name), to: erasuresPath, what: "an erasure receipt")
                return .success(())
            } catch {
                return .failure(error)
            }
        }
        try result.get()
    }

    /// Signs `text` as a note and appends it to `path` (a decimal length line, then the note),
    /// synced before it returns: the log's receipts and rewrites.
    private func appendSigned(_ text: String, to path: String, what: String) throws(StorageError) {
        let note: SignedNote
        do {
            note = SignedNote(text: text, signatures: [try signer.signature(of: text)])
        } catch {
            throw .corrupt("evidence log: cannot sign \(what): \(error)")
        }
        let body = Array(note.serialized.utf8)
        let fd = try Self.openAppend(path)
        defer { Glibc.close(fd) }
        var at = Int(lseek(fd, 0, SEEK_END))
        try Self.write(fd, Array("\(body.count)\n".utf8) + body, at: &at, path: path)
        guard fsync(fd) == 0 else { throw .io("fsync \(path)") }
    }

    /// Makes the block records of every rewritten segment those of its latest rewrite (after
    /// a crash between a rewrite's note and its records, or once the swap is done): the
    /// records file is replaced whole (a new file, synced, renamed over the old).
    private func applyRewrites() throws(StorageError) {
        guard !rewrites.isEmpty else { return }
        guard writeUnwritten() else { throw .io("write \(blocksPath)", errno: ENOSPC) }
        let (records, valid) = Self.readRecords(Self.readFile(blocksPath))
        var out: [Record] = []
        out.reserveCapacity(records.count)
        var changed = false
        var i = 0
        while i < records.count {
            let seg = records[i].segment
            var j = i
            while j < records.count, records[j].segment == seg { j += 1 }
            if let r = rewrites[seg], r.records != Array(records[i..<j]) {
                guard r.records.first?.firstLeaf == records[i].firstLeaf,
                    r.records.last?.endLeaf == records[j - 1].endLeaf
                else {
                    throw .corrupt("evidence log: the rewrite of segment \(seg) does not cover its leaves")
                }
                out += r.records
                changed = true
            } else {
                out += records[i..<j]
            }
            i = j
        }
        guard changed else { return }
        let bytes = out.flatMap { Self.record($0) } + Self.readFile(blocksPath)[valid...]
        try SegmentFile.replaceDurably(blocksPath, with: Array(bytes))
        Glibc.close(blocksFile)
        blocksFile = try Self.openAppend(blocksPath)
        blocksBytes = bytes.count
    }

    /// Every leaf erased so far (for the snapshots' trees).
    var erasedLeafHashes: [UInt64: TreeHash] { queue.sync { erasedLeaves } }

    /// The segments the log recorded as expired.
    public var expiredSegments: Set<Int64> { queue.sync { Set(receipts.keys) } }

    /// Stops the timer, signs a last checkpoint and closes the files: after the writer closed.
    func close() {
        queue.sync {
            timer?.cancel()
            timer = nil
            checkpointOnQueue(.shutdown)
            for fd in [blocksFile, tilesFile, checkpointsFile] where fd >= 0 { Glibc.close(fd) }
            (blocksFile, tilesFile, checkpointsFile) = (-1, -1, -1)
        }
    }

    private func checkpointOnQueue(_ reason: Reason) {
        guard !failed, checkpointsFile >= 0 else { return }
        do throws(StorageError) {
            try writeCheckpoint(reason)
        } catch {
            logger.error("evidence log: could not sign a checkpoint", metadata: ["error": "\(error)"])
        }
    }

    // MARK: Writing

    private func appendOnQueue(_ blocks: [Block]) throws(StorageError) {
        var records: [UInt8] = []
        var tiles: [UInt8] = []
        for b in blocks {
            guard let leaves = b.leaves else {
                throw .corrupt("the leaves of block \(b.offset) of segment \(b.segment) could not be computed")
            }
            records += Self.record(
                Record(
                    segment: b.segment, offset: b.offset, firstLeaf: frontier.size, spans: leaves.count,
                    frameLength: b.frameLength, checksum: b.checksum, canonical: b.canonical))
            for leaf in leaves {
                frontier.append(leaf) { level, _, hash in
                    if level == Self.tileHeight { tiles += hash.bytes }
                }
            }
        }
        unwrittenRecords += records
        unwrittenTiles += tiles
        sizeBox.withLock { $0 = frontier.size }
        _ = writeUnwritten()
    }

    /// Writes the records and tiles not yet written; false when some are still left.
    private func writeUnwritten() -> Bool {
        do throws(StorageError) {
            try Self.write(blocksFile, unwrittenRecords, at: &blocksBytes, path: blocksPath)
            unwrittenRecords.removeAll(keepingCapacity: true)
            try Self.write(tilesFile, unwrittenTiles, at: &tilesBytes, path: tilesPath)
            unwrittenTiles.removeAll(keepingCapacity: true)
            return true
        } catch {
            limiter.log(
                logger, .error, reason: "evidence-write",
                "evidence log: cannot write; kept in memory and retried, no checkpoint until it is written",
                metadata: ["error": "\(error)"])
            return false
        }
    }

    @discardableResult
    private func writeCheckpoint(_ reason: Reason) throws(StorageError) -> SignedNote {
        guard writeUnwritten() else { throw .io("write \(blocksPath)", errno: ENOSPC) }
        // What the checkpoint covers is on disk before it is signed.
        for (fd, path) in [(blocksFile, blocksPath), (tilesFile, tilesPath)] where fsync(fd) != 0 {
            throw .io("fsync \(path)")
        }
        let checkpoint = Checkpoint(origin: signer.name, size: frontier.size, root: frontier.root)
        let note: SignedNote
        do {
            note = try signer.sign(checkpoint, time: UInt64(max(0, time(nil))))
        } catch {
            throw .corrupt("evidence log: cannot sign a checkpoint: \(error)")
        }
        let text = Array(note.serialized.utf8)
        var framed = Array("\(text.count)\n".utf8) + text
        var end = lseek(checkpointsFile, 0, SEEK_END)
        guard end >= 0 else { throw .io("seek \(checkpointsPath)") }
        var at = Int(end)
        try Self.write(checkpointsFile, framed, at: &at, path: checkpointsPath)
        guard fsync(checkpointsFile) == 0 else { throw .io("fsync \(checkpointsPath)") }
        framed.removeAll()
        end = 0
        lastCheckpointBox.withLock { $0 = Double(time(nil)) }
        saveFrontier()
        logger.debug(
            "evidence checkpoint signed", metadata: ["size": "\(checkpoint.size)", "reason": "\(reason.rawValue)"])
        return note
    }

    /// Saves the frontier (its size, then each complete subtree's level and hash) as of the
    /// checkpoint just signed, so a damaged block in the last, partial tile does not keep the
    /// log from opening (`recover`). Best effort: without it start-up reads the blocks.
    private func saveFrontier() {
        var text = "size \(frontier.size)\n"
        for s in frontier.subtrees { text += "\(s.level) \(s.hash.base64)\n" }
        do throws(StorageError) {
            try SegmentFile.replaceDurably(frontierPath, with: Array(text.utf8))
        } catch {
            limiter.log(
                logger, .warning, reason: "evidence-frontier", "evidence log: cannot save the frontier",
                metadata: ["error": "\(error)"])
        }
    }

    /// The saved frontier, when it is of at most `size` leaves and its root is that of a
    /// checkpoint of its size the key signed.
    private func savedFrontier(atMost size: UInt64) -> TreeFrontier? {
        let lines = String(decoding: Self.readFile(frontierPath), as: UTF8.self).split(separator: "\n")
        guard let first = lines.first, first.hasPrefix("size "), let n = UInt64(first.dropFirst(5)), n <= size
        else { return nil }
        var f = TreeFrontier()
        var previous = Int.max
        for line in lines.dropFirst() {
            let parts = line.split(separator: " ")
            guard parts.count == 2, let level = Int(parts[0]), level < previous, level < 64,
                let hash = TreeHash(base64: parts[1]), f.size & ((1 << UInt64(level)) - 1) == 0
            else { return nil }
            f.append(subtree: hash, level: level)
            previous = level
        }
        guard f.size == n else { return nil }
        let root = f.root
        let vouched = EvidenceVerifier.readCheckpoints(Self.readFile(checkpointsPath)).notes.contains { text in
            guard let note = try? SignedNote(parsing: text), (try? signer.verifier.verify(note)) != nil,
                let c = try? Checkpoint(text: note.text)
            else { return false }
            return c.size == n && c.root == root
        }
        return vouched ? f : nil
    }

    static func write(_ fd: Int32, _ bytes: [UInt8], at offset: inout Int, path: String) throws(StorageError) {
        guard !bytes.isEmpty else { return }
        let written = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
        guard written == bytes.count else {
            let e = errno
            ftruncate(fd, off_t(offset))
            throw .io("write \(path)", errno: written < 0 ? e : ENOSPC)
        }
        offset += written
    }

    // MARK: Records

    /// Segment (u32), offset (u32: segments are at most 4 GiB), first leaf (u64), spans
    /// (u32, its top bit set when the block is canonical), frame length and block checksum (u32
    /// each), then the CRC-32 of those 28 bytes; little-endian. A block holds far fewer than 2³¹
    /// spans (at most 256 MiB of payload); records written before the flag have it clear.
    struct Record: Equatable {
        var segment: Int64
        var offset: Int
        var firstLeaf: UInt64
        var spans: Int
        var frameLength: Int
        var checksum: UInt32
        /// Its leaves are hashed from the payload's own bytes (`Block.canonical`).
        var canonical = false
        var endLeaf: UInt64 { firstLeaf + UInt64(spans) }
        /// Leaves an erasure removed (`SegmentRewrite`): no block holds them.
        var isHole: Bool { offset == Self.holeOffset }
        static let holeOffset = Int(UInt32.max)

        static func hole(segment: Int64, firstLeaf: UInt64, spans: Int) -> Record {
            Record(
                segment: segment, offset: holeOffset, firstLeaf: firstLeaf, spans: spans, frameLength: 0, checksum: 0)
        }
    }

    static let canonicalFlag: UInt32 = 1 << 31

    static func record(_ r: Record) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(recordBytes)
        withUnsafeBytes(of: UInt32(truncatingIfNeeded: r.segment).littleEndian) { out += $0 }
        withUnsafeBytes(of: UInt32(truncatingIfNeeded: r.offset).littleEndian) { out += $0 }
        withUnsafeBytes(of: r.firstLeaf.littleEndian) { out += $0 }
        let spans = UInt32(truncatingIfNeeded: r.spans) | (r.canonical ? canonicalFlag : 0)
        withUnsafeBytes(of: spans.littleEndian) { out += $0 }
        withUnsafeBytes(of: UInt32(truncatingIfNeeded: r.frameLength).littleEndian) { out += $0 }
        withUnsafeBytes(of: r.checksum.littleEndian) { out += $0 }
        let crc = out.withUnsafeBytes {
            UInt32(truncatingIfNeeded: crc32(0, $0.baseAddress?.assumingMemoryBound(to: UInt8.self), 28))
        }
        withUnsafeBytes(of: crc.littleEndian) { out += $0 }
        return out
    }

    /// The records of a `blocks` file up to the first damaged or discontinuous one.
    static func readRecords(_ bytes: [UInt8], startingAt first: UInt64 = 0) -> (records: [Record], validBytes: Int) {
        var records: [Record] = []
        var next: UInt64 = first
        var at = 0
        bytes.withUnsafeBytes { raw in
            while at + recordBytes <= raw.count {
                func u32(_ o: Int) -> UInt32 {
                    UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: at + o, as: UInt32.self))
                }
                let expected = UInt32(
                    truncatingIfNeeded: crc32(
                        0, raw.baseAddress!.advanced(by: at).assumingMemoryBound(to: UInt8.self), 28))
                let r = Record(
                    segment: Int64(u32(0)), offset: Int(u32(4)),
                    firstLeaf: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: at + 8, as: UInt64.self)),
                    spans: Int(u32(16) & ~canonicalFlag), frameLength: Int(u32(20)), checksum: u32(24),
                    canonical: u32(16) & canonicalFlag != 0)
                guard u32(28) == expected, r.firstLeaf == next else { break }
                records.append(r)
                next = r.endLeaf
                at += recordBytes
            }
        }
        return (records, at)
    }

    /// The first leaf the first record of `bytes` names (0 when there is none).
    static func firstLeaf(ofRecords bytes: [UInt8]) -> UInt64 {
        guard bytes.count >= recordBytes else { return 0 }
        return bytes[8..<16].withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
    }

    static func readFile(_ path: String) -> [UInt8] {
        (try? Data(contentsOf: URL(fileURLWithPath: path))).map { [UInt8]($0) } ?? []
    }

    // MARK: Start-up

    /// Rebuilds the frontier from the files and the segments; logs the blocks the segments
    /// hold beyond the last record. Returns how many blocks it logged.
    private func recover(segmentDirectory: String) throws(StorageError) -> Int {
        let (records, validBytes) = Self.readRecords(Self.readFile(blocksPath))
        if validBytes < lseek(blocksFile, 0, SEEK_END) {
            logger.warning("evidence log: the block records end in a damaged record; recomputing from there")
            ftruncate(blocksFile, off_t(validBytes))
        }
        blocksBytes = validBytes
        let size = records.last?.endLeaf ?? 0
        let tree = StoredTree(
            tiles: Self.readTiles(Self.readFile(tilesPath)), records: records, segmentDirectory: segmentDirectory,
            expired: receipts, erased: erasedLeaves)
        // Tiles the crash lost are recomputed from the blocks; tiles past the records dropped.
        let complete = Int(size / Self.tileLeaves)
        if tree.tiles.count > complete { tree.tiles.removeLast(tree.tiles.count - complete) }
        var recomputed: [UInt8] = []
        while tree.tiles.count < complete {
            let hash = try tree.tileFromLeaves(UInt64(tree.tiles.count))
            tree.tiles.append(hash)
            recomputed += hash.bytes
        }
        tilesBytes = (complete - recomputed.count / 32) * 32
        ftruncate(tilesFile, off_t(tilesBytes))
        unwrittenTiles = recomputed
        _ = writeUnwritten()
        do {
            frontier = try TreeFrontier(size: size, tree)
        } catch {
            // A block the last, partial tile needs does not read (damaged): the frontier saved
            // at the last checkpoint, which a signed checkpoint vouches for, extended by the
            // leaves logged since, if those read.
            guard let saved = savedFrontier(atMost: size) else { throw .corrupt("evidence log: \(error)") }
            var extended = saved
            do {
                for leaf in try tree.leaves(saved.size, size) { extended.append(leaf) }
            } catch {
                throw .corrupt("evidence log: \(error) (after the frontier saved at \(saved.size) leaves)")
            }
            frontier = extended
            logger.warning(
                "evidence log: a block of the last tile does not read; the tree goes on from the frontier saved with the last checkpoint (flightrec verify reports the block)",
                metadata: ["saved_leaves": "\(saved.size)", "leaves": "\(size)", "error": "\(error)"])
        }
        // Blocks stored after the last record (a crash before they were logged, or a store
        // written before the log existed).
        var added = 0
        let last = records.last { !$0.isHole }
        for id in SegmentFile.list(segmentDirectory) where id >= (last?.segment ?? Int64.min) {
            let path = SegmentFile.path(segmentDirectory, id)
            // In the last recorded segment, only what follows its last recorded block.
            let from = id == last?.segment ? last!.offset : 0
            let scan = try SegmentScanner(path: path).scan(from: from)
            var pending: [Block] = []
            for block in scan.blocks where id != last?.segment || block.offset > from {
                let frame = try SegmentReader.readFrame(
                    path: path, offset: block.offset, length: block.header.frameLength)
                pending.append(
                    Block(
                        segment: id, offset: block.offset, frameLength: block.header.frameLength,
                        checksum: block.header.checksum, leaves: try BlockLeaves.of(frame: frame, canonical: false)))
                if pending.count >= 64 {
                    try appendOnQueue(pending)
                    added += pending.count
                    pending.removeAll()
                }
            }
            try appendOnQueue(pending)
            added += pending.count
        }
        return added
    }

    static func readTiles(_ bytes: [UInt8]) -> [TreeHash] {
        stride(from: 0, to: bytes.count - 31, by: 32).compactMap { TreeHash(bytes: bytes[$0..<$0 + 32]) }
    }
}

/// The log's tree as stored: nodes of level 8 and up from the tiles, lower ones recomputed
/// from the blocks the records name.
final class StoredTree: TreeNodes {
    var tiles: [TreeHash]
    let records: [EvidenceLog.Record]
    let segmentDirectory: String
    /// Expired segments' receipts: their kept leaves stand in for the blocks.
    let expired: [Int64: ExpiryReceipt]
    /// Erased leaves (`SegmentRewrite`): what the holes hold.
    let erased: [UInt64: TreeHash]
    private var leafCache: (record: Int, leaves: [TreeHash])?

    init(
        tiles: [TreeHash], records: [EvidenceLog.Record], segmentDirectory: String, expired: [Int64: ExpiryReceipt],
        erased: [UInt64: TreeHash] = [:]
    ) {
        self.tiles = tiles
        self.records = records
        self.segmentDirectory = segmentDirectory
        self.expired = expired
        self.erased = erased
    }

    func node(level: Int, index: UInt64) throws -> TreeHash {
        let h = EvidenceLog.tileHeight
        if level >= h {
            let first = Int(index << UInt64(level - h))
            let count = 1 << (level - h)
            guard first + count <= tiles.count else { throw TreeError.missingNode(level: level, index: index) }
            return LeafList.subtree(tiles[first..<first + count])
        }
        let start = index << UInt64(level)
        return LeafList.subtree(try leaves(start, start + (1 << UInt64(level)))[...])
    }

    func tileFromLeaves(_ tile: UInt64) throws(StorageError) -> TreeHash {
        let start = tile * EvidenceLog.tileLeaves
        return LeafList.subtree(try leaves(start, start + EvidenceLog.tileLeaves)[...])
    }

    /// Leaves `start ..< end`, recomputed from the blocks that hold them.
    func leaves(_ start: UInt64, _ end: UInt64) throws(StorageError) -> [TreeHash] {
        var out: [TreeHash] = []
        var i = firstRecord(containing: start)
        var leaf = start
        while leaf < end {
            guard i < records.count else { throw .corrupt("evidence log: leaf \(leaf) is in no recorded block") }
            let r = records[i]
            if let receipt = expired[r.segment] {
                // Only the leaves sharing a tile with a stored one are kept; a proof never
                // needs the others (it takes their tile whole).
                let to = min(end, r.endLeaf)
                while leaf < to {
                    guard let kept = receipt.keptLeaf(leaf) else {
                        throw .corrupt("evidence log: leaf \(leaf) expired with segment \(r.segment)")
                    }
                    out.append(kept)
                    leaf += 1
                }
                i += 1
                continue
            }
            if r.isHole {
                let to = min(end, r.endLeaf)
                while leaf < to {
                    guard let hash = erased[leaf] else {
                        throw .corrupt("evidence log: erased leaf \(leaf) is unknown")
                    }
                    out.append(hash)
                    leaf += 1
                }
                i += 1
                continue
            }
            let blockLeaves = try leavesOf(record: i)
            guard blockLeaves.count == r.spans else {
                throw .corrupt(
                    "evidence log: block at segment \(r.segment) offset \(r.offset) holds \(blockLeaves.count) spans, "
                        + "the log recorded \(r.spans)")
            }
            let from = Int(leaf - r.firstLeaf)
            let to = Int(min(end, r.endLeaf) - r.firstLeaf)
            out += blockLeaves[from..<to]
            leaf = r.firstLeaf + UInt64(to)
            i += 1
        }
        return out
    }

    func firstRecord(containing leaf: UInt64) -> Int {
        var lo = 0
        var hi = records.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if records[mid].endLeaf <= leaf { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    private func leavesOf(record i: Int) throws(StorageError) -> [TreeHash] {
        if let c = leafCache, c.record == i { return c.leaves }
        let r = records[i]
        let path = SegmentFile.path(segmentDirectory, r.segment)
        let frame = try SegmentReader.readFrame(path: path, offset: r.offset, length: r.frameLength)
        let leaves = try BlockLeaves.of(frame: frame, canonical: r.canonical)
        leafCache = (i, leaves)
        return leaves
    }
}
