import AsyncHTTPClient
import FlightRecorderAnalysis
import FlightRecorderOTLP
import FlightRecorderTesting
import Foundation
import NIOCore
import NIOHTTP1

/// `--series-bench N`: what `N` active agent-metric series cost the daemon, counted as
/// Prometheus counts them: every sample line a scrape exposes (a histogram's buckets, sum and
/// count each one). Two fresh daemons get the same number of unique tool-call spans; in one
/// the spans name `N / 19` distinct tools (each tool makes a calls counter, a policy-decisions
/// counter and a 14-bucket duration histogram: 19 series, 3 label sets), in the other ten.
/// RSS is read once every span is indexed, before any scrape, and again after the scrapes;
/// then the median time of `GET /metrics` (Prometheus text, then OpenMetrics) from request to
/// last byte.
///
/// `--stats-bench N`: `GET /api/v1/stats` over `N` stored runs. The run analyser's store
/// (`DATA/stats.db`) is filled through `RunStatsStore.save`, the call the analyser stores with,
/// with `N` runs spread over the last seven days (4 tenants, 3 agents, 6 versions, 4 task
/// types, 10 tools, 5-60 steps); then the daemon starts on it and `--queries` of each query are
/// timed server-side.
extension LoadGen {
    func runSeriesBench(daemon: String, series: Int) async throws {
        let tools = max(1, series / 19)
        let spans = max(tools * 3, 60_000)
        print("workload: \(spans) unique tool-call spans in requests of \(spansPerRequest)")
        let few = try await seriesRound(daemon: daemon, tools: 10, spans: spans)
        let many = try await seriesRound(daemon: daemon, tools: tools, spans: spans)
        func mib(_ b: Int) -> Double { Double(b) / 1_048_576 }
        let grown = many.series - few.series
        print(
            String(
                format:
                    "%d series (%d label sets) against %d: RSS before scraping %.1f against %.1f MiB: %.1f MiB, %.0f bytes a series",
                many.series, many.labelSets, few.series, mib(many.rss), mib(few.rss), mib(many.rss - few.rss),
                Double(many.rss - few.rss) / Double(max(1, grown))))
        print(
            String(
                format: "after the scrapes: %.1f against %.1f MiB: %.1f MiB", mib(many.rssAfter), mib(few.rssAfter),
                mib(many.rssAfter - few.rssAfter)))
        print(
            String(
                format: "scrape of %d series: text p50 %.1f ms (%d bytes), OpenMetrics p50 %.1f ms (%d bytes)",
                many.series, many.text * 1000, many.textBytes, many.openMetrics * 1000, many.openMetricsBytes))
        print(
            String(
                format: "scrape of %d series: text p50 %.1f ms, OpenMetrics p50 %.1f ms", few.series, few.text * 1000,
                few.openMetrics * 1000))
    }

    struct SeriesRound {
        var series = 0
        var labelSets = 0
        var rss = 0
        var rssAfter = 0
        var text = 0.0
        var textBytes = 0
        var openMetrics = 0.0
        var openMetricsBytes = 0
    }

