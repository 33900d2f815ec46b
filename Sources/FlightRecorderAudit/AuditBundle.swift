public import FlightRecorderCore
import FlightRecorderEvidence
public import FlightRecorderOTLP
public import FlightRecorderStorage
import Foundation

/// An audit bundle: one uncompressed POSIX tar archive of the files below, every one named in
/// `manifest.json` with its SHA-256, size and record count, and every one (the manifest
/// included) a subject of the in-toto Statement that `statement.dsse.json` signs with the
/// evidence log's key.
///
/// - `spans.otlp.jsonl`: the exported spans as the OTel file exporter writes them, one
///   `TracesData` per line, exactly as stored, in log order. A line holds one resource and one
///   scope with the spans of one block that share them (v1 bundles: one span per line).
/// - `spans.otlp.pb`: the same lines' messages as protobuf, each preceded by its length as a
///   varint (protobuf's delimited format), in the same order, in the form protobuf-c encodes:
///   a verifier assembles each span's evidence leaf (the span alone with its resource and
///   scope) from its message's parts, and checks each JSON line is its message's encoding.
/// - `decisions.jsonl`: the decision record (policy decisions, approval requests, grants and
///   denials, executions), per run in causal order (`BundleViews`).
/// - `runs.csv`: RFC 4180, one row per run.
/// - `findings.jsonl`: what the causal checks found per run (missing parents, writes with no
///   decision), so a verifier can tell a known gap from a removed span.
/// - `checkpoint.txt`: the signed checkpoint (C2SP tlog-checkpoint) the proof ends in.
/// - `start-checkpoint.txt`: for a time-range export, the signed checkpoint the range starts at.
/// - `erasures.json`: for a time-range export (v3), the range's leaves erased before the
///   export (their spans are gone, so the bundle cannot hold them) and the signed erasure
///   receipts of the bundle's tenants that erased them (`BundleErasures`).
/// - `proof.json`: every span's leaf index and leaf salt, and one `Multiproof` tying them all
///   to the checkpoint; for a time-range export, the consistency proof between the two
///   checkpoints.
public enum AuditBundle {
    /// v3: `proof.json` carries the spans' leaf salts (`leaf_salts`); v2: a line (and
    /// message) holds a scope group's spans; v1 held one span each. v1 and v2 bundles verify
    /// as v3 ones with unsalted leaves (v1: one span per group).
    public static let format = "flightrec-audit-bundle/v3"
    public static let formats: Set<String> = ["flightrec-audit-bundle/v1", "flightrec-audit-bundle/v2", format]
    public static let predicateType = "https://flightrec.dev/audit-bundle/v1"
    public static let statementType = "https://in-toto.io/Statement/v1"

    public static let spans = "spans.otlp.jsonl"
    public static let spansProto = "spans.otlp.pb"
    public static let decisions = "decisions.jsonl"
    public static let runs = "runs.csv"
    public static let findings = "findings.jsonl"
    public static let checkpoint = "checkpoint.txt"
    public static let startCheckpoint = "start-checkpoint.txt"
    public static let erasures = "erasures.json"
    public static let proof = "proof.json"
    public static let manifest = "manifest.json"
    public static let envelope = "statement.dsse.json"

    /// The files a manifest lists, in archive order (`start-checkpoint.txt` only for ranges,
    /// and `erasures.json` for ranges of v3 bundles).
    public static func listed(range: Bool, format: String = format) -> [String] {
        [spans, spansProto, decisions, runs, findings, proof, checkpoint] + (range ? [startCheckpoint] : [])
            + (range && format == Self.format ? [erasures] : [])
    }
}

/// `erasures.json`: what of a time range was erased before the export. The leaves are in
/// the range and none is one the bundle holds; the log's signed rewrites name them (`flightrec
/// verify --data` checks those). Receipts are those of the bundle's tenants only.
public struct BundleErasures: Codable, Sendable, Equatable {
    /// The erased leaves of the range, as `[start, end)` runs in order.
    public var erasedLeaves: [[UInt64]]
    public var erasedSpans: Int
    /// The signed receipts' contents (`ErasureReceipt`: who, when, why, the scope by digest,
    /// counts, segments, earlier bundles); `tenant` is `-` for a subject's erasure over every
    /// tenant, listed only when the runs it erased were all of the bundle's tenants.
    public var receipts: [ErasureReceipt]

    /// `leaves` (sorted) as runs of consecutive indices.
    public static func runs(_ leaves: [UInt64]) -> [[UInt64]] {
        var out: [[UInt64]] = []
        for l in leaves {
            if let last = out.last, last[1] == l { out[out.count - 1][1] = l + 1 } else { out.append([l, l + 1]) }
        }
        return out
    }
}

