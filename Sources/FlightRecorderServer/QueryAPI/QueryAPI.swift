import FlightRecorderConfig
import FlightRecorderOTLP
import FlightRecorderQuery
public import FlightRecorderStorage
import Foundation
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
    public let logger: Logger

    public init(
        store: SpanStore, policy: IngestPolicy, ingest: IngestService? = nil, auth: Authenticator = Authenticator(tokens: []),
        logger: Logger
    ) {
        self.store = store
        self.policy = policy
        self.ingest = ingest
        self.auth = auth
        self.logger = logger
    }

    public func addRoutes(to router: Router<some RequestContext>) {
        router.get("/healthz") { _, _ in Self.json(.ok, ["status": "ok"]) }
        router.get("/api/v1/redaction/stats") { request, _ in
            await self.handle(request, roles: [.admin]) { _ in
                Self.json(.ok, RedactionStats(enabled: self.policy.decoder.redaction != nil, rules: self.policy.ruleCounts))
            }
        }
        router.get("/api/v1/ingest/stats") { request, _ in
            await self.handle(request, roles: [.admin]) { _ in Self.json(.ok, self.ingest?.stats ?? .init()) }
        }
        router.get("/api/v1/runs") { request, _ in
            await self.handle(request) { p in try await self.listRuns(request, scope: p.scope) }
        }
        router.get("/api/v1/runs/:runID") { request, context in
            await self.handle(request) { p in
                try await self.run(Self.decoded(context.parameters.get("runID")), scope: p.scope)
            }
        }
        router.get("/api/v1/traces/:traceID") { request, context in
            await self.handle(request) { p in
                try await self.trace(Self.decoded(context.parameters.get("traceID")), scope: p.scope)
            }
        }
    }

    /// Path parameters arrive percent-encoded; run IDs may contain `/`, spaces or `%`.
    static func decoded(_ raw: String?) -> String {
        guard let raw else { return "" }
        return raw.removingPercentEncoding ?? raw
    }

    /// `GET /api/v1/redaction/stats`: hits per rule since start-up; never values.
    struct RedactionStats: Encodable {
        var enabled: Bool
        var rules: [String: Int]
    }

    struct APIError: Error {
        var status: HTTPResponse.Status
        var message: String
    }

    func handle(
        _ request: Request, roles: Set<Role> = Role.readers, _ body: (Principal) async throws -> Response
    ) async -> Response {
        let principal: Principal
        do {
            principal = try auth.authenticate(request.headers[.authorization], requiring: roles)
        } catch {
            switch error {
            case .unauthenticated(let m):
                var r = Self.error(.unauthorized, m)
                r.headers[.wwwAuthenticate] = "Bearer realm=\"flightrec\""
                return r
            case .forbidden(let m): return Self.error(.forbidden, m)
            }
        }
        do {
            return try await body(principal)
        } catch let e as APIError {
            return Self.error(e.status, e.message)
        } catch {
            logger.error("query failed", metadata: ["error": "\(error)"])
            return Self.error(.serviceUnavailable, "the store could not answer: \(error)")
        }
    }

    struct RunsPage: Encodable {
        var runs: [RunSummary]
    }

    func listRuns(_ request: Request, scope: TenantScope) async throws -> Response {
        let q = request.uri.queryParameters
        func bound(_ name: String) throws -> Int64? {
            guard let text = q[Substring(name)].map(String.init), !text.isEmpty else { return nil }
            guard let v = TimeBound.parse(text) else {
                throw APIError(
                    status: .badRequest,
                    message: "\(name): expected Unix nanoseconds, an RFC 3339 time or a duration such as 15m, 2h, 7d")
            }
            return v
        }
        let since = try bound("since")
        let until = try bound("until")
        var limit = 100
        if let text = q["limit"].map(String.init), !text.isEmpty {
            guard let n = Int(text), (1...10_000).contains(n) else {
                throw APIError(status: .badRequest, message: "limit: expected an integer from 1 to 10000")
            }
            limit = n
        }
        let runs = try await store.listRuns(since: since, until: until, limit: limit, scope: scope)
        return Self.json(.ok, RunsPage(runs: runs))
    }

    struct RunBody: Encodable {
        var run: RunSummary
        var spans: [SpanRecord]
        var warnings: [String]
    }

    func run(_ id: String, scope: TenantScope) async throws -> Response {
        guard !id.isEmpty, id.utf8.count <= 512 else {
            throw APIError(status: .badRequest, message: "run ID must be 1 to 512 bytes")
        }
        guard let detail = try await store.run(id, scope: scope) else {
            throw APIError(status: .notFound, message: "no run with this ID")
        }
        return Self.json(.ok, RunBody(run: detail.summary, spans: detail.spans, warnings: detail.warnings))
    }

    struct TraceBody: Encodable {
        var traceId: String
        var spans: [SpanRecord]
        var warnings: [String]
    }

    func trace(_ id: String, scope: TenantScope) async throws -> Response {
        guard let trace = TraceID(hex: id.lowercased()), !trace.isZero else {
            throw APIError(status: .badRequest, message: "trace ID must be 32 hex characters, not all zero")
        }
        let (spans, warnings) = try await store.trace(trace, scope: scope)
        guard !spans.isEmpty else { throw APIError(status: .notFound, message: "no trace with this ID") }
        return Self.json(.ok, TraceBody(traceId: trace.hex, spans: spans, warnings: warnings))
    }

    static func json(_ status: HTTPResponse.Status, _ value: some Encodable) -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
        return Response(
            status: status, headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func error(_ status: HTTPResponse.Status, _ message: String) -> Response {
        struct Body: Encodable {
            var error: String
            var status: Int
        }
        return json(status, Body(error: message, status: status.code))
    }
}
