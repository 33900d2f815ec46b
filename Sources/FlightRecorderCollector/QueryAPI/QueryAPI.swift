import FlightRecorderConfig
import FlightRecorderHTTP
public import FlightRecorderIngest
import FlightRecorderOTLP
import FlightRecorderQuery
public import FlightRecorderStorage
import Foundation
import HTTPTypes
public import Hummingbird
public import Logging

/// The JSON query API (`/api/v1/...`), on its own loopback port.
///
/// Every `/api/v1` route needs a bearer token with a reading role (responder, auditor or
/// admin) when tokens are configured, and answers only within the token's tenants: a run of
/// another tenant is a 404, exactly like a run that does not exist. Daemon-wide counters
/// (redaction and ingest stats) need admin.
///
/// Errors are JSON objects `{"error": "...", "status": N}`: 400 for a bad parameter or ID,
/// 401 without a valid token, 403 without the role, 404 for an unknown run or trace, 503
/// when the store cannot answer.
public struct QueryAPI: Sendable {
    public let store: SpanStore
    public let policy: IngestPolicy
    public let ingest: IngestService?
    public let auth: Authenticator
    /// Open once shutdown began: every request is answered 503 with Retry-After.
    public let gate: DrainGate
    public let logger: Logger

    public init(
        store: SpanStore, policy: IngestPolicy, ingest: IngestService? = nil,
        auth: Authenticator = Authenticator(tokens: []), gate: DrainGate = DrainGate(),
        logger: Logger
    ) {
        self.gate = gate
        self.store = store
        self.policy = policy
        self.ingest = ingest
        self.auth = auth
        self.logger = logger
    }

    public func addRoutes(to router: Router<some RequestContext>) {
        router.get("/healthz") { _, _ in
            self.gate.isDraining ? JSONResponse.error(DrainGate.refusal) : JSONResponse.make(.ok, ["status": "ok"])
        }
        router.get("/api/v1/redaction/stats") { request, _ in
            await self.handle(request, roles: [.admin]) { _ in
                JSONResponse.make(
                    .ok, RedactionStats(enabled: self.policy.decoder.redaction != nil, rules: self.policy.ruleCounts))
            }
        }
        router.get("/api/v1/ingest/stats") { request, _ in
            await self.handle(request, roles: [.admin]) { _ in JSONResponse.make(.ok, self.ingest?.stats ?? .init()) }
        }
        router.get("/api/v1/storage/stats") { request, _ in
            await self.handle(request, roles: [.admin]) { _ in JSONResponse.make(.ok, self.store.health) }
        }
        router.get("/api/v1/runs") { request, _ in
            await self.handle(request) { p in try await self.listRuns(request, scope: p.scope) }
        }
        router.get("/api/v1/runs/:runID") { request, context in
            await self.handle(request) { p in
                try await self.run(Self.decoded(context.parameters.get("runID")), scope: p.scope)
            }
        }
        for view in ["graph", "path", "card", "critical-path", "findings"] {
            router.get("/api/v1/runs/:runID/\(view)") { request, context in
                await self.handle(request) { p in
                    try await self.causal(
                        view, Self.decoded(context.parameters.get("runID")), request: request, scope: p.scope)
                }
            }
        }
        router.get("/api/v1/lookup") { request, _ in
            await self.handle(request) { p in try await self.lookup(request, scope: p.scope) }
        }
        router.get("/api/v1/audit/export") { request, _ in
            await self.handle(request, roles: [.auditor, .admin]) { p in
                try await self.auditExport(request, principal: p)
            }
        }
        router.get("/api/v1/traces/:traceID") { request, context in
            await self.handle(request) { p in
                try await self.trace(Self.decoded(context.parameters.get("traceID")), scope: p.scope)
            }
        }
    }

    var findingRules: FindingRules { store.configuration.findingRules }
    var versionKeys: [String] { store.configuration.metricRules?.versionKeys ?? MetricRules.defaultVersionKeys }

    /// Path parameters arrive percent-encoded; run IDs may contain `/`, spaces or `%`.
    static func decoded(_ raw: String?) -> String {
        guard let raw else { return "" }
        return raw.removingPercentEncoding ?? raw
    }