    func seriesRound(daemon: String, tools: Int, spans: Int) async throws -> SeriesRound {
        let started = try await startDaemon(
            daemon,
            extra: extraConfig
                + "\nmetrics:\n  max_series_per_family: 1000000\n  series_ttl: 1h\n  run_settle: 1h\n")
        defer {
            started.process.terminate()
            started.process.waitUntilExit()
            try? FileManager.default.removeItem(atPath: (started.dataDir as NSString).deletingLastPathComponent)
        }
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        defer { _ = client.shutdown() }
        let target = "http://127.0.0.1:\(portBase)/v1/traces"
        let base = UInt64(Date().timeIntervalSince1970 * 1e9) - 3_600_000_000_000
        var sent = 0
        var n = 0
        while sent < spans {
            var batch: [TestSpan] = []
            for _ in 0..<min(spansPerRequest, spans - sent) {
                var trace = [UInt8](repeating: 0, count: 16)
                withUnsafeBytes(of: UInt64(n + 1).bigEndian) { trace.replaceSubrange(8..<16, with: $0) }
                trace[0] = 0x5E
                let tool = "tool_\(n % tools)"
                batch.append(
                    TestSpan(
                        trace: trace, span: RequestBuilder.spanID(UInt8(truncatingIfNeeded: n), 0x77),
                        parent: RequestBuilder.spanID(1, 0x11), name: "execute_tool \(tool)",
                        start: base + UInt64(n) * 1_000, end: base + UInt64(n) * 1_000 + 40_000_000,
                        attributes: [
                            ("agent.run.id", .string("run-\(n / 20)")),
                            ("gen_ai.operation.name", .string("execute_tool")), ("gen_ai.tool.name", .string(tool)),
                            ("tool.risk_tier", .string((n % tools) % 3 == 0 ? "write" : "read")),
                            (AgentKeys.policyOutcome, .string("allowed")),
                            (AgentKeys.policyRule, .string("allow-reads")),
                        ]))
                n += 1
            }
            let body = RequestBuilder.request(
                resource: [
                    ("service.name", .string("bench-agent")), ("service.version", .string("1.0.0")),
                    ("tenant.id", .string("acme")),
                ], spans: batch)
            let status = try await Self.export(client, target, ByteBuffer(bytes: body), timeout: .seconds(30))
            guard status == .ok else { throw LoadGenError("export answered \(status)") }
            sent += batch.count
        }
        let metricsURL = "http://127.0.0.1:\(portBase + 1)/metrics"
        // Every span indexed (and so counted) well within 10 s; RSS before the first scrape
        // allocates its buffers. The scrape then checks the counts.
        try await Task.sleep(for: .seconds(10))
        var out = SeriesRound()
        out.rss = Monitor.rss(pid: started.process.processIdentifier)
        let (_, body) = try await scrape(client, metricsURL, openMetrics: false)
        var calls = 0.0
        for line in String(decoding: body, as: UTF8.self).split(separator: "\n") {
            guard line.hasPrefix("flightrec_tool_") || line.hasPrefix("flightrec_policy_") else { continue }
            out.series += 1
            if line.hasPrefix("flightrec_tool_calls_total{") { calls += Double(line.split(separator: " ").last!) ?? 0 }
            if line.hasPrefix("flightrec_tool_calls_total{") || line.hasPrefix("flightrec_policy_decisions_total{")
                || line.hasPrefix("flightrec_tool_call_duration_seconds_count{")
            {
                out.labelSets += 1
            }
        }
        guard Int(calls) == spans else { throw LoadGenError("the daemon counted \(Int(calls)) of \(spans) tool calls") }
        var text: [Double] = []
        var open: [Double] = []
        for _ in 0..<max(5, min(queries, 50)) {
            let t = try await scrape(client, metricsURL, openMetrics: false)
            text.append(t.seconds)
            out.textBytes = t.body.count
            let o = try await scrape(client, metricsURL, openMetrics: true)
            open.append(o.seconds)
            out.openMetricsBytes = o.body.count
        }
        out.text = Self.percentile(text, 0.5)
        out.openMetrics = Self.percentile(open, 0.5)
        out.rssAfter = Monitor.rss(pid: started.process.processIdentifier)
        print(
            String(
                format: "%d tools: %d series, RSS %.1f MiB (%.1f after scraping), text scrape p50 %.1f ms", tools,
                out.series,
                Double(out.rss) / 1_048_576, Double(out.rssAfter) / 1_048_576, out.text * 1000))
        return out
    }

    /// One scrape, timed from request to the last byte.
    func scrape(_ client: HTTPClient, _ url: String, openMetrics: Bool) async throws -> (seconds: Double, body: [UInt8])
    {
        var request = HTTPClientRequest(url: url)
        if openMetrics { request.headers.add(name: "Accept", value: "application/openmetrics-text; version=1.0.0") }
        let t0 = ContinuousClock.now
        let response = try await client.execute(request, timeout: .seconds(60))
        let body = try await response.body.collect(upTo: 1 << 30)
        let seconds = Self.seconds(ContinuousClock.now - t0)
        guard response.status == .ok else { throw LoadGenError("/metrics answered \(response.status)") }
        return (seconds, Array(buffer: body))
    }

    func runStatsBench(daemon: String, runs: Int) async throws {
        // With --bench-directory the store is kept; with --reuse too, the store an earlier run
        // filled there is queried as it is (its 7 days end when that run filled it).
        let dir = benchDirectory ?? NSTemporaryDirectory() + "flightrec-stats-bench-\(getpid())"
        let reusing = reuse && benchDirectory != nil && FileManager.default.fileExists(atPath: dir + "/data/stats.db")
        if !reusing {
            try? FileManager.default.removeItem(atPath: dir)
            try FileManager.default.createDirectory(atPath: dir + "/data", withIntermediateDirectories: true)
        }
        defer { if benchDirectory == nil { try? FileManager.default.removeItem(atPath: dir) } }
        if !reusing { try fillStats(dir: dir, runs: runs) }

        try writeConfig(dir: dir, extra: extraConfig)
        let started = try await restartDaemon(daemon, dir: dir)
        defer {
            started.process.terminate()
            started.process.waitUntilExit()
        }
        try await waitForPort(portBase + 1)
        // At start-up the run analyser sums every stored aggregate into the run families; the
        // queries are timed once the daemon is idle again.
        let idle = try await Self.waitUntilIdle(pid: started.process.processIdentifier)
        print(String(format: "daemon idle %.1f s after start", idle))
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        defer { _ = client.shutdown() }
        let api = "http://127.0.0.1:\(portBase + 1)/api/v1"
        for (label, path) in [
            ("stats by agent.version, 7 days (every run)", "/stats?by=agent.version&since=168h"),
            ("stats by tenant, 7 days", "/stats?by=tenant&since=168h"),
            ("stats by agent.version, 24 h (default)", "/stats?by=agent.version"),
            (
                "compare 2.0.0 against 1.5.1, 7 days",
                "/stats/compare?by=agent.version&since=168h&baseline=1.5.1&candidate=2.0.0"
            ),
        ] {
            var server: [Double] = []
            var client_: [Double] = []
            for _ in 0..<max(5, min(queries, 200)) {
                let t0 = ContinuousClock.now
                let t = try await getJSON(client, api + path)
                client_.append(Self.seconds(ContinuousClock.now - t0))
                server.append(t.serverMillis / 1000)
            }
            print(
                String(
                    format: "%@: server p50 %.1f ms, p99 %.1f ms; client p50 %.1f ms", label,
                    Self.percentile(server, 0.5) * 1000, Self.percentile(server, 0.99) * 1000,
                    Self.percentile(client_, 0.5) * 1000))
        }
    }

