import FlightRecorderAnalysis
import FlightRecorderOTLP
import FlightRecorderSQLite
import FlightRecorderTesting
import Foundation
import Testing

/// The hourly rollups `GET /api/v1/stats` reads: stored in binary, summed exactly, and the
/// JSON the first version stored still read.
@Suite struct RollupTests {
    func run(_ i: Int, steps: Int, seconds: Double, tools: [String: Int]) -> RunAggregate {
        var a = RunAggregate(
            tenant: i % 2 == 0 ? "acme" : "globex", runID: "run-\(i)", agent: "it-agent",
            version: i % 3 == 0 ? "v2" : "v1",
            taskType: "reset", startNanos: 3_600_000_000_000 * Int64(i % 4),
            endNanos: 3_600_000_000_000 * Int64(i % 4) + Int64(seconds * 1e9))
        a.steps = steps
        a.error = i % 5 == 0
        a.toolCalls = tools.values.reduce(0, +)
        a.decisions = a.toolCalls
        a.blocked = i % 7 == 0 ? 1 : 0
        a.tokensIn = Double(i) * 10.5
        a.costUSD = Double(i) * 0.001
        for (t, n) in tools { a.tools[t] = .init(calls: n, errors: i % 2, timeouts: i % 3 == 0 ? 1 : 0) }
        return a
    }

    var runs: [RunAggregate] {
        (0..<200).map {
            run(
                $0, steps: $0 % 17 == 0 ? 9_000 : 3 + $0 % 40, seconds: 0.5 + Double($0 % 50) * 7,
                tools: ["procure": 1 + $0 % 3, "lookup": $0 % 2])
        }
    }

    /// Sums of doubles in another order: equal to a billionth.
    func rounded(_ m: [String: GroupStats]) -> [String: GroupStats] {
        m.mapValues {
            var g = $0
            g.costUSD = ($0.costUSD * 1e9).rounded()
            g.tokensIn = ($0.tokensIn * 1e9).rounded()
            return g
        }
    }

    @Test func binaryRoundTripsAndSumsExactly() throws {
        var all = GroupStats()
        var sum = GroupStats.Sum()
        for chunk in stride(from: 0, to: runs.count, by: 25) {
            var g = GroupStats()
            for r in runs[chunk..<chunk + 25] { g.add(r) }
            #expect(GroupStats(stored: g.binary) == g)
            let added = sum.add(g.binary)
            #expect(added)
            all.add(g)
        }
        #expect(sum.stats == all)
        #expect(all.runs == 200)
        #expect(all.stepsQuantile(0.99) == 9_000)  // beyond the dense range, kept exactly
        // Not a rollup: refused, nothing added.
        let refused = !sum.add([GroupStats.binaryTag, 1, 2])
        #expect(refused)
        #expect(sum.stats == all)
        let json = try JSONEncoder().encode(all)
        #expect(GroupStats(stored: [UInt8](json)) == all)
    }

    @Test func storeAnswersFromRollupsAsFromTheRuns() throws {
        let dir = TemporaryDirectory()
        let store = try RunStatsStore(path: dir.path + "/stats.db")
        try store.save(runs.map { ($0, nil) })
        // Observed again with one more step: the rollup takes the old figures out.
        var again = runs[4]
        again.steps += 1
        try store.save([(again, runs[4])])
        var expected: [String: GroupStats] = [:]
        for r in runs.enumerated().map({ $0.offset == 4 ? again : $0.element }) {
            expected[r.version, default: GroupStats()].add(r)
        }
        let got = try store.rollups(since: 0, until: 4 * 3_600_000_000_000, tenants: nil) { $0.version }
        #expect(rounded(got) == rounded(expected))
        let acme = try store.rollups(since: 0, until: 4 * 3_600_000_000_000, tenants: ["acme"]) { $0.tenant }
        #expect(acme.keys.sorted() == ["acme"])
        #expect(acme["acme"]?.runs == runs.filter { $0.tenant == "acme" }.count)
    }

