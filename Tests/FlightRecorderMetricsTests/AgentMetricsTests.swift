import FlightRecorderOTLP
import Prometheus
import Testing

@testable import FlightRecorderMetrics

/// The registry side: caps with an overflow series, expiry, histograms restored from stored
/// counts, and the two expositions.
@Suite struct AgentMetricsTests {
    func calls(_ tool: String, _ n: Double) -> MetricDeltas {
        var d = MetricDeltas()
        d.count(.toolCalls, ["acme", "a", "v1", "t", tool, "read", "ok"], by: n)
        return d
    }

    func text(_ m: AgentMetrics) -> String { String(decoding: m.registry.emitToBuffer(), as: UTF8.self) }

    /// Sum of a family's samples in the Prometheus text (counters).
    func total(_ text: String, _ name: String) -> Double {
        text.split(separator: "\n").filter { $0.hasPrefix(name + "{") || $0.hasPrefix(name + " ") }
            .compactMap { Double($0.split(separator: " ").last!) }.reduce(0, +)
    }

    @Test func seriesBeyondTheCapGoToOneOverflowSeriesAndTotalsStayExact() {
        let m = AgentMetrics(registry: PrometheusCollectorRegistry(), maxSeriesPerFamily: 3)
        for i in 0..<10 { m.apply(calls("tool-\(i)", Double(i + 1)), now: 0) }
        m.apply(calls("tool-9", 5), now: 0)  // an overflowed label set again
        let t = text(m)
        #expect(total(t, "flightrec_tool_calls_total") == 55 + 5)
        #expect(t.contains("flightrec_tool_calls_total{otel_metric_overflow=\"true\"} 54.0"))
        #expect(m.activeSeries[.toolCalls] == 4)
        #expect(!t.contains("tool-9"))
    }

    @Test func idleSeriesExpireAndComeBackWithTheirTotal() {
        let m = AgentMetrics(registry: PrometheusCollectorRegistry(), maxSeriesPerFamily: 10, seriesTTL: 60)
        m.apply(calls("old", 7), now: 0)
        m.apply(calls("new", 1), now: 100)
        #expect(m.expire(now: 100) == 1)
        #expect(!text(m).contains("\"old\""))
        #expect(m.activeSeries[.toolCalls] == 1)
        m.apply(calls("old", 1), now: 200)
        #expect(text(m).contains("tool=\"old\",risk_tier=\"read\",outcome=\"ok\"} 8.0"))
        #expect(m.totals.counters.values.reduce(0, +) == 9)
    }

    @Test func histogramsReplayedFromStoredCountsKeepCountsAndSum() {
        let bounds = MetricFamily.toolCallDuration.buckets!
        var h = HistogramDelta(buckets: bounds.count)
        let values = [0.001, 0.003, 0.2, 0.2, 0.9, 7.0, 45.0, 500.0, 1_000.0]
        for v in values { h.observe(v, bounds: bounds, exemplar: nil) }
        var d = MetricDeltas()
        d.histograms[SeriesKey(.toolCallDuration, ["acme", "a", "v1", "t", "read"])] = h
        let m = AgentMetrics(registry: PrometheusCollectorRegistry())
        m.apply(d, now: 0)
        let t = text(m)
        func sample(_ suffix: String) -> Double? {
            t.split(separator: "\n").first { $0.contains("_seconds\(suffix)") }
                .flatMap { Double($0.split(separator: " ").last!) }
        }
        #expect(sample("_count") == Double(values.count))
        #expect(abs(sample("_sum")! - values.reduce(0, +)) < 1e-6)
        // Cumulative bucket counts as the observations give them.
        for (i, b) in bounds.enumerated() {
            let line = t.split(separator: "\n").first { $0.contains("le=\"\(b.description)\"") }!
            #expect(Double(line.split(separator: " ").last!) == Double(h.counts[0...i].reduce(0, +)))
        }
    }

    @Test func openMetricsRenamesCountersAddsExemplarsAndEOF() {
        let m = AgentMetrics(registry: PrometheusCollectorRegistry())
        var d = calls("t1", 2)
        d.observe(
            .toolCallDuration, ["acme", "a", "v1", "t1", "read"], 0.3,
            exemplar: .init(runID: "run-\"7\"", value: 0.3, time: 1_764_000_000))
        m.apply(d, now: 0)
        let om = String(
            decoding: OpenMetrics.convert(m.registry.emitToBuffer(), exemplars: m.exemplarLines()), as: UTF8.self)
        #expect(om.contains("# TYPE flightrec_tool_calls counter\n"))
        #expect(om.contains("\nflightrec_tool_calls_total{"))
        #expect(om.contains("le=\"0.5\"} 1 # {run_id=\"run-\\\"7\\\"\"} 0.3 1764000000.0\n"))
        #expect(om.hasSuffix("# EOF\n"))
        #expect(!String(decoding: m.registry.emitToBuffer(), as: UTF8.self).contains("# EOF"))
    }

    @Test func expiredRunsLeaveTheirExemplars() {
        let m = AgentMetrics(registry: PrometheusCollectorRegistry())
        for (run, value) in [("run-old", 0.3), ("run-kept", 3.0)] {
            var d = MetricDeltas()
            d.observe(
                .toolCallDuration, ["acme", "a", "v1", "t1", "read"], value,
                exemplar: .init(runID: run, value: value, time: 1_764_000_000))
            m.apply(d, now: 0)
        }
        #expect(m.exemplarLines().values.contains { $0.contains("run-old") })
        m.forgetExemplars(runs: ["run-old", "run-unknown"])
        let lines = m.exemplarLines().values
        #expect(!lines.contains { $0.contains("run-old") })
        #expect(lines.contains { $0.contains("run-kept") })
    }

    @Test func exemplarsKeepWithinOpenMetricsLabelLimit() {
        let m = AgentMetrics(registry: PrometheusCollectorRegistry())
        // 122 code points fit beside `run_id` (128 together); one more does not.
        for (run, value) in [(String(repeating: "é", count: 122), 0.3), (String(repeating: "r", count: 123), 3.0)] {
            var d = MetricDeltas()
            d.observe(
                .toolCallDuration, ["acme", "a", "v1", "t1", "read"], value,
                exemplar: .init(runID: run, value: value, time: 1_764_000_000))
            m.apply(d, now: 0)
        }
        let lines = m.exemplarLines().values
        #expect(lines.count == 1)
        #expect(lines.contains { $0.contains(String(repeating: "é", count: 122)) })
    }

    @Test func acceptNegotiation() {
        #expect(
            OpenMetrics.wanted(
                accept:
                    "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
            ))
        #expect(!OpenMetrics.wanted(accept: nil))
        #expect(!OpenMetrics.wanted(accept: "text/plain"))
        #expect(!OpenMetrics.wanted(accept: "text/plain;q=0.9,application/openmetrics-text;q=0.5"))
    }
}
