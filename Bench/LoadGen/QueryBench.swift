import AsyncHTTPClient
import FlightRecorderTesting
import Foundation
import NIOCore
import NIOHTTP1

/// `--query-bench`: stores `--load-spans` unique agent-shaped spans (runs of 20-60 steps,
/// every 125th run 200 steps), printing the rate, RSS and disk every `--report-every-spans`;
/// then times `--queries` of each causal query server-side (the API's `Server-Timing`
/// header): graph, path and incident card of 200-span runs, lookup by operation ID, indexed searches, the
/// first page of runs; then disk per span (segments and index apart), and the time from exec
/// to the first answer when the daemon starts again on the full store.
extension LoadGen {
    func runQueryBench(daemon: String) async throws {
        let started = try await startDaemon(daemon, extra: extraConfig)
        defer {
            if started.process.isRunning {
                started.process.terminate()
                started.process.waitUntilExit()
            }
            if benchDirectory == nil {
                try? FileManager.default.removeItem(atPath: (started.dataDir as NSString).deletingLastPathComponent)
            }
        }
        let client = HTTPClient(
            eventLoopGroupProvider: .singleton,
            configuration: .init(
                connectionPool: .init(
                    idleTimeout: .seconds(600), concurrentHTTP1ConnectionsPerHostSoftLimit: connections)))
        let target = "http://127.0.0.1:\(portBase)/v1/traces"
        // A pool of agent requests (runs of 20-60 steps, every 125th run 200 steps), sent over
        // and over with new IDs each pass until --load-spans are stored: every span unique.
        var options = AgentWorkload.Options()
        options.spansPerRequest = spansPerRequest
        options.longRunEvery = 125
        options.recordOperationIDsEvery = 997
        var workload = AgentWorkload(options: options)
        let bodies = (0..<pool).map { _ in workload.nextRequest().bytes }
        let unique = UniqueRequests(bodies)
        let total = (loadSpans + unique.totalSpans / pool - 1) / (unique.totalSpans / pool)
        let source = RequestSource(unique: unique, identical: identical, fixedLength: total)
        let passes = (total + pool - 1) / pool
        print(
            "workload: generated pool of \(pool) requests (\(unique.totalSpans) spans, \(bodies.reduce(0) { $0 + $1.count } / max(unique.totalSpans, 1)) bytes/span), \(passes) passes"
                + (identical ? ", IDENTICAL REPLAY (same IDs every pass)" : " with new IDs each"))
        let monitor = Monitor(pid: started.process.processIdentifier, dataDir: started.dataDir, every: reportEverySpans)
        let t0 = ContinuousClock.now
        let loaded = try await drive(
            client: client, target: target, requests: source, seconds: nil, limit: reuse ? 0 : total, monitor: monitor)
        let loadSeconds = Self.seconds(ContinuousClock.now - t0)
        let storedSpans = reuse ? unique.totalSpans / pool * total : loaded.spans
        let api = "http://127.0.0.1:\(portBase + 1)"
        print(
            String(
                format: "stored %d spans in %.1f s (%.0f spans/s); request latency p50 %.1f ms, p99 %.1f ms",
                loaded.spans,
                loadSeconds, Double(loaded.spans) / loadSeconds, Self.percentile(loaded.latencies, 0.5) * 1000,
                Self.percentile(loaded.latencies, 0.99) * 1000))
        // Samples from passes spread over the whole store; the last runs of the pool may be open.
        var rng = SystemRandomNumberGenerator()
        let open = workload.openRunIDs
        let complete = workload.longRuns.filter { !open.contains($0) }
        let samples = (
            (0..<queries).map { _ in
                UniqueRequests.rewritten(
                    complete.randomElement(using: &rng)!, pass: Int.random(in: 0..<passes - 1, using: &rng))
            },
            (0..<queries).map { _ in
                let o = workload.operationIDs.dropLast(8).randomElement(using: &rng)!
                let pass = Int.random(in: 0..<passes - 1, using: &rng)
                return (
                    run: UniqueRequests.rewritten(o.run, pass: pass), id: UniqueRequests.rewritten(o.id, pass: pass)
                )
            }
        )
        let runs = try await getJSON(client, api + "/api/v1/runs?limit=1")
        _ = runs  // the first query waits until everything acknowledged is indexed
        let counts = try await getJSON(client, api + "/api/v1/ingest/stats")
        print("index ready; ingest stats: \(counts.body)")

        var plain: [Double] = []
        var graph: [Double] = []
        var path: [Double] = []
        var card: [Double] = []
        var spanCounts: [Int] = []
        for run in samples.0 {
            plain.append(try await getJSON(client, api + "/api/v1/runs/\(run)").serverMillis)
            let g = try await getJSON(client, api + "/api/v1/runs/\(run)/graph")
            graph.append(g.serverMillis)
            guard let nodes = (g.body["nodes"] as? [[String: Any]]) else { continue }
            spanCounts.append(nodes.count)
            let target = nodes.last { ($0["name"] as? String)?.hasPrefix("execute_tool") == true } ?? nodes.last!
            let p = try await getJSON(client, api + "/api/v1/runs/\(run)/path?to=\(target["spanId"] as! String)")
            path.append(p.serverMillis)
            let c = try await getJSON(client, api + "/api/v1/runs/\(run)/card?to=\(target["spanId"] as! String)")
            card.append(c.serverMillis)
        }
        var lookup: [Double] = []
        for (_, id) in samples.1 {
            lookup.append(try await getJSON(client, api + "/api/v1/lookup?key=operation.id&value=\(id)").serverMillis)
        }
        var search: [String: [Double]] = [:]
        var found: [String: Any] = [:]
        let expressions = [
            "gen_ai.tool.name = \"disable_managed_device\" and policy.outcome = \"blocked\"",
            "policy.outcome = \"approval_required\" and policy.rule = \"rule-7\"",
            "gen_ai.request.model = \"claude-sonnet-4\" and gen_ai.operation.name = \"chat\"",
        ]
        for i in 0..<max(queries / 3, 15) * expressions.count {
            let e = expressions[i % expressions.count]
            let q = e.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
            let r = try await getJSON(client, api + "/api/v1/runs?limit=20&where=\(q)")
            search[e, default: []].append(r.serverMillis)
            found[e] = r.body["candidateTraces"]
        }
        var firstPage: [Double] = []
        for _ in 0..<queries {
            firstPage.append(try await getJSON(client, api + "/api/v1/runs").serverMillis)
        }
        let pct = Self.percentile
        let meanSpans = spanCounts.isEmpty ? 0 : spanCounts.reduce(0, +) / spanCounts.count
        func report(_ label: String, _ xs: [Double]) {
            print(String(format: "%@ (n=%d): p50 %.2f ms, p99 %.2f ms", label, xs.count, pct(xs, 0.5), pct(xs, 0.99)))
        }
        report("run read back (GET /api/v1/runs/{id})", plain)
        report("graph of \(meanSpans)-span runs", graph)
        report("path to a tool execution (with its incident card)", path)
        report("incident card of a tool execution (GET /api/v1/runs/{id}/card)", card)
        report("lookup by operation.id", lookup)
        report("GET /api/v1/runs first page", firstPage)
        for e in expressions {
            report("search \(e) (20 newest runs of \(found[e] ?? "?") candidate traces)", search[e] ?? [])
        }
        report("every indexed search", expressions.flatMap { search[$0] ?? [] })
        let rss = max(peakRSS(pid: started.process.processIdentifier), monitor.peakRSS)
        let segments = Self.directoryBytes(started.dataDir + "/segments", matching: ".frs")
        let disk = directorySize(started.dataDir)
        let raw = Self.sentBytes.value
        // With --reuse nothing was sent this run, so there is no raw size to compare with.
        let share =
            raw > 0
            ? String(format: "%.1f%% of %ld raw OTLP bytes", 100 * Double(disk) / Double(raw), raw) : "reused store"
        print(
            String(
                format: "disk: %@ (%.1f bytes/span): segments %.1f bytes/span, index %.1f bytes/span", share,
                Double(disk) / Double(storedSpans), Double(segments) / Double(storedSpans),
                Double(disk - segments) / Double(storedSpans)))
        print(String(format: "daemon peak RSS: %.1f MiB", Double(rss) / 1_048_576))
        // Start-up with the store full: SIGTERM, then exec again and time the first answer.
        started.process.terminate()
        started.process.waitUntilExit()
        let again = try await restartDaemon(daemon, dir: (started.dataDir as NSString).deletingLastPathComponent)
        let answer = try await firstAnswer(client, api + "/api/v1/runs?limit=1", since: again.launched)
        print(
            String(
                format: "start-up with %d spans stored: API answered %.0f ms after exec", storedSpans, answer * 1000))
        let afterRSS = Monitor.rss(pid: again.process.processIdentifier)
        print(String(format: "daemon RSS after start-up: %.1f MiB", Double(afterRSS) / 1_048_576))
        // kill -9 under load (new IDs, after everything stored), then time the recovery: the
        // API answers only once every segment's index has caught up with its file.
        var more = source
        more.offset = total
        let killLoad = Task {
            try await drive(client: client, target: target, requests: more, seconds: 6, limit: nil, monitor: nil)
        }
        try await Task.sleep(for: .seconds(3))
        kill(again.process.processIdentifier, SIGKILL)
        again.process.waitUntilExit()
        _ = try? await killLoad.value
        let recovered = try await restartDaemon(daemon, dir: (started.dataDir as NSString).deletingLastPathComponent)
        let recovery = try await firstAnswer(client, api + "/api/v1/runs?limit=1", since: recovered.launched)
        print(
            String(
                format: "after kill -9 under load: API answered %.0f ms after exec (recovery included)", recovery * 1000
            ))
        recovered.process.terminate()
        recovered.process.waitUntilExit()
        try? await client.shutdown()
    }

