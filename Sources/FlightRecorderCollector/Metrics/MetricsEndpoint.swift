public import FlightRecorderAnalysis
public import FlightRecorderConfig
import FlightRecorderCore
import FlightRecorderHTTP
public import FlightRecorderMetrics
public import FlightRecorderOTLP
public import FlightRecorderStorage
import Foundation
public import Hummingbird
public import Prometheus
import Synchronization

/// `GET /metrics` on the API listener: the agent metrics derived from stored spans
/// (`AgentMetrics`) and the daemon's own, in the Prometheus text format, or OpenMetrics with
/// run-ID exemplars when the scraper's `Accept` prefers it.
///
/// With tokens configured it needs the `admin` or `metrics` role. Labels carry only the
/// bounded values `MetricLabel` lets through, never other attribute values.
public final class MetricsEndpoint: Sendable {
    public let registry: PrometheusCollectorRegistry
    public let agent: AgentMetrics
    /// swift-metrics' view of `registry`, for the store's timings (the fsync histogram).
    public let factory: DescribedMetricsFactory
    private let wiring = Mutex<Wiring?>(nil)

    struct Wiring {
        var store: SpanStore
        var ingest: IngestService
        var analyser: RunAnalyser?
        var accepted: Counter
        var rejected: Counter
        var refused: [String: Counter] = [:]
        /// What the counters were last brought up to (the ingest service's totals).
        var synced = IngestService.Counters()
        var gauges: [String: Gauge]
        var series: [MetricFamily: Gauge] = [:]
        /// Retention's deletions since start-up, and what they were last brought up to.
        var expired: (segments: Counter, spans: Counter, bytes: Counter)
        var expiredSynced: (segments: Int, spans: Int, bytes: Int64) = (0, 0, 0)
    }

    public init(settings: MetricsSettings) {
        registry = PrometheusCollectorRegistry()
        agent = AgentMetrics(
            registry: registry, maxSeriesPerFamily: settings.maxSeriesPerFamily, seriesTTL: settings.seriesTTLSeconds)
        factory = DescribedMetricsFactory(
            registry: registry,
            timers: [
                StoreConfiguration.fsyncTimerLabel: (
                    "Duration of each group commit's fsync of the active segment.",
                    [
                        .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
                        .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
                        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
                    ]
                )
            ])
    }

    /// Adds what an index round committed (the store's `onMetrics`), on a queue of its own:
    /// the indexer thread hands the round over and goes on (it is the ingest path's single
    /// thread; applying there cost ingest more than the work itself).
    ///
    /// Rounds are summed and the sum applied at most every `applyInterval` seconds, and before
    /// every scrape: applying each round (a lock and a registry lookup per series, every
    /// observation replayed into its histogram) had cost more than summing them.
    public func observe(_ deltas: MetricDeltas) {
        applying.async { [self] in
            let now = Self.now()
            let (due, schedule) = apply.withLock { a in
                a.pending.add(deltas)
                let due = now - a.lastApplied >= Self.applyInterval
                let schedule = !due && !a.flushScheduled
                if schedule { a.flushScheduled = true }
                return (due, schedule)
            }
            if due {
                applyPending(now: now)
            } else if schedule {
                applying.asyncAfter(deadline: .now() + Self.applyInterval) { [self] in
                    apply.withLock { $0.flushScheduled = false }
                    applyPending(now: Self.now())
                }
            }
        }
    }

    static let applyInterval = 1.0
    private let applying = DispatchQueue(label: "flightrec.metrics.apply")

    /// Rounds not applied yet, when the registry was last brought up to date, and whether a
    /// flush is due on `applying` (used there only).
    struct ApplyState {
        var pending = MetricDeltas()
        var lastApplied = 0.0
        var flushScheduled = false
    }
    private let apply = Mutex(ApplyState())

