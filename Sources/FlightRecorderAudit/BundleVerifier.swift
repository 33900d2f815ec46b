import COTLP
import Crypto
import FlightRecorderCore
public import FlightRecorderEvidence
import FlightRecorderOTLP
import FlightRecorderStorage
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// `flightrec audit verify`: checks an audit bundle offline, with no daemon and no network.
///
/// In order: the archive holds exactly the bundle's files; the DSSE envelope is signed by the
/// key; the signed Statement's digests match every file; the manifest's digests, sizes and
/// record counts match; the checkpoint is signed by the key; every span line is a single-span
/// `TracesData` of a tenant the manifest names, and the `Multiproof` of their leaves gives the
/// checkpoint's root; for a time range, the start checkpoint is signed, consistent with the
/// end one, and every span lies between them; the derived files (`decisions.jsonl`,
/// `runs.csv`, `findings.jsonl`) are exactly what the proved spans give; causal completeness
/// (parents resolve, writes have decisions) holds or a finding says why not; and, with a pinned
/// checkpoint, the bundle's checkpoint is consistent with it.
public enum BundleVerifier {
    public struct Report: Sendable {
        /// Each check that failed, naming the file, line or leaf.
        public var failures: [String] = []
        public var keyPinned = false
        public var key: String?
        public var spans = 0
        public var runs = 0
        public var decisions = 0
        public var checkpointSize: UInt64 = 0
        public var selection: String?
        public var tenants: [String] = []
        /// Findings by kind: known gaps the bundle declares (missing parents, writes without a
        /// decision), each already checked against the spans.
        public var findings: [String: Int] = [:]
        public var pinnedSize: UInt64?
        /// The bundle's ID: its manifest's SHA-256 (what an erasure receipt names).
        public var bundleID: String?
        /// For a time range: its spans erased before the export (`erasures.json`), and the
        /// IDs of the receipts that erased them.
        public var erasedSpans = 0
        public var erasures: [String] = []
        public var ok: Bool { failures.isEmpty }
    }