    /// Windows over several days read whole UTC days from the daily rollups and their ends
    /// from the hourly ones: every window, aligned to days or not, answers as the runs in its
    /// hours do, after a run is observed again, after runs are forgotten, and in a store from
    /// before the daily rollups (built from the hourly ones at start-up).
    @Test func windowsAcrossDaysAnswerAsTheirRuns() throws {
        let hour: Int64 = 3_600_000_000_000
        let spread = (0..<300).map { i -> RunAggregate in
            var a = run(i, steps: 3 + i % 31, seconds: 1 + Double(i % 13), tools: ["procure": 1 + i % 2])
            // Hours 0 to 119 (five days), a few runs in each.
            a.startNanos = Int64((i * 37) % 120) * hour + Int64(i) * 1_000_000
            a.endNanos = a.startNanos + Int64(1 + i % 13) * 1_000_000_000
            return a
        }
        func expected(_ runs: [RunAggregate], _ since: Int64, _ until: Int64) -> [String: GroupStats] {
            var out: [String: GroupStats] = [:]
            for r in runs where r.startNanos / hour >= since / hour && r.startNanos / hour <= (until - 1) / hour {
                out[r.version, default: GroupStats()].add(r)
            }
            return rounded(out)
        }
        let windows: [(Int64, Int64)] = [
            (0, 120 * hour), (0, 24 * hour), (24 * hour, 72 * hour), (5 * hour, 100 * hour),
            (23 * hour, 49 * hour), (30 * hour, 40 * hour), (47 * hour, 96 * hour + 1), (119 * hour, 120 * hour),
        ]
        func check(_ store: RunStatsStore, _ runs: [RunAggregate]) throws {
            for (since, until) in windows {
                let got = try store.rollups(since: since, until: until, tenants: nil) { $0.version }
                #expect(rounded(got) == expected(runs, since, until), "window \(since / hour)h-\(until / hour)h")
                #expect(got.values.map(\.runs).reduce(0, +) > 0)
            }
        }
        let dir = TemporaryDirectory()
        let path = dir.path + "/stats.db"
        var now = spread
        do {
            let store = try RunStatsStore(path: path)
            try store.save(spread.map { ($0, nil) })
            try check(store, now)
            var again = spread[10]
            again.steps += 5
            try store.save([(again, spread[10])])
            now[10] = again
            try check(store, now)
            try store.forget(spread[20..<40].map { (tenant: $0.tenant, run: $0.runID) })
            now.removeSubrange(20..<40)
            try check(store, now)
        }
        // A store from before the daily rollups: built from the hourly ones at start-up.
        do {
            let db = try SQLiteDatabase(path: path)
            try db.execute("DELETE FROM rollups_daily; DELETE FROM meta WHERE key = 'daily_rollups'")
        }
        try check(try RunStatsStore(path: path), now)
    }

    /// Start-up reads the run families' totals the store keeps with every batch, not every
    /// aggregate: they equal the sum of the aggregates' metrics, a run observed again adding
    /// its counters' increase only; a store from before they were kept sums them once.
    @Test func storeKeepsTheRunFamiliesTotals() throws {
        let dir = TemporaryDirectory()
        let path = dir.path + "/stats.db"
        func toolCalls(_ d: MetricDeltas) -> [String: Double] {
            var out: [String: Double] = [:]
            for (k, v) in d.counters { out[k.family.name + "/" + k.labels.joined(separator: ","), default: 0] += v }
            for (k, h) in d.histograms {
                out[k.family.name + "/" + k.labels.joined(separator: ","), default: 0] += Double(h.count)
            }
            return out
        }
        var expected = MetricDeltas()
        for r in runs { expected.add(r.metrics) }
        var again = runs[6]
        again.findings["unapproved_write"] = 2
        expected.add(RunAggregate.counterIncrease(from: runs[6], to: again))
        do {
            let store = try RunStatsStore(path: path)
            let added = try store.save(runs.map { ($0, nil) })
            #expect(toolCalls(added) == toolCalls(runs.reduce(into: MetricDeltas()) { $0.add($1.metrics) }))
            try store.save([(again, runs[6])])
            #expect(toolCalls(try store.metricTotals()) == toolCalls(expected))
        }
        // As a store written before the totals were kept: summed from the aggregates once.
        do {
            let db = try SQLiteDatabase(path: path)
            try db.execute("DELETE FROM metric_totals; DELETE FROM meta")
        }
        let reopened = try RunStatsStore(path: path)
        #expect(toolCalls(try reopened.metricTotals()) == toolCalls(expected))
        let db = try SQLiteDatabase(path: path)
        let q = try db.prepare("SELECT count(*) FROM metric_totals")
        _ = try q.step()
        #expect(q.int64(0) > 0)
    }