    static func percentile(_ xs: [Double], _ p: Double) -> Double {
        let s = xs.sorted()
        return s.isEmpty ? 0 : s[min(s.count - 1, Int(Double(s.count) * p))]
    }

    static func directoryBytes(_ path: String, matching suffix: String) -> Int {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return names.filter { $0.hasSuffix(suffix) }.reduce(0) {
            $0 + (((try? FileManager.default.attributesOfItem(atPath: path + "/" + $1))?[.size] as? Int) ?? 0)
        }
    }

    /// Seconds from `since` until `url` first answers 200.
    func firstAnswer(_ client: HTTPClient, _ url: String, since: ContinuousClock.Instant) async throws -> Double {
        // Wait for the listener with plain connects every 2 ms: AsyncHTTPClient retries a
        // refused connect with growing back-off inside one request, which once added over a
        // second to the figure.
        let port = URLComponents(string: url)?.port ?? 80
        while !Self.accepts(port: port) { try await Task.sleep(for: .milliseconds(2)) }
        while true {
            var request = HTTPClientRequest(url: url)
            request.method = .GET
            if let r = try? await client.execute(request, timeout: .seconds(30)), r.status == .ok {
                _ = try await r.body.collect(upTo: 1 << 20)
                return Self.seconds(ContinuousClock.now - since)
            }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    static func accepts(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
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
