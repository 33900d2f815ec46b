import ArgumentParser
import AsyncHTTPClient
import FlightRecorderAudit
import FlightRecorderEvidence
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL

struct AuditExport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Export a signed audit bundle (one tar archive) from the daemon.",
        discussion: """
            Calls GET /api/v1/audit/export with an auditor or admin token ($FLIGHTREC_TOKEN) and \
            writes the archive to --out. Select one run (--run), the runs a where expression \
            matches (--where, with --since/--until bounding their start), or, with neither, every \
            span of one --tenant logged from --since to --until, proved complete for that range. \
            --pinned-checkpoint adds a proof of consistency with a checkpoint you pinned earlier. \
            Check the bundle offline with `flightrec audit verify`. Exits 0 when written, 64 on a \
            bad request, 66 for an unknown run, 69 when the daemon cannot answer, 77 without the role.
            """)

    @OptionGroup var api: APIOptions
    @Option(help: "Export this run (its ID, or one of its trace IDs).") var run: String?
    @Option(name: .customLong("where"), help: "Export every run this expression matches.") var expression: String?
    @Option(help: "Start: Unix nanoseconds, RFC 3339, or a duration ago (15m, 2h, 7d).") var since: String?
    @Option(help: "End, in the same forms.") var until: String?
    @Option(help: "Only this tenant (one of the token's).") var tenant: String?
    @Option(help: "A checkpoint you pinned (a file holding its signed note).") var pinnedCheckpoint: String?
    @Option(help: "Where to write the bundle.") var out: String

    func validate() throws {
        if run != nil && expression != nil { throw ValidationError("give --run or --where, not both") }
        if run == nil && expression == nil && (tenant == nil || since == nil) {
            throw ValidationError("give --run, --where, or --tenant and --since for a time range")
        }
    }

    func run() async throws {
        var query: [(String, String)] = []
        if let run { query.append(("run", run)) }
        if let expression { query.append(("where", expression)) }
        if let since { query.append(("since", since)) }
        if let until { query.append(("until", until)) }
        if let tenant { query.append(("tenant", tenant)) }
        if let pinnedCheckpoint {
            guard let text = try? String(contentsOfFile: pinnedCheckpoint, encoding: .utf8),
                let note = try? SignedNote(parsing: text), let c = try? Checkpoint(text: note.text)
            else {
                printError("--pinned-checkpoint: \(pinnedCheckpoint) is not a signed checkpoint")
                throw Exit.usage
            }
            query.append(("consistency_from", String(c.size)))
        }
        var allowed = CharacterSet.urlQueryAllowed
        allowed.remove(charactersIn: "&=+;#")
        let encoded = query.map { "\($0.0)=\($0.1.addingPercentEncoding(withAllowedCharacters: allowed) ?? $0.1)" }
        let bytes = try await download(api, "/api/v1/audit/export?" + encoded.joined(separator: "&"), to: out)
        printError("wrote \(out) (\(bytes) bytes); check it with: flightrec audit verify \(out) --key KEY")
    }
}