    /// A run's row: read back as stored (names, counts, fractional and whole numbers, a span
    /// that ended before it started), in tens of bytes, and a row an earlier version wrote as
    /// JSON still read.
    @Test func aggregatesRoundTripCompactlyAndOldJSONRowsStillRead() throws {
        let dir = TemporaryDirectory()
        let path = dir.path + "/stats.db"
        var all = runs
        all[3].findings = ["unapproved_write": 2, "repeated_call": 1]
        all[3].repeatedByTool = ["procure": 2]
        all[3].hasRoot = true
        all[3].uncertainWrites = 1
        all[3].tokensOut = 1e300
        all[5].endNanos = all[5].startNanos - 7
        all[5].costUSD = -0.5
        all[7].agent = "ägent \u{1F}"
        // The span families' counters the analyser counted (none kept is not none counted).
        var kept = SeriesMap<Double>()
        kept[SeriesKey(.toolCalls, ["acme", "it-agent", "v2", "reset", "procure", "financial_write", "timeout"])] = 2
        kept[SeriesKey(.toolCalls, ["acme", "it-agent", "v2", "reset", "procure", "financial_write", "ok"])] = 7
        kept[SeriesKey(.toolCalls, ["acme", "it-agent", "v3", "reset", "lookup", "read", "ok"])] = 1
        kept[SeriesKey(.uncertainWrites, ["acme", "it-agent", "v2", "procure", "financial_write"])] = 2
        kept[SeriesKey(.cost, ["acme", "it-agent", "v2", "m-large"])] = 0.125
        all[2].spanCounters = kept
        all[2].spanRoot = RunAggregate.SpanRoot(version: "v2", task: nil)
        all[4].spanCounters = SeriesMap()
        do {
            let store = try RunStatsStore(path: path)
            try store.save(all.map { ($0, nil) })
            // Listed without the span counters (only the analyser and the totals read them).
            let back = try store.aggregates(all.map { ($0.tenant, $0.runID) })
            #expect(
                back
                    == all.map {
                        var a = $0; a.spanCounters = nil; a.spanRoot = .init(); return a
                    })
            #expect(try store.aggregate(tenant: all[2].tenant, run: all[2].runID) == all[2])
            #expect(try store.aggregate(tenant: all[4].tenant, run: all[4].runID) == all[4])
            #expect(try store.aggregate(tenant: all[3].tenant, run: all[3].runID) == all[3])
            var each: [RunAggregate] = []
            try store.forEach { each.append($0) }
            #expect(Set(each.map(\.runID)) == Set(all.map(\.runID)))
        }
        let db = try SQLiteDatabase(path: path)
        let q = try db.prepare("SELECT max(length(data)) FROM run_stats WHERE run_id <> ?1")
        q.bind(1, all[2].runID)
        _ = try q.step()
        #expect(q.int64(0) < 80)
        // Five span counters, their labels written where they differ from the series before
        // (the first series' all, a cost's value as a double): under 40 bytes more than the
        // same row without.
        let withCounters = try db.prepare("SELECT length(data) FROM run_stats WHERE run_id = ?1")
        withCounters.bind(1, all[2].runID)
        _ = try withCounters.step()
        var plain = all[2]
        plain.spanCounters = SeriesMap()
        let plainStore = try RunStatsStore(path: dir.path + "/plain.db")
        try plainStore.save([(plain, nil)])
        let p = try SQLiteDatabase(path: dir.path + "/plain.db").prepare("SELECT length(data) FROM run_stats")
        _ = try p.step()
        #expect(withCounters.int64(0) - p.int64(0) < 40)
        // Written as JSON by an earlier version: read, and observed again over it.
        let old = try db.prepare("UPDATE run_stats SET data = ?1 WHERE tenant = ?2 AND run_id = ?3")
        old.bind(1, blob: [UInt8](try JSONEncoder().encode(all[3]))).bind(2, all[3].tenant).bind(3, all[3].runID)
        try old.run()
        let reopened = try RunStatsStore(path: path)
        #expect(try reopened.aggregate(tenant: all[3].tenant, run: all[3].runID) == all[3])
        // Unreadable bytes: no aggregate rather than a wrong one.
        let broken = try db.prepare("UPDATE run_stats SET data = ?1 WHERE tenant = ?2 AND run_id = ?3")
        broken.bind(1, blob: [1, 0x80]).bind(2, all[4].tenant).bind(3, all[4].runID)
        try broken.run()
        #expect(try reopened.aggregate(tenant: all[4].tenant, run: all[4].runID) == nil)
        // A row of version 1, from before the span families' counters: read without them (nil:
        // ingest counted those spans).
        let read = try db.prepare("SELECT data FROM run_stats WHERE tenant = ?1 AND run_id = ?2")
        read.bind(1, all[6].tenant).bind(2, all[6].runID)
        _ = try read.step()
        var v2 = read.blob(0)
        read.reset()
        #expect(v2.first == 2 && v2.last == 0)
        v2[0] = 1
        let v1 = try db.prepare("UPDATE run_stats SET data = ?1 WHERE tenant = ?2 AND run_id = ?3")
        v1.bind(1, blob: Array(v2.dropLast())).bind(2, all[6].tenant).bind(3, all[6].runID)
        try v1.run()
        #expect(try reopened.aggregate(tenant: all[6].tenant, run: all[6].runID) == all[6])
    }

    /// A run observed again adds what its span families' counters gained, and nothing over a
    /// row from before the aggregate kept them (ingest counted those spans then).
    @Test func observedAgainAddsTheSpanCountersIncrease() {
        let calls = SeriesKey(.toolCalls, ["acme", "it-agent", "v2", "reset", "procure", "read", "ok"])
        let errors = SeriesKey(.toolCalls, ["acme", "it-agent", "v2", "reset", "procure", "read", "error"])
        var old = runs[0]
        old.spanCounters = SeriesMap()
        old.spanCounters?[calls] = 3
        var new = old
        new.spanCounters?[calls] = 5
        new.spanCounters?[errors] = 1
        let d = RunAggregate.counterIncrease(from: old, to: new)
        #expect(d.counters[calls] == 2 && d.counters[errors] == 1)
        #expect(new.metrics.counters[calls] == 5)
        old.spanCounters = nil
        let none = RunAggregate.counterIncrease(from: old, to: new)
        #expect(none.counters[calls] == nil && none.counters[errors] == nil)
    }
}
