import FlightRecorderConfig
import FlightRecorderHTTP
import FlightRecorderQuery
public import FlightRecorderStorage
import Foundation
public import Hummingbird
import Logging

/// Legal holds, admin only: `POST /api/v1/holds` places one (`{"tenant"|"run"|"where": …,
/// "reason": …}`, with `"tenant"` beside `"run"` to name the run's tenant), `GET
/// /api/v1/holds` lists those in force (`?all=true`: released ones too, with who released them
/// and when), `DELETE /api/v1/holds/{id}` releases one. A hold is durable
/// before the answer; expiry never deletes what one covers.
public struct HoldsAPI: Sendable {
    public let api: QueryAPI

    public init(api: QueryAPI) { self.api = api }

    public struct Request: Codable, Sendable {
        public var tenant: String?
        public var run: String?
        public var `where`: String?
        public var reason: String?

        public init(tenant: String? = nil, run: String? = nil, where: String? = nil, reason: String? = nil) {
            self.tenant = tenant
            self.run = run
            self.where = `where`
            self.reason = reason
        }
    }

    public struct ListBody: Codable, Sendable {
        public var holds: [Hold]
    }

    public func addRoutes(to router: Router<BasicRequestContext>) {
        router.post("/api/v1/holds") { request, _ in
            await api.handle(request, roles: [.admin]) { p in try await add(request, by: p.name) }
        }
        router.get("/api/v1/holds") { request, _ in
            await api.handle(request, roles: [.admin]) { _ in
                let all = request.formQuery["all"] == "true"
                return JSONResponse.make(.ok, ListBody(holds: all ? api.store.holds.history : api.store.holds.all))
            }
        }
        router.delete("/api/v1/holds/:id") { request, context in
            await api.handle(request, roles: [.admin]) { p in
                let id = QueryAPI.decoded(context.parameters.get("id"))
                guard let hold = try api.store.holds.release(id, by: p.name) else {
                    throw APIError(.notFound, "no hold \(id) is in force")
                }
                api.logger.notice("legal hold released", metadata: ["hold": "\(hold.id)", "by": "\(p.name)"])
                return JSONResponse.make(.ok, hold)
            }
        }
    }

    func add(_ request: Hummingbird.Request, by: String) async throws -> Response {
        let body = try await BoundedBody.collect(request, limit: 64 << 10)
        let r: Request
        do {
            r = try JSONDecoder().decode(Request.self, from: Data(body.readableBytesView))
        } catch {
            throw APIError(.badRequest, "expected a JSON object with one of tenant, run or where, and reason")
        }
        let reason = try QueryAPI.reason(r.reason)
        let kind: Hold.Kind
        let value: String
        var tenant: String?
        switch (r.tenant, r.run, r.where) {
        case (let t?, nil, nil):
            (kind, value) = (.tenant, t)
        case (let t, let run?, nil):
            (kind, value, tenant) = (.run, run, t)
        case (nil, nil, let w?):
            _ = try QueryAPI.spanFilter(w)
            (kind, value) = (.where, w)
        default:
            throw APIError(.badRequest, "expected exactly one of tenant, run or where (tenant may name a run's tenant)")
        }
        guard !value.isEmpty, value.utf8.count <= 4096, tenant.map({ !$0.isEmpty }) ?? true else {
            throw APIError(.badRequest, "\(kind.rawValue): expected 1 to 4096 bytes")
        }
        let hold = try api.store.holds.add(kind: kind, value: value, tenant: tenant, reason: reason, by: by)
        api.logger.notice(
            "legal hold placed", metadata: ["hold": "\(hold.id)", "kind": "\(kind.rawValue)", "by": "\(by)"])
        return JSONResponse.make(.created, hold)
    }
}
