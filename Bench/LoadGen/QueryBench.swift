import AsyncHTTPClient
import FlightRecorderTesting
import Foundation
import NIOCore
import NIOHTTP1

/// `--query-bench`: stores `--load-spans` unique agent-shaped spans (runs of 20-60 steps,
/// every 125th run 200 steps), then times the causal queries server-side (the API's
/// `Server-Timing` header): graph and path of 200-span runs, lookup by operation ID, and
/// searches by indexed attributes over the whole store.
extension LoadGen {
    func runQueryBench(daemon: String) async throws {
        let started = try await startDaemon(daemon, extra: extraConfig)
        defer {
            started.process.terminate()
            started.process.waitUntilExit()
            try? FileManager.default.removeItem(atPath: (started.dataDir as NSString).deletingLastPathComponent)
        }
        let client = HTTPClient(
            eventLoopGroupProvider: .singleton,
            configuration: .init(
                connectionPool: .init(
                    idleTimeout: .seconds(600), concurrentHTTP1ConnectionsPerHostSoftLimit: connections)))
        let target = "http://127.0.0.1:\(portBase)/v1/traces"
        let perWorker = loadSpans / connections / spansPerRequest + 1
        let t0 = ContinuousClock.now
        // Each worker generates its own unique runs (its own seed) and sends them.
        let samples = try await withThrowingTaskGroup(of: ([String], [(run: String, id: String)], Int).self) { group in
            for worker in 0..<connections {
                group.addTask {
                    var options = AgentWorkload.Options()
                    options.spansPerRequest = spansPerRequest
                    options.seed = UInt64(1000 + worker)
                    options.longRunEvery = 125
                    options.recordOperationIDsEvery = 997
                    var workload = AgentWorkload(options: options)
                    var sent = 0
                    for _ in 0..<perWorker {
                        let body = ByteBuffer(bytes: workload.nextRequest().bytes)
                        while true {
                            if try await Self.export(client, target, body, timeout: .seconds(120)) == .ok { break }
                            try await Task.sleep(for: .milliseconds(200))  // 503: back off and resend
                        }
                        sent += spansPerRequest
                    }
                    return (workload.longRuns, workload.operationIDs, sent)
                }
            }
            var longRuns: [String] = []
            var operations: [(run: String, id: String)] = []
            var spans = 0
            for try await (l, o, n) in group {
                longRuns += l.dropLast(2)  // the last ones may still be open
                operations += o
                spans += n
            }
            return (longRuns, operations, spans)
        }
        let loadSeconds = Self.seconds(ContinuousClock.now - t0)
        let api = "http://127.0.0.1:\(portBase + 1)"
        print(
            String(
                format: "stored %d spans in %.1f s (%.0f spans/s)", samples.2, loadSeconds,
                Double(samples.2) / loadSeconds))
        let runs = try await getJSON(client, api + "/api/v1/runs?limit=1")
        _ = runs  // the first query waits until everything acknowledged is indexed
        let counts = try await getJSON(client, api + "/api/v1/ingest/stats")
        print("index ready; ingest stats: \(counts.body)")

        var plain: [Double] = []
        var graph: [Double] = []
        var path: [Double] = []
        var spanCounts: [Int] = []
        for run in samples.0.prefix(200) {
            plain.append(try await getJSON(client, api + "/api/v1/runs/\(run)").serverMillis)
            let g = try await getJSON(client, api + "/api/v1/runs/\(run)/graph")
            graph.append(g.serverMillis)
            guard let nodes = (g.body["nodes"] as? [[String: Any]]) else { continue }
            spanCounts.append(nodes.count)
            let target = nodes.last { ($0["name"] as? String)?.hasPrefix("execute_tool") == true } ?? nodes.last!
            let p = try await getJSON(client, api + "/api/v1/runs/\(run)/path?to=\(target["spanId"] as! String)")
            path.append(p.serverMillis)
        }
        var lookup: [Double] = []
        for (_, id) in samples.1.prefix(200) {
            lookup.append(try await getJSON(client, api + "/api/v1/lookup?key=operation.id&value=\(id)").serverMillis)
        }
        var search: [String: [Double]] = [:]
        var found: [String: Any] = [:]
        let expressions = [
            "gen_ai.tool.name = \"disable_managed_device\" and policy.outcome = \"blocked\"",
            "policy.outcome = \"approval_required\" and policy.rule = \"rule-7\"",
            "gen_ai.request.model = \"claude-sonnet-4\" and gen_ai.operation.name = \"chat\"",
        ]
        for e in expressions {
            let q = e.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
            for _ in 0..<15 {
                let r = try await getJSON(client, api + "/api/v1/runs?limit=20&where=\(q)")
                search[e, default: []].append(r.serverMillis)
                found[e] = r.body["candidateTraces"]
            }
        }
        try? await client.shutdown()
        func pct(_ xs: [Double], _ p: Double) -> Double {
            let s = xs.sorted()
            return s.isEmpty ? 0 : s[min(s.count - 1, Int(Double(s.count) * p))]
        }
        let meanSpans = spanCounts.isEmpty ? 0 : spanCounts.reduce(0, +) / spanCounts.count
        print(
            String(
                format: "run read back (GET /api/v1/runs/{id}, n=%d): p50 %.2f ms, p99 %.2f ms", plain.count,
                pct(plain, 0.5), pct(plain, 0.99)))
        print(
            String(
                format: "graph of %d-span runs (n=%d): p50 %.2f ms, p99 %.2f ms", meanSpans, graph.count,
                pct(graph, 0.5), pct(graph, 0.99)))
        print(
            String(
                format: "path to a tool execution (n=%d): p50 %.2f ms, p99 %.2f ms", path.count, pct(path, 0.5),
                pct(path, 0.99)))
        print(
            String(
                format: "lookup by operation.id (n=%d): p50 %.2f ms, p99 %.2f ms", lookup.count, pct(lookup, 0.5),
                pct(lookup, 0.99)))
        for e in expressions {
            print(
                String(
                    format: "search %@ (20 newest runs of %@ candidate traces): p50 %.1f ms, max %.1f ms", e,
                    "\(found[e] ?? "?")",
                    pct(search[e] ?? [], 0.5), pct(search[e] ?? [], 1)))
        }
        let rss = peakRSS(pid: started.process.processIdentifier)
        print(
            String(
                format: "daemon peak RSS: %.1f MiB, data directory %.1f MiB", Double(rss) / 1_048_576,
                Double(directorySize(started.dataDir)) / 1_048_576))
    }

    struct Timed {
        var body: [String: Any]
        var serverMillis: Double
    }

    func getJSON(_ client: HTTPClient, _ url: String) async throws -> Timed {
        var request = HTTPClientRequest(url: url)
        request.method = .GET
        let response = try await client.execute(request, timeout: .seconds(300))
        let data = try await response.body.collect(upTo: 256 << 20)
        guard response.status == .ok else {
            throw LoadGenError("GET \(url): HTTP \(response.status.code) \(String(buffer: data).prefix(200))")
        }
        let timing = response.headers["Server-Timing"].first ?? ""
        let ms = timing.split(separator: "=").last.flatMap { Double($0) } ?? -1
        let body = (try JSONSerialization.jsonObject(with: Data(data.readableBytesView))) as? [String: Any] ?? [:]
        return Timed(body: body, serverMillis: ms)
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }
}
