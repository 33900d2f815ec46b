public import FlightRecorderEvidence
import Foundation

/// What the evidence log keeps of a segment an erasure rewrote (`SpanStore.purgeErased`):
/// the segment's block records after the rewrite (the erased spans' leaves become *holes*,
/// records that name leaves no block holds) and the hashes of the erased leaves, so every
/// node of the tree can still be computed: every checkpoint signed before still verifies and
/// proofs of the spans left still build. Also the new file's size and SHA-256, which is how
/// start-up tells the rewritten file it may roll forward to from any other.
///
/// Signed by the log's key (a C2SP note in `log/rewrites`, framed like `log/checkpoints`),
/// so `flightrec verify --data` accepts a hole only where a signed rewrite names it. A later
/// rewrite of the same segment supersedes the earlier one's records and keeps its holes.
///
/// The erased leaves are `H(0x00 ‖ salt ‖ span)` of spans that are gone, their salts gone with
/// them (`SpanSalts`), so they confirm no guess. Spans stored before salted leaves left
/// `H(0x00 ‖ span)`, which commits to the span's random IDs and nanosecond times: it confirms
/// a guess only to someone who already holds a copy of that span.
public struct SegmentRewrite: Sendable, Equatable {
    public var segment: Int64
    /// The erasures it carried out.
    public var erasures: [String]
    /// Unix seconds.
    public var time: UInt64
    /// The rewritten file's size and SHA-256 (hex).
    public var fileSize: Int
    public var fileDigest: String
    /// The segment's records after the rewrite, in order (holes included).
    var records: [EvidenceLog.Record]
    /// Every leaf erased from the segment so far (this rewrite's and earlier ones'), by index.
    public var erased: [UInt64: TreeHash]

    /// The note's text; the first line names the log.
    func text(origin: String) -> String {
        let recordBytes = records.flatMap { EvidenceLog.record($0) }
        var erasedBytes: [UInt8] = []
        for leaf in erased.keys.sorted() {
            withUnsafeBytes(of: leaf.littleEndian) { erasedBytes += $0 }
            erasedBytes += erased[leaf]!.bytes
        }
        return """
            \(origin)
            rewrite \(segment)
            erasures \(erasures.isEmpty ? "-" : erasures.joined(separator: ","))
            time \(time)
            file \(fileSize) \(fileDigest)
            records \(Data(recordBytes).base64EncodedString())
            erased \(Data(erasedBytes).base64EncodedString())

            """
    }

    init(
        segment: Int64, erasures: [String], time: UInt64, fileSize: Int, fileDigest: String,
        records: [EvidenceLog.Record], erased: [UInt64: TreeHash]
    ) {
        self.segment = segment
        self.erasures = erasures
        self.time = time
        self.fileSize = fileSize
        self.fileDigest = fileDigest
        self.records = records
        self.erased = erased
    }

    /// Parses a signed rewrite and checks the key's signature on it.
    init(note text: String, verifier: NoteVerifier) throws(StorageError) {
        let lines = try SignedLines(text, verifier: verifier, what: "segment rewrite")
        let s = try lines.field(1, "rewrite")
        let e = try lines.field(2, "erasures")
        let t = try lines.field(3, "time")
        let f = try lines.field(4, "file")
        let r = try lines.field(5, "records")
        let x = try lines.field(6, "erased")
        guard s.count == 1, let segment = Int64(s[0]), e.count == 1, t.count == 1, let time = UInt64(t[0]),
            f.count == 2, let size = Int(f[0]), r.count == 1, let rawRecords = Data(base64Encoded: String(r[0])),
            x.count == 1, let rawErased = Data(base64Encoded: String(x[0])), rawErased.count % 40 == 0
        else { throw .corrupt("segment rewrite: a malformed field") }
        let (records, valid) = EvidenceLog.readRecords(
            [UInt8](rawRecords), startingAt: EvidenceLog.firstLeaf(ofRecords: [UInt8](rawRecords)))
        guard valid == rawRecords.count, records.allSatisfy({ $0.segment == segment }) else {
            throw .corrupt("segment rewrite: its records are damaged or name another segment")
        }
        var erased: [UInt64: TreeHash] = [:]
        let bytes = [UInt8](rawErased)
        for at in stride(from: 0, to: bytes.count, by: 40) {
            let leaf = bytes[at..<at + 8].withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
            erased[leaf] = TreeHash(bytes: bytes[at + 8..<at + 40])
        }
        for rec in records where rec.isHole {
            for leaf in rec.firstLeaf..<rec.endLeaf where erased[leaf] == nil {
                throw .corrupt("segment rewrite: hole leaf \(leaf) has no erased hash")
            }
        }
        self.init(
            segment: segment, erasures: e[0] == "-" ? [] : e[0].split(separator: ",").map(String.init), time: time,
            fileSize: size, fileDigest: String(f[1]), records: records, erased: erased)
    }

    /// The rewrites in `log/rewrites` that `verifier` signed, oldest first, and the problems met.
    public static func read(
        directory: String, verifier: NoteVerifier
    ) -> (rewrites: [SegmentRewrite], problems: [String]) {
        SignedLines.readAll(directory + "/rewrites", name: "log/rewrites", entry: "rewrite") { n throws(StorageError) in
            try SegmentRewrite(note: n, verifier: verifier)
        }
    }

    /// The latest rewrite of each segment, and every erased leaf of all of them.
    static func latest(_ all: [SegmentRewrite]) -> (bySegment: [Int64: SegmentRewrite], erased: [UInt64: TreeHash]) {
        var by: [Int64: SegmentRewrite] = [:]
        var erased: [UInt64: TreeHash] = [:]
        for r in all {
            by[r.segment] = r
            erased.merge(r.erased) { a, _ in a }
        }
        return (by, erased)
    }
}

