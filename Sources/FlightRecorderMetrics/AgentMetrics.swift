public import FlightRecorderOTLP
public import Prometheus
import Synchronization

/// The agent metric families (`MetricFamily`) as Prometheus series in a swift-prometheus
/// registry, fed with what the indexer commits (`MetricDeltas`), so every count is one of the
/// stored spans, and restored at start-up from the totals the index keeps.
///
/// Bounded: each family holds at most `maxSeriesPerFamily` label sets; the rest are added
/// into one series per family labelled `otel_metric_overflow="true"` (the OpenTelemetry
/// convention), so totals stay exact. A series not updated for `seriesTTL` seconds leaves the
/// registry; its total is kept aside and comes back with it, so a counter never goes
/// backwards while the daemon runs.
public final class AgentMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    public let maxSeriesPerFamily: Int
    public let seriesTTL: Double
    private let state = Mutex(State())

    public static let overflowLabel = ("otel_metric_overflow", "true")

    struct Live {
        var counter: Counter?
        var histogram: ValueHistogram?
        var lastUpdate: Double
        /// What the series holds (a counter's total, a histogram's counts and sum): kept to
        /// restore it after it expired, and to answer `totals`.
        var total: Double = 0
        var histogramTotal: HistogramDelta?
    }

    struct State {
        var live: [SeriesKey: Live] = [:]
        var perFamily: [MetricFamily: Int] = [:]
        /// Expired series' totals, restored when the series comes back.
        var idle: [SeriesKey: Live] = [:]
        var overflow: [MetricFamily: Live] = [:]
        /// The latest run observed in each bucket of a histogram series (OpenMetrics exemplars).
        var exemplars: [SeriesKey: [Int: HistogramDelta.Exemplar]] = [:]
    }

    public init(registry: PrometheusCollectorRegistry, maxSeriesPerFamily: Int = 2_000, seriesTTL: Double = 3_600) {
        self.registry = registry
        self.maxSeriesPerFamily = maxSeriesPerFamily
        self.seriesTTL = seriesTTL
    }

    static func descriptor(_ family: MetricFamily) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: family.name, unitName: "", helpText: family.help)
    }

    static func labels(_ key: SeriesKey) -> [(String, String)] {
        Array(zip(key.family.labels, key.labels))
    }

    /// Adds `deltas` (a committed index round, or the stored totals at start-up), at time `now`
    /// (Unix seconds).
    public func apply(_ deltas: MetricDeltas, now: Double) {
        state.withLock { s in
            for (key, n) in deltas.counters {
                add(key, now: now, &s) { live in
                    live.counter?.increment(by: n)
                    live.total += n
                }
            }
            for (key, h) in deltas.histograms {
                guard let bounds = key.family.buckets else { continue }
                add(key, now: now, &s) { live in
                    if let histogram = live.histogram { Self.replay(h, bounds: bounds, into: histogram) }
                    if live.histogramTotal == nil {
                        live.histogramTotal = h
                    } else {
                        live.histogramTotal!.add(h)
                    }
                    live.histogramTotal!.exemplars = []
                }
                if !h.exemplars.isEmpty {
                    let target = s.live[key] != nil ? key : Self.overflowKey(key.family)
                    // One lookup of the series for all its buckets.
                    s.exemplars[target, default: [:]].merge(h.exemplars.lazy.map { ($0.bucket, $0.exemplar) }) { $1 }
                }
            }
        }
    }

    /// The series `key` (made, restored or overflowed as the bounds say), updated by `body`.
    private func add(_ key: SeriesKey, now: Double, _ s: inout State, _ body: (inout Live) -> Void) {
        // One hash lookup for a live series (three, with `live[key]!`, were a part of this
        // registry's cost in `perf`).
        if let i = s.live.index(forKey: key) {
            s.live.values[i].lastUpdate = now
            body(&s.live.values[i])
            return
        }
        let family = key.family
        guard s.perFamily[family, default: 0] < maxSeriesPerFamily else {
            if s.overflow[family] == nil { s.overflow[family] = make(family, labels: [Self.overflowLabel], now: now) }
            s.overflow[family]!.lastUpdate = now
            body(&s.overflow[family]!)
            return
        }
        var live = make(family, labels: Self.labels(key), now: now)
        if let old = s.idle.removeValue(forKey: key) {
            // Back after it expired: it starts from its old total.
            live.counter?.increment(by: old.total)
            live.total = old.total
            if let h = old.histogramTotal, let histogram = live.histogram, let bounds = family.buckets {
                Self.replay(h, bounds: bounds, into: histogram)
                live.histogramTotal = h
            }
        }
        body(&live)
        s.live[key] = live
        s.perFamily[family, default: 0] += 1
    }

    private func make(_ family: MetricFamily, labels: [(String, String)], now: Double) -> Live {
        if let bounds = family.buckets {
            return Live(
                histogram: registry.makeValueHistogram(
                    descriptor: Self.descriptor(family), labels: labels, buckets: bounds),
                lastUpdate: now)
        }
        return Live(counter: registry.makeCounter(descriptor: Self.descriptor(family), labels: labels), lastUpdate: now)
    }

    static func overflowKey(_ family: MetricFamily) -> SeriesKey {
        SeriesKey(family, Array(repeating: "", count: family.labels.count))
    }

    /// Drops series not updated since `now - seriesTTL` from the registry; returns how many.
    @discardableResult
    public func expire(now: Double) -> Int {
        state.withLock { s in
            var dropped = 0
            for (key, live) in s.live where live.lastUpdate < now - seriesTTL {
                if let c = live.counter { registry.unregisterCounter(c) }
                if let h = live.histogram { registry.unregisterValueHistogram(h) }
                s.live[key] = nil
                s.exemplars[key] = nil
                s.perFamily[key.family, default: 1] -= 1
                var kept = live
                kept.counter = nil
                kept.histogram = nil
                s.idle[key] = kept
                dropped += 1
            }
            return dropped
        }
    }

    /// Series in the registry per family (the overflow series included).
    public var activeSeries: [MetricFamily: Int] {
        state.withLock { s in
            var out = s.perFamily
            for f in s.overflow.keys { out[f, default: 0] += 1 }
            return out
        }
    }

    /// Every series' total, live or idle (overflowed label sets are in the overflow series).
    public var totals: MetricDeltas {
        state.withLock { s in
            var out = MetricDeltas()
            for (k, v) in s.live.merging(s.idle, uniquingKeysWith: { a, _ in a }) {
                if let h = v.histogramTotal { out.histograms[k] = h } else { out.counters[k] = v.total }
            }
            for (f, v) in s.overflow {
                let k = Self.overflowKey(f)
                if let h = v.histogramTotal { out.histograms[k] = h } else { out.counters[k] = v.total }
            }
            return out
        }
    }

    /// Records observations into a swift-prometheus histogram so that its bucket counts equal
    /// `h.counts` and its sum equals `h.sum` (to floating-point rounding).
    ///
    /// Hand-written because swift-prometheus's `Histogram` takes single observations only, and
    /// the index keeps a histogram as bucket counts and a sum: each bucket's observations are
    /// recorded at one value inside the bucket, all at the same relative position between the
    /// bucket's bounds, chosen so the values add up to the sum (observations are never
    /// negative; the +Inf bucket takes what the finite bounds cannot).
    static func replay(_ h: HistogramDelta, bounds: [Double], into histogram: ValueHistogram) {
        let n = bounds.count
        guard h.counts.count == n + 1 else { return }
        var low = 0.0
        var lows: [Double] = []
        for b in bounds {
            lows.append(low)
            low = b
        }
        var sumLow = 0.0
        var sumHigh = 0.0
        for i in 0..<n {
            sumLow += Double(h.counts[i]) * lows[i]
            sumHigh += Double(h.counts[i]) * bounds[i]
        }
        let inf = h.counts[n]
        let last = bounds.last ?? 0
        sumLow += Double(inf) * last
        sumHigh += Double(inf) * last
        let t = sumHigh > sumLow ? min(1, max(0, (h.sum - sumLow) / (sumHigh - sumLow))) : 1
        for i in 0..<n where h.counts[i] > 0 {
            // Strictly above the lower bound, so it lands in bucket i, not the one below.
            let v = max(lows[i] + t * (bounds[i] - lows[i]), i == 0 ? 0 : lows[i].nextUp)
            for _ in 0..<h.counts[i] { histogram.record(v) }
        }
        if inf > 0 {
            let extra = max(0, h.sum - sumHigh) / Double(inf)
            let v = max(last + extra, last.nextUp)
            for _ in 0..<inf { histogram.record(v) }
        }
    }

    /// Drops every exemplar of a series labelled with `tenant` (an erased tenant: its runs may
    /// not be named again, and the series' own labels name no run).
    public func forgetExemplars(tenant: String) {
        state.withLock { s in
            for key in Array(s.exemplars.keys) {
                guard let i = key.family.labels.firstIndex(of: "tenant"), i < key.labels.count,
                    key.labels[i] == tenant
                else { continue }
                s.exemplars[key] = nil
            }
        }
    }

    /// Drops every exemplar naming one of `runs` (run and trace IDs whose data expired: no
    /// answer names an expired run, and a bucket that sees no new run would keep naming it
    /// until its series went idle).
    public func forgetExemplars(runs: Set<String>) {
        guard !runs.isEmpty else { return }
        state.withLock { s in
            for (key, buckets) in s.exemplars where buckets.values.contains(where: { runs.contains($0.runID) }) {
                let kept = buckets.filter { !runs.contains($0.value.runID) }
                s.exemplars[key] = kept.isEmpty ? nil : kept
            }
        }
    }

    /// The bucket line prefixes (`name_bucket{labels,le="…"}`) with an exemplar, and the text
    /// OpenMetrics appends to them.
    /// `dropping` says which runs (tenant, when the series has one, and run ID) may not be
    /// named: erased ones.
    public func exemplarLines(
        dropping: (_ tenant: String?, _ run: String) -> Bool = { _, _ in false }
    ) -> [String: String] {
        state.withLock { s in
            var out: [String: String] = [:]
            for (key, buckets) in s.exemplars {
                guard let bounds = key.family.buckets else { continue }
                let tenant = key.family.labels.firstIndex(of: "tenant").flatMap {
                    $0 < key.labels.count ? key.labels[$0] : nil
                }
                let isOverflow = s.live[key] == nil
                let labels =
                    isOverflow
                    ? "\(Self.overflowLabel.0)=\"\(Self.overflowLabel.1)\""
                    : zip(key.family.labels, key.labels).map { "\($0)=\"\($1)\"" }.joined(separator: ",")
                for (bucket, e) in buckets
                where e.runID.unicodeScalars.count <= OpenMetrics.maxExemplarRunID && !dropping(tenant, e.runID) {
                    let le = bucket < bounds.count ? bounds[bucket].description : "+Inf"
                    out["\(key.family.name)_bucket{\(labels),le=\"\(le)\"}"] =
                        " # {run_id=\"\(OpenMetrics.escape(e.runID))\"} \(e.value) \(e.time)"
                }
            }
            return out
        }
    }
}