    /// Verifies the bundle `archive` against `key` (the auditor's pinned key; nil trusts the key
    /// the bundle names, which proves it self-consistent but not who signed it) and, when given,
    /// a checkpoint the auditor pinned earlier.
    public static func verify(
        archive: UnsafeRawBufferPointer, key pinnedKey: NoteVerifier?, pinned: String?, keepUntilExit: Bool = false
    ) -> Report {
        var report = Report()
        func fail(_ message: String) { report.failures.append(message) }

        // The archive: exactly the bundle's files, each once.
        let members: [Tar.Member]
        do {
            members = try Tar.members(archive)
        } catch {
            fail(error.description)
            return report
        }
        var files: [String: UnsafeRawBufferPointer] = [:]
        for m in members {
            if files[m.name] != nil { fail("archive: \(m.name) appears twice") }
            files[m.name] = UnsafeRawBufferPointer(rebasing: archive[m.range])
        }
        func bytes(_ name: String) -> UnsafeRawBufferPointer? { files[name] }
        func data(_ name: String) -> Data? { files[name].map { Data($0) } }

        // Every file's digest but the envelope's, from the start: they need nothing else, and
        // meanwhile this thread reads the proof alone (the other core sat idle for it, `perf`).
        // Awaited before returning, since they read the archive.
        let hashed = members.filter { $0.name != AuditBundle.envelope }
        nonisolated(unsafe) let whole = archive
        let hashing = Background { () -> [String?] in
            let computed = Mutex([String?](repeating: nil, count: hashed.count))
            DispatchQueue.concurrentPerform(iterations: hashed.count) { i in
                let digest = Hex.encode(SHA256.hash(data: UnsafeRawBufferPointer(rebasing: whole[hashed[i].range])))
                computed.withLock { $0[i] = digest }
            }
            return computed.withLock { $0 }
        }
        defer { _ = hashing.value }

        // The proof is read first: its leaf salts go into the leaves (none for a bundle from
        // before salts).
        let proof = data(AuditBundle.proof).flatMap { BundleProof.read($0) }
        let salts = proof?.salts(spans: proof?.leafIndices.count ?? 0)
        let leafSalts = proof?.leafSalts == nil ? [] : salts ?? []
        // The spans (the bulk of the work) are read on every core from the start, while this
        // thread checks signatures, digests and the manifest; awaited before returning, since
        // they read the archive.
        nonisolated(unsafe) let spanFiles = (files[AuditBundle.spans], files[AuditBundle.spansProto])
        let reading = Background {
            spanFiles.0.flatMap { json in spanFiles.1.map { SpanLines.read(json: json, proto: $0, salts: leafSalts) } }
        }
        defer { _ = reading.value }

        // The envelope and its key.
        guard let envelopeData = data(AuditBundle.envelope),
            let envelope = try? JSONDecoder().decode(DSSEEnvelope.self, from: envelopeData)
        else {
            fail("\(AuditBundle.envelope): missing or not a DSSE envelope")
            return report
        }
        // The envelope is the one file no digest covers: it must be exactly as written, so no
        // byte of the bundle can change unnoticed (base64's spare bits and JSON's whitespace
        // included).
        if (try? BundleJSON.plain().encode(envelope)) != envelopeData {
            fail("\(AuditBundle.envelope): not the envelope as the exporter writes it (changed bytes)")
        }
        let manifestData = data(AuditBundle.manifest)
        let manifest = manifestData.flatMap { try? BundleJSON.decoder().decode(BundleManifest.self, from: $0) }
        let key: NoteVerifier
        if let pinnedKey {
            key = pinnedKey
            report.keyPinned = true
        } else if let named = manifest?.keyId, let k = try? NoteVerifier(encoded: named) {
            key = k
        } else {
            fail("no --key given and the manifest names no usable key")
            return report
        }
        report.key = key.encoded
        let statement: BundleStatement
        do {
            let payload = try envelope.verifiedPayload(key: key)
            guard envelope.payloadType == DSSEEnvelope.inTotoType else {
                fail(
                    "\(AuditBundle.envelope): payload type \(envelope.payloadType), expected \(DSSEEnvelope.inTotoType)"
                )
                return report
            }
            statement = try JSONDecoder().decode(BundleStatement.self, from: Data(payload))
        } catch {
            fail("\(AuditBundle.envelope): \(error)")
            return report
        }
        if statement._type != AuditBundle.statementType || statement.predicateType != AuditBundle.predicateType {
            fail("statement: type \(statement._type), predicate \(statement.predicateType): not an audit bundle's")
        }

        // Every file the statement names, with its digest; nothing else.
        var digests: [String: String] = [:]
        for (m, d) in zip(hashed, hashing.value) { digests[m.name] = d }
        report.bundleID = digests[AuditBundle.manifest]
        var subjects: Set<String> = []
        for s in statement.subject {
            subjects.insert(s.name)
            guard let actual = digests[s.name] else {
                fail("\(s.name): named by the signed statement but missing from the archive")
                continue
            }
            if s.digest["sha256"] != actual { fail("\(s.name): SHA-256 differs from the signed statement") }
        }
        for name in digests.keys.sorted() where !subjects.contains(name) {
            fail("\(name): in the archive but not in the signed statement")
        }

        // The manifest.
        guard let manifest else {
            fail("\(AuditBundle.manifest): missing or malformed")
            return report
        }
        report.selection = manifest.selection.kind
        report.tenants = manifest.tenants
        let isRange = manifest.selection.kind == "range"
        if !AuditBundle.formats.contains(manifest.format) {
            fail("manifest: format \(manifest.format), expected \(AuditBundle.format)")
        }
        if manifest.keyId != key.encoded {
            fail("manifest: key \(manifest.keyId), but the bundle is checked against \(key.encoded)")
        }
        let expected = AuditBundle.listed(range: isRange, format: manifest.format)
        if manifest.files.map(\.name) != expected {
            fail("manifest: lists \(manifest.files.map(\.name)), expected \(expected)")
        }
        var records: [String: Int] = [:]
        for f in manifest.files {
            guard let b = bytes(f.name) else {
                fail("\(f.name): listed in the manifest but missing")
                continue
            }
            if digests[f.name] != f.sha256 { fail("\(f.name): SHA-256 differs from the manifest") }
            if b.count != f.size { fail("\(f.name): \(b.count) bytes, the manifest says \(f.size)") }
            records[f.name] = f.records
        }
        for name in files.keys.sorted()
        where !expected.contains(name) && name != AuditBundle.manifest && name != AuditBundle.envelope {
            fail("\(name): not a file of an audit bundle")
        }
        if statement.predicate.spans != manifest.spans {
            fail("statement: \(statement.predicate.spans) spans, manifest \(manifest.spans)")
        }

        // The checkpoint.
        guard let checkpointText = data(AuditBundle.checkpoint).map({ String(decoding: $0, as: UTF8.self) }),
            let (checkpoint, checkpointTime) = verifiedCheckpoint(
                checkpointText, key: key, name: AuditBundle.checkpoint, fail)
        else { return report }
        report.checkpointSize = checkpoint.size
        if statement.predicate.checkpointSize != checkpoint.size {
            fail("statement: checkpoint size \(statement.predicate.checkpointSize), checkpoint.txt \(checkpoint.size)")
        }
        guard let proof else {
            fail("\(AuditBundle.proof): missing or malformed")
            return report
        }
        if salts == nil {
            fail("\(AuditBundle.proof): leaf_salts is not base64 of a 16-byte salt per leaf index")
        }
        if proof.treeSize != checkpoint.size || proof.root != checkpoint.root.base64 {
            fail("\(AuditBundle.proof): tree size or root differs from the checkpoint")
        }

        // The spans: each message's leaf, each line its encoding, then the proof.
        guard let spanBytes = bytes(AuditBundle.spans), let protoBytes = bytes(AuditBundle.spansProto) else {
            fail("\(AuditBundle.spans) or \(AuditBundle.spansProto): missing")
            return report
        }
        _ = (spanBytes, protoBytes)
        // Read while the spans are (they need nothing of them; this thread would only wait):
        // `runs.csv` and the lines of the derived files, whose problems are reported below.
        let runsFile = RunsFile(data(AuditBundle.runs))
        let derivedLines = (
            decisions: bytes(AuditBundle.decisions).map { ($0, SpanLines.lineRanges($0)) },
            findings: bytes(AuditBundle.findings).map { ($0, SpanLines.lineRanges($0)) }
        )
        guard let lines = reading.value else { return report }
        if keepUntilExit { Self.keptUntilExit.withLock { $0.append(lines) } }
        report.spans = lines.spanCount
        for f in lines.failures { fail(f) }
        if lines.messageCount != records[AuditBundle.spansProto] {
            fail(
                "\(AuditBundle.spansProto): \(lines.messageCount) messages, the manifest says \(records[AuditBundle.spansProto] ?? 0)"
            )
        }
        if lines.lineCount != records[AuditBundle.spans] {
            fail("\(AuditBundle.spans): \(lines.lineCount) lines, the manifest says \(records[AuditBundle.spans] ?? 0)")
        }
        if lines.spanCount != manifest.spans {
            fail("\(AuditBundle.spans): \(lines.spanCount) spans, manifest.spans \(manifest.spans)")
        }
        if proof.leafIndices.count != lines.spanCount {
            fail("\(AuditBundle.proof): \(proof.leafIndices.count) leaf indices for \(lines.spanCount) spans")
        }
        // The proof is recomputed on a thread of its own while the derived files are checked.
        // Its hashes are decoded there too (tens of milliseconds for a large bundle, which this
        // thread would otherwise spend with the other core idle).
        let proving: Background<(decoded: Bool, root: Bool)>?
        if proof.leafIndices.count == lines.spanCount && lines.failures.isEmpty {
            let (encoded, indices, leaves, checkpointSize, checkpointRoot) = (
                proof.hashes, proof.leafIndices, lines.leaves, checkpoint.size, checkpoint.root
            )
            proving = Background {
                let hashes = encoded.compactMap(TreeHash.init(base64:))
                let root: TreeHash? =
                    checkpointSize == 0
                    ? (indices.isEmpty && hashes.isEmpty ? TreeHash.empty : nil)
                    : Multiproof.root(indices: indices, leaves: leaves, size: checkpointSize, proof: hashes)
                return (hashes.count == encoded.count, root == checkpointRoot)
            }
        } else {
            proving = nil
        }
        func proved() {
            guard let proving else { return }
            let (decoded, root) = proving.value
            if !decoded { fail("\(AuditBundle.proof): a hash is not 32 bytes of base64") }
            if !root {
                fail(
                    "\(AuditBundle.proof): the spans and the proof do not give the checkpoint's root: a span was changed, added, "
                        + "removed or reordered, or the proof does not match")
            }
        }
        let tenants = Set(manifest.tenants)
        var lastTenant: String?  // spans come in groups of one resource: most repeat the tenant before
        // By index, the tenant read in place: copying a record retains each of its parts.
        tenantCheck: for chunk in lines.chunks {
            for k in chunk.indices where chunk[k].tenant != lastTenant {
                lastTenant = chunk[k].tenant
                guard !tenants.contains(chunk[k].tenant) else { continue }
                fail(
                    "\(AuditBundle.spans): span \(chunk[k].spanID.hex) is of tenant \(chunk[k].tenant), not one the manifest names"
                )
                break tenantCheck
            }
        }

        // A time range: its two signed checkpoints, consistent, every span between them.
        if isRange {
            checkRange(
                manifest: manifest, proof: proof, checkpoint: checkpoint, time: checkpointTime, key: key,
                startText: data(AuditBundle.startCheckpoint).map { String(decoding: $0, as: UTF8.self) }, fail)
            if expected.contains(AuditBundle.erasures), let range = manifest.range {
                checkErasures(data(AuditBundle.erasures), range: range, proof: proof, tenants: tenants, &report)
            }
        } else if manifest.range != nil || proof.consistency != nil {
            fail("manifest: a log range on a \(manifest.selection.kind) export")
        }

        // The derived files: exactly what the proved spans give.
        guard let runsFile else {
            fail("\(AuditBundle.runs): missing or not RFC 4180")
            proved()
            return report
        }
        for problem in runsFile.problems { fail(problem) }
        let runs = runsFile.runs
        report.runs = runs.count
        var expectedLines: ExpectedLines?
        if let claims = runsFile.claims, let decisions = derivedLines.decisions, let findings = derivedLines.findings {
            expectedLines = ExpectedLines(
                decisions: .init(bytes: decisions.0, lines: decisions.1),
                findings: .init(bytes: findings.0, lines: findings.1), claims: claims)
        }
        let views = BundleViews.derive(
            chunks: lines.chunks, runs: runs, rules: manifest.findingRules ?? .default, expected: expectedLines)
        for s in views.unowned.prefix(20) {
            fail(
                "\(AuditBundle.spans): span \(s.spanID.hex) of trace \(s.traceID.hex) belongs to no run in \(AuditBundle.runs)"
            )
        }
        for (name, derived, count) in [
            (AuditBundle.runs, views.runs, views.runCount),
            (AuditBundle.decisions, views.decisions, views.decisionCount),
            (AuditBundle.findings, views.findings, views.findingCount),
        ] {
            guard let b = bytes(name) else {
                fail("\(name): missing")
                continue
            }
            // Decisions and findings checked line by line while derived (`linesMatched`), or
            // here in full.
            let checked = views.linesMatched && name != AuditBundle.runs
            if !checked && !derived.matches(b) {
                fail("\(name): differs from what the proved spans give (\(firstDifference(b, derived.joined)))")
            }
            if records[name] != count { fail("\(name): \(count) records, the manifest says \(records[name] ?? 0)") }
        }
        if manifest.runs != views.runCount {
            fail("manifest: \(manifest.runs) runs, \(AuditBundle.runs) has \(views.runCount)")
        }
        proved()
        report.decisions = views.decisionCount
        report.findings = views.findingKinds

        // Consistency with a checkpoint the auditor pinned earlier.
        if let pinned {
            report.pinnedSize = checkPinned(pinned, checkpoint: checkpoint, proof: proof, key: key, fail)
        }
        return report
    }

