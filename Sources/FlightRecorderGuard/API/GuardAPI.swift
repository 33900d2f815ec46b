import FlightRecorderGuardPolicy
import FlightRecorderConfig
public import FlightRecorderHTTP
import FlightRecorderOTLP
import Foundation
public import Hummingbird
public import Logging
import NIOCore
import HTTPTypes

/// The sidecar's HTTP JSON API (Schemas/api/guard-api.yaml):
///
/// - `POST /v1/decide`, `POST /v1/execute`
/// - `POST /v1/approvals/{ticket}/grant` and `/deny`, `GET /v1/approvals[?status=]`,
///   `GET /v1/approvals/{ticket}`
/// - `GET /v1/uncertain`, `GET /v1/executions/{key}`, `POST /v1/executions/{key}/reconcile`
/// - `GET /v1/runs/{run}/state`, `GET /v1/stats`, `GET /healthz`
///
/// Malformed requests get a 4xx with a message naming the field, never its value.
public struct GuardAPI: Sendable {
    public static let maxBodyBytes = 1 << 20
    let service: GuardService
    /// SHA-256 of a token -> actor ID; empty: no auth (loopback or Unix socket only).
    let tokens: [String: String]
    let logger: Logger

    public init(service: GuardService, tokens: [String: String], logger: Logger) {
        self.service = service
        self.tokens = tokens
        self.logger = logger
    }

    public func addRoutes(to router: Router<BasicRequestContext>) {
        router.get("/healthz") { _, _ in JSONResponse.make(.ok, ["status": "ok"]) }
        router.get("/v1/stats") { request, _ in
            await handle {
                _ = try await scope(request)
                return JSONResponse.make(.ok, await service.stats())
            }
        }
        router.post("/v1/decide") { request, _ in
            await handle {
                let (body, actor) = try await call(request)
                let r = try guardRequest(body, actor: actor, request: request)
                return JSONResponse.make(.ok, try await service.decide(r))
            }
        }
        router.post("/v1/execute") { request, _ in
            await handle {
                let (body, actor) = try await call(request)
                let r = try guardRequest(body, actor: actor, request: request)
                let answer = try await service.execute(r)
                var response = JSONResponse.make(.ok, answer)
                if let b = answer.backendSeconds {
                    ServerTiming.add(ServerTiming.entry("backend", .milliseconds(b * 1000)), to: &response)
                }
                return response
            }
        }
        for (verb, grant) in [("grant", true), ("deny", false)] {
            router.post("/v1/approvals/{ticket}/\(verb)") { request, context in
                await handle {
                    let ticket = try context.parameters.require("ticket")
                    let body = try await object(request)
                    try allow(body, ["approver", "note"])
                    let approver = try actor(request, claimed: try string(body, "approver"), field: "approver")
                    let a = try await service.resolve(
                        ticket: ticket, approverID: approver, grant: grant, note: try string(body, "note"),
                        parent: SpanContext(traceparent: request.headers[HTTPField.Name("traceparent")!]))
                    return JSONResponse.make(.ok, ApprovalView(a))
                }
            }
        }
        router.get("/v1/approvals") { request, _ in
            await handle {
                let tenants = try await scope(request)
                var status: ApprovalRecord.Status?
                if let s = request.formQuery["status"] {
                    guard let parsed = ApprovalRecord.Status(rawValue: s) else {
                        throw GuardError(.badRequest, "status must be pending, granted, denied or consumed")
                    }
                    status = parsed
                }
                let list = try await service.approvals(status: status, tenants: tenants)
                return JSONResponse.make(.ok, ["approvals": list.map(ApprovalView.init)])
            }
        }
        router.get("/v1/approvals/{ticket}") { request, context in
            await handle {
                let a = try await service.approval(try context.parameters.require("ticket"), tenants: try await scope(request))
                return JSONResponse.make(.ok, ApprovalView(a))
            }
        }
        router.get("/v1/uncertain") { request, _ in
            await handle {
                let list = try await service.uncertain(tenants: try await scope(request))
                return JSONResponse.make(.ok, ["uncertain": list.map(UncertainView.init)])
            }
        }
        router.get("/v1/executions/{key}") { request, context in
            await handle {
                let key = try context.parameters.require("key")
                let who = try actor(request, claimed: request.formQuery["actor"], field: "actor")
                guard let tenant = service.engine.policy.actors[who]?.tenant else {
                    throw GuardError(.forbidden, "actor \(who) is not configured")
                }
                return JSONResponse.make(.ok, try await service.execution(key: key, tenant: tenant))
            }
        }
        router.post("/v1/executions/{key}/reconcile") { request, context in
            await handle {
                let key = try context.parameters.require("key")
                let body = try await object(request)
                try allow(body, ["actor", "status", "operation_id", "note"])
                let who = try actor(request, claimed: try string(body, "actor"), field: "actor")
                let status = try string(body, "status")
                guard status == "succeeded" || status == "failed" else {
                    throw GuardError(.badRequest, "status must be succeeded or failed")
                }
                return JSONResponse.make(
                    .ok,
                    try await service.reconcile(
                        key: key, actorID: who, succeeded: status == "succeeded", operationID: try string(body, "operation_id"),
                        note: try string(body, "note")))
            }
        }
        router.get("/v1/runs/{run}/state") { request, context in
            await handle {
                let run = try context.parameters.require("run")
                let who = try actor(request, claimed: request.formQuery["actor"], field: "actor")
                guard let tenant = service.engine.policy.actors[who]?.tenant else {
                    throw GuardError(.forbidden, "actor \(who) is not configured")
                }
                return JSONResponse.make(.ok, RunStateView(try await service.runState(tenant: tenant, run: run)))
            }
        }
    }

