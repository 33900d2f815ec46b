import ArgumentParser
import FlightRecorderConfig
import FlightRecorderEvidence
import FlightRecorderStorage
import Foundation

/// The public key the checks trust: `--key` (a verifier key, or a file holding one), else the
/// store's own signing key's public half, which proves the files agree with each other but
/// not who signed them.
struct KeyOption: ParsableArguments {
    @Option(help: "The log's verifier key (NAME+ID+BASE64, as `flightrec audit key` prints it), or a file holding it.")
    var key: String?

    func verifier(configuration: DaemonConfiguration) throws -> (key: NoteVerifier, pinned: Bool) {
        try Self.verifier(key: key, configuration: configuration)
    }

    static func verifier(key: String?, configuration: DaemonConfiguration) throws -> (key: NoteVerifier, pinned: Bool) {
        if let key {
            let text = (try? String(contentsOfFile: key, encoding: .utf8)) ?? key
            do {
                return (try NoteVerifier(encoded: text), true)
            } catch {
                printError("--key: \(error)")
                throw Exit.usage
            }
        }
        let path =
            configuration.evidence.signingKey
            ?? EvidenceSettings.defaultKeyPath(dataDirectory: configuration.dataDirectory)
        do {
            return (try NoteSigner.load(path: path, create: false).signer.verifier, false)
        } catch {
            printError("no --key given and the store's key cannot be read: \(error)")
            throw Exit.usage
        }
    }
}

struct Verify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check the stored spans against the evidence log's signed checkpoints, offline.",
        discussion: """
            Recomputes every stored span's leaf from the segments and checks every block against \
            the log, every checkpoint's signature, and every checkpoint's root. Works with the \
            daemon stopped or running (it only reads). Give auditors' pinned key with --key: \
            without it the store's own key is used, which cannot tell a re-signed store apart. \
            Exits 0 when everything holds, 65 when something does not (one line per problem, \
            naming the segment, offset and checkpoint), 64 on a bad key.
            """)

    @OptionGroup var storage: DataOptions
    @OptionGroup var keyOption: KeyOption

    @Flag(help: "Print the report as JSON.")
    var json = false

    func run() async throws {
        let configuration = try storage.load()
        let (key, pinned) = try keyOption.verifier(configuration: configuration)
        let started = ContinuousClock.now
        let report = EvidenceVerifier.verify(dataDirectory: configuration.dataDirectory, key: key)
        let elapsed = ContinuousClock.now - started
        if json {
            var out: [String: Any] = [
                "ok": report.ok, "key": key.encoded, "key_pinned": pinned, "blocks": report.blocks,
                "spans": report.leaves, "checkpoints": report.checkpoints,
                "expired_segments": report.expiredSegments, "expired_spans": report.expiredLeaves,
                "checkpoints_within_expired": report.checkpointsWithinExpired,
                "erased_spans": report.erasedLeaves, "rewritten_segments": report.rewrittenSegments,
                "erasures": report.erasureReceipts.map { r -> [String: Any] in
                    [
                        "id": r.id, "kind": r.kind, "tenant": r.tenant, "requested_by": r.requestedBy,
                        "reason": r.reason, "requested_at": r.requestedAt, "completed_at": r.completedAt,
                        "runs": r.runs, "spans": r.spans, "segments": r.segments, "bundles": r.bundles,
                    ]
                },
                "problems": report.problems.map { p -> [String: Any] in
                    var o: [String: Any] = ["message": p.message]
                    if let s = p.segment { o["segment"] = s }
                    if let off = p.offset { o["offset"] = off }
                    if let c = p.checkpoint {
                        var checkpoint: [String: Any] = ["number": c.number, "size": c.size]
                        if let t = c.time { checkpoint["time"] = t }
                        o["checkpoint"] = checkpoint
                    }
                    return o
                },
            ]
            if let gap = report.longestGap { out["longest_gap_seconds"] = gap.seconds }
            let data = try JSONSerialization.data(withJSONObject: out, options: [.sortedKeys])
            printBody(data)
        } else {
            for p in report.problems { print(p) }
            if !pinned { print("note: checked with the store's own key; pass --key to check against a pinned one") }
            if let gap = report.longestGap {
                print("longest time between signed checkpoints: \(gap.seconds) s (ending at \(gap.endingAt))")
            }
            if report.expiredSegments > 0 {
                print(
                    "\(report.expiredSegments) segments (\(report.expiredLeaves) spans) expired under retention, "
                        + "each with a signed receipt; the tree over them checked from the receipts and tiles"
                        + (report.checkpointsWithinExpired > 0
                            ? " (\(report.checkpointsWithinExpired) checkpoints signed inside expired ranges: "
                                + "signatures checked, roots no longer computable)" : ""))
            }
            if report.erasedLeaves > 0 || !report.erasureReceipts.isEmpty {
                print(
                    "\(report.erasedLeaves) spans removed from \(report.rewrittenSegments) segments (erased, or a "
                        + "tenant past its age in a shared segment), each leaf named by a signed rewrite; "
                        + "\(report.erasureReceipts.count) signed erasure receipts")
                for r in report.erasureReceipts {
                    print(
                        "  \(r.id): \(r.kind) \(r.tenant == "-" ? "" : "of tenant \(r.tenant) ")by \(r.requestedBy), "
                            + "\(r.runs) runs, \(r.spans) spans, segments \(r.segments.map(String.init).joined(separator: ",")), "
                            + "\(r.bundles.count) earlier bundle(s) held it"
                            + (r.bundles.isEmpty
                                ? "" : " (" + r.bundles.map { String($0.prefix(16)) }.joined(separator: ", ") + ")")
                            + ": " + r.reason)
                }
            }
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            print(
                "verified \(report.blocks) blocks, \(report.leaves) spans, \(report.checkpoints) checkpoints in "
                    + String(format: "%.1f s", seconds) + ": "
                    + (report.ok ? "everything holds" : "\(report.problems.count) problems"))
        }
        if !report.ok { throw Exit.dataError }
    }
}

struct Audit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Audit evidence: the log's public key, signed bundles and their offline verification.",
        subcommands: [AuditKey.self, AuditExport.self, AuditVerify.self, AuditProof.self])
}

struct AuditKey: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "key",
        abstract: "Print the evidence log's public (verifier) key, for auditors to pin.",
        discussion: "Reads the configured evidence.signing_key, else DATA/keys/log.key. Exits 64 when there is none.")

    @OptionGroup var storage: DataOptions

    func run() async throws {
        let configuration = try storage.load()
        print(try KeyOption.verifier(key: nil, configuration: configuration).key.encoded)
    }
}