/// The signed record of one erasure carried out (`log/erasures`): who asked and why, its
/// scope (by digest, never the value), what it removed and from which segments, and the
/// audit bundles exported before it that held the erased runs. Appended once every segment
/// holding the erased data is rewritten.
public struct ErasureReceipt: Sendable, Equatable, Codable {
    public var id: String
    public var kind: String
    public var tenant: String
    public var key: String
    public var valueDigest: String
    public var requestedBy: String
    public var requestedAt: UInt64
    public var completedAt: UInt64
    public var reason: String
    public var runs: Int
    public var spans: Int
    public var segments: [Int64]
    /// The IDs (archive SHA-256) of bundles exported before that held any erased run.
    public var bundles: [String]

    public init(
        id: String, kind: String, tenant: String, key: String, valueDigest: String, requestedBy: String,
        requestedAt: UInt64, completedAt: UInt64, reason: String, runs: Int, spans: Int, segments: [Int64],
        bundles: [String]
    ) {
        self.id = id
        self.kind = kind
        self.tenant = tenant
        self.key = key
        self.valueDigest = valueDigest
        self.requestedBy = requestedBy
        self.requestedAt = requestedAt
        self.completedAt = completedAt
        self.reason = reason
        self.runs = runs
        self.spans = spans
        self.segments = segments
        self.bundles = bundles
    }

    static func clean(_ s: String) -> String {
        let line = s.unicodeScalars.filter { $0.value >= 0x20 }.map(String.init).joined()
        return line.isEmpty ? "-" : line
    }

    func text(origin: String) -> String {
        """
        \(origin)
        erasure \(id)
        scope \(kind) \(Self.clean(tenant).replacingOccurrences(of: " ", with: "_")) \(Self.clean(key).replacingOccurrences(of: " ", with: "_")) \(Self.clean(valueDigest))
        by \(Self.clean(requestedBy))
        times \(requestedAt) \(completedAt)
        counts \(runs) \(spans)
        segments \(segments.isEmpty ? "-" : segments.map(String.init).joined(separator: ","))
        bundles \(bundles.isEmpty ? "-" : bundles.joined(separator: ","))
        reason \(Self.clean(reason))

        """
    }

    init(note text: String, verifier: NoteVerifier) throws(StorageError) {
        let lines = try SignedLines(text, verifier: verifier, what: "erasure receipt")
        let i = try lines.field(1, "erasure")
        let s = try lines.field(2, "scope")
        let b = try lines.field(3, "by")
        let t = try lines.field(4, "times")
        let c = try lines.field(5, "counts")
        let g = try lines.field(6, "segments")
        let u = try lines.field(7, "bundles")
        let r = try lines.field(8, "reason")
        guard i.count == 1, s.count == 4, t.count == 2, let at = UInt64(t[0]), let done = UInt64(t[1]), c.count == 2,
            let runs = Int(c[0]), let spans = Int(c[1]), g.count == 1, u.count == 1
        else { throw .corrupt("erasure receipt: a malformed field") }
        let segments = g[0] == "-" ? [] : g[0].split(separator: ",").compactMap { Int64($0) }
        self.init(
            id: String(i[0]), kind: String(s[0]), tenant: String(s[1]), key: String(s[2]), valueDigest: String(s[3]),
            requestedBy: b.joined(separator: " "), requestedAt: at, completedAt: done, reason: r.joined(separator: " "),
            runs: runs, spans: spans, segments: segments,
            bundles: u[0] == "-" ? [] : u[0].split(separator: ",").map(String.init))
    }

    /// The receipts in `log/erasures` that `verifier` signed, oldest first, and the problems met.
    public static func read(
        directory: String, verifier: NoteVerifier
    ) -> (receipts: [ErasureReceipt], problems: [String]) {
        SignedLines.readAll(directory + "/erasures", name: "log/erasures", entry: "receipt") { n throws(StorageError) in
            try ErasureReceipt(note: n, verifier: verifier)
        }
    }
}

/// A signed note's text as lines, for the log's receipts.
struct SignedLines {
    let lines: [String]
    let what: String

    init(_ text: String, verifier: NoteVerifier, what: String) throws(StorageError) {
        self.what = what
        let note: SignedNote
        do {
            note = try SignedNote(parsing: text)
            guard try verifier.verify(note).signed else { throw EvidenceError.malformed("not signed by the log's key") }
        } catch {
            throw .corrupt("\(what): \(error)")
        }
        lines = note.text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard lines.first == verifier.name else { throw .corrupt("\(what): of another log") }
    }

    func field(_ i: Int, _ name: String) throws(StorageError) -> [Substring] {
        guard i < lines.count, lines[i].hasPrefix(name + " ") else {
            throw .corrupt("\(what): line \(i + 1) is not \"\(name) ...\"")
        }
        return lines[i].dropFirst(name.count + 1).split(separator: " ", omittingEmptySubsequences: false)
    }

    /// The notes of a file framed like `log/checkpoints` that `parse` accepts, oldest first,
    /// and the problems met (a damaged file, an `entry` that does not verify).
    static func readAll<T>(
        _ path: String, name: String, entry: String, _ parse: (String) throws(StorageError) -> T
    ) -> ([T], [String]) {
        let (notes, damagedAt) = EvidenceVerifier.readCheckpoints(EvidenceLog.readFile(path))
        var problems: [String] = []
        if let damagedAt { problems.append("\(name) is damaged at byte \(damagedAt); later \(entry)s unread") }
        var out: [T] = []
        for (i, n) in notes.enumerated() {
            do {
                out.append(try parse(n))
            } catch {
                problems.append("\(name), \(entry) \(i + 1): \(error)")
            }
        }
        return (out, problems)
    }
}