    /// What `verify(keepUntilExit: true)` did not free: a command that exits right after
    /// verifying lets the process's end release the spans' records at once, instead of one
    /// by one (a few hundred milliseconds for a million spans).
    static let keptUntilExit = Mutex<[SpanLines]>([])

    static func verifiedCheckpoint(
        _ text: String, key: NoteVerifier, name: String, _ fail: (String) -> Void
    ) -> (Checkpoint, UInt64?)? {
        do {
            let note = try SignedNote(parsing: text)
            let verified = try key.verify(note)
            let c = try Checkpoint(text: note.text)
            guard c.origin == key.name else {
                fail("\(name): a checkpoint of another log (\(c.origin))")
                return nil
            }
            return (c, verified.time)
        } catch {
            fail("\(name): \(error)")
            return nil
        }
    }

    static func checkRange(
        manifest: BundleManifest, proof: BundleProof, checkpoint: Checkpoint, time: UInt64?, key: NoteVerifier,
        startText: String?, _ fail: (String) -> Void
    ) {
        guard let range = manifest.range, manifest.tenants.count == 1 else {
            fail("manifest: a time-range export names one tenant and its log range")
            return
        }
        if range.end != checkpoint.size {
            fail("manifest: the range ends at \(range.end), the checkpoint at \(checkpoint.size)")
        }
        if let time, range.endTime != time {
            fail("manifest: the range's end time is not the checkpoint's signed time")
        }
        var oldRoot = TreeHash.empty
        if let startText, !startText.isEmpty {
            guard
                let (start, startTime) = verifiedCheckpoint(
                    startText, key: key, name: AuditBundle.startCheckpoint, fail)
            else { return }
            if start.size != range.start {
                fail("\(AuditBundle.startCheckpoint): size \(start.size), the range starts at \(range.start)")
            }
            if startTime != range.startTime {
                fail("manifest: the range's start time is not the start checkpoint's signed time")
            }
            if let since = manifest.selection.since, let t = startTime, t >= UInt64(max(0, since / 1_000_000_000)) {
                fail(
                    "\(AuditBundle.startCheckpoint): signed after the range's since, so spans logged in between are not covered"
                )
            }
            oldRoot = start.root
        } else if range.start > 0 {
            fail(
                "\(AuditBundle.startCheckpoint): the range starts at leaf \(range.start) but no signed checkpoint shows it"
            )
            return
        } else if range.startTime != nil {
            fail("manifest: a start time without a start checkpoint")
        }
        let hashes = (proof.consistency ?? []).compactMap(TreeHash.init(base64:))
        if range.start > 0,
            !MerkleTree.verifyConsistency(
                old: range.start, oldRoot: oldRoot, size: checkpoint.size, root: checkpoint.root, proof: hashes)
        {
            fail("\(AuditBundle.proof): the start checkpoint is not consistent with the checkpoint")
        }
        if let first = proof.leafIndices.first, first < range.start {
            fail("\(AuditBundle.proof): leaf \(first) is before the range")
        }
        if let until = manifest.selection.until, range.endTime < UInt64(max(0, until / 1_000_000_000)) {
            fail("manifest: the range ends (signed \(range.endTime)) before its until")
        }
    }

