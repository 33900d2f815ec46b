public import FlightRecorderEvidence

/// The evidence log as of one signed checkpoint (`EvidenceLog.snapshot`): the checkpoint, the
/// blocks it covers with their first leaves, the tree's nodes for proofs, and the checkpoints
/// signed before it. Read by one audit export, one step after another (possibly on different
/// pool threads, never two at once): its tree caches the last block it decoded.
public final class EvidenceSnapshot: TreeNodes, @unchecked Sendable {
    /// A logged block: where it is and which leaves it holds.
    public struct LoggedBlock: Sendable {
        public var segment: Int64
        public var offset: Int
        public var firstLeaf: UInt64
        public var spans: Int
        /// Its leaves are hashed from its payload's bytes as they stand
        /// (`SpanLeaves.hashes(canonicalPayload:)`), with no unpacking.
        public var canonical: Bool
    }

    /// An earlier signed checkpoint, with the time its timestamped signature signed.
    public struct Signed: Sendable {
        public var note: SignedNote
        public var checkpoint: Checkpoint
        public var time: UInt64
    }

    public let note: SignedNote
    public let checkpoint: Checkpoint
    /// Every checkpoint in the log that this snapshot's key verifies, oldest first.
    public let history: [Signed]
    let tree: StoredTree
    /// Every signed segment rewrite in the log, oldest first.
    let rewrites: [SegmentRewrite]
    let logDirectory: String
    /// Told when the snapshot is released (`EvidenceLog.snapshotsInUse`).
    var onRelease: (@Sendable () -> Void)?

    deinit { onRelease?() }

    /// The log's key: it signed `note`, and signs what the export built on this snapshot.
    public let signer: NoteSigner

    init(directory: String, segmentDirectory: String, note: SignedNote, signer: NoteSigner) throws(StorageError) {
        self.note = note
        self.signer = signer
        let signedCheckpoint: Checkpoint
        do {
            signedCheckpoint = try Checkpoint(text: note.text)
        } catch {
            throw .corrupt("evidence log: the checkpoint just signed does not parse: \(error)")
        }
        checkpoint = signedCheckpoint
        let size = signedCheckpoint.size
        let all = EvidenceLog.readRecords(EvidenceLog.readFile(directory + "/blocks")).records
        let records = all.prefix { $0.endLeaf <= size }
        guard (records.last?.endLeaf ?? 0) == size else {
            throw .corrupt("evidence log: the block records do not reach the checkpoint's \(size) leaves")
        }
        let tiles = EvidenceLog.readTiles(EvidenceLog.readFile(directory + "/tiles"))
        var expired: [Int64: ExpiryReceipt] = [:]
        for r in ExpiryReceipt.read(directory: directory, verifier: signer.verifier).receipts { expired[r.segment] = r }
        let allRewrites = SegmentRewrite.read(directory: directory, verifier: signer.verifier).rewrites
        let erased = SegmentRewrite.latest(allRewrites).erased
        rewrites = allRewrites
        logDirectory = directory
        tree = StoredTree(
            tiles: Array(tiles.prefix(Int(size / EvidenceLog.tileLeaves))), records: Array(records),
            segmentDirectory: segmentDirectory, expired: expired, erased: erased)
        var history: [Signed] = []
        let verifier = signer.verifier
        for text in EvidenceVerifier.readCheckpoints(EvidenceLog.readFile(directory + "/checkpoints")).notes {
            guard let n = try? SignedNote(parsing: text), let verified = try? verifier.verify(n),
                let time = verified.time, let c = try? Checkpoint(text: n.text), c.size <= size
            else { continue }
            history.append(Signed(note: n, checkpoint: c, time: time))
        }
        self.history = history
    }

    public func node(level: Int, index: UInt64) throws -> TreeHash { try tree.node(level: level, index: index) }

    /// The stored blocks holding leaves `start ..< end`, in order (expired ones left out).
    public func blocks(leaves start: UInt64, _ end: UInt64) -> [LoggedBlock] {
        var out: [LoggedBlock] = []
        var i = tree.firstRecord(containing: start)
        while i < tree.records.count, tree.records[i].firstLeaf < end {
            if tree.expired[tree.records[i].segment] == nil && !tree.records[i].isHole {
                out.append(Self.logged(tree.records[i]))
            }
            i += 1
        }
        return out
    }

    /// The logged block at `offset` of `segment`; nil when the snapshot does not cover it.
    public func block(segment: Int64, offset: Int) -> LoggedBlock? {
        // Holes (erased leaves) name no offset: the blocks alone are in (segment, offset) order.
        let r = stored
        var lo = 0
        var hi = r.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if (r[mid].segment, r[mid].offset) < (segment, offset) { lo = mid + 1 } else { hi = mid }
        }
        guard lo < r.count, r[lo].segment == segment, r[lo].offset == offset, tree.expired[segment] == nil else {
            return nil
        }
        return Self.logged(r[lo])
    }

    /// The records of blocks (not holes), in order.
    private lazy var stored: [EvidenceLog.Record] = tree.records.filter { !$0.isHole }

    /// The payload of a logged block (its spans' requests one after another), checked
    /// against its checksum, and its spans' salts (empty when it is not salted).
    public func payload(of block: LoggedBlock) throws(StorageError) -> (raw: [UInt8], salts: [LeafSalt]) {
        let i = tree.firstRecord(containing: block.firstLeaf)
        let r = tree.records[i]
        let frame = try SegmentReader.readFrame(
            path: SegmentFile.path(tree.segmentDirectory, r.segment), offset: r.offset, length: r.frameLength)
        let decoded = try BlockCodec.decodeSalted(frame: frame)
        return (decoded.raw, decoded.salts?.all() ?? [])
    }

    /// The leaves in `[start, end)` erased so far (signed rewrites name them), in order, each
    /// with the erasures the rewrite that first named it carried out.
    public func erasedLeaves(_ start: UInt64, _ end: UInt64) -> [(leaf: UInt64, erasures: [String])] {
        var first: [UInt64: [String]] = [:]
        for r in rewrites {
            for leaf in r.erased.keys where leaf >= start && leaf < end && first[leaf] == nil {
                first[leaf] = r.erasures
            }
        }
        return first.keys.sorted().map { ($0, first[$0]!) }
    }

    /// The signed erasure receipts in the log, oldest first.
    public func erasureReceipts() -> [ErasureReceipt] {
        ErasureReceipt.read(directory: logDirectory, verifier: signer.verifier).receipts
    }

    static func logged(_ r: EvidenceLog.Record) -> LoggedBlock {
        LoggedBlock(
            segment: r.segment, offset: r.offset, firstLeaf: r.firstLeaf, spans: r.spans, canonical: r.canonical)
    }
}