struct AuditVerify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Verify an audit bundle offline: signatures, digests, proofs, completeness.",
        discussion: """
            Uses no daemon and no network. Checks the DSSE signature over the in-toto statement, \
            every file's digest, size and record count, the checkpoint's signature, the inclusion \
            proof of every span, a time range's start checkpoint and consistency, that the \
            decision record, runs and findings are exactly what the spans give, causal \
            completeness (unresolved parents and writes without a decision must each be named by a \
            finding), and, with --pinned-checkpoint, consistency with a checkpoint you pinned. \
            Pin the log's key with --key (as `flightrec audit key` prints it): without it the key \
            the bundle names is used, which proves the bundle self-consistent but not who signed it. \
            Exits 0 when everything holds, 65 when something does not (one line per failure), \
            64 on a bad key or checkpoint, 66 when the file cannot be read.
            """)

    @Argument(help: "The bundle (a tar archive from `flightrec audit export`).") var file: String
    @Option(help: "The log's verifier key (NAME+ID+BASE64), or a file holding it.") var key: String?
    @Option(help: "A checkpoint you pinned earlier (a file holding its signed note).") var pinnedCheckpoint: String?
    @Flag(help: "Print the report as JSON.") var json = false

    func run() async throws {
        var verifier: NoteVerifier?
        if let key {
            let text = (try? String(contentsOfFile: key, encoding: .utf8)) ?? key
            do {
                verifier = try NoteVerifier(encoded: text)
            } catch {
                printError("--key: \(error)")
                throw Exit.usage
            }
        }
        var pinned: String?
        if let pinnedCheckpoint {
            guard let text = try? String(contentsOfFile: pinnedCheckpoint, encoding: .utf8) else {
                printError("--pinned-checkpoint: cannot read \(pinnedCheckpoint)")
                throw Exit.usage
            }
            pinned = text
        }
        guard let data = try? Data(contentsOf: URL(fileURLWithPath: file), options: .alwaysMapped) else {
            printError("cannot read \(file)")
            throw Exit.notFound
        }
        let started = ContinuousClock.now
        let report = data.withUnsafeBytes {
            BundleVerifier.verify(archive: $0, key: verifier, pinned: pinned, keepUntilExit: true)
        }
        let elapsed = ContinuousClock.now - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        if json {
            var out: [String: Any] = [
                "ok": report.ok, "failures": report.failures, "key_pinned": report.keyPinned, "spans": report.spans,
                "runs": report.runs, "decisions": report.decisions, "checkpoint_size": report.checkpointSize,
                "findings": report.findings, "tenants": report.tenants, "seconds": seconds,
            ]
            if let k = report.key { out["key"] = k }
            if let s = report.selection { out["selection"] = s }
            if let p = report.pinnedSize { out["pinned_size"] = p }
            if let id = report.bundleID { out["bundle_id"] = id }
            if report.selection == "range" {
                out["erased_spans"] = report.erasedSpans
                out["erasures"] = report.erasures
            }
            let data = try JSONSerialization.data(withJSONObject: out, options: [.sortedKeys])
            FileHandle.standardOutput.write(data + Data("\n".utf8))
        } else {
            for f in report.failures { print("FAIL \(f)") }
            print(
                "\(report.ok ? "OK" : "FAILED"): \(report.spans) spans, \(report.runs) runs, \(report.decisions) "
                    + "decisions, checkpoint size \(report.checkpointSize)"
                    + (report.pinnedSize.map { ", consistent with pinned size \($0)" } ?? "")
                    + String(format: " (%.2f s)", seconds))
            for (kind, n) in report.findings.sorted(by: { $0.key < $1.key }) {
                print("finding: \(kind) × \(n) (declared in findings.jsonl)")
            }
            if report.erasedSpans > 0 {
                print(
                    "erased: \(report.erasedSpans) spans of the range, erased before the export "
                        + "(receipts \(report.erasures.joined(separator: ", ")))")
            }
            if let id = report.bundleID { print("bundle ID (manifest SHA-256): \(id)") }
            if !report.keyPinned { print("warning: no --key given; checked against the key the bundle names") }
        }
        if !report.ok { throw Exit.dataError }
    }
}

