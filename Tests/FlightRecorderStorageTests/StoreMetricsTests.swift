import FlightRecorderIngest
import FlightRecorderOTLP
import FlightRecorderSQLite
import FlightRecorderTesting
import Foundation
import Synchronization
import Testing

@testable import FlightRecorderStorage

/// The agent metrics the indexer commits: told once per committed round, stored with the
/// index, summed again after a restart, and derived the same way by `reindex`.
extension SpanStoreTests {
    final class Observed: Sendable {
        let deltas = Mutex(MetricDeltas())
        let calls = Mutex(0)

        func add(_ d: MetricDeltas) {
            deltas.withLock { $0.add(d) }
            calls.withLock { $0 += 1 }
        }

        /// The counters, once `calls` reached `n` (the start-up load is one call).
        func counters(after n: Int) async throws -> SeriesMap<Double> {
            for _ in 0..<500 where calls.withLock({ $0 }) < n { try await Task.sleep(for: .milliseconds(10)) }
            return deltas.withLock { $0.counters }
        }
    }

    func metricConfiguration(_ dir: TemporaryDirectory, _ observed: Observed) -> StoreConfiguration {
        var c = configuration(dir)
        c.segmentBytes = 4096
        c.metricRules = MetricRules()
        c.onMetrics = { observed.add($0) }
        return c
    }

    func toolBatch(trace: UInt8, tool: String, failed: Bool) throws -> IngestBatch {
        let span = TestSpan(
            trace: RequestBuilder.traceID(trace), span: RequestBuilder.spanID(1, trace), name: "execute_tool \(tool)",
            attributes: [
                ("agent.run.id", .string("run-\(trace)")), ("gen_ai.operation.name", .string("execute_tool")),
                ("gen_ai.tool.name", .string(tool)), ("policy.outcome", .string(failed ? "blocked" : "allowed")),
                // Its own version and task type: counted at ingest (`SpanMetrics.observe`).
                ("agent.version", .string("v1")), ("agent.task.type", .string("triage")),
            ], statusCode: failed ? 2 : 0)
        var decoder = ExportRequestDecoder()
        decoder.metrics = MetricRules()
        return try decoder.decode(RequestBuilder.request(spans: [span]))
    }

    @Test func metricsCountStoredSpansAcrossRestartAndReindex() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let live = Observed()
        let config = metricConfiguration(dir, live)
        var store = try SpanStore(configuration: config, logger: logger)
        var expected: [String: Double] = [:]
        for t in UInt8(1)...60 {
            let tool = "tool-\(t % 3)"
            let failed = t % 4 == 0
            try await store.append(toolBatch(trace: t, tool: tool, failed: failed))
            expected["\(tool)/\(failed ? "error" : "ok")", default: 0] += 1
        }
        try await store.awaitIndexed()
        await store.close()
        #expect(SegmentFile.list(config.segmentDirectory).count > 2)  // several sealed segments
        func calls(_ c: SeriesMap<Double>) -> [String: Double] {
            var out: [String: Double] = [:]
            for (k, v) in c where k.family == .toolCalls { out["\(k.labels[4])/\(k.labels[6])", default: 0] += v }
            return out
        }
        let seen = try await live.counters(after: 1)
        #expect(calls(seen) == expected)
        let decisions = seen.filter { $0.key.family == .policyDecisions }.map(\.value).reduce(0, +)
        #expect(decisions == 60)

        // A restart hands over the stored totals once: the same counts.
        let restarted = Observed()
        store = try SpanStore(configuration: metricConfiguration(dir, restarted), logger: logger)
        #expect(try await calls(restarted.counters(after: 1)) == expected)
        await store.close()

        // `reindex` derives the same rows from the segments.
        _ = try Reindexer.rebuild(configuration: config, logger: logger)
        let reindexed = Observed()
        store = try SpanStore(configuration: metricConfiguration(dir, reindexed), logger: logger)
        let after = try await reindexed.counters(after: 1)
        #expect(calls(after) == expected)
        #expect(after == seen)
        await store.close()
    }

    /// The `metrics` rows are written at most once a second, not every round. A daemon killed
    /// in between leaves rows that count less than the index: start-up counts the rest again
    /// from the segment, so the totals stay exact.
    @Test func metricsRowsBehindTheIndexAreRecountedFromTheSegment() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var config = metricConfiguration(dir, Observed())
        config.segmentBytes = 1 << 30  // one active segment
        var expected = 0.0
        var store = try SpanStore(configuration: config, logger: logger)
        for t in UInt8(1)...10 {
            try await store.append(toolBatch(trace: t, tool: "tool-a", failed: false))
            expected += 1
        }
        await store.close()
        let index = IndexSchema.path(config.segmentDirectory, 1)
        func rows() throws -> (rows: [(Int64, String, Double, [UInt8])], bytes: String) {
            let db = try SQLiteDatabase(path: index)
            let q = try db.prepare("SELECT family, labels, value, histogram FROM metrics")
            var out: [(Int64, String, Double, [UInt8])] = []
            while try q.step() { out.append((q.int64(0), q.text(1) ?? "", q.double(2), q.blob(3))) }
            let m = try db.prepare("SELECT value FROM meta WHERE key = 'metrics_bytes'")
            _ = try m.step()
            return (out, m.text(0) ?? "")
        }
        let first = try rows()
        #expect(Int(first.bytes) ?? 0 > 0)
        store = try SpanStore(configuration: config, logger: logger)
        for t in UInt8(11)...25 {
            try await store.append(toolBatch(trace: t, tool: "tool-a", failed: false))
            expected += 1
        }
        await store.close()
        // As if killed before the rows were written again: rows and `metrics_bytes` as they
        // were after the first ten spans, the index itself covering all 25.
        do {
            let db = try SQLiteDatabase(path: index)
            try db.execute("DELETE FROM metrics")
            let insert = try db.prepare(
                "INSERT INTO metrics(family, labels, value, histogram) VALUES (?1, ?2, ?3, ?4)")
            for r in first.rows {
                _ = insert.bind(1, r.0).bind(2, r.1).bind(3, double: r.2)
                _ = r.3.isEmpty ? insert.bindNull(4) : insert.bind(4, blob: r.3)
                try insert.run()
            }
            try db.execute("UPDATE meta SET value = '\(first.bytes)' WHERE key = 'metrics_bytes'")
        }
        let restarted = Observed()
        config.onMetrics = { restarted.add($0) }
        store = try SpanStore(configuration: config, logger: logger)
        let counted = try await restarted.counters(after: 1)
        #expect(counted.filter { $0.key.family == .toolCalls }.map(\.value).reduce(0, +) == expected)
        await store.close()
        // The recounted totals were written back at the clean close.
        let last = try rows()
        let calls = last.rows.filter { $0.0 == Int64(MetricFamily.toolCalls.rawValue) }.map(\.2).reduce(0, +)
        #expect(calls == expected)
    }
}
