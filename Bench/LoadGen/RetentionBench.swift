import ArgumentParser
import AsyncHTTPClient
import Foundation

/// `--retention-bench`: reclaiming an expired stretch of data, and what it costs ingest. A
/// daemon with `retention: {max_age: 1d, seal_after: 2s, check_interval: 1s}` is filled for
/// --duration seconds (the "day" to expire; unique IDs), its segments then sealed. Then, in one
/// continuous load: 10 s of ingest alone; the filled segments' last-write times set two days
/// back (as a day of age would leave them); ingest while the next expiry passes delete them,
/// until every one of their files is gone (the reclaim time, from the backdating); ingest
/// alone again to the end. The ratio is the rate while reclaiming over the mean of the two
/// rates alone, from the load generator's acknowledged spans. --rounds repeats fill and
/// reclaim on the same daemon.
extension LoadGen {
    func runRetentionBench(daemon binary: String) async throws {
        var source = try makeSource()
        let started = try await startDaemon(
            binary, extra: extraConfig + "\nretention:\n  max_age: 1d\n  seal_after: 2s\n  check_interval: 1s\n")
        defer {
            started.process.terminate()
            started.process.waitUntilExit()
            try? FileManager.default.removeItem(atPath: (started.dataDir as NSString).deletingLastPathComponent)
        }
        let client = makeLoadClient()
        let target = "http://127.0.0.1:\(portBase)/v1/traces"
        let segments = started.dataDir + "/segments"
        func frs() -> Set<String> {
            Set(
                ((try? FileManager.default.contentsOfDirectory(atPath: segments)) ?? []).filter { $0.hasSuffix(".frs") }
            )
        }
        func bytes(_ names: Set<String>) -> Int64 {
            names.reduce(0) { total, name in
                let size = (try? FileManager.default.attributesOfItem(atPath: segments + "/" + name)[.size]) as? Int
                return total + Int64(size ?? 0)
            }
        }
        var ratios: [Double] = []
        var reclaims: [Double] = []
        for round in 1...rounds {
            let before = frs()
            let fill = try await drive(
                client: client, target: target, requests: source, seconds: duration, limit: nil, monitor: nil)
            source.offset += fill.requests
            try await Task.sleep(for: .seconds(3))  // the last filled segment seals (seal_after 2 s)
            // The round's day: the sealed segments it filled (the newest, active one excluded).
            var day = frs().subtracting(before)
            if let newest = day.max() { day.remove(newest) }
            let dayBytes = bytes(day)
            let window = 10.0
            let running = source
            async let load = drive(
                client: client, target: target, requests: running, seconds: 3 * window + 10, limit: nil, monitor: nil)
            func sample() -> (ContinuousClock.Instant, Int) { (.now, Self.sentSpans.value) }
            try await Task.sleep(for: .seconds(1))
            let a0 = sample()
            try await Task.sleep(for: .seconds(window))
            let a1 = sample()
            let twoDaysAgo = Date(timeIntervalSinceNow: -2 * 86400)
            for name in day {
                try? FileManager.default.setAttributes(
                    [.modificationDate: twoDaysAgo], ofItemAtPath: segments + "/" + name)
            }
            while !frs().isDisjoint(with: day) { try await Task.sleep(for: .milliseconds(50)) }
            let r = sample()
            try await Task.sleep(for: .seconds(window))
            let b = sample()
            let result = try await load
            source.offset += result.requests
            func rate(_ x: (ContinuousClock.Instant, Int), _ y: (ContinuousClock.Instant, Int)) -> Double {
                Double(y.1 - x.1) / Self.seconds(y.0 - x.0)
            }
            let alone = (rate(a0, a1) + rate(r, b)) / 2
            let during = rate(a1, r)
            ratios.append(during / alone)
            reclaims.append(Self.seconds(r.0 - a1.0))
            print(
                String(
                    format:
                        "round %d: expired %d segments (%.0f MiB) of a %d-span fill in %.2f s (from their last write set 2 days back to the last file gone); "
                        + "ingest alone %.0f spans/s (before %.0f, after %.0f), while reclaiming %.0f spans/s: %.1f%%",
                    round, day.count, Double(dayBytes) / 1_048_576, fill.spans, reclaims.last!, alone, rate(a0, a1),
                    rate(r, b), during, 100 * ratios.last!))
        }
        try? await client.shutdown()
        print(
            String(
                format: "median: reclaim %.2f s, ingest while reclaiming / alone %.1f%%",
                reclaims.sorted()[reclaims.count / 2],
                100 * ratios.sorted()[ratios.count / 2]))
    }
}