    /// `erasures.json` of a range: its erased leaves lie in the range, in order, and are none
    /// the bundle holds; its receipts are of the bundle's tenants, each once. Accepted, the
    /// erased spans are reported as such.
    static func checkErasures(
        _ data: Data?, range: BundleManifest.LogRange, proof: BundleProof, tenants: Set<String>,
        _ report: inout Report
    ) {
        let name = AuditBundle.erasures
        guard let data, let e = try? BundleJSON.decoder().decode(BundleErasures.self, from: data) else {
            report.failures.append("\(name): missing or malformed")
            return
        }
        var count: UInt64 = 0
        var previousEnd = range.start
        var held = proof.leafIndices[...]
        for r in e.erasedLeaves {
            guard r.count == 2, r[0] >= previousEnd, r[0] < r[1], r[1] <= range.end else {
                report.failures.append("\(name): erased leaves \(r) are not an ordered run within the range")
                return
            }
            while let first = held.first, first < r[0] { held = held.dropFirst() }
            if let first = held.first, first < r[1] {
                report.failures.append("\(name): leaf \(first) is both erased and in the bundle")
                return
            }
            count += r[1] - r[0]
            previousEnd = r[1]
        }
        if count != UInt64(e.erasedSpans) {
            report.failures.append("\(name): \(count) erased leaves, erased_spans says \(e.erasedSpans)")
        }
        if Set(e.receipts.map(\.id)).count != e.receipts.count {
            report.failures.append("\(name): a receipt appears twice")
        }
        if let other = e.receipts.first(where: { $0.tenant != "-" && !tenants.contains($0.tenant) }) {
            report.failures.append(
                "\(name): receipt \(other.id) is of tenant \(other.tenant), not one the manifest names")
        }
        if e.erasedSpans > 0 && e.receipts.isEmpty {
            report.failures.append("\(name): erased spans with no receipt")
        }
        report.erasedSpans = e.erasedSpans
        report.erasures = e.receipts.map(\.id)
    }