struct AuditProof: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "proof",
        abstract: "Print one span's RFC 9162 inclusion proof from a bundle, for checking it alone.",
        discussion: """
            Takes the span's audit path from the bundle's proof and checks it against the signed \
            checkpoint before printing (JSON): the leaf index, tree size and root, the leaf data \
            (the span's TracesData, base64) and its hash, the audit path, the checkpoint and the \
            span's JSON line. Any RFC 9162 implementation can check it with the checkpoint's key; \
            the rest of the bundle is not needed. Exits 0 with the proof, 65 when the bundle does \
            not prove the span, 64 on a bad key, 66 when the file cannot be read.
            """)

    @Argument(help: "The bundle.") var file: String
    @Option(help: "The span ID (16 hex characters).") var span: String
    @Option(help: "The log's verifier key (NAME+ID+BASE64), or a file holding it.") var key: String

    func run() async throws {
        let text = (try? String(contentsOfFile: key, encoding: .utf8)) ?? key
        guard let verifier = try? NoteVerifier(encoded: text) else {
            printError("--key: not a verifier key")
            throw Exit.usage
        }
        guard let data = try? Data(contentsOf: URL(fileURLWithPath: file), options: .alwaysMapped) else {
            printError("cannot read \(file)")
            throw Exit.notFound
        }
        let result = data.withUnsafeBytes { BundleVerifier.inclusionProof(archive: $0, span: span, key: verifier) }
        switch result {
        case .failure(let error):
            printError(error.description)
            throw Exit.dataError
        case .success(let p):
            var out: [String: Any] = [
                "span_id": p.spanID, "trace_id": p.traceID, "leaf_index": p.leafIndex, "tree_size": p.treeSize,
                "root": p.root, "leaf": p.leaf, "leaf_hash": p.leafHash, "audit_path": p.auditPath,
                "checkpoint": p.checkpoint, "line": p.line,
            ]
            if let salt = p.salt { out["salt"] = salt }
            let json = try JSONSerialization.data(withJSONObject: out, options: [.sortedKeys, .prettyPrinted])
            FileHandle.standardOutput.write(json + Data("\n".utf8))
        }
    }
}

/// GETs `path` from the query API into the file `out` (via `out.partial`), streaming.
func download(_ options: APIOptions, _ path: String, to out: String) async throws -> Int {
    try await withAPIClient(options, path) { client, request in try await transfer(client, request, to: out) }
}

private func transfer(_ client: HTTPClient, _ request: HTTPClientRequest, to out: String) async throws -> Int {
    let response: HTTPClientResponse
    do {
        response = try await client.execute(request, timeout: .hours(6))
    } catch {
        printError("cannot reach the daemon at \(request.url): \(error)")
        throw Exit.unavailable
    }
    if response.status.code != 200 {
        let body = (try? await response.body.collect(upTo: 1 << 20)).map { Data($0.readableBytesView) } ?? Data()
        try checkStatus(response, body: body)
    }
    let partial = out + ".partial"
    guard FileManager.default.createFile(atPath: partial, contents: nil),
        let handle = FileHandle(forWritingAtPath: partial)
    else {
        printError("cannot create \(partial)")
        throw Exit.cannotCreate
    }
    var total = 0
    do {
        // Written a megabyte at a time, not per network read.
        var pending = ByteBuffer()
        for try await var chunk in response.body {
            total += chunk.readableBytes
            pending.writeBuffer(&chunk)
            if pending.readableBytes >= 1 << 20 {
                try pending.withUnsafeReadableBytes { try handle.write(contentsOf: $0) }
                pending.clear()
            }
        }
        try pending.withUnsafeReadableBytes { try handle.write(contentsOf: $0) }
        // Not fsynced, as cp and curl do not: a bundle cut short by a crash fails `audit verify`
        // (its sizes and digests), and exporting again is always possible.
        try handle.close()
    } catch {
        try? handle.close()
        try? FileManager.default.removeItem(atPath: partial)
        printError("the download ended early: \(error)")
        throw Exit.unavailable
    }
    if let expected = response.headers.first(name: "content-length").flatMap(Int.init), expected != total {
        try? FileManager.default.removeItem(atPath: partial)
        printError("the download ended early: \(total) of \(expected) bytes")
        throw Exit.unavailable
    }
    guard rename(partial, out) == 0 else {
        printError("cannot rename \(partial) to \(out)")
        throw Exit.cannotCreate
    }
    return total
}