    /// `GET /api/v1/redaction/stats`: hits per rule since start-up; never values.
    func handle(
        _ request: Request, roles: Set<Role> = Role.readers, _ body: (Principal) async throws -> Response
    ) async -> Response {
        if gate.isDraining { return JSONResponse.error(DrainGate.refusal) }
        let principal: Principal
        do {
            principal = try auth.authenticate(request.headers[.authorization], requiring: roles)
        } catch {
            return JSONResponse.error(
                error.isUnauthenticated
                    ? .unauthorized(error.message, realm: "flightrec") : APIError(.forbidden, error.message))
        }
        return await APIHandler(logger: logger, unexpected: APIError(.serviceUnavailable, "the store could not answer"))
            .run { try await body(principal) }
    }

    /// Query parameter `name` as a time (`TimeBound`); nil when absent, a 400 when malformed.
    static func timeBound(_ q: FormQuery, _ name: String) throws -> Int64? {
        guard let text = q[name], !text.isEmpty else { return nil }
        guard let v = TimeBound.parse(text) else {
            throw APIError(
                .badRequest, "\(name): expected Unix nanoseconds, an RFC 3339 time or a duration such as 15m, 2h, 7d")
        }
        return v
    }

    /// Query parameter `limit`, 1 to `max`; `default` when absent, a 400 when out of range.
    static func limit(_ q: FormQuery, default fallback: Int, max: Int) throws -> Int {
        guard let text = q["limit"], !text.isEmpty else { return fallback }
        guard let n = Int(text), (1...max).contains(n) else {
            throw APIError(.badRequest, "limit: expected an integer from 1 to \(max)")
        }
        return n
    }

    /// The `reason` an admin action (a hold, an erasure) must give, trimmed; a 400 otherwise.
    static func reason(_ text: String?) throws -> String {
        guard let reason = text?.trimmingCharacters(in: .whitespacesAndNewlines), !reason.isEmpty,
            reason.utf8.count <= 1000
        else { throw APIError(.badRequest, "reason: required, at most 1000 bytes") }
        return reason
    }

    /// A `where` expression, parsed; a 400 pointing at the error otherwise.
    static func spanFilter(_ expression: String) throws -> SpanFilter {
        do {
            return try SpanFilter.parse(expression)
        } catch {
            throw APIError(.badRequest, "where: \(error.description)")
        }
    }

    func listRuns(_ request: Request, scope: TenantScope) async throws -> Response {
        let q = request.formQuery
        let since = try Self.timeBound(q, "since")
        let until = try Self.timeBound(q, "until")
        let limit = try Self.limit(q, default: 100, max: 10_000)
        if let expression = q["where"], !expression.isEmpty {
            return try await search(expression, since: since, until: until, limit: limit, scope: scope)
        }
        let runs = try await store.listRuns(since: since, until: until, limit: limit, scope: scope)
        return JSONResponse.make(.ok, RunsPage(runs: runs))
    }

    func search(
        _ expression: String, since: Int64?, until: Int64?, limit: Int, scope: TenantScope
    ) async throws
        -> Response
    {
        let filter = try Self.spanFilter(expression)
        let narrow = filter.requiredEqualities(among: Set(store.configuration.indexedKeys.keys))
        let result = try await store.search(
            narrow: narrow, scope: scope, since: since, until: until, limit: limit, filter: filter)
        return JSONResponse.make(
            .ok,
            SearchBody(
                runs: result.hits.map(\.run),
                matches: result.hits.map { .init(runId: $0.run.runID, tenant: $0.run.tenant, spans: $0.spans) },
                candidateTraces: result.candidateTraces, complete: result.complete, warnings: result.warnings))
    }

