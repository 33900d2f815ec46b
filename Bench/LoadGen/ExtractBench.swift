import AsyncHTTPClient
import FlightRecorderOTLP
import FlightRecorderTesting
import Foundation
import NIOCore

/// `--extract-bench`: the span families' cost in isolation, per span, without a daemon: the
/// generated pool (unique IDs each pass) through `IndexFacts.extract` (the last ingest stage,
/// where the span families are counted) without and with `MetricRules`, alternating pass by
/// pass on one thread, then what the indexer does with the deltas: merge a round's requests
/// and add the round into the segment's totals. Medians of the passes.
extension LoadGen {
    func runExtractBench() throws {
        var options = AgentWorkload.Options()
        options.spansPerRequest = spansPerRequest
        options.ownSpanLabels = ownSpanLabels
        var workload = AgentWorkload(options: options)
        let unique = UniqueRequests((0..<pool).map { _ in workload.nextRequest().bytes })
        let spans = unique.totalSpans
        let runIdentity = RunIdentity()
        let indexedKeys = IndexedKeys()
        let rules = MetricRules()
        let passes = max(3, Int(duration))
        var off: [Double] = []
        var on: [Double] = []
        var merge: [Double] = []
        var series = 0
        var totals = MetricDeltas()
        for pass in 0..<passes {
            let bodies = (0..<unique.requests.count).map { unique.bytes($0, pass: pass + 1) }
            var t = ContinuousClock.now
            for b in bodies { _ = IndexFacts.extract(b, runIdentity: runIdentity, indexedKeys: indexedKeys) }
            off.append((ContinuousClock.now - t) / .nanoseconds(1) / Double(spans))
            // As in the daemon: requests counted a round of 16 at a time (each request's tables
            // kept by the thread for the next), then the indexer merges the round, adds it into
            // the segment's totals and frees the requests' counts.
            var extracting = Duration.zero
            var merging = Duration.zero
            var start = 0
            while start < bodies.count {
                t = ContinuousClock.now
                var counts: [SpanFamilyCounts] = []
                counts.reserveCapacity(16)
                for b in bodies[start..<min(bodies.count, start + 16)] {
                    counts.append(
                        IndexFacts.extract(b, runIdentity: runIdentity, indexedKeys: indexedKeys, metrics: rules)!
                            .metrics)
                }
                extracting += ContinuousClock.now - t
                series += counts.reduce(0) { $0 + $1.deltas.counters.count + $1.deltas.histograms.count }
                t = ContinuousClock.now
                var round = MetricDeltas()
                for c in counts { round.add(c) }
                totals.add(round)
                counts.removeAll()
                merging += ContinuousClock.now - t
                start += 16
            }
            on.append(extracting / .nanoseconds(1) / Double(spans))
            merge.append(merging / .nanoseconds(1) / Double(spans))
        }
        func median(_ a: [Double]) -> Double { a.sorted()[a.count / 2] }
        print(
            "workload: \(ownSpanLabels ? "every span naming its version and task type, " : "")\(unique.requests.count) requests, \(spans) spans a pass, \(passes) passes, "
                + "\(series / passes / unique.requests.count) series a request, "
                + "\(totals.counters.count + totals.histograms.count) in all")
        for (name, f) in [("median", median), ("fastest", { $0.min()! })] as [(String, ([Double]) -> Double)] {
            print(
                String(
                    format:
                        "%@: extract without metrics %.0f ns/span, with %.0f ns/span: span families %.0f ns/span (%.1f %%); indexer merge %.0f ns/span",
                    name, f(off), f(on), f(on) - f(off), 100 * (f(on) / f(off) - 1), f(merge)))
        }
    }
}

/// `--compare-metrics`: ingest with the agent metrics on against off, side by side in one run
/// and at the same time: two fresh daemons, one with `metrics.enabled: false`, one with the
/// metrics on (`run_settle: 10s`, so the run analyser works during the round), each sent the
/// same generated pool (unique IDs) over half the connections for the same seconds
/// (`--metrics-on` replaces the metrics-on daemon's `metrics:` section). Both
/// share the machine's cores and whatever else runs on them, so the host's noise falls on
/// both alike, and each one's spans/s follows its cost per span. `--rounds` rounds, the two
/// daemons swapping slots each round; the median over pairs of rounds is reported, for spans/s
/// and for each daemon's own CPU time (`/proc/PID/stat`) per span over the measured seconds,
/// which does not depend on how the scheduler shared the cores.
extension LoadGen {
    func runCompareMetrics(daemon binary: String) async throws {
        try await runCompare(
            daemon: binary, name: "metrics", offExtra: extraConfig + "\nmetrics:\n  enabled: false\n",
            onExtra: extraConfig + "\n" + metricsOn + "\n")
    }

    /// `--compare-evidence`: the same with the evidence log off and on (issue 15's figure).
    func runCompareEvidence(daemon binary: String) async throws {
        try await runCompare(
            daemon: binary, name: "evidence log", offExtra: extraConfig + "\nevidence:\n  enabled: false\n",
            onExtra: extraConfig + "\n")
    }