    /// The pinned checkpoint's size, after checking the bundle's checkpoint extends it.
    static func checkPinned(
        _ text: String, checkpoint: Checkpoint, proof: BundleProof, key: NoteVerifier, _ fail: (String) -> Void
    ) -> UInt64? {
        guard let (pinned, _) = verifiedCheckpoint(text, key: key, name: "pinned checkpoint", fail) else { return nil }
        if pinned.size > checkpoint.size {
            fail(
                "pinned checkpoint: \(pinned.size) leaves, newer than the bundle's \(checkpoint.size): verify the newer bundle"
            )
            return pinned.size
        }
        if pinned.size == checkpoint.size {
            if pinned.root != checkpoint.root { fail("pinned checkpoint: same size, different root: the log forked") }
            return pinned.size
        }
        if pinned.size == 0 { return pinned.size }
        var hashes: [TreeHash] = []
        for r in MerkleTree.consistencyRanges(old: pinned.size, size: checkpoint.size) {
            guard let h = proof.olderNodes["\(r.start)-\(r.end)"].flatMap(TreeHash.init(base64:)) else {
                fail(
                    "pinned checkpoint: the bundle holds no consistency proof from size \(pinned.size); "
                        + "export again with --pinned-checkpoint")
                return pinned.size
            }
            hashes.append(h)
        }
        if !MerkleTree.verifyConsistency(
            old: pinned.size, oldRoot: pinned.root, size: checkpoint.size, root: checkpoint.root, proof: hashes)
        {
            fail("pinned checkpoint: not consistent with the bundle's checkpoint: the log was rewritten")
        }
        return pinned.size
    }

