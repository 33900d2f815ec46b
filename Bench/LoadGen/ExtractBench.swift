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
            t = ContinuousClock.now
            var deltas: [MetricDeltas] = []
            deltas.reserveCapacity(bodies.count)
            for b in bodies {
                deltas.append(
                    IndexFacts.extract(b, runIdentity: runIdentity, indexedKeys: indexedKeys, metrics: rules)!.metrics)
            }
            on.append((ContinuousClock.now - t) / .nanoseconds(1) / Double(spans))
            series += deltas.reduce(0) { $0 + $1.counters.count + $1.histograms.count }
            // The indexer: a round of 16 requests merged, then added into the segment's totals.
            t = ContinuousClock.now
            var start = 0
            while start < deltas.count {
                var round = MetricDeltas()
                for d in deltas[start..<min(deltas.count, start + 16)] { round.add(d) }
                totals.add(round)
                start += 16
            }
            merge.append((ContinuousClock.now - t) / .nanoseconds(1) / Double(spans))
        }
        func median(_ a: [Double]) -> Double { a.sorted()[a.count / 2] }
        print(
            "workload: \(unique.requests.count) requests, \(spans) spans a pass, \(passes) passes, "
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
/// both alike, and each one's spans/s follows its cost per span. `--rounds` rounds, the
/// daemon started first alternating; the median ratio is reported.
extension LoadGen {
    func runCompareMetrics(daemon binary: String) async throws {
        let source = try makeSource()
        var ratios: [Double] = []
        for round in 1...rounds {
            var off = self
            off.connections = max(1, connections / 2)
            off.benchDirectory = NSTemporaryDirectory() + "flightrec-bench-off-\(getpid())"
            var on = off
            on.portBase = portBase + 10
            on.benchDirectory = NSTemporaryDirectory() + "flightrec-bench-on-\(getpid())"
            let offExtra = extraConfig + "\nmetrics:\n  enabled: false\n"
            let onExtra = extraConfig + "\n" + metricsOn + "\n"
            let (a, b) =
                round % 2 == 1
                ? (try await off.startDaemon(binary, extra: offExtra), try await on.startDaemon(binary, extra: onExtra))
                : (try await on.startDaemon(binary, extra: onExtra), try await off.startDaemon(binary, extra: offExtra))
            let (offDaemon, onDaemon) = round % 2 == 1 ? (a, b) : (b, a)
            let (offCopy, onCopy) = (off, on)
            async let offRate = offCopy.sideBySide(source)
            async let onRate = onCopy.sideBySide(source)
            let (x, y) = try await (offRate, onRate)
            for (daemon, directory) in [(offDaemon, off.benchDirectory!), (onDaemon, on.benchDirectory!)] {
                daemon.process.terminate()
                daemon.process.waitUntilExit()
                try? FileManager.default.removeItem(atPath: directory)
            }
            ratios.append(y / x)
            print(
                String(
                    format: "round %d: metrics off %.0f spans/s, on %.0f spans/s: on / off %.1f%%", round, x, y,
                    100 * y / x))
        }
        let sorted = ratios.sorted()
        print(
            String(
                format: "median on / off over %d rounds: %.1f%% (lowest %.1f%%, highest %.1f%%)", ratios.count,
                100 * sorted[sorted.count / 2], 100 * sorted.first!, 100 * sorted.last!))
    }

    /// Warm-up, then `duration` seconds of load on this daemon's OTLP/HTTP port; spans/s.
    func sideBySide(_ source: RequestSource) async throws -> Double {
        let client = makeLoadClient()
        defer { _ = client.shutdown() }
        let target = "http://127.0.0.1:\(portBase)/v1/traces"
        _ = try await drive(client: client, target: target, requests: source, seconds: warmup, limit: nil, monitor: nil)
        let r = try await drive(
            client: client, target: target, requests: source, seconds: duration, limit: nil, monitor: nil)
        return Double(r.spans) / r.elapsed
    }
}
