import FlightRecorderConfig
import FlightRecorderGuardPolicy
import FlightRecorderHTTP
import FlightRecorderOTLP
import Foundation
import HTTPTypes
public import Hummingbird
public import Logging
import NIOCore

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
                return JSONResponse.make(.ok, try await service.decide(try await call(request)))
            }
        }
        router.post("/v1/execute") { request, _ in
            await handle {
                let answer = try await service.execute(try await call(request))
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
                    let body = try await decode(ApprovalBody.self, request)
                    let approver = try actor(request, claimed: body.approver, field: "approver")
                    let a = try await service.resolve(
                        ticket: ticket, approverID: approver, grant: grant, note: body.note,
                        parent: traceParent(request))
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
                let a = try await service.approval(
                    try context.parameters.require("ticket"), tenants: try await scope(request))
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
                let body = try await decode(ReconcileBody.self, request)
                let who = try actor(request, claimed: body.actor, field: "actor")
                return JSONResponse.make(
                    .ok,
                    try await service.reconcile(
                        key: key, actorID: who, succeeded: body.succeeded, operationID: body.operationID,
                        note: body.note))
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

    /// Runs a handler; errors become their HTTP answer. `Server-Timing` reports the time in
    /// the sidecar (`app`) and, for an execution, in the backend call (`backend`), in ms.
    func handle(_ body: () async throws -> Response) async -> Response {
        await APIHandler(logger: logger).run(body)
    }

    /// A request body of `T`, within 1 MiB (`RequestBodies.swift`).
    func decode<T: Decodable>(_ type: T.Type, _ request: Request) async throws -> T {
        try RequestBody.decode(T.self, from: try await BoundedBody.collect(request, limit: Self.maxBodyBytes))
    }

    /// A decide or execute call, with its actor settled (token or claimed).
    func call(_ request: Request) async throws -> GuardRequest {
        let body = try await decode(CallBody.self, request)
        return body.request(
            actor: try actor(request, claimed: body.actor, field: "actor"), parent: traceParent(request))
    }

    /// The agent's W3C `traceparent`, which the decision spans continue.
    func traceParent(_ request: Request) -> SpanContext? {
        SpanContext(traceparent: request.headers[HTTPField.Name("traceparent")!])
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
        guard let who = tokens[AccessToken.digest(of: token)] else {
            throw GuardError(.unauthorized, "unknown bearer token")
        }
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

}