    // MARK: Request parsing

    /// Runs a handler; errors become their HTTP answer. `Server-Timing` reports the time in
    /// the sidecar (`app`) and, for an execution, in the backend call (`backend`), in ms.
    func handle(_ body: () async throws -> Response) async -> Response {
        await APIHandler(logger: logger).run(body)
    }

    /// The JSON object body, within 1 MiB.
    func object(_ request: Request) async throws -> [String: JSONValue] {
        let buffer = try await BoundedBody.collect(request, limit: Self.maxBodyBytes)
        guard buffer.readableBytes > 0 else { throw GuardError(.badRequest, "the body must be a JSON object") }
        let parsed: JSONValue
        do {
            parsed = try JSONValue.parse(Data(buffer.readableBytesView))
        } catch {
            throw GuardError(.badRequest, "the body is not valid JSON")
        }
        guard case .object(let o) = parsed else { throw GuardError(.badRequest, "the body must be a JSON object") }
        return o
    }

    static let callFields: Set<String> = [
        "run_id", "actor", "tool", "arguments", "idempotency_key", "tool_call_id", "risk_score", "model",
        "response_model", "prompt_version", "prompt", "agent_version", "usage",
    ]

    func call(_ request: Request) async throws -> ([String: JSONValue], String) {
        let body = try await object(request)
        try allow(body, Self.callFields)
        return (body, try actor(request, claimed: try string(body, "actor"), field: "actor"))
    }

