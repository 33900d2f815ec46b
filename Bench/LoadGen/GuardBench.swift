import ArgumentParser
import AsyncHTTPClient
import Foundation
import Hummingbird
import NIOCore
import NIOHTTP1

/// `--guard-bench`: the sidecar's added latency. Starts a collector (`flightrec serve`), a
/// local tool backend (in this process) and `flightrec guard serve`, then sends sequential
/// `decide` and `execute` requests, as one agent does, and reports:
///
/// - decide: the round trip as the agent sees it (p50/p99), and the sidecar's own time
///   (`Server-Timing: app`);
/// - execute: the round trip minus the backend call the sidecar made for it (`Server-Timing:
///   backend`, measured inside the sidecar), request by request: the latency the sidecar
///   adds. The same backend called directly is reported next to it.
extension LoadGen {
    func runGuardBench(binary: String) async throws {
        let backendPort = portBase + 5
        let guardPort = portBase + 6
        let backend = Application(
            router: Self.benchBackend(),
            configuration: .init(address: .hostname("127.0.0.1", port: backendPort), serverName: "bench-backend"))
        let backendTask = Task { try await backend.runService() }
        defer { backendTask.cancel() }
        try await waitForPort(backendPort)

        let collector = try await startDaemon(binary, extra: extraConfig)
        let dir = NSTemporaryDirectory() + "flightrec-guard-bench-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try Self.guardConfig(dir: dir, backendPort: backendPort).write(
            toFile: dir + "/guard.yaml", atomically: true, encoding: .utf8)
        let guardProcess = Process()
        guardProcess.executableURL = URL(fileURLWithPath: binary)
        guardProcess.arguments = [
            "guard", "serve", "--config", dir + "/guard.yaml", "--listen", "127.0.0.1:\(guardPort)",
            "--collector", "http://127.0.0.1:\(portBase)/v1/traces",
        ]
        try guardProcess.run()
        try await waitForPort(guardPort)

        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        let base = "http://127.0.0.1:\(guardPort)"
        let n = max(1000, Int(duration * 250))
        // Warm-up: connections, SQLite pages, code paths.
        for i in 0..<300 {
            _ = try await post(client, base + "/v1/decide", Self.call(i, key: nil))
            _ = try await post(client, base + "/v1/execute", Self.call(i, key: "warm-\(i)"))
        }
        var decide: [Double] = []
        var decideServer: [Double] = []
        for i in 0..<n {
            let r = try await post(client, base + "/v1/decide", Self.call(i, key: nil))
            decide.append(r.seconds)
            decideServer.append(r.app)
        }
        var execute: [Double] = []
        var overhead: [Double] = []
        var serverOverhead: [Double] = []
        var backendTimes: [Double] = []
        for i in 0..<n {
            let r = try await post(client, base + "/v1/execute", Self.call(i, key: "bench-\(getpid())-\(i)"))
            guard r.status == 200, r.body.contains("\"status\":\"succeeded\"") else {
                throw ValidationError("execute failed: \(r.status) \(r.body.prefix(300))")
            }
            execute.append(r.seconds)
            overhead.append(r.seconds - r.backend)
            serverOverhead.append(r.app - r.backend)
            backendTimes.append(r.backend)
        }
        var direct: [Double] = []
        for i in 0..<n {
            let r = try await post(client, "http://127.0.0.1:\(backendPort)/tool", "{\"n\":\(i)}")
            direct.append(r.seconds)
        }
        try? await client.shutdown()
        guardProcess.terminate()
        guardProcess.waitUntilExit()
        collector.process.terminate()
        collector.process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: dir)
        try? FileManager.default.removeItem(atPath: (collector.dataDir as NSString).deletingLastPathComponent)

        func line(_ label: String, _ xs: [Double]) {
            let s = xs.sorted()
            func pct(_ p: Double) -> Double { s[min(s.count - 1, Int(Double(s.count) * p))] * 1000 }
            print(
                String(format: "%@ p50 %.3f ms, p99 %.3f ms, max %.3f ms", label, pct(0.5), pct(0.99), s.last! * 1000))
        }
        print("\(n) sequential requests each (one agent), sidecar exporting its spans to a live collector")
        line("decide round trip:                    ", decide)
        line("decide, time inside the sidecar:      ", decideServer)
        line("execute round trip:                   ", execute)
        line("backend call, measured by the sidecar:", backendTimes)
        line("execute overhead (round trip-backend):", overhead)
        line("execute overhead inside the sidecar:  ", serverOverhead)
        line("backend called directly:              ", direct)
        print("guard exit status: \(guardProcess.terminationStatus)")
    }

    struct GuardTimed {
        var status: UInt
        var seconds: Double
        /// Server-Timing `app` and `backend`, in seconds (0 when absent).
        var app: Double
        var backend: Double
        var body: String
    }

    func post(_ client: HTTPClient, _ url: String, _ body: String) async throws -> GuardTimed {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "traceparent", value: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        request.body = .bytes(ByteBuffer(string: body))
        let t0 = ContinuousClock.now
        let response = try await client.execute(request, timeout: .seconds(30))
        let data = try await response.body.collect(upTo: 1 << 20)
        let dt = ContinuousClock.now - t0
        var app = 0.0
        var backend = 0.0
        for part in (response.headers.first(name: "Server-Timing") ?? "").split(separator: ",") {
            let kv = part.trimmingCharacters(in: .whitespaces).split(separator: ";")
            guard kv.count == 2, kv[1].hasPrefix("dur="), let ms = Double(kv[1].dropFirst(4)) else { continue }
            if kv[0] == "app" { app = ms / 1000 }
            if kv[0] == "backend" { backend = ms / 1000 }
        }
        return GuardTimed(
            status: response.status.code,
            seconds: Double(dt.components.seconds) + Double(dt.components.attoseconds) / 1e18, app: app,
            backend: backend,
            body: String(buffer: data))
    }

    /// An agent-shaped call: 100 runs, arguments that differ per call (no duplicate budget).
    static func call(_ i: Int, key: String?) -> String {
        let k = key.map { ",\"idempotency_key\":\"\($0)\"" } ?? ""
        return """
            {"run_id":"bench-run-\(i % 100)","actor":"bench-agent","tool":"open_ticket","model":"gpt-4o",\
            "arguments":{"summary":"printer on floor \(i) is jammed","priority":2,"requester":{"id":"E-\(i)"}}\(k)}
            """
    }

    static func benchBackend() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        let counter = Counter()
        router.post("/tool") { request, _ -> Response in
            _ = try await request.body.collect(upTo: 1 << 20)
            counter.add(1)
            let body =
                "{\"operation_id\":\"op-\(counter.value)\",\"status\":\"open\",\"assignee\":\"helpdesk@example.com\"}"
            return Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(string: body)))
        }
        return router
    }

    static func guardConfig(dir: String, backendPort: Int) -> String {
        """
        data_dir: \(dir)/data
        actors:
          - {id: bench-agent, tenant: acme, roles: [support_agent]}
        tools:
          - name: open_ticket
            tier: low_write
            backend: {url: "http://127.0.0.1:\(backendPort)/tool"}
            timeout: 5s
            arguments:
              type: object
              required: [summary]
              properties:
                summary: {type: string, maxLength: 2000}
                priority: {type: integer, minimum: 1, maximum: 4}
                requester: {type: object, properties: {id: {type: string}}}
        rules:
          - {id: support-low-writes, effect: allow, roles: [support_agent], tiers: [low_write]}
        """
    }
}