    /// On `applying`.
    private func applyPending(now: Double) {
        let deltas = apply.withLock { a in
            a.lastApplied = now
            defer { a.pending = MetricDeltas() }
            return a.pending
        }
        if !deltas.isEmpty { agent.apply(deltas, now: now) }
    }

    /// Waits until every round handed over so far is applied (tests, and before a scrape).
    func settled() { applying.sync { applyPending(now: Self.now()) } }

    static func now() -> Double { Double(SystemWallClock().nowNanos()) / 1e9 }

    static func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    /// Starts reporting the store's and the ingest path's figures.
    public func attach(store: SpanStore, ingest: IngestService, analyser: RunAnalyser?) {
        let gauges: [(String, String)] = [
            ("flightrec_queue_bytes", "Request bytes queued for the segment writer."),
            ("flightrec_index_lag_spans", "Acknowledged spans stored but not indexed yet."),
            ("flightrec_segments", "Segment files stored."),
            ("flightrec_stored_bytes", "Bytes under segments/: segments, their indexes and filters."),
            ("flightrec_damaged_regions", "Damaged regions of segments found so far (DATA/damage.log)."),
            ("flightrec_run_analyser_lag_seconds", "How long the oldest settled run has waited to be analysed."),
            ("flightrec_runs_waiting", "Runs waiting to settle (root ended, no span for metrics.run_settle)."),
            ("flightrec_evidence_log_spans", "Spans the evidence log covers (its tree size)."),
            (
                "flightrec_retention_refusing_ingest",
                "1 while ingest is refused: over retention.max_bytes with nothing past the floor to expire."
            ),
            ("flightrec_legal_holds", "Legal holds in force."),
            (
                "flightrec_erasures_pending",
                "Erasures hiding their data whose bytes are not all gone from the segments yet."
            ),
            (
                "flightrec_evidence_last_checkpoint_timestamp_seconds",
                "Unix time of the last signed evidence checkpoint (alert when it is older than a few intervals)."
            ),
        ]
        wiring.withLock {
            $0 = Wiring(
                store: store, ingest: ingest, analyser: analyser,
                accepted: registry.makeCounter(
                    descriptor: Self.descriptor("flightrec_spans_accepted_total", "Spans stored and acknowledged.")),
                rejected: registry.makeCounter(
                    descriptor: Self.descriptor(
                        "flightrec_spans_rejected_total", "Spans refused from accepted requests (partial success)."),
                    labels: [("reason", "invalid")]),
                gauges: Dictionary(
                    uniqueKeysWithValues: gauges.map {
                        ($0.0, registry.makeGauge(descriptor: Self.descriptor($0.0, $0.1)))
                    }),
                expired: (
                    registry.makeCounter(
                        descriptor: Self.descriptor(
                            "flightrec_retention_expired_segments_total", "Segments retention deleted.")),
                    registry.makeCounter(
                        descriptor: Self.descriptor(
                            "flightrec_retention_expired_spans_total", "Spans in the segments retention deleted.")),
                    registry.makeCounter(
                        descriptor: Self.descriptor(
                            "flightrec_retention_expired_bytes_total",
                            "Bytes (segments and their indexes) retention deleted."))
                ))
        }
    }