    func guardRequest(_ b: [String: JSONValue], actor: String, request: Request) throws -> GuardRequest {
        guard let run = try string(b, "run_id"), !run.isEmpty, run.utf8.count <= 256 else {
            throw GuardError(.badRequest, "run_id is required (a string of at most 256 bytes)")
        }
        guard let tool = try string(b, "tool"), !tool.isEmpty else { throw GuardError(.badRequest, "tool is required") }
        guard let arguments = b["arguments"] else { throw GuardError(.badRequest, "arguments is required (a JSON object)") }
        guard case .object = arguments else { throw GuardError(.badRequest, "arguments must be a JSON object") }
        if let key = try string(b, "idempotency_key"), key.isEmpty || key.utf8.count > 256 {
            throw GuardError(.badRequest, "idempotency_key must be 1 to 256 bytes")
        }
        var risk: Double?
        if let v = b["risk_score"] {
            switch v {
            case .int(let i): risk = Double(i)
            case .uint(let u): risk = Double(u)
            case .double(let d): risk = d
            default: throw GuardError(.badRequest, "risk_score must be a number between 0 and 1")
            }
            guard (0...1).contains(risk!) else { throw GuardError(.badRequest, "risk_score must be a number between 0 and 1") }
        }
        var usage: Usage?
        if let u = b["usage"] {
            guard case .object(let o) = u else { throw GuardError(.badRequest, "usage must be an object") }
            try allow(o, ["input_tokens", "output_tokens", "cost_usd"], prefix: "usage.")
            usage = Usage(
                inputTokens: try integer(o, "input_tokens", "usage.input_tokens"),
                outputTokens: try integer(o, "output_tokens", "usage.output_tokens"),
                costUSD: try number(o, "cost_usd", "usage.cost_usd"))
        }
        return GuardRequest(
            runID: run, actorID: actor, tool: tool, arguments: arguments, idempotencyKey: try string(b, "idempotency_key"),
            toolCallID: try string(b, "tool_call_id"), riskScore: risk,
            model: ModelContext(
                requestModel: try string(b, "model"), responseModel: try string(b, "response_model"),
                promptVersion: try string(b, "prompt_version"), prompt: try string(b, "prompt"),
                agentVersion: try string(b, "agent_version")),
            usage: usage, parent: SpanContext(traceparent: request.headers[HTTPField.Name("traceparent")!]))
    }

    func allow(_ body: [String: JSONValue], _ fields: Set<String>, prefix: String = "") throws {
        if let unknown = body.keys.sorted().first(where: { !fields.contains($0) }) {
            throw GuardError(.badRequest, "unknown field \(prefix)\(unknown.prefix(64))")
        }
    }

    func string(_ body: [String: JSONValue], _ field: String) throws -> String? {
        guard let v = body[field], v != .null else { return nil }
        guard case .string(let s) = v else { throw GuardError(.badRequest, "\(field) must be a string") }
        return s
    }

    func integer(_ o: [String: JSONValue], _ field: String, _ path: String) throws -> Int {
        switch o[field] {
        case nil, .null?: return 0
        case .int(let i)? where i >= 0 && i < Int64(Int32.max): return Int(i)
        default: throw GuardError(.badRequest, "\(path) must be a non-negative integer")
        }
    }

    func number(_ o: [String: JSONValue], _ field: String, _ path: String) throws -> Double {
        switch o[field] {
        case nil, .null?: return 0
        case .int(let i)? where i >= 0: return Double(i)
        case .double(let d)? where d >= 0 && d.isFinite: return d
        default: throw GuardError(.badRequest, "\(path) must be a non-negative number")
        }
    }

    /// Who is acting. With tokens configured, the bearer token names the actor and a claimed
    /// actor must match it; without, the request names the actor (loopback and sockets only).
    func actor(_ request: Request, claimed: String?, field: String) throws -> String {
        guard !tokens.isEmpty else {
            guard let claimed, !claimed.isEmpty else { throw GuardError(.badRequest, "\(field) is required") }
            return claimed
        }
        let token: String
        do {
            token = try AccessToken.bearerToken(request.headers[.authorization])
        } catch {
            throw GuardError(.unauthorized, error.message)
        }
        guard let who = tokens[AccessToken.digest(of: token)] else { throw GuardError(.unauthorized, "unknown bearer token") }
        if let claimed, !claimed.isEmpty, claimed != who {
            throw GuardError(.forbidden, "the token belongs to \(who), not to the \(field) named in the request")
        }
        return who
    }

    /// The tenants a read may see: the token actor's, or all without auth.
    func scope(_ request: Request) async throws -> Set<String>? {
        guard !tokens.isEmpty else { return nil }
        let who = try actor(request, claimed: nil, field: "actor")
        guard let tenant = service.engine.policy.actors[who]?.tenant else {
            throw GuardError(.forbidden, "actor \(who) is not configured")
        }
        return [tenant]
    }

