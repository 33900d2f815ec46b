public import FlightRecorderAnalysis
import FlightRecorderCore
import FlightRecorderHTTP
import FlightRecorderIngest
import FlightRecorderOTLP
import FlightRecorderQuery
import FlightRecorderRedaction
import FlightRecorderStorage
import Foundation
public import Hummingbird

/// The JSON the web run view (`/ui/`) reads, with the same auth and tenancy as every
/// `/api/v1` route (a run of another tenant is a 404):
///
/// - `GET /api/v1/view/runs?since&until&tenant&where&limit&cursor`: a page of runs, newest
///   first, each with its settled aggregate (version, steps, finding counts) when the run
///   analyser has one; `next` is the cursor of the following page.
/// - `GET /api/v1/view/runs/{id}`: the run's header, timeline (`TimelineView`), decision
///   lane and findings.
/// - `GET /api/v1/view/spans/{traceID}/{spanID}`: one span with every attribute, event and
///   link, and which of its values redaction masked or pseudonymised, by which rule.
/// - `GET /api/v1/view/resolve?q=`: what a search box value names (run ID, trace ID, span
///   ID, or a value of an indexed external-ID key).
public struct RunViewAPI: Sendable {
    public let api: QueryAPI
    public let stats: RunStatsStore?
    /// The window a span-ID search scans (newest runs first, at most 20,000 runs).
    static let spanSearchWindowNanos: Int64 = 7 * 86_400 * 1_000_000_000
    /// The largest unsettled run whose figures a runs page reads from its spans.
    static let maxSpansReadForList: Int64 = 2_000

    public init(api: QueryAPI, stats: RunStatsStore?) {
        self.api = api
        self.stats = stats
    }

    public func addRoutes(to router: Router<some RequestContext>) {
        router.get("/api/v1/view/runs") { request, _ in
            await api.handle(request) { p in try await self.runs(request, scope: p.scope) }
        }
        router.get("/api/v1/view/runs/:runID") { request, context in
            await api.handle(request) { p in
                try await self.run(QueryAPI.decoded(context.parameters.get("runID")), scope: p.scope)
            }
        }
        router.get("/api/v1/view/spans/:traceID/:spanID") { request, context in
            await api.handle(request) { p in
                try await self.span(
                    trace: context.parameters.get("traceID") ?? "", span: context.parameters.get("spanID") ?? "",
                    scope: p.scope)
            }
        }
        router.get("/api/v1/view/resolve") { request, _ in
            await api.handle(request) { p in try await self.resolve(request, scope: p.scope) }
        }
    }

    // MARK: Runs

    struct RunsBody: JSONWritable {
        var runs: [RunSummary]
        var aggregates: [RunAggregate?]
        /// The run analyser has observed the run (else its figures were read from its spans now).
        var settled: [Bool]
        var next: String?
        var complete: Bool

        func writeJSON(to w: inout JSONWriter) {
            w.beginObject()
            w.member("complete", complete)
            w.member("next", next)
            w.key("runs")
            w.beginArray()
            for ((r, a), isSettled) in zip(zip(runs, aggregates), settled) {
                w.beginObject()
                w.member("agent", r.agent)
                w.member("damaged", r.damaged ? true : nil)
                w.member("durationNanos", r.durationNanos)
                w.member("errorCount", r.errorCount)
                if let a {
                    w.key("findings")
                    w.beginObject()
                    for (kind, n) in a.findings.sorted(by: { $0.key < $1.key }) where n > 0 {
                        w.key(dynamic: kind)
                        w.int(n)
                    }
                    w.endObject()
                }
                w.member("provisional", r.provisional ? true : nil)
                w.member("runId", r.runID)
                w.member("settled", isSettled)
                w.member("spanCount", r.spanCount)
                w.member("startTimeUnixNano", String(r.startNanos))
                w.member("steps", a.map { Int64($0.steps) })
                w.member("tenant", r.tenant)
                w.member("traceCount", r.traceCount)
                w.member("version", a?.version)
                w.endObject()
            }
            w.endArray()
            w.endObject()
        }
    }

