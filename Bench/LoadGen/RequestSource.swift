import ArgumentParser
import FlightRecorderTesting
import Foundation
import Synchronization

/// What the load generator sends: the i-th request of a run, with unique IDs unless
/// `identical` (`UniqueRequests` rewrites them per pass over the pre-encoded requests).
struct RequestSource: Sendable {
    let unique: UniqueRequests
    let identical: Bool
    /// Requests to send in all (a file: its length × passes); nil: as many as time allows.
    let fixedLength: Int?
    /// Requests sent before (their passes are not repeated).
    var offset = 0

    func request(_ i: Int) -> (bytes: [UInt8], spans: Int) {
        let i = i + offset
        let n = unique.requests.count
        let index = i % n
        return (unique.bytes(index, pass: identical ? 0 : i / n), unique.requests[index].spans)
    }

    /// Reads a captured workload: u32 little-endian length, then an `ExportTraceServiceRequest`, repeated.
    static func readFile(_ path: String) throws -> [[UInt8]] {
        guard let data = FileManager.default.contents(atPath: path) else { throw LoadGenError("cannot read \(path)") }
        let bytes = [UInt8](data)
        var out: [[UInt8]] = []
        var i = 0
        while i + 4 <= bytes.count {
            let n = Int(bytes[i]) | Int(bytes[i + 1]) << 8 | Int(bytes[i + 2]) << 16 | Int(bytes[i + 3]) << 24
            i += 4
            guard n <= bytes.count - i else { throw LoadGenError("\(path): request \(out.count) is truncated") }
            out.append(Array(bytes[i..<(i + n)]))
            i += n
        }
        guard i == bytes.count, !out.isEmpty else { throw LoadGenError("\(path): not a length-prefixed request file") }
        return out
    }
}

extension LoadGen {
    func makeSource() throws -> RequestSource {
        let bodies: [[UInt8]]
        if let requests {
            bodies = try RequestSource.readFile(requests)
        } else {
            var options = AgentWorkload.Options()
            options.spansPerRequest = spansPerRequest
            options.ownSpanLabels = ownSpanLabels
            guard (1...options.tenants.count).contains(tenants) else {
                throw ValidationError("--tenants: 1 to \(options.tenants.count)")
            }
            options.tenants = Array(options.tenants.prefix(tenants))
            options.tenantPerRequest = tenantPerRequest
            var workload = AgentWorkload(options: options)
            bodies = (0..<pool).map { _ in workload.nextRequest().bytes }
        }
        let unique = UniqueRequests(bodies)
        let raw = bodies.reduce(0) { $0 + $1.count }
        let spans = unique.totalSpans
        print(
            "workload: \(requests.map { "captured file \($0)" } ?? (ownSpanLabels ? "generated pool, every span naming its version and task type" : "generated pool")): \(bodies.count) requests, \(spans) spans, mean \(raw / max(spans, 1)) bytes/span; "
                + (identical
                    ? "IDENTICAL REPLAY: every pass resends the same IDs (flatters the index)"
                    : "unique IDs: every pass rewrites trace, span and run IDs"))
        guard passes >= 1 else { throw ValidationError("--passes must be at least 1") }
        guard firstPass >= 0 else { throw ValidationError("--first-pass must not be negative") }
        var source = RequestSource(
            unique: unique, identical: identical, fixedLength: requests == nil ? nil : bodies.count * passes)
        source.offset = firstPass * bodies.count
        return source
    }
}

/// Watches a load as it runs: every `every` acknowledged spans it prints the rate over that
/// stretch, the daemon's RSS and the data directory's size, and it keeps the peak RSS.
final class Monitor: Sendable {
    struct State {
        var spans = 0
        var nextReport = 0
        var lastSpans = 0
        var lastTime = ContinuousClock.now
        var peakRSS = 0
        var rates: [Double] = []
    }

    let pid: Int32?
    let dataDir: String?
    let every: Int
    private let state = Mutex(State())
    private let sampler = Mutex<Task<Void, Never>?>(nil)

    init(pid: Int32?, dataDir: String?, every: Int) {
        self.pid = pid
        self.dataDir = dataDir
        self.every = max(every, 1)
    }

    var peakRSS: Int { state.withLock { $0.peakRSS } }
    var rates: [Double] { state.withLock { $0.rates } }

    func begin() {
        state.withLock {
            $0.nextReport = every
            $0.lastTime = .now
        }
        guard let pid else { return }
        let task = Task { [weak self] in
            while !Task.isCancelled {
                let rss = Monitor.rss(pid: pid)
                self?.state.withLock { $0.peakRSS = max($0.peakRSS, rss) }
                try? await Task.sleep(for: .milliseconds(250))
            }
        }
        sampler.withLock { $0 = task }
    }

    func acknowledged(spans: Int) {
        let report: (from: Int, to: Int, rate: Double)? = state.withLock { s in
            s.spans += spans
            guard s.spans >= s.nextReport else { return nil }
            let now = ContinuousClock.now
            let rate = Double(s.spans - s.lastSpans) / LoadGen.seconds(now - s.lastTime)
            defer {
                s.lastSpans = s.spans
                s.lastTime = now
                s.nextReport += every
                s.rates.append(rate)
            }
            return (s.lastSpans, s.spans, rate)
        }
        guard let report else { return }
        let rss = pid.map { Monitor.rss(pid: $0) } ?? 0
        let disk = dataDir.map { LoadGen.directoryBytes($0) } ?? 0
        print(
            String(
                format: "  spans %@-%@: %.0f spans/s, daemon RSS %.1f MiB, data %.1f MiB", Self.short(report.from),
                Self.short(report.to), report.rate, Double(rss) / 1_048_576, Double(disk) / 1_048_576))
    }

    func finish() {
        sampler.withLock {
            $0?.cancel()
            $0 = nil
        }
        let r = rates
        guard r.count >= 2 else { return }
        print(
            String(
                format: "rate per %@ spans: first %.0f, last %.0f spans/s (last / first = %.1f%%)", Self.short(every),
                r.first!, r.last!, 100 * r.last! / r.first!))
    }

    static func short(_ n: Int) -> String {
        n % 1_000_000 == 0 ? "\(n / 1_000_000)M" : n >= 1_000_000 ? String(format: "%.1fM", Double(n) / 1e6) : "\(n)"
    }

    static func rss(pid: Int32) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) * 1024
        }
        return 0
    }
}