    // MARK: Responses
}

/// Timestamps as RFC 3339 with milliseconds.
func rfc3339(_ nanos: UInt64?) -> String? {
    guard let nanos else { return nil }
    let date = Date(timeIntervalSince1970: Double(nanos) / 1e9)
    return date.formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted))
}

struct ApprovalView: Encodable {
    var ticket: String
    var status: String
    var tenant: String
    var runId: String
    var requester: String
    var tool: String
    var tier: String
    var arguments: JSONValue?
    var rule: String
    var reason: String
    var approver: String?
    var note: String?
    var requestedAt: String?
    var decidedAt: String?
    var consumedBy: String?

    enum CodingKeys: String, CodingKey {
        case ticket
        case status
        case tenant
        case runId = "run_id"
        case requester
        case tool
        case tier
        case arguments
        case rule
        case reason
        case approver
        case note
        case requestedAt = "requested_at"
        case decidedAt = "decided_at"
        case consumedBy = "consumed_by"
    }

    init(_ a: ApprovalRecord) {
        ticket = a.ticket
        status = a.status.rawValue
        tenant = a.tenant
        runId = a.runID
        requester = a.requester
        tool = a.tool
        tier = a.tier
        arguments = GuardService.parse(a.arguments)
        rule = a.rule
        reason = a.reason
        approver = a.approver
        note = a.note
        requestedAt = rfc3339(a.requestedNanos)
        decidedAt = rfc3339(a.decidedNanos)
        consumedBy = a.consumedBy
    }
}

struct UncertainView: Encodable {
    var idempotencyKey: String
    var tenant: String
    var runId: String
    var actor: String
    var tool: String
    var tier: String
    var status: String
    var reason: String
    var ticket: String?
    var startedAt: String?
    var traceId: String?
    var spanId: String?

    enum CodingKeys: String, CodingKey {
        case idempotencyKey = "idempotency_key"
        case tenant
        case runId = "run_id"
        case actor
        case tool
        case tier
        case status
        case reason
        case ticket
        case startedAt = "started_at"
        case traceId = "trace_id"
        case spanId = "span_id"
    }

    init(_ e: ExecutionRecord) {
        idempotencyKey = e.idempotencyKey
        tenant = e.tenant
        runId = e.runID
        actor = e.actor
        tool = e.tool
        tier = e.tier
        status = e.status.rawValue
        reason = e.reason
        ticket = e.ticket
        startedAt = rfc3339(e.startedNanos)
        traceId = e.traceID
        spanId = e.spanID
    }
}

struct RunStateView: Encodable {
    var steps: Int
    var tokens: Int
    var costUsd: Double
    var duplicateCalls: Int
    /// How many entities are ambiguous (their names are not kept).
    var ambiguousEntities: Int
    var caseState: [String: String]

    enum CodingKeys: String, CodingKey {
        case steps
        case tokens
        case costUsd = "cost_usd"
        case duplicateCalls = "duplicate_calls"
        case ambiguousEntities = "ambiguous_entities"
        case caseState = "case_state"
    }

    init(_ s: RunState) {
        steps = s.steps
        tokens = s.tokens
        costUsd = s.costUSD
        duplicateCalls = s.calls.values.reduce(0) { $0 + max(0, $1 - 1) }
        ambiguousEntities = s.ambiguousEntities.count
        caseState = s.caseState
    }
}

extension GuardError: APIErrorConvertible {
    public var apiError: APIError {
        let status: HTTPResponse.Status =
            switch kind {
            case .badRequest: .badRequest
            case .unauthorized: .unauthorized
            case .forbidden: .forbidden
            case .notFound: .notFound
            case .conflict: .conflict
            case .tooLarge: .contentTooLarge
            case .unavailable: .serviceUnavailable
            }
        var e = kind == .unauthorized ? APIError.unauthorized(message, realm: "flightrec-guard") : APIError(status, message)
        e.retryAfterSeconds = retryAfterSeconds
        return e
    }
}
