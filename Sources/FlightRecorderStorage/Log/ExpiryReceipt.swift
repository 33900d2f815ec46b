public import FlightRecorderEvidence
import Foundation

/// What the evidence log keeps of a segment that expired (`SpanStore.expire`): the leaves its
/// blocks held, and the hashes of those leaves that share a 256-leaf tile with a leaf outside
/// the segment (`kept`). Complete tiles inside the range are in the log's `tiles`, so with the
/// kept leaves every node of the tree can still be computed: every checkpoint signed before
/// the segment expired still verifies, and proofs of the spans still stored still build.
///
/// Stored signed (a C2SP note by the log's key, in `log/expired`, each a decimal length line
/// then the note, like `log/checkpoints`), so a segment deleted by hand is told apart from
/// one the store expired: `flightrec verify --data` accepts a missing range only with a
/// receipt the key signed.
///
/// The kept leaves are hashes of whole spans (`H(0x00 ‖ salt ‖ span)`, unsalted before salts
/// existed); at most 510 a segment.
public struct ExpiryReceipt: Sendable, Equatable {
    public var segment: Int64
    public var firstLeaf: UInt64
    public var endLeaf: UInt64
    /// Unix seconds.
    public var expiredAt: UInt64
    /// Why, e.g. `max_age 180d`.
    public var reason: String
    /// The hashes of the leaves in `keptRanges`, in order.
    public var kept: [TreeHash]

    public init(
        segment: Int64, firstLeaf: UInt64, endLeaf: UInt64, expiredAt: UInt64, reason: String, kept: [TreeHash]
    ) {
        self.segment = segment
        self.firstLeaf = firstLeaf
        self.endLeaf = endLeaf
        self.expiredAt = expiredAt
        self.reason = reason
        self.kept = kept
    }

    /// The leaves of `first ..< end` in a tile that does not lie wholly inside the range.
    public static func keptRanges(_ first: UInt64, _ end: UInt64) -> [Range<UInt64>] {
        let tile = EvidenceLog.tileLeaves
        let firstWhole = (first + tile - 1) / tile * tile
        let endWhole = end / tile * tile
        if firstWhole >= endWhole { return first < end ? [first..<end] : [] }
        var out: [Range<UInt64>] = []
        if first < firstWhole { out.append(first..<firstWhole) }
        if endWhole < end { out.append(endWhole..<end) }
        return out
    }

    /// The kept hash of `leaf`; nil when the receipt does not keep it (a whole tile's leaf).
    public func keptLeaf(_ leaf: UInt64) -> TreeHash? {
        var at = 0
        for r in Self.keptRanges(firstLeaf, endLeaf) {
            if r.contains(leaf) { return kept[at + Int(leaf - r.lowerBound)] }
            at += r.count
        }
        return nil
    }

    /// The note's text; the first line names the log (its key's name), as a checkpoint's does.
    public func text(origin: String) -> String {
        var reasonLine = reason.unicodeScalars.filter { $0.value >= 0x20 }.map(String.init).joined()
        if reasonLine.isEmpty { reasonLine = "-" }
        return """
            \(origin)
            expiry \(segment)
            leaves \(firstLeaf) \(endLeaf)
            time \(expiredAt)
            reason \(reasonLine)
            kept \(Data(kept.flatMap(\.bytes)).base64EncodedString())

            """
    }

    /// Parses a signed receipt and checks the key's signature on it.
    public init(note text: String, verifier: NoteVerifier) throws(StorageError) {
        let lines = try SignedLines(text, verifier: verifier, what: "expiry receipt")
        let s = try lines.field(1, "expiry")
        let l = try lines.field(2, "leaves")
        let t = try lines.field(3, "time")
        let r = try lines.field(4, "reason")
        let k = try lines.field(5, "kept")
        guard s.count == 1, let segment = Int64(s[0]), l.count == 2, let first = UInt64(l[0]), let end = UInt64(l[1]),
            first <= end, t.count == 1, let time = UInt64(t[0]), k.count == 1,
            let raw = Data(base64Encoded: String(k[0])), raw.count % TreeHash.size == 0
        else { throw .corrupt("expiry receipt: a malformed field") }
        let hashes = stride(from: 0, to: raw.count, by: TreeHash.size).compactMap {
            TreeHash(bytes: raw[raw.startIndex + $0..<raw.startIndex + $0 + TreeHash.size])
        }
        guard hashes.count == Self.keptRanges(first, end).reduce(0, { $0 + $1.count }) else {
            throw .corrupt("expiry receipt: \(hashes.count) kept leaves for leaves \(first)..<\(end)")
        }
        self.init(
            segment: segment, firstLeaf: first, endLeaf: end, expiredAt: time, reason: r.joined(separator: " "),
            kept: hashes)
    }

    /// The receipts in a `log/expired` file that `verifier` signed, oldest first, and the
    /// problems met (a damaged file, a receipt that does not verify).
    public static func read(
        directory: String, verifier: NoteVerifier
    ) -> (receipts: [ExpiryReceipt], problems: [String]) {
        SignedLines.readAll(directory + "/expired", name: "log/expired", entry: "receipt") { n throws(StorageError) in
            try ExpiryReceipt(note: n, verifier: verifier)
        }
    }
}