    static func firstDifference(_ a: UnsafeRawBufferPointer, _ b: [UInt8]) -> String {
        var line = 1
        for i in 0..<min(a.count, b.count) {
            if a[i] != b[i] { return "first at line \(line)" }
            if a[i] == 0x0A { line += 1 }
        }
        return a.count < b.count ? "it is shorter" : "it is longer"
    }
}

/// `runs.csv` as the verifier reads it: the runs, what each row claims (its decisions and
/// findings, to check those files line by line; nil when a claim is not a number), and what is
/// wrong with its rows. nil when the file is missing or not RFC 4180.
struct RunsFile {
    var runs: [BundleViews.Run] = []
    var claims: [(decisions: Int, findings: Int)]? = []
    var problems: [String] = []

    init?(_ data: Data?) {
        guard let text = data.map({ String(decoding: $0, as: UTF8.self) }), let rows = CSV.parse(text) else {
            return nil
        }
        guard rows.first?.joined(separator: ",") == BundleViews.csvHeader else {
            problems.append("\(AuditBundle.runs): the header is not \(BundleViews.csvHeader)")
            return
        }
        for (i, row) in rows.dropFirst().enumerated() {
            guard row.count == 11 else {
                problems.append("\(AuditBundle.runs) row \(i + 1): \(row.count) fields, expected 11")
                continue
            }
            let traces = row[10].split(separator: " ").compactMap { TraceID(hex: String($0)) }
            runs.append(BundleViews.Run(runID: row[0], tenant: row[1], traces: traces))
            if let decisions = Int(row[7]), let findings = Int(row[9]) {
                claims?.append((decisions, findings))
            } else {
                claims = nil
            }
        }
    }
}

/// A value computed on another thread while the caller goes on; `value` waits for it.
final class Background<T>: @unchecked Sendable {  // `result` is written once, before `done` is signalled
    private var result: T?
    private let done = DispatchSemaphore(value: 0)

    /// On a thread of its own, not one of Dispatch's: the work spreads itself over every core
    /// with `concurrentPerform`, and run from a pool thread it got no second core for as long
    /// as the caller's own `concurrentPerform` (the file digests) held the other (`perf`: half
    /// a second of a three-second verification on one core).
    init(_ work: @escaping @Sendable () -> T) {
        let thread = Thread {
            self.result = work()
            self.done.signal()
        }
        thread.stackSize = 8 << 20
        thread.start()
    }

    var value: T {
        done.wait()
        done.signal()
        return result!
    }
}

/// The exported spans: each message of `spans.otlp.pb` read once (`SpanGroupReader`), its
/// spans' leaves hashed, and each line of `spans.otlp.jsonl` checked to be exactly that
/// message's encoding.
struct SpanLines {
    var leaves: [TreeHash] = []
    /// The spans in order, in the chunks the threads read (not copied into one array).
    var chunks: [[SpanRecord]] = []
    /// The spans in order (a single part's records, while it is being read).
    var spans: [SpanRecord] = []
    var spanCount: Int { chunks.reduce(0) { $0 + $1.count } }
    var failures: [String] = []
    var lineCount = 0
    var messageCount = 0

    /// The lines of `json` (without their newlines).
    static func lineRanges(_ json: UnsafeRawBufferPointer) -> [Range<Int>] {
        var lines: [Range<Int>] = []
        var start = 0
        while start < json.count {
            let found = memchr(json.baseAddress! + start, 0x0A, json.count - start)
            let end = found.map { json.baseAddress!.distance(to: UnsafeRawPointer($0)) } ?? json.count
            lines.append(start..<end)
            start = end + 1
        }
        return lines
    }

    /// The messages of a delimited protobuf stream, up to the first that is cut short.
    static func messageRanges(_ proto: UnsafeRawBufferPointer) -> [Range<Int>] {
        var messages: [Range<Int>] = []
        var at = 0
        while at < proto.count {
            var length: UInt64 = 0
            var shift: UInt64 = 0
            while at < proto.count, shift < 64 {
                let byte = proto[at]
                at += 1
                length |= UInt64(byte & 0x7F) << shift
                shift += 7
                if byte & 0x80 == 0 { break }
            }
            guard length <= UInt64(proto.count - at) else { break }
            messages.append(at..<at + Int(length))
            at += Int(length)
        }
        return messages
    }