    /// `graph`, `path?to=SPAN`, `card?to=SPAN` (the incident card alone), `critical-path` and
    /// `findings` of one run.
    func causal(_ view: String, _ id: String, request: Request, scope: TenantScope) async throws -> Response {
        guard !id.isEmpty, id.utf8.count <= 512 else {
            throw APIError(.badRequest, "run ID must be 1 to 512 bytes")
        }
        var target: SpanID?
        if view == "path" || view == "card" {
            let to = request.formQuery["to"] ?? ""
            guard let span = SpanID(hex: to.lowercased()), !span.isZero else {
                throw APIError(.badRequest, "to: expected a span ID of 16 hex characters")
            }
            target = span
        }
        guard let detail = try await store.run(id, scope: scope) else {
            throw APIError(.notFound, "no run with this ID")
        }
        let graph = RunGraph(runID: detail.summary.runID, spans: detail.spans)
        switch view {
        case "graph": return JSONResponse.make(.ok, graph.graph())
        case "critical-path": return JSONResponse.make(.ok, graph.criticalPath())
        case "findings":
            return JSONResponse.make(
                .ok,
                FindingsBody(
                    runId: detail.summary.runID, findings: graph.findings(rules: store.configuration.findingRules)))
        default:
            guard let target, let index = graph.index(of: target) else {
                throw APIError(.notFound, "no span with this ID in the run")
            }
            if view == "card" {
                return JSONResponse.make(
                    .ok,
                    CardBody(
                        runId: graph.runID,
                        answer: graph.answer(for: index, rules: findingRules, versionKeys: versionKeys)))
            }
            return JSONResponse.make(.ok, graph.path(to: index, rules: findingRules, versionKeys: versionKeys))
        }
    }

    /// `GET /api/v1/lookup?key=operation.id&value=…`: the spans carrying an external ID, each
    /// with its causal path.
    func lookup(_ request: Request, scope: TenantScope) async throws -> Response {
        let q = request.formQuery
        let key = q["key"] ?? ""
        let value = q["value"] ?? ""
        let indexed = store.configuration.indexedKeys.keys
        guard indexed.contains(key) else {
            throw APIError(.badRequest, "key: expected one of the indexed keys (\(indexed.joined(separator: ", ")))")
        }
        guard !value.isEmpty, value.utf8.count <= 512 else {
            throw APIError(.badRequest, "value: expected 1 to 512 bytes")
        }
        let found = try await store.lookupWithRuns(key: key, value: value, scope: scope, limit: 20)
        guard !found.isEmpty else { throw APIError(.notFound, "no span carries this \(key)") }
        var matches: [LookupBody.Match] = []
        var graphs: [String: RunGraph] = [:]
        for (m, detail) in found {
            let cacheKey = m.tenant + "\u{1F}" + m.runID
            if graphs[cacheKey] == nil { graphs[cacheKey] = RunGraph(runID: detail.summary.runID, spans: detail.spans) }
            guard let graph = graphs[cacheKey], let index = graph.index(of: m.span.spanID) else { continue }
            let path = graph.path(to: index, rules: findingRules, versionKeys: versionKeys)
            matches.append(
                .init(runId: graph.runID, tenant: m.tenant, spanId: m.span.spanID.hex, answer: path.answer, path: path))
        }
        return JSONResponse.make(.ok, LookupBody(key: key, value: value, matches: matches))
    }

    func run(_ id: String, scope: TenantScope) async throws -> Response {
        guard !id.isEmpty, id.utf8.count <= 512 else {
            throw APIError(.badRequest, "run ID must be 1 to 512 bytes")
        }
        guard let detail = try await store.run(id, scope: scope) else {
            throw APIError(.notFound, "no run with this ID")
        }
        return JSONResponse.make(.ok, RunBody(run: detail.summary, spans: detail.spans, warnings: detail.warnings))
    }

    func trace(_ id: String, scope: TenantScope) async throws -> Response {
        guard let trace = TraceID(hex: id.lowercased()), !trace.isZero else {
            throw APIError(.badRequest, "trace ID must be 32 hex characters, not all zero")
        }
        let (spans, warnings) = try await store.trace(trace, scope: scope)
        // A trace whose every block is damaged is known, not absent: its warnings say why.
        guard !spans.isEmpty || !warnings.isEmpty else { throw APIError(.notFound, "no trace with this ID") }
        return JSONResponse.make(.ok, TraceBody(traceId: trace.hex, spans: spans, warnings: warnings))
    }
}
