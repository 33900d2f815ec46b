import ArgumentParser
import AsyncHTTPClient
import FlightRecorderTesting
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization

/// Sends pre-encoded, agent-shaped OTLP protobuf requests over several connections (OTLP/HTTP
/// or OTLP/gRPC) against a daemon, and prints spans/s (overall and per `--report-every-spans`),
/// request latency p50/p99, bytes on disk per raw OTLP byte, and the daemon's RSS. With
/// `--daemon`, it starts the daemon itself on a fresh data directory so every figure comes
/// from one reproducible command.
///
/// Every span it sends is unique: each pass over the pre-encoded requests rewrites their
/// trace, span and run IDs (`UniqueRequests`). `--identical` replays the same bytes instead,
/// and says so. `--requests FILE` sends a captured workload (u32 little-endian length, then an
/// `ExportTraceServiceRequest`) once, in order, or `--passes` times with new IDs each pass.
@main
struct LoadGen: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flightrec-loadgen", abstract: "OTLP/HTTP and OTLP/gRPC load generator for flightrec.")

    @Option(help: "flightrec binary to start on a fresh data directory (omit to target --url).")
    var daemon: String?

    @Option(help: "OTLP/HTTP endpoint when --daemon is not given.")
    var url = "http://127.0.0.1:4318/v1/traces"

    @Option(help: "Concurrent connections.")
    var connections = 8

    @Option(help: "Seconds of measured load.")
    var duration = 20.0

    @Option(help: "Seconds of warm-up before measuring.")
    var warmup = 3.0

    @Option(name: .customLong("spans-per-request"), help: "Spans per request (OTel SDK batch default: 512).")
    var spansPerRequest = 512

    @Option(help: "Distinct pre-encoded requests in the generated pool (each pass rewrites their IDs).")
    var pool = 300

    @Option(
        help:
            "Send this captured workload instead: u32 little-endian length, then an ExportTraceServiceRequest, repeated."
    )
    var requests: String?

    @Option(help: "With --requests: passes over the file (pass 0 as captured, later passes with new IDs).")
    var passes = 1

    @Option(
        help:
            "Start at this pass of the pool (IDs and times no earlier run sent): to load onto a store an earlier run filled."
    )
    var firstPass = 0

    @Flag(help: "Replay identical requests (the same IDs every pass): flatters the index; labelled in the output.")
    var identical = false

    @Option(
        help:
            "Offer this many spans/s (open loop: requests are due on a fixed schedule, latency counted from when each was due); default: as fast as the connections go."
    )
    var rate: Int?

    @Option(help: "Print the rate, RSS and disk every this many acknowledged spans.")
    var reportEverySpans = 5_000_000

    @Option(help: "Durability for a started daemon: fsync or none.")
    var durability = "fsync"

    @Option(help: "Extra YAML appended to a started daemon's config.")
    var extraConfig = ""

    @Option(help: "Port base for a started daemon (OTLP/HTTP on base, API on base+1, OTLP/gRPC on base+2).")
    var portBase = 24318

    @Option(help: "http, grpc, or both (alternating rounds on fresh daemons, same workload, then the ratio).")
    var proto = "http"

    @Option(help: "With --proto both: rounds per protocol; medians are reported.")
    var rounds = 3

    @Option(help: "OTLP/gRPC endpoint HOST:PORT when --daemon is not given.")
    var grpcTarget = "127.0.0.1:4317"

    @Flag(help: "With --daemon: measure with redaction off, then with the default detectors, and print the ratio.")
    var compareRedaction = false

    @Flag(help: "With --daemon: store --load-spans unique agent spans, then time causal queries server-side.")
    var queryBench = false

    @Option(help: "Spans to store before --query-bench measures.")
    var loadSpans = 5_000_000

    @Option(help: "With --query-bench: how many of each query to time.")
    var queries = 1000

    @Option(
        help:
            "With --query-bench or --stats-bench: keep the daemon's directory here (default: a temporary one, removed)."
    )
    var benchDirectory: String?

    @Flag(
        help:
            "With --query-bench or --stats-bench, and --bench-directory: query the store loaded there by an earlier run."
    )
    var reuse = false

    @Flag(help: "With --daemon: time the policy sidecar's decide and execute (added latency, backend time subtracted).")
    var guardBench = false

    @Option(help: "With --daemon: RSS and scrape time of this many active agent-metric series (MetricsBench.swift).")
    var seriesBench: Int?

    @Option(help: "With --daemon: time GET /api/v1/stats over this many stored runs (MetricsBench.swift).")
    var statsBench: Int?

    @Flag(
        name: .customLong("own-span-labels"),
        help:
            "Generated pool: every span names its own agent version and task type, so ingest counts its span families (otherwise the run analyser does)."
    )
    var ownSpanLabels = false

    @Flag(help: "Without a daemon: the span families' cost per span in IndexFacts.extract (ExtractBench.swift).")
    var extractBench = false

    @Flag(
        help: "With --daemon: ingest with the agent metrics on against off, two daemons at once (ExtractBench.swift).")
    var compareMetrics = false

    @Flag(help: "With --daemon: ingest with the evidence log on against off, two daemons at once (ExtractBench.swift).")
    var compareEvidence = false

    @Flag(help: "With --daemon: audit bundle export and verify rates over one tenant's range (AuditBench.swift).")
    var auditBench = false

    @Flag(help: "With --daemon: reclaiming an expired day, and ingest meanwhile against alone (RetentionBench.swift).")
    var retentionBench = false

    @Flag(
        help:
            "With --daemon: erase one subject from a --load-spans store, and ingest meanwhile against alone (ErasureBench.swift)."
    )
    var erasureBench = false

    @Option(help: "Tenants in the generated pool, interleaved in every request (1 to 4; acme first).")
    var tenants = 4

    @Flag(
        help:
            "Each generated request holds one tenant's runs (the tenants in turn), as per-tenant SDK exporters send them."
    )
    var tenantPerRequest = false

    @Option(help: "With --compare-metrics: the metrics-on daemon's metrics section.")
    var metricsOn = "metrics:\n  run_settle: 10s"

    func run() async throws {
        if extractBench { return try runExtractBench() }
        if compareMetrics {
            guard let daemon else { throw ValidationError("--compare-metrics needs --daemon") }
            return try await runCompareMetrics(daemon: daemon)
        }
        if compareEvidence {
            guard let daemon else { throw ValidationError("--compare-evidence needs --daemon") }
            return try await runCompareEvidence(daemon: daemon)
        }
        if auditBench {
            guard let daemon else { throw ValidationError("--audit-bench needs --daemon") }
            return try await runAuditBench(daemon: daemon)
        }
        if retentionBench {
            guard let daemon else { throw ValidationError("--retention-bench needs --daemon") }
            return try await runRetentionBench(daemon: daemon)
        }
        if erasureBench {
            guard let daemon else { throw ValidationError("--erasure-bench needs --daemon") }
            return try await runErasureBench(daemon: daemon)
        }
        if guardBench {
            guard let daemon else { throw ValidationError("--guard-bench needs --daemon") }
            return try await runGuardBench(binary: daemon)
        }
        if let series = seriesBench {
            guard let daemon else { throw ValidationError("--series-bench needs --daemon") }
            return try await runSeriesBench(daemon: daemon, series: series)
        }
        if let runs = statsBench {
            guard let daemon else { throw ValidationError("--stats-bench needs --daemon") }
            return try await runStatsBench(daemon: daemon, runs: runs)
        }
        if queryBench {
            guard let daemon else { throw ValidationError("--query-bench needs --daemon") }
            return try await runQueryBench(daemon: daemon)
        }
        let source = try makeSource()
        guard ["http", "grpc", "both"].contains(proto) else { throw ValidationError("--proto: http, grpc or both") }

        if proto == "both" {
            guard daemon != nil else { throw ValidationError("--proto both needs --daemon") }
            var http: [Double] = []
            var grpc: [Double] = []
            for round in 1...rounds {
                print("== round \(round): OTLP/HTTP")
                http.append(try await measure(source, extra: extraConfig, grpc: false))
                print("== round \(round): OTLP/gRPC")
                grpc.append(try await measure(source, extra: extraConfig, grpc: true))
            }
            let h = http.sorted()[http.count / 2]
            let g = grpc.sorted()[grpc.count / 2]
            print(
                String(
                    format: "median OTLP/HTTP %.0f spans/s, OTLP/gRPC %.0f spans/s: gRPC / HTTP = %.1f%%", h, g,
                    100 * g / h))
        } else if compareRedaction {
            guard daemon != nil else { throw ValidationError("--compare-redaction needs --daemon") }
            print("== redaction off")
            let off = try await measure(source, extra: extraConfig + "\nredaction:\n  enabled: false\n")
            print("== redaction on (default detectors)")
            let on = try await measure(source, extra: extraConfig)
            print(String(format: "redaction on / off: %.1f%% of throughput", 100 * on / off))
        } else {
            _ = try await measure(source, extra: extraConfig, grpc: proto == "grpc")
        }
    }

    /// The HTTP client the load goes through: `connections` connections, kept open.
    func makeLoadClient() -> HTTPClient {
        HTTPClient(
            eventLoopGroupProvider: .singleton,
            configuration: .init(
                connectionPool: .init(
                    idleTimeout: .seconds(120), concurrentHTTP1ConnectionsPerHostSoftLimit: connections)))
    }

    /// Runs one measurement and returns spans/s.
    func measure(_ requests: RequestSource, extra: String, grpc: Bool = false) async throws -> Double {
        let startBytes = Self.sentBytes.value
        let startSpans = Self.sentSpans.value
        var process: Process?
        var dataDir: String?
        var target = url
        var grpcHostPort = grpcTarget
        if let daemon {
            let started = try await startDaemon(daemon, extra: extra)
            process = started.process
            dataDir = started.dataDir
            target = "http://127.0.0.1:\(portBase)/v1/traces"
            grpcHostPort = "127.0.0.1:\(portBase + 2)"
        }

        let result: Result
        let monitor = Monitor(pid: process?.processIdentifier, dataDir: dataDir, every: reportEverySpans)
        // A file is sent once per pass, whole; a generated pool for --duration seconds (after --warmup).
        let phases: [(seconds: Double?, limit: Int?, monitor: Monitor?)] =
            requests.fixedLength.map { [(nil, $0, monitor)] } ?? [(warmup, nil, nil), (duration, nil, monitor)]
        if grpc {
            result = try await driveGRPC(target: grpcHostPort, requests: requests, phases: phases)
        } else {
            let client = makeLoadClient()
            var last = Result()
            for phase in phases {
                last = try await drive(
                    client: client, target: target, requests: requests, seconds: phase.seconds, limit: phase.limit,
                    monitor: phase.monitor)
            }
            result = last
            try? await client.shutdown()
        }

        let sorted = result.latencies.sorted()
        func pct(_ p: Double) -> Double {
            sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
        }
        let spansPerSecond = Double(result.spans) / result.elapsed
        print(
            String(
                format: "%@ throughput: %.0f spans/s (%.1f requests/s, %d connections, %.1f s)",
                grpc ? "OTLP/gRPC" : "OTLP/HTTP", spansPerSecond,
                Double(result.requests) / result.elapsed, connections, result.elapsed))
        print(
            String(
                format: "latency%@: p50 %.2f ms, p99 %.2f ms",
                rate.map { " at \($0) spans/s offered (from when each request was due)" } ?? "", pct(0.50) * 1000,
                pct(0.99) * 1000))
        if result.failures > 0 { print("refused or failed requests: \(result.failures) (\(result.statuses))") }

        if let process, let dataDir {
            let rss = max(peakRSS(pid: process.processIdentifier), monitor.peakRSS)
            process.terminate()  // SIGTERM: graceful drain, fsync, WAL checkpoint
            process.waitUntilExit()
            let disk = directorySize(dataDir)
            // Everything acknowledged by this daemon, warm-up included, against what it stored.
            let sent = Self.sentBytes.value - startBytes
            let spans = Self.sentSpans.value - startSpans
            print(
                String(
                    format: "disk: %ld bytes for %ld raw OTLP bytes = %.1f%% (%.1f bytes/span)", disk, sent,
                    100.0 * Double(disk) / Double(max(sent, 1)), Double(disk) / Double(max(spans, 1))))
            print(String(format: "daemon peak RSS: %.1f MiB", Double(rss) / 1_048_576))
            print("daemon exit status: \(process.terminationStatus)")
            try? FileManager.default.removeItem(atPath: (dataDir as NSString).deletingLastPathComponent)
        }
        return spansPerSecond
    }

    struct Result {
        var spans = 0
        var requests = 0
        var bytes = 0
        var failures = 0
        var statuses: [UInt: Int] = [:]
        var latencies: [Double] = []
        var elapsed = 0.0
    }

    static let sentBytes = Counter()
    static let sentSpans = Counter()

    /// One request's outcome: its body size, and the HTTP status (or nil when gRPC failed).
    struct Sent {
        var ok: Bool
        var bytes: Int
        var spans: Int
        var status: UInt?
    }

    /// Runs `connections` workers sending back to back until `seconds` pass or `limit`
    /// requests were sent; `send(worker, i)` sends the i-th request (a shared counter, so a
    /// file goes out once, in order).
    func load(
        seconds: Double?, limit: Int?, monitor: Monitor?, _ send: @escaping @Sendable (Int, Int) async throws -> Sent
    ) async throws -> Result {
        let start = ContinuousClock.now
        let deadline = seconds.map { start + .milliseconds(Int($0 * 1000)) }
        let next = Counter()
        // --rate: the spans/s offered, one request of spansPerRequest spans every interval.
        let interval = rate.map { Duration.nanoseconds(Int64(Double(spansPerRequest) / Double($0) * 1e9)) }
        monitor?.begin()
        var total = try await withThrowingTaskGroup(of: Result.self) { group in
            for worker in 0..<connections {
                group.addTask {
                    var r = Result()
                    while deadline.map({ ContinuousClock.now < $0 }) ?? true {
                        let i = next.increment()
                        if let limit, i >= limit { break }
                        var t0 = ContinuousClock.now
                        if let interval {
                            // Open loop: request i is due at start + i × interval; its latency counts
                            // from then, so a stalled daemon cannot hide behind a waiting sender.
                            let due = start + interval * i
                            if due > t0 { try await Task.sleep(until: due, clock: .continuous) }
                            t0 = due
                        }
                        var sent = try await send(worker, i)
                        // A file's requests are each sent until acknowledged (503: back off, resend).
                        while !sent.ok && limit != nil {
                            r.failures += 1
                            r.statuses[sent.status ?? 0, default: 0] += 1
                            try await Task.sleep(for: .milliseconds(100))
                            sent = try await send(worker, i)
                        }
                        let dt = ContinuousClock.now - t0
                        if sent.ok {
                            r.spans += sent.spans
                            r.requests += 1
                            r.bytes += sent.bytes
                            r.latencies.append(Double(dt.components.attoseconds) / 1e18 + Double(dt.components.seconds))
                            Self.sentBytes.add(sent.bytes)
                            Self.sentSpans.add(sent.spans)
                            monitor?.acknowledged(spans: sent.spans)
                        } else {
                            r.failures += 1
                            r.statuses[sent.status ?? 0, default: 0] += 1
                        }
                    }
                    return r
                }
            }
            var total = Result()
            for try await r in group {
                total.spans += r.spans
                total.requests += r.requests
                total.bytes += r.bytes
                total.failures += r.failures
                total.latencies += r.latencies
                for (k, v) in r.statuses { total.statuses[k, default: 0] += v }
            }
            return total
        }
        monitor?.finish()
        let elapsed = ContinuousClock.now - start
        total.elapsed = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return total
    }

    func drive(
        client: HTTPClient, target: String, requests: RequestSource, seconds: Double?, limit: Int?, monitor: Monitor?
    ) async throws -> Result {
        try await load(seconds: seconds, limit: limit, monitor: monitor) { _, i in
            let (bytes, spans) = requests.request(i)
            let body = ByteBuffer(bytes: bytes)
            let status = try await Self.export(client, target, body, timeout: .seconds(60))
            return Sent(ok: status == .ok, bytes: body.readableBytes, spans: spans, status: status.code)
        }
    }

    /// POSTs one OTLP/HTTP protobuf request and returns the response status.
    static func export(
        _ client: HTTPClient, _ target: String, _ body: ByteBuffer, timeout: TimeAmount
    ) async throws
        -> HTTPResponseStatus
    {
        var request = HTTPClientRequest(url: target)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/x-protobuf")
        request.body = .bytes(body)
        let response = try await client.execute(request, timeout: timeout)
        _ = try await response.body.collect(upTo: 1 << 20)
        return response.status
    }

    /// Starts `binary` on a fresh data directory: OTLP/HTTP on `portBase`, the API on
    /// `portBase + 1`, OTLP/gRPC on `portBase + 2`.
    func startDaemon(_ binary: String, extra: String) async throws -> (process: Process, dataDir: String) {
        let dir = benchDirectory ?? NSTemporaryDirectory() + "flightrec-bench-\(getpid())"
        if !reuse { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try writeConfig(dir: dir, extra: extra)
        let started = try await restartDaemon(binary, dir: dir)
        try await waitForPort(portBase)
        try await waitForPort(portBase + 1)
        try await waitForPort(portBase + 2)
        return (started.process, dir + "/data")
    }

    /// Writes `dir/flightrec.yaml`: data in `dir/data`, OTLP/HTTP on `portBase`, the API on
    /// `portBase + 1`, OTLP/gRPC on `portBase + 2`, `--durability`, then `extra`.
    func writeConfig(dir: String, extra: String) throws {
        try """
        data_dir: \(dir)/data
        listeners:
          otlp_http: 127.0.0.1:\(portBase)
          api: 127.0.0.1:\(portBase + 1)
          otlp_grpc: 127.0.0.1:\(portBase + 2)
        storage:
          durability: \(durability)
        log:
          level: warning
        \(extra)
        """.write(toFile: dir + "/flightrec.yaml", atomically: true, encoding: .utf8)
    }

    /// Execs the daemon on the config `writeConfig` wrote into `dir`.
    func restartDaemon(
        _ binary: String, dir: String
    ) async throws -> (process: Process, launched: ContinuousClock.Instant) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = ["serve", "--config", dir + "/flightrec.yaml"]
        let launched = ContinuousClock.now
        try p.run()
        return (p, launched)
    }

    func waitForPort(_ port: Int) async throws {
        for _ in 0..<300 {
            if Self.accepts(port: port) { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw ValidationError("the daemon did not start listening on port \(port)")
    }

    func peakRSS(pid: Int32) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) * 1024
        }
        return 0
    }

    func directorySize(_ path: String) -> Int { Self.directoryBytes(path) }

    static func directoryBytes(_ path: String) -> Int {
        guard let e = FileManager.default.enumerator(atPath: path) else { return 0 }
        var total = 0
        while let f = e.nextObject() as? String {
            if let a = try? FileManager.default.attributesOfItem(atPath: path + "/" + f),
                (a[.type] as? FileAttributeType) == .typeRegular
            {
                total += (a[.size] as? Int) ?? 0
            }
        }
        return total
    }
}

/// A thread-safe counter shared by the load workers.
final class Counter: Sendable {
    private let storage = Mutex(0)
    func add(_ n: Int) { storage.withLock { $0 += n } }
    /// The value before adding one.
    func increment() -> Int {
        storage.withLock { v in
            defer { v += 1 }; return v
        }
    }
    var value: Int { storage.withLock { $0 } }
}