/// `manifest.json`.
public struct BundleManifest: Codable, Sendable, Equatable {
    public struct File: Codable, Sendable, Equatable {
        public var name: String
        public var sha256: String
        public var size: Int
        /// Lines of a `.jsonl` file, messages of `spans.otlp.pb`, rows of `runs.csv` (header
        /// excluded), 1 for the others.
        public var records: Int
    }

    public struct Selection: Codable, Sendable, Equatable {
        /// `run`, `where` or `range`.
        public var kind: String
        public var runId: String?
        public var `where`: String?
        /// Unix nanoseconds; for `run` and `where` they bound the runs' start, for `range` the
        /// time the spans were logged.
        public var since: Int64?
        public var until: Int64?
    }

    /// For a time-range export: the leaves `[start, end)` between two signed checkpoints, all
    /// of which this bundle accounts for. `startTime` and `endTime` are the checkpoints' signed
    /// times (Unix seconds); the range covers every span logged between them.
    public struct LogRange: Codable, Sendable, Equatable {
        public var start: UInt64
        public var end: UInt64
        public var startTime: UInt64?
        public var endTime: UInt64
    }

    public var format: String
    public var created: String
    /// The tenants whose spans the bundle holds (the token's, narrowed by `--tenant`).
    public var tenants: [String]
    public var selection: Selection
    public var range: LogRange?
    public var files: [File]
    public var spans: Int
    public var runs: Int
    /// SHA-256 of the redaction policy's canonical text (`RedactionPolicy.canonicalText`).
    public var redactionPolicySha256: String
    /// The evidence log's verifier key (C2SP vkey) that signed the checkpoint and the envelope.
    public var keyId: String
    /// The run identity keys the collector resolves runs by.
    public var runIdentityKeys: [String]
    /// The thresholds `findings.jsonl` was derived with; absent means the defaults.
    public var findingRules: FindingRules?
}

/// `proof.json`.
public struct BundleProof: Codable, Sendable, Equatable {
    /// The checkpoint's tree size and root (base64), repeated from `checkpoint.txt`.
    public var treeSize: UInt64
    public var root: String
    /// The `i`th span of `spans.otlp.jsonl` (counting across lines) is leaf `leafIndices[i]`;
    /// strictly increasing.
    public var leafIndices: [UInt64]
    /// The `i`th span's leaf salt (`LeafSalt`: its leaf is `SHA-256(0x00 ‖ salt ‖ message)`),
    /// 16 bytes each, one after another, base64; 16 zero bytes for a span stored unsalted
    /// (before salts existed). Absent when no span is salted.
    public var leafSalts: String?
    /// `Multiproof` hashes, base64, in walk order.
    public var hashes: [String]
    /// For a range: RFC 9162 consistency proof from `start-checkpoint.txt` to `checkpoint.txt`.
    public var consistency: [String]?
    /// Consistency with earlier checkpoints an auditor may have pinned: for each tree size in
    /// `olderSizes`, the hashes of RFC 9162 PROOF(size, checkpoint) by leaf range
    /// (`"start-end"`, base64), shared between sizes. A verifier rebuilds the proof for the
    /// size it pinned (`MerkleTree.consistencyRanges`).
    public var olderSizes: [UInt64]
    public var olderNodes: [String: String]
}

extension BundleProof: JSONWritable {
    /// The JSON `BundleJSON.encoder()` writes, keys in snake case and sorted, without its
    /// indentation: a proof has a number per span and a hash per proof node, too many for the
    /// `Encodable` machinery to be quick (a reader decodes either form).
    public func writeJSON(to w: inout JSONWriter) {
        w.beginObject()
        if let consistency { w.member("consistency", consistency) }
        w.member("hashes", hashes)
        w.key("leaf_indices")
        w.beginArray()
        for i in leafIndices { w.int(Int64(i)) }
        w.endArray()
        if let leafSalts { w.member("leaf_salts", leafSalts) }
        w.key("older_nodes")
        w.beginObject()
        for key in olderNodes.keys.sorted() {
            w.key(dynamic: key)
            w.string(olderNodes[key]!)
        }
        w.endObject()
        w.key("older_sizes")
        w.beginArray()
        for size in olderSizes { w.int(Int64(size)) }
        w.endArray()
        w.member("root", root)
        w.member("tree_size", Int64(treeSize))
        w.endObject()
    }
}

/// The in-toto Statement the envelope signs.
public struct BundleStatement: Codable, Sendable, Equatable {
    public struct Subject: Codable, Sendable, Equatable {
        public var name: String
        public var digest: [String: String]
    }

    public struct Predicate: Codable, Sendable, Equatable {
        public var format: String
        public var checkpointSize: UInt64
        public var spans: Int
    }

    public var _type: String
    public var subject: [Subject]
    public var predicateType: String
    public var predicate: Predicate
}

