import FlightRecorderOTLP
import FlightRecorderTesting
import Foundation

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
