import ArgumentParser
import AsyncHTTPClient
import Foundation

/// `--audit-bench`: audit bundle export and verification rates (Bench/README.md, "Audit
/// bundles"). Fills a started daemon with the generated pool (unique IDs, `--tenants`, default four) for
/// --duration seconds, then, --rounds times: exports one tenant's whole time range with
/// `flightrec audit export` (the daemon builds and streams the bundle; the CLI writes it to
/// disk) and verifies it with `flightrec audit verify --key`. Rates are the bundle's spans over
/// each command's wall time, the commands' own start-up included. After the fill (not timed)
/// the bench waits until the daemon is idle (its indexer caught up); before each round the
/// previous bundle is removed and `sync` run.
extension LoadGen {
    func runAuditBench(daemon binary: String) async throws {
        let source = try makeSource()
        let started = try await startDaemon(binary, extra: extraConfig + "\nmetrics:\n  enabled: false\n")
        defer {
            started.process.terminate()
            started.process.waitUntilExit()
            try? FileManager.default.removeItem(atPath: (started.dataDir as NSString).deletingLastPathComponent)
        }
        let client = makeLoadClient()
        let fill = try await drive(
            client: client, target: "http://127.0.0.1:\(portBase)/v1/traces", requests: source, seconds: duration,
            limit: nil, monitor: nil)
        try? await client.shutdown()
        print(
            "filled: \(fill.spans) spans in \(String(format: "%.1f", fill.elapsed)) s (\(tenants) tenant(s), acme's exported)"
        )
        // The rounds time a store at rest: a fill at full speed leaves the indexer some seconds
        // behind, and exports timed while it caught up ran a fifth slower.
        let settled = Self.waitUntilIdle(started.process.processIdentifier)
        print(String(format: "daemon idle after %.1f s more", settled))
        let key = try Self.command(binary, ["audit", "key", "--data", started.dataDir]).output
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let bundle = (started.dataDir as NSString).deletingLastPathComponent + "/bundle.tar"
        var exports: [Double] = []
        var verifies: [Double] = []
        for round in 1...rounds {
            // Not timed: the last round's bundle removed and the page cache written back, so a
            // round does not pay for replacing the file the one before wrote.
            try? FileManager.default.removeItem(atPath: bundle)
            sync()
            let t0 = ContinuousClock.now
            let export = try Self.command(
                binary,
                [
                    "audit", "export", "--api", "http://127.0.0.1:\(portBase + 1)", "--tenant", "acme", "--since", "1",
                    "--out", bundle,
                ])
            let exportSeconds = Self.seconds(ContinuousClock.now - t0)
            guard export.status == 0 else { throw ValidationError("export failed: \(export.error)") }
            let t1 = ContinuousClock.now
            let verify = try Self.command(binary, ["audit", "verify", bundle, "--key", key, "--json"])
            let verifySeconds = Self.seconds(ContinuousClock.now - t1)
            let report = try JSONSerialization.jsonObject(with: Data(verify.output.utf8)) as? [String: Any] ?? [:]
            guard verify.status == 0, let spans = report["spans"] as? Int else {
                throw ValidationError("verify failed: \(verify.output)\(verify.error)")
            }
            let size = (try? FileManager.default.attributesOfItem(atPath: bundle)[.size] as? Int) ?? 0
            exports.append(Double(spans) / exportSeconds)
            verifies.append(Double(spans) / verifySeconds)
            print(
                String(
                    format:
                        "round %d: %d spans, %.0f MiB bundle; export %.1f s = %.0f spans/s; verify %.1f s = %.0f spans/s",
                    round, spans, Double(size) / 1_048_576, exportSeconds, exports.last!, verifySeconds, verifies.last!)
            )
        }
        print(
            String(
                format: "median: export %.0f spans/s, verify %.0f spans/s", exports.sorted()[exports.count / 2],
                verifies.sorted()[verifies.count / 2]))
    }

    /// Waits (at most two minutes) until process `pid` used under 5 % of a core for a whole
    /// second; returns the seconds waited.
    static func waitUntilIdle(_ pid: Int32) -> Double {
        let start = ContinuousClock.now
        var last = processCPU(pid)
        while seconds(ContinuousClock.now - start) < 120 {
            Thread.sleep(forTimeInterval: 1)
            let now = processCPU(pid)
            defer { last = now }
            if now - last < 0.05 { break }
        }
        return seconds(ContinuousClock.now - start)
    }

    static func command(_ binary: String, _ args: [String]) throws -> (status: Int32, output: String, error: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = args
        let out = Pipe()
        let err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }
}
