public import FlightRecorderAnalysis
import FlightRecorderHTTP
import FlightRecorderOTLP
import FlightRecorderQuery
import FlightRecorderStorage
import Foundation
public import Hummingbird

/// `GET /api/v1/stats` and `GET /api/v1/stats/compare`: windowed statistics of settled runs
/// per group, and the drift between two groups, answered from the run analyser's aggregates
/// (`RunStatsStore`) without Prometheus.
///
/// Without `where` the rollups answer (the window is taken in whole hours: whole days from the
/// daily rollups, the ends from the hourly ones); with
/// `where` the matching runs are found as `GET /api/v1/runs?where=` finds them (at most
/// 10,000, newest first; `complete` says whether that was all) and their own aggregates answer.
public struct StatsAPI: Sendable {
    public let api: QueryAPI
    public let stats: RunStatsStore
    static let maxWhereRuns = 10_000

    public init(api: QueryAPI, stats: RunStatsStore) {
        self.api = api
        self.stats = stats
    }

    struct Body: Encodable {
        var by: String
        var since: Int64
        var until: Int64
        var source: String
        var complete: Bool
        var groups: [StatsView]
    }

    struct CompareBody: Encodable {
        var by: String
        var baseline: String
        var candidate: String
        var since: Int64
        var until: Int64
        var alpha: Double
        var minRelativeChange: Double
        var minSamples: Int
        /// Settled runs of each group in the window: a group below `minSamples` cannot show a
        /// change, so a client gating on `changes` must check these too.
        var baselineRuns: Int
        var candidateRuns: Int
        /// The measures that changed significantly, largest change first.
        var changes: [Drift.Change]
        /// Every measure tested.
        var measures: [Drift.Change]
        var complete: Bool
    }

    public func addRoutes(to router: Router<some RequestContext>) {
        router.get("/api/v1/stats") { request, _ in
            await api.handle(request) { p in try await self.stats(request, scope: p.scope) }
        }
        router.get("/api/v1/stats/compare") { request, _ in
            await api.handle(request) { p in try await self.compare(request, scope: p.scope) }
        }
    }

    struct Window {
        var by: StatsGrouping
        var since: Int64
        var until: Int64
        var filter: String?
    }

    func window(_ request: Request) throws -> Window {
        let q = request.formQuery
        let by = q["by"].flatMap { $0.isEmpty ? nil : $0 } ?? StatsGrouping.version.rawValue
        guard let grouping = StatsGrouping(rawValue: by) else {
            throw APIError(
                .badRequest, "by: expected one of \(StatsGrouping.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let now = Int64(Date().timeIntervalSince1970 * 1e9)
        let since = try QueryAPI.timeBound(q, "since") ?? now - 86_400 * 1_000_000_000
        let until = try QueryAPI.timeBound(q, "until") ?? now + 1
        guard since < until else { throw APIError(.badRequest, "since must be before until") }
        return Window(by: grouping, since: since, until: until, filter: q["where"].flatMap { $0.isEmpty ? nil : $0 })
    }

    /// The window's runs per group, from the rollups or (with `where`) the matching runs.
    func groups(
        _ w: Window, scope: TenantScope
    ) async throws -> (groups: [String: GroupStats], source: String, complete: Bool) {
        var out: [String: GroupStats] = [:]
        if let expression = w.filter {
            let filter = try QueryAPI.spanFilter(expression)
            let store = api.store
            let result = try await store.search(
                narrow: filter.requiredEqualities(among: Set(store.configuration.indexedKeys.keys)), scope: scope,
                since: w.since, until: w.until, limit: Self.maxWhereRuns, scanLimit: Self.maxWhereRuns,
                filter: filter)
            let runs = result.hits.map { (tenant: $0.run.tenant ?? "default", run: $0.run.runID) }
            for r in try stats.aggregates(runs) { out[w.by.key(r), default: GroupStats()].add(r) }
            return (out, "runs", result.complete)
        }
        let tenants: Set<String>? =
            switch scope {
            case .all: nil
            case .only(let set): set
            }
        out = try stats.rollups(since: w.since, until: w.until, tenants: tenants) { w.by.key($0) }
        return (out, "rollups", true)
    }

    func stats(_ request: Request, scope: TenantScope) async throws -> Response {
        let w = try window(request)
        let (groups, source, complete) = try await self.groups(w, scope: scope)
        let views = groups.sorted { $0.key < $1.key }.map { StatsView(group: $0.key, $0.value) }
        return JSONResponse.make(
            .ok,
            Body(by: w.by.rawValue, since: w.since, until: w.until, source: source, complete: complete, groups: views))
    }

    func compare(_ request: Request, scope: TenantScope) async throws -> Response {
        let w = try window(request)
        let q = request.formQuery
        guard let baseline = q["baseline"], !baseline.isEmpty, let candidate = q["candidate"], !candidate.isEmpty
        else {
            throw APIError(.badRequest, "baseline and candidate: expected the two \(w.by.rawValue) values to compare")
        }
        let (groups, _, complete) = try await self.groups(w, scope: scope)
        let b = groups[baseline] ?? GroupStats()
        let c = groups[candidate] ?? GroupStats()
        let measures = Drift.measures(baseline: b, candidate: c)
        return JSONResponse.make(
            .ok,
            CompareBody(
                by: w.by.rawValue, baseline: baseline, candidate: candidate, since: w.since, until: w.until,
                alpha: Drift.alpha, minRelativeChange: Drift.minRelativeChange, minSamples: Drift.minSamples,
                baselineRuns: b.runs, candidateRuns: c.runs, changes: Drift.changes(in: measures),
                measures: measures, complete: complete))
    }
}