    func runs(_ request: Request, scope: TenantScope) async throws -> Response {
        let q = request.formQuery
        var scope = scope
        if let t = q["tenant"], !t.isEmpty {
            guard scope.contains(t) else { throw APIError(.forbidden, "this token has no access to tenant \(t)") }
            scope = .only([t])
        }
        let since = try QueryAPI.timeBound(q, "since")
        var until = try QueryAPI.timeBound(q, "until")
        let limit = try QueryAPI.limit(q, default: 50, max: 1_000)
        // The cursor is the last run shown: `START:TENANT:RUN` (the tenant percent-encoded, the
        // run ID last so it may hold colons); the next page holds the runs
        // that sort after it (newest first, then tenant and run ID).
        var after: (start: Int64, tenant: String, run: String)?
        if let cursor = q["cursor"], !cursor.isEmpty {
            let parts = cursor.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 3, let start = Int64(parts[0]), let tenant = parts[1].removingPercentEncoding else {
                throw APIError(.badRequest, "cursor: expected the next value of a previous page")
            }
            after = (start, tenant, parts[2])
            until = min(until ?? .max, start == .max ? start : start + 1)
        }
        let extra = after == nil ? 0 : 100
        var runs: [RunSummary]
        var complete = true
        if let expression = q["where"], !expression.isEmpty {
            let filter = try QueryAPI.spanFilter(expression)
            let narrow = filter.requiredEqualities(among: Set(api.store.configuration.indexedKeys.keys))
            let result = try await api.store.search(
                narrow: narrow, scope: scope, since: since, until: until, limit: limit + extra + 1, filter: filter)
            runs = result.hits.map(\.run)
            complete = result.complete
        } else {
            runs = try await api.store.listRuns(since: since, until: until, limit: limit + extra + 1, scope: scope)
        }
        func key(_ r: RunSummary) -> (Int64, String, String) { (-r.startNanos, r.tenant ?? "", r.runID) }
        runs.sort { key($0) < key($1) }
        if let after {
            let k = (-after.start, after.tenant, after.run)
            runs.removeAll { key($0) <= k }
        }
        let more = runs.count > limit
        runs = Array(runs.prefix(limit))
        var aggregates: [RunAggregate?] = runs.map { _ in nil }
        var settled = runs.map { _ in false }
        if let stats {
            let found = (try? stats.aggregates(runs.map { ($0.tenant ?? ResourceFacts.defaultTenant, $0.runID) })) ?? []
            let byKey = Dictionary(found.map { ($0.tenant + "\u{1F}" + $0.runID, $0) }, uniquingKeysWith: { a, _ in a })
            aggregates = runs.map { byKey[($0.tenant ?? ResourceFacts.defaultTenant) + "\u{1F}" + $0.runID] }
            settled = aggregates.map { $0 != nil }
        }
        // Runs the analyser has not settled yet (or with metrics off): their figures from
        // their spans now, for runs small enough to read on the way (the page shows the rest
        // once settled).
        let config = api.store.configuration
        for (i, r) in runs.enumerated() where aggregates[i] == nil && r.spanCount <= Self.maxSpansReadForList {
            let tenant = r.tenant ?? ResourceFacts.defaultTenant
            guard let detail = try? await api.store.run(r.runID, scope: .only([tenant])) else { continue }
            aggregates[i] = RunAggregate(
                tenant: tenant, runID: r.runID, agent: r.agent, spans: detail.spans,
                rules: config.metricRules ?? MetricRules(), findingRules: config.findingRules, spanFamilies: false)
        }
        let next =
            more
            ? runs.last.map {
                let tenant = ($0.tenant ?? "").addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
                return "\($0.startNanos):\(tenant):\($0.runID)"
            } : nil
        return JSONResponse.written(
            .ok, RunsBody(runs: runs, aggregates: aggregates, settled: settled, next: next, complete: complete))
    }

    // MARK: One run

