import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// `--erasure-bench`: erasing one data subject across a large store, and what it costs
/// ingest. A daemon is filled with --load-spans unique agent spans (the generated workload:
/// every run's root names one of 5,000 end users, so one subject's runs are spread over every
/// segment, the worst case for a rewrite). Then, in one continuous load: 10 s of ingest
/// alone; `POST /api/v1/erasures` for `enduser.id` = the stored (pseudonymised) end user of
/// one of the newest runs (hidden when it answers); ingest while the purge rewrites every segment holding the subject's spans,
/// until the erasure reads `erased` (its bytes gone, the receipt signed); 10 s alone again.
/// The ratio is the rate while erasing over the mean of the two rates alone, from the load
/// generator's acknowledged spans. The load generator shares the 2 cores with the daemon.
extension LoadGen {
    func runErasureBench(daemon binary: String) async throws {
        var source = try makeSource()
        let started = try await startDaemon(binary, extra: extraConfig)
        defer {
            started.process.terminate()
            started.process.waitUntilExit()
            if benchDirectory == nil {
                try? FileManager.default.removeItem(atPath: (started.dataDir as NSString).deletingLastPathComponent)
            }
        }
        let client = makeLoadClient()
        let target = "http://127.0.0.1:\(portBase)/v1/traces"
        let api = "http://127.0.0.1:\(portBase + 1)"
        let perRequest = max(1, source.unique.totalSpans / max(1, source.unique.requests.count))
        let fillStart = ContinuousClock.now
        let fill = try await drive(
            client: client, target: target, requests: source, seconds: nil, limit: loadSpans / perRequest,
            monitor: Monitor(pid: started.process.processIdentifier, dataDir: started.dataDir, every: 1_000_000))
        source.offset += fill.requests
        print(
            String(
                format: "filled %d spans in %.0f s (%.0f spans/s)", fill.spans,
                Self.seconds(ContinuousClock.now - fillStart),
                Double(fill.spans) / Self.seconds(ContinuousClock.now - fillStart)))

        // The subject as stored (pseudonymised): the end user of the newest run's root.
        let runs = try await getJSON(client, api + "/api/v1/runs?limit=100").body["runs"] as? [[String: Any]] ?? []
        var subject = ""
        for run in runs where subject.isEmpty {
            guard let runID = run["runId"] as? String else { continue }
            for span in try await getJSON(client, api + "/api/v1/runs/" + runID).body["spans"] as? [[String: Any]] ?? []
            {
                if let v = (span["attributes"] as? [String: Any])?["enduser.id"] as? String { subject = v }
            }
        }
        guard !subject.isEmpty else { throw LoadGenError("none of the newest 100 runs names an enduser.id") }

        let window = 10.0
        let running = source
        async let load = drive(
            client: client, target: target, requests: running, seconds: 3600, limit: nil, monitor: nil)
        func sample() -> (ContinuousClock.Instant, Int) { (.now, Self.sentSpans.value) }
        try await Task.sleep(for: .seconds(1))
        let a0 = sample()
        try await Task.sleep(for: .seconds(window))
        let a1 = sample()
        let body = try JSONSerialization.data(withJSONObject: [
            "subject": "enduser.id=\(subject)", "reason": "bench: erasure request",
        ])
        var request = HTTPClientRequest(url: api + "/api/v1/erasures")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: body))
        let response = try await client.execute(request, timeout: .seconds(3600))
        let answer = try await response.body.collect(upTo: 16 << 20)
        guard response.status == .created,
            let erasure = try JSONSerialization.jsonObject(with: Data(answer.readableBytesView)) as? [String: Any],
            let id = erasure["id"] as? String
        else { throw LoadGenError("POST /api/v1/erasures: HTTP \(response.status.code) \(String(buffer: answer))") }
        let hidden = sample()
        var state = erasure
        while (state["state"] as? String) != "erased" {
            try await Task.sleep(for: .milliseconds(200))
            state = try await getJSON(client, api + "/api/v1/erasures/" + id).body
        }
        let done = sample()
        try await Task.sleep(for: .seconds(window))
        let b = sample()
        // Stop the load: the daemon goes first (the load ends with refused connections).
        started.process.terminate()
        _ = try? await load
        func rate(_ x: (ContinuousClock.Instant, Int), _ y: (ContinuousClock.Instant, Int)) -> Double {
            Double(y.1 - x.1) / Self.seconds(y.0 - x.0)
        }
        let alone = (rate(a0, a1) + rate(done, b)) / 2
        let during = rate(a1, done)
        print(
            String(
                format:
                    "erased subject enduser.id (%@ runs, %@ spans, %d segments) from a %d-span store: hidden in %.2f s "
                    + "(the request, resolving its runs), bytes gone in %.1f s from the request; ingest alone %.0f "
                    + "spans/s (before %.0f, after %.0f), while erasing %.0f spans/s: %.1f%%",
                "\(erasure["runs"] ?? "?")", "\(erasure["spans"] ?? "?")", (state["segments"] as? [Any])?.count ?? 0,
                fill.spans, Self.seconds(hidden.0 - a1.0), Self.seconds(done.0 - a1.0), alone, rate(a0, a1),
                rate(done, b), during, 100 * during / alone))
        try? await client.shutdown()
    }
}
