import FlightRecorderIngest
import FlightRecorderOTLP
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
        func counters(after n: Int) async throws -> [SeriesKey: Double] {
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
        func calls(_ c: [SeriesKey: Double]) -> [String: Double] {
            var out: [String: Double] = [:]
            for (k, v) in c where k.family == .toolCalls { out["\(k.labels[4])/\(k.labels[6])", default: 0] += v }
            return out
        }
        let seen = try await live.counters(after: 1)
        #expect(calls(seen) == expected)
        let decisions = seen.filter { $0.key.family == .policyDecisions }.values.reduce(0, +)
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
}