    /// Every span, on every core: cut into chunks read concurrently, then joined in order; the
    /// `i`th span's leaf salted with `salts[i]` (none past its end).
    static func read(json: UnsafeRawBufferPointer, proto: UnsafeRawBufferPointer, salts: [LeafSalt]) -> SpanLines {
        var out = SpanLines()
        let lines = lineRanges(json)
        if !json.isEmpty && json[json.count - 1] != 0x0A {
            out.failures.append("\(AuditBundle.spans): the last line does not end in a newline")
        }
        let messages = messageRanges(proto)
        if messages.last.map({ $0.upperBound != proto.count }) ?? !proto.isEmpty {
            out.failures.append("\(AuditBundle.spansProto): a message is cut short")
        }
        out.lineCount = lines.count
        out.messageCount = messages.count
        if lines.count != messages.count {
            out.failures.append(
                "\(AuditBundle.spans) has \(lines.count) lines, \(AuditBundle.spansProto) \(messages.count) messages")
        }
        let count = min(lines.count, messages.count)
        // A line is a group of spans (about 170 in a generated bundle), so parts are counted in
        // lines: at 256 lines a part, a 420,000-span bundle made 9 parts, and one core sat idle
        // while the other read the last.
        let chunks = max(1, min(count, ProcessInfo.processInfo.activeProcessorCount * 16))
        let per = (count + chunks - 1) / chunks
        let parts = Mutex([SpanLines?](repeating: nil, count: chunks))
        let (lineList, messageList) = (lines, messages)
        // The archive outlives the loop, which returns only when every chunk is done.
        nonisolated(unsafe) let (jsonBytes, protoBytes) = (json, proto)
        // With salts, each chunk's first span number: the spans of the chunks before it,
        // counted first (a walk of each message, without unpacking).
        var firstSpan = [Int](repeating: 0, count: chunks)
        var spanCounts: [Int]?
        if !salts.isEmpty {
            let counts = Mutex([Int](repeating: 0, count: chunks))
            DispatchQueue.concurrentPerform(iterations: chunks) { c in
                var (key, shape) = ([UInt8](), SpanGroupReader.Shape())
                var n = 0
                for k in min(c * per, count)..<min(c * per + per, count) {
                    let message = UnsafeRawBufferPointer(rebasing: protoBytes[messageList[k]])
                    if SpanGroupReader.walk(message, key: &key, shape: &shape) { n += shape.spans.count }
                }
                counts.withLock { $0[c] = n }
            }
            let n = counts.withLock { $0 }
            for c in 1..<max(1, chunks) { firstSpan[c] = firstSpan[c - 1] + n[c - 1] }
            spanCounts = n
        }
        let (bases, reserve) = (firstSpan, spanCounts)
        DispatchQueue.concurrentPerform(iterations: chunks) { c in
            var part = SpanLines()
            // Sized once where the spans were counted: grown by appending, the records were
            // copied and faulted in again at each doubling.
            if let reserve {
                part.spans.reserveCapacity(reserve[c])
                part.leaves.reserveCapacity(reserve[c])
            }
            var reader = SpanGroupReader()
            var next = bases[c]
            for k in min(c * per, count)..<min(c * per + per, count) {
                let line = UnsafeRawBufferPointer(rebasing: jsonBytes[lineList[k]])
                let message = UnsafeRawBufferPointer(rebasing: protoBytes[messageList[k]])
                switch reader.read(
                    message, line: line, salts: salts, next: &next, records: &part.spans, leaves: &part.leaves)
                {
                case .success: break
                case .failure(let failure):
                    guard part.failures.count < 20 else { break }
                    part.failures.append(
                        failure == .shape
                            ? "\(AuditBundle.spansProto): message \(k + 1) is not a TracesData of one resource and scope "
                                + "group as protobuf-c encodes it, each span with a trace and span ID"
                            : "\(AuditBundle.spans) line \(k + 1): is not the encoding of \(AuditBundle.spansProto) message \(k + 1)"
                    )
                }
            }
            parts.withLock { $0[c] = part }
        }
        let done = parts.withLock { $0 }.compactMap { $0 }
        // Reserved whole: grown by appending, it was copied and faulted in again at each
        // doubling (a tenth of a second for 370,000 leaves, with the other core idle).
        out.leaves.reserveCapacity(done.reduce(0) { $0 + $1.leaves.count })
        for part in done {
            out.leaves += part.leaves
            out.chunks.append(part.spans)
            out.failures += part.failures
        }
        return out
    }
}