    struct RunViewBody: JSONWritable {
        var summary: RunSummary
        var aggregate: RunAggregate
        var timeline: TimelineView
        var findings: [Finding]
        var warnings: [String]

        func writeJSON(to w: inout JSONWriter) {
            let a = aggregate
            w.beginObject()
            w.member("findings", findings)
            w.key("header")
            w.beginObject()
            w.member("agent", summary.agent)
            w.member("approvalRequired", a.approvalRequired)
            w.member("approvals", a.approvals)
            w.member("blocked", a.blocked)
            w.member("costUsd", String(format: "%.6f", a.costUSD))
            w.member("decisions", a.decisions)
            w.member("denied", a.denied)
            w.member("durationNanos", summary.durationNanos)
            w.member("errorCount", summary.errorCount)
            w.member("modelCalls", a.modelCalls)
            w.member("outcome", a.outcome)
            w.member("runId", summary.runID)
            w.member("spanCount", summary.spanCount)
            w.member("startTimeUnixNano", String(summary.startNanos))
            w.member("steps", a.steps)
            w.member("tenant", summary.tenant)
            w.member("tokensIn", Int64(a.tokensIn))
            w.member("tokensOut", Int64(a.tokensOut))
            w.member("toolCalls", a.toolCalls)
            w.member("traceCount", summary.traceCount)
            w.member("version", a.version)
            w.endObject()
            w.member("timeline", timeline)
            w.member("warnings", warnings)
            w.endObject()
        }
    }

    func run(_ id: String, scope: TenantScope) async throws -> Response {
        guard !id.isEmpty, id.utf8.count <= 512 else {
            throw APIError(.badRequest, "run ID must be 1 to 512 bytes")
        }
        guard let detail = try await api.store.run(id, scope: scope) else {
            throw APIError(.notFound, "no run with this ID")
        }
        let config = api.store.configuration
        let graph = RunGraph(runID: detail.summary.runID, spans: detail.spans)
        let findings = graph.findings(rules: config.findingRules)
        let aggregate = RunAggregate(
            tenant: detail.summary.tenant ?? ResourceFacts.defaultTenant, runID: detail.summary.runID,
            agent: detail.summary.agent, spans: detail.spans, rules: config.metricRules ?? MetricRules(),
            findingRules: config.findingRules, graph: graph, findings: findings, spanFamilies: false)
        return JSONResponse.written(
            .ok,
            RunViewBody(
                summary: detail.summary, aggregate: aggregate, timeline: TimelineView(graph), findings: findings,
                warnings: detail.warnings))
    }

    // MARK: One span

    struct Redaction: Codable {
        /// Where the value is: `name`, `status.message`, `attributes.KEY`, `resource.KEY`,
        /// `events[N].attributes.KEY`, `links[N].attributes.KEY`.
        var field: String
        /// The rule that masked it, or `identity` / `hash` for a pseudonym.
        var rule: String
        /// `masked` or `pseudonymised`.
        var action: String
    }

    struct SpanBody: Encodable {
        var span: SpanRecord
        var redactions: [Redaction]
    }