    /// Fills `dir/data/stats.db` through `RunStatsStore.save` with `runs` aggregates over the
    /// last 7 days.
    func fillStats(dir: String, runs: Int) throws {
        let stats = try RunStatsStore(path: dir + "/data/stats.db")
        var rng = SplitMix64(seed: 7)
        let now = Int64(Date().timeIntervalSince1970 * 1e9)
        let week = Int64(7 * 86_400) * 1_000_000_000
        let tenants = ["acme", "globex", "initech", "umbrella"]
        let agents = ["it-agent", "finance-agent", "support-agent"]
        let versions = ["1.4.0", "1.4.1", "1.5.0", "1.5.1", "2.0.0-rc1", "2.0.0"]
        let tasks = ["password_reset", "procurement", "refund", "access_review"]
        let tools = [
            "disable_account", "reset_password", "open_ticket", "procure", "refund", "lookup_user", "send_email",
            "grant_access", "revoke_access", "search_kb",
        ]
        let t0 = ContinuousClock.now
        var batch: [(new: RunAggregate, old: RunAggregate?)] = []
        for i in 0..<runs {
            let start = now - week + Int64(rng.next() % UInt64(week))
            var a = RunAggregate(
                tenant: tenants[Int(rng.next() % 4)], runID: String(format: "run-%016llx", rng.next()),
                agent: agents[Int(rng.next() % 3)], version: versions[Int(rng.next() % 6)],
                taskType: tasks[Int(rng.next() % 4)], startNanos: start,
                endNanos: start + Int64(1_000_000_000 + rng.next() % 600_000_000_000))
            a.steps = 5 + Int(rng.next() % 56)
            a.modelCalls = a.steps / 2
            a.toolCalls = a.steps - a.modelCalls
            a.spanCount = a.steps + 1
            a.hasRoot = true
            a.error = rng.next() % 50 == 0
            a.decisions = a.toolCalls
            a.blocked = rng.next() % 20 == 0 ? 1 : 0
            a.approvalRequired = rng.next() % 10 == 0 ? 1 : 0
            a.approvals = a.approvalRequired
            a.denied = a.approvals > 0 && rng.next() % 4 == 0 ? 1 : 0
            a.repeated = rng.next() % 8 == 0 ? 1 : 0
            a.tokensIn = Double(500 * a.modelCalls)
            a.tokensOut = Double(120 * a.modelCalls)
            a.costUSD = a.tokensIn * 3e-6 + a.tokensOut * 15e-6
            for _ in 0..<a.toolCalls {
                let tool = tools[Int(rng.next() % UInt64(tools.count))]
                a.tools[tool, default: .init()].calls += 1
                if rng.next() % 40 == 0 { a.tools[tool, default: .init()].timeouts += 1 }
            }
            batch.append((a, nil))
            if batch.count == 10_000 || i == runs - 1 {
                try stats.save(batch)
                batch.removeAll(keepingCapacity: true)
            }
        }
        print(
            String(
                format: "stored %d run aggregates over 7 days in %.1f s (stats.db %.1f MiB)", runs,
                Self.seconds(ContinuousClock.now - t0), Double(Self.directoryBytes(dir + "/data")) / 1_048_576))
    }

    /// Seconds until `pid` used under 5 % of a core over a second.
    static func waitUntilIdle(pid: Int32) async throws -> Double {
        func cpuTicks() -> Int {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { return 0 }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0)  // utime, stime
        }
        let t0 = ContinuousClock.now
        var last = cpuTicks()
        while true {
            try await Task.sleep(for: .seconds(1))
            let now = cpuTicks()
            defer { last = now }
            if now - last < 5 { return seconds(ContinuousClock.now - t0) }
        }
    }
}