enum BundleJSON {
    static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes, .prettyPrinted]
        return e
    }

    /// camelCase as the specifications spell them (in-toto, DSSE).
    static func plain() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }

    static func decoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return d
    }
}

extension BundleProof {
    /// `proof.json` as `writeJSON` writes it, read without `JSONDecoder`; nil for any other
    /// form, which `read` then gives to `JSONDecoder` (so what this accepts, it reads as
    /// `JSONDecoder` would: ASCII strings without escapes, numbers without sign, fraction or
    /// exponent, the members in the order written, each once, no `_` in a map key that
    /// snake-case conversion could change).
    ///
    /// Hand-written: `JSONDecoder` spent about 3 % of a verification's CPU on the array of a
    /// number per span; no package this project may use decodes faster.
    static func readCompact(_ b: UnsafeRawBufferPointer) -> BundleProof? {
        var at = 0
        func eat(_ literal: StaticString) -> Bool {
            literal.withUTF8Buffer { l in
                guard b.count - at >= l.count, memcmp(b.baseAddress! + at, l.baseAddress!, l.count) == 0 else {
                    return false
                }
                at += l.count
                return true
            }
        }
        func string() -> String? {
            guard at < b.count, b[at] == UInt8(ascii: "\"") else { return nil }
            let start = at + 1
            var end = start
            while end < b.count, b[end] != UInt8(ascii: "\"") {
                guard b[end] >= 0x20, b[end] < 0x80, b[end] != UInt8(ascii: "\\") else { return nil }
                end += 1
            }
            guard end < b.count else { return nil }
            at = end + 1
            return String(decoding: UnsafeRawBufferPointer(rebasing: b[start..<end]), as: UTF8.self)
        }
        func number() -> UInt64? {
            let start = at
            var v: UInt64 = 0
            while at < b.count, b[at] >= 0x30, b[at] <= 0x39 {
                let (times, o1) = v.multipliedReportingOverflow(by: 10)
                let (plus, o2) = times.addingReportingOverflow(UInt64(b[at] - 0x30))
                guard !o1, !o2 else { return nil }
                v = plus
                at += 1
            }
            // One digit at least, and no leading zero.
            guard at > start, b[start] != 0x30 || at == start + 1 else { return nil }
            return v
        }
        func list<T>(_ element: () -> T?) -> [T]? {
            guard eat("[") else { return nil }
            var out: [T] = []
            if eat("]") { return out }
            repeat {
                guard let e = element() else { return nil }
                out.append(e)
            } while eat(",")
            return eat("]") ? out : nil
        }
        guard eat("{") else { return nil }
        var consistency: [String]?
        if eat("\"consistency\":") {
            guard let c = list(string), eat(",") else { return nil }
            consistency = c
        }
        guard eat("\"hashes\":"), let hashes = list(string), eat(",\"leaf_indices\":"), let leafIndices = list(number)
        else { return nil }
        var leafSalts: String?
        if eat(",\"leaf_salts\":") {
            guard let s = string() else { return nil }
            leafSalts = s
        }
        guard eat(",\"older_nodes\":{") else { return nil }
        var olderNodes: [String: String] = [:]
        if !eat("}") {
            repeat {
                guard let key = string(), !key.contains("_"), olderNodes[key] == nil, eat(":"), let value = string()
                else { return nil }
                olderNodes[key] = value
            } while eat(",")
            guard eat("}") else { return nil }
        }
        guard eat(",\"older_sizes\":"), let olderSizes = list(number), eat(",\"root\":"), let root = string(),
            eat(",\"tree_size\":"), let treeSize = number(), eat("}"), at == b.count
        else { return nil }
        return BundleProof(
            treeSize: treeSize, root: root, leafIndices: leafIndices, leafSalts: leafSalts, hashes: hashes,
            consistency: consistency, olderSizes: olderSizes, olderNodes: olderNodes)
    }

    /// `leafSalts` read: one salt per span (`.none` each when absent); nil when it is not
    /// base64 of `spans` 16-byte salts.
    func salts(spans: Int) -> [LeafSalt]? {
        guard let leafSalts else { return [LeafSalt](repeating: .none, count: spans) }
        guard let data = Data(base64Encoded: leafSalts), data.count == spans * LeafSalt.size else { return nil }
        return data.withUnsafeBytes { b in
            (0..<spans).map { LeafSalt(loading: UnsafeRawBufferPointer(rebasing: b[($0 * LeafSalt.size)...])) }
        }
    }

    /// `proof.json`, in the form `writeJSON` writes or any other `JSONDecoder` reads.
    static func read(_ data: Data) -> BundleProof? {
        data.withUnsafeBytes { readCompact($0) } ?? (try? BundleJSON.decoder().decode(BundleProof.self, from: data))
    }
}