/// One span's standalone RFC 9162 inclusion proof, taken from a bundle (`flightrec audit
/// proof`): what a third party needs to check that span against the signed checkpoint with any
/// RFC 9162 implementation, without the rest of the bundle.
public struct SpanInclusionProof: Sendable {
    public var spanID: String
    public var traceID: String
    public var leafIndex: UInt64
    public var treeSize: UInt64
    /// Base64, as the checkpoint writes its root.
    public var root: String
    /// The leaf data: the span's `TracesData` message (base64), its salt (base64, 16 bytes;
    /// absent for a span stored unsalted) and its hash `SHA-256(0x00 ‖ salt ‖ data)`.
    public var leaf: String
    public var salt: String?
    public var leafHash: String
    /// PATH(m, D[n]), leaf side first, base64.
    public var auditPath: [String]
    /// The signed checkpoint (note text) the root is from.
    public var checkpoint: String
    /// The leaf message as OTLP/JSON (one `TracesData` of the span alone, as a line of the
    /// OTel file exporter).
    public var line: String
}

extension BundleVerifier {
    /// The inclusion proof of span `span` (the first line holding it), checked against the
    /// bundle's checkpoint, which `key` must have signed. A failure names what is wrong.
    public static func inclusionProof(
        archive: UnsafeRawBufferPointer, span spanHex: String, key: NoteVerifier
    ) -> Result<SpanInclusionProof, BundleProofError> {
        guard let span = SpanID(hex: spanHex.lowercased()), !span.isZero else {
            return .failure(.init("a span ID is 16 hex characters"))
        }
        guard let members = try? Tar.members(archive) else { return .failure(.init("not an audit bundle archive")) }
        var files: [String: UnsafeRawBufferPointer] = [:]
        for m in members { files[m.name] = UnsafeRawBufferPointer(rebasing: archive[m.range]) }
        guard let json = files[AuditBundle.spans], let pb = files[AuditBundle.spansProto],
            let proofBytes = files[AuditBundle.proof], let checkpointBytes = files[AuditBundle.checkpoint],
            let proof = BundleProof.read(Data(proofBytes))
        else { return .failure(.init("the bundle lacks its spans, proof or checkpoint")) }
        let text = String(decoding: checkpointBytes, as: UTF8.self)
        var problems: [String] = []
        guard
            let (checkpoint, _) = verifiedCheckpoint(
                text, key: key, name: AuditBundle.checkpoint, { problems.append($0) })
        else { return .failure(.init(problems.joined(separator: "; "))) }
        guard let salts = proof.salts(spans: proof.leafIndices.count) else {
            return .failure(.init("the bundle's proof has malformed leaf salts (run audit verify)"))
        }
        let lines = SpanLines.read(json: json, proto: pb, salts: salts)
        let hashes = proof.hashes.compactMap(TreeHash.init(base64:))
        guard lines.failures.isEmpty, hashes.count == proof.hashes.count,
            lines.leaves.count == proof.leafIndices.count,
            let k = Array(lines.chunks.joined()).firstIndex(where: { $0.spanID == span }),
            let path = Multiproof.auditPath(
                of: k, indices: proof.leafIndices, leaves: lines.leaves, size: checkpoint.size, proof: hashes),
            MerkleTree.verifyInclusion(
                leaf: lines.leaves[k], index: proof.leafIndices[k], size: checkpoint.size, proof: path,
                root: checkpoint.root)
        else {
            return .failure(
                .init(
                    lines.chunks.joined().contains { $0.spanID == span }
                        ? "the bundle's proof does not tie this span to its checkpoint (run audit verify)"
                        : "no span \(span.hex) in the bundle"))
        }
        // Span k's leaf message: the k-th span over the messages, assembled from its message.
        var first = 0
        var leaf: [UInt8]?
        for range in SpanLines.messageRanges(pb) {
            guard let leaves = SpanGroupReader.leafMessages(UnsafeRawBufferPointer(rebasing: pb[range])) else { break }
            if k < first + leaves.count {
                leaf = leaves[k - first]
                break
            }
            first += leaves.count
        }
        guard let leaf, let line = OTLPJSONEncoder.tracesData(leaf) else {
            return .failure(.init("the bundle's messages do not hold span \(span.hex) (run audit verify)"))
        }
        return .success(
            SpanInclusionProof(
                spanID: span.hex, traceID: Array(lines.chunks.joined())[k].traceID.hex, leafIndex: proof.leafIndices[k],
                treeSize: checkpoint.size, root: checkpoint.root.base64, leaf: Data(leaf).base64EncodedString(),
                salt: salts[k].isNone ? nil : Data(salts[k].bytes).base64EncodedString(),
                leafHash: lines.leaves[k].base64, auditPath: path.map(\.base64), checkpoint: text,
                line: String(decoding: line, as: UTF8.self)))
    }
}

public struct BundleProofError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ description: String) { self.description = description }
}