    /// Two daemons at once, one with `offExtra` and one with `onExtra` appended to the config.
    func runCompare(daemon binary: String, name: String, offExtra: String, onExtra: String) async throws {
        let source = try makeSource()
        var ratios: [Double] = []
        // The daemons' CPU time (user and system, all threads) over the measured seconds, per
        // span: what the metrics cost ingest, apart from how the scheduler shared the cores.
        var cpuRatios: [Double] = []
        for round in 1...rounds {
            // Two slots (ports, directory, the first load started): the metrics-off daemon takes
            // slot A in odd rounds and slot B in even ones, so a slot's own advantage (an A/A run,
            // both off, showed one of about 3 %) cancels over a pair of rounds. Reported per
            // pair: the geometric mean of its two rounds' ratios.
            var a = self
            a.connections = max(1, connections / 2)
            a.benchDirectory = NSTemporaryDirectory() + "flightrec-bench-a-\(getpid())"
            var b = a
            b.portBase = portBase + 10
            b.benchDirectory = NSTemporaryDirectory() + "flightrec-bench-b-\(getpid())"
            let offFirst = round % 2 == 1
            let (off, on) = offFirst ? (a, b) : (b, a)
            // Started in slot order too.
            let (d1, d2) =
                offFirst
                ? (try await off.startDaemon(binary, extra: offExtra), try await on.startDaemon(binary, extra: onExtra))
                : (try await on.startDaemon(binary, extra: onExtra), try await off.startDaemon(binary, extra: offExtra))
            let (offDaemon, onDaemon) = offFirst ? (d1, d2) : (d2, d1)
            let (first, second) = offFirst ? (off, on) : (on, off)
            let (firstPID, secondPID) =
                offFirst
                ? (offDaemon.process.processIdentifier, onDaemon.process.processIdentifier)
                : (onDaemon.process.processIdentifier, offDaemon.process.processIdentifier)
            async let firstRate = first.sideBySide(source, pid: firstPID)
            async let secondRate = second.sideBySide(source, pid: secondPID)
            let (r1, r2) = try await (firstRate, secondRate)
            let (x, y) = offFirst ? (r1.rate, r2.rate) : (r2.rate, r1.rate)
            let (cx, cy) = offFirst ? (r1.cpuPerSpan, r2.cpuPerSpan) : (r2.cpuPerSpan, r1.cpuPerSpan)
            for (daemon, directory) in [(offDaemon, off.benchDirectory!), (onDaemon, on.benchDirectory!)] {
                daemon.process.terminate()
                daemon.process.waitUntilExit()
                try? FileManager.default.removeItem(atPath: directory)
            }
            ratios.append(y / x)
            cpuRatios.append(cy / cx)
            print(
                String(
                    format:
                        "round %d: %@ off (slot %@) %.0f spans/s, on %.0f spans/s: on / off %.1f%%; daemon CPU a span off %.2f us, on %.2f us: on / off %.1f%%",
                    round, name, offFirst ? "A" : "B", x, y, 100 * y / x, cx * 1e6, cy * 1e6, 100 * cy / cx))
        }
        func pairs(_ r: [Double]) -> [Double] {
            stride(from: 0, to: r.count - 1, by: 2).map { (r[$0] * r[$0 + 1]).squareRoot() }
        }
        let rate = pairs(ratios)
        let cpu = pairs(cpuRatios)
        for i in rate.indices {
            print(
                String(
                    format: "pair %d: on / off %.1f%%, CPU a span on / off %.1f%%", i + 1, 100 * rate[i], 100 * cpu[i]))
        }
        guard !rate.isEmpty else { return print("--rounds must be at least 2 for a pair") }
        for (what, values) in [("on / off", rate), ("daemon CPU a span, on / off", cpu)] {
            let sorted = values.sorted()
            print(
                String(
                    format: "median %@ over %d pairs of rounds: %.1f%% (lowest %.1f%%, highest %.1f%%)", what,
                    sorted.count, 100 * sorted[sorted.count / 2], 100 * sorted.first!, 100 * sorted.last!))
        }
    }

    /// Warm-up, then `duration` seconds of load on this daemon's OTLP/HTTP port: spans/s, and
    /// the daemon's (`pid`) CPU seconds per span over those seconds.
    func sideBySide(_ source: RequestSource, pid: Int32) async throws -> (rate: Double, cpuPerSpan: Double) {
        let client = makeLoadClient()
        defer { _ = client.shutdown() }
        let target = "http://127.0.0.1:\(portBase)/v1/traces"
        _ = try await drive(client: client, target: target, requests: source, seconds: warmup, limit: nil, monitor: nil)
        let cpuBefore = Self.processCPU(pid)
        let r = try await drive(
            client: client, target: target, requests: source, seconds: duration, limit: nil, monitor: nil)
        let cpu = Self.processCPU(pid) - cpuBefore
        return (Double(r.spans) / r.elapsed, cpu / Double(max(1, r.spans)))
    }

    /// A process's user and system CPU seconds so far (`/proc/PID/stat`), 0 where unreadable.
    static func processCPU(_ pid: Int32) -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return 0 }
        // After "pid (comm) ": state is field 3, utime 14 and stime 15.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}