    /// Brings the daemon's own series up to date, expires idle agent series.
    func refresh() {
        settled()
        agent.expire(now: Self.now())
        let active = agent.activeSeries
        wiring.withLock { w in
            guard var w0 = w else { return }
            let now = w0.ingest.stats
            w0.accepted.increment(by: Int64(now.acceptedSpans - w0.synced.acceptedSpans))
            w0.rejected.increment(by: Int64(now.rejectedSpans - w0.synced.rejectedSpans))
            for (reason, n) in now.refusedRequests {
                let counter =
                    w0.refused[reason]
                    ?? registry.makeCounter(
                        descriptor: Self.descriptor(
                            "flightrec_requests_refused_total", "Export requests refused whole, by reason."),
                        labels: [("reason", MetricLabel.value(reason))])
                w0.refused[reason] = counter
                counter.increment(by: Int64(n - w0.synced.refusedRequests[reason, default: 0]))
            }
            w0.synced = now
            let g = w0.store.gauges
            w0.gauges["flightrec_queue_bytes"]?.set(to: Double(g.queuedBytes))
            w0.gauges["flightrec_index_lag_spans"]?.set(to: Double(g.unindexedSpans))
            w0.gauges["flightrec_segments"]?.set(to: Double(g.segments))
            w0.gauges["flightrec_stored_bytes"]?.set(to: Double(g.bytes))
            w0.gauges["flightrec_damaged_regions"]?.set(to: Double(g.damagedRegions))
            if let log = w0.store.evidenceLog {
                w0.gauges["flightrec_evidence_log_spans"]?.set(to: Double(log.size))
                w0.gauges["flightrec_evidence_last_checkpoint_timestamp_seconds"]?.set(to: log.lastCheckpoint)
            }
            let r = w0.store.retentionGauges
            w0.expired.segments.increment(by: Int64(r.segments - w0.expiredSynced.segments))
            w0.expired.spans.increment(by: Int64(r.spans - w0.expiredSynced.spans))
            w0.expired.bytes.increment(by: r.bytes - w0.expiredSynced.bytes)
            w0.expiredSynced = (r.segments, r.spans, r.bytes)
            w0.gauges["flightrec_retention_refusing_ingest"]?.set(to: r.refusing ? 1 : 0)
            w0.gauges["flightrec_legal_holds"]?.set(to: Double(r.holds))
            w0.gauges["flightrec_erasures_pending"]?.set(
                to: Double(w0.store.erasures.all.filter { $0.state == .hidden }.count))
            if let a = w0.analyser {
                w0.gauges["flightrec_run_analyser_lag_seconds"]?.set(to: a.lag)
                w0.gauges["flightrec_runs_waiting"]?.set(to: Double(a.waiting))
            }
            for family in MetricFamily.allCases {
                let gauge =
                    w0.series[family]
                    ?? registry.makeGauge(
                        descriptor: Self.descriptor(
                            "flightrec_metric_series",
                            "Series each agent metric family holds (the overflow series included)."),
                        labels: [("family", family.name)])
                w0.series[family] = gauge
                gauge.set(to: Double(active[family, default: 0]))
            }
            w = w0
        }
    }

    /// The exposition `accept` asks for, and its content type: for a caller bound to some
    /// tenants, only their series (`TenantExposition`), and the daemon's own families only
    /// for an admin.
    public func render(
        accept: String?, scope: TenantScope = .all, admin: Bool = true
    ) -> (
        body: [UInt8], contentType: String
    ) {
        refresh()
        var text = registry.emitToBuffer()
        if case .only(let tenants) = scope {
            text = TenantExposition.keeping(text, tenants: tenants, keepUntenanted: admin)
        }
        if OpenMetrics.wanted(accept: accept) {
            // An erased run is never named, not even by an exemplar.
            let erasures = wiring.withLock { $0?.store.erasures }
            let exemplars = agent.exemplarLines(dropping: { tenant, run in
                !(tenant.map(scope.contains) ?? (scope == .all))
                    || (erasures?.hides(tenant: tenant, run: run) ?? false)
            })
            return (OpenMetrics.convert(text, exemplars: exemplars), OpenMetrics.contentType)
        }
        return (text, OpenMetrics.prometheusContentType)
    }

    public func addRoute(to router: Router<some RequestContext>, api: QueryAPI) {
        router.get("/metrics") { request, _ in
            await api.handle(request, roles: [.admin, .metrics]) { caller in
                let (body, type) = self.render(
                    accept: request.headers[.accept], scope: caller.scope, admin: caller.roles.contains(.admin))
                return Response(
                    status: .ok, headers: [.contentType: type], body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
            }
        }
    }
}