    func span(trace: String, span: String, scope: TenantScope) async throws -> Response {
        guard let traceID = TraceID(hex: trace.lowercased()), !traceID.isZero else {
            throw APIError(.badRequest, "trace ID must be 32 hex characters, not all zero")
        }
        guard let spanID = SpanID(hex: span.lowercased()), !spanID.isZero else {
            throw APIError(.badRequest, "span ID must be 16 hex characters, not all zero")
        }
        let (spans, _) = try await api.store.trace(traceID, scope: scope)
        guard let s = spans.first(where: { $0.spanID == spanID }) else {
            throw APIError(.notFound, "no span with this ID in the trace")
        }
        let identityKeys = Set(api.policy.decoder.redaction?.redactor.policy.identityKeys ?? [])
        var marks: [Redaction] = []
        func scan(_ field: String, _ text: String, key: String?) {
            var rest = Substring(text)
            while let open = rest.range(of: "[REDACTED:") {
                let after = rest[open.upperBound...]
                guard let close = after.firstIndex(of: "]") else { break }
                marks.append(Redaction(field: field, rule: String(after[..<close]), action: "masked"))
                rest = after[after.index(after: close)...]
            }
            if Self.isPseudonym(text) {
                let rule = key.map { identityKeys.contains($0) } == true ? RedactionPolicy.identityRuleName : "hash"
                marks.append(Redaction(field: field, rule: rule, action: "pseudonymised"))
            }
        }
        func scan(_ prefix: String, _ attributes: [Attribute]) {
            for a in attributes { scan(prefix + a.key, a.value.displayString, key: a.key) }
        }
        scan("name", s.name, key: nil)
        scan("status.message", s.statusMessage, key: nil)
        scan("attributes.", s.attributes)
        scan("resource.", s.resource.attributes)
        for (n, e) in s.events.enumerated() {
            scan("events[\(n)].name", e.name, key: nil)
            scan("events[\(n)].attributes.", e.attributes)
        }
        for (n, l) in s.links.enumerated() { scan("links[\(n)].attributes.", l.attributes) }
        return JSONResponse.make(.ok, SpanBody(span: s, redactions: marks))
    }

    /// `hmac:<key id>:<16 hex>`, what `Redactor.hash` and `Redactor.pseudonym` write.
    static func isPseudonym(_ text: String) -> Bool {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        return parts.count == 3 && parts[0] == "hmac" && !parts[1].isEmpty && parts[2].count == 16
            && parts[2].allSatisfy(\.isHexDigit)
    }

    // MARK: Resolve

    struct ResolveBody: Encodable {
        struct Match: Encodable {
            /// `run`, `trace`, `span` or the indexed key that holds the value.
            var kind: String
            var runId: String
            var tenant: String?
            var spanId: String?
            var traceId: String?
        }
        var query: String
        var matches: [Match]
        var note: String?
    }

    func resolve(_ request: Request, scope: TenantScope) async throws -> Response {
        let value = (request.formQuery["q"] ?? "").trimmingCharacters(in: .whitespaces)
        guard !value.isEmpty, value.utf8.count <= 512 else {
            throw APIError(.badRequest, "q: expected 1 to 512 bytes")
        }
        let store = api.store
        var matches: [ResolveBody.Match] = []
        var note: String?
        let lower = value.lowercased()
        if let span = SpanID(hex: lower), !span.isZero, lower.count == 16 {
            let since = Int64(Date().timeIntervalSince1970 * 1e9) - Self.spanSearchWindowNanos
            let found = try await store.search(
                narrow: [], scope: scope, since: since, until: nil, limit: 5,
                filter: try SpanFilter.parse("span_id = \"\(lower)\""))
            for hit in found.hits {
                for s in hit.spans where s.spanID == span {
                    matches.append(
                        .init(
                            kind: "span", runId: hit.run.runID, tenant: hit.run.tenant, spanId: lower,
                            traceId: s.traceID.hex))
                }
            }
            note = "span IDs are searched among the runs of the last 7 days"
        }
        // A run ID, or a trace ID (the store resolves a trace to the run its spans name).
        if let detail = try await store.run(value, scope: scope) {
            let isTrace = lower.count == 32 && TraceID(hex: lower) != nil && detail.summary.runID != value
            matches.append(
                .init(
                    kind: isTrace ? "trace" : "run", runId: detail.summary.runID, tenant: detail.summary.tenant,
                    traceId: isTrace ? lower : nil))
        }
        for key in AgentKeys.defaultExternalIDKeys where store.configuration.indexedKeys.keys.contains(key) {
            for m in try await store.lookup(key: key, value: value, scope: scope, limit: 5) {
                matches.append(
                    .init(
                        kind: key, runId: m.runID, tenant: m.tenant, spanId: m.span.spanID.hex,
                        traceId: m.span.traceID.hex))
            }
        }
        return JSONResponse.make(.ok, ResolveBody(query: value, matches: matches, note: note))
    }
}
