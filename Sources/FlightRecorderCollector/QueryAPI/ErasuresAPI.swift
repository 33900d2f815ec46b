import FlightRecorderConfig
import FlightRecorderHTTP
import FlightRecorderIngest
import FlightRecorderOTLP
import FlightRecorderQuery
import FlightRecorderRedaction
public import FlightRecorderStorage
import Foundation
public import Hummingbird
import Logging

/// Erasure, admin only. `POST /api/v1/erasures` with `{"run": ID, "tenant"?: T}`,
/// `{"tenant": T}` or `{"subject": "KEY=VALUE", "tenant"?: T}`, and `"reason"`: resolves
/// what the scope covers (a subject: every run with a span whose stored value of `KEY` is
/// `VALUE`, so a pseudonymised key is matched on its pseudonym), refuses with 409 naming the
/// legal hold that covers any of it, and records a tombstone (`ErasureStore`) that hides it
/// from every answer before it returns 201 with the erasure. `GET /api/v1/erasures` lists
/// them; `GET /api/v1/erasures/{id}` shows one.
public struct ErasuresAPI: Sendable {
    public let api: QueryAPI
    /// Told which runs (or which tenant) an erasure hid, to forget what was derived from them.
    public let onErased: @Sendable (_ runs: [(tenant: String, run: String)], _ tenant: String?) -> Void

    public init(
        api: QueryAPI, onErased: @escaping @Sendable ([(tenant: String, run: String)], String?) -> Void = { _, _ in }
    ) {
        self.api = api
        self.onErased = onErased
    }

    public struct Request: Codable, Sendable {
        public var run: String?
        public var tenant: String?
        public var subject: String?
        public var reason: String?

        public init(run: String? = nil, tenant: String? = nil, subject: String? = nil, reason: String? = nil) {
            self.run = run
            self.tenant = tenant
            self.subject = subject
            self.reason = reason
        }
    }

    public struct ListBody: Codable, Sendable {
        public var erasures: [Erasure]
    }

    public func addRoutes(to router: Router<BasicRequestContext>) {
        router.post("/api/v1/erasures") { request, _ in
            await api.handle(request, roles: [.admin]) { p in try await erase(request, by: p.name) }
        }
        router.get("/api/v1/erasures") { request, _ in
            await api.handle(request, roles: [.admin]) { _ in
                JSONResponse.make(.ok, ListBody(erasures: api.store.erasures.all))
            }
        }
        router.get("/api/v1/erasures/:id") { request, context in
            await api.handle(request, roles: [.admin]) { _ in
                let id = QueryAPI.decoded(context.parameters.get("id"))
                guard let e = api.store.erasures.erasure(id) else { throw APIError(.notFound, "no erasure \(id)") }
                return JSONResponse.make(.ok, e)
            }
        }
    }

    /// What a scope covers, found before the tombstone is written.
    struct Resolved {
        var runs: [(tenant: String, run: String)] = []
        var traces: Set<Erasure.HiddenTrace> = []
        var spans = 0
        var segments: Set<Int64> = []
    }

    func erase(_ request: Hummingbird.Request, by: String) async throws -> Response {
        let body = try await BoundedBody.collect(request, limit: 64 << 10)
        let r: Request
        do {
            r = try JSONDecoder().decode(Request.self, from: Data(body.readableBytesView))
        } catch {
            throw APIError(.badRequest, "expected a JSON object with one of run, tenant or subject, and reason")
        }
        let reason = try QueryAPI.reason(r.reason)
        if let t = r.tenant, t.isEmpty || t.utf8.count > 4096 { throw APIError(.badRequest, "tenant: 1 to 4096 bytes") }
        let store = api.store
        var draft = Erasure(
            id: "", kind: .tenant, tenant: r.tenant, key: nil, valueDigest: nil, reason: reason, requestedBy: by,
            requestedAt: Int64(time(nil)), state: .hidden, runs: 0, traces: 0, spans: 0, segments: [],
            hiddenTraces: [], hiddenRuns: [])
        var resolved = Resolved()
        switch (r.run, r.subject) {
        case (let run?, nil):
            guard !run.isEmpty, run.utf8.count <= 4096 else { throw APIError(.badRequest, "run: 1 to 4096 bytes") }
            let scope: TenantScope = r.tenant.map { .only([$0]) } ?? .all
            let found = try await store.read { reader, _ in try reader.runs(run, scope: scope) }
            guard let first = found.first else { throw APIError(.notFound, "no run with this ID") }
            if found.count > 1 {
                throw APIError(
                    .conflict,
                    "the run ID exists in \(found.count) tenants (\(found.compactMap(\.tenant).joined(separator: ", "))); "
                        + "name the tenant")
            }
            let tenant = first.tenant ?? ResourceFacts.defaultTenant
            draft.kind = .run
            draft.tenant = tenant
            draft.valueDigest = Erasure.digest(tenant: tenant, run: run)
            try await resolve([(tenant, first.runID)], into: &resolved)
        case (nil, let subject?):
            guard let eq = subject.firstIndex(of: "="), eq != subject.startIndex,
                subject.utf8.count <= 4096
            else { throw APIError(.badRequest, "subject: expected KEY=VALUE, e.g. enduser.id=…") }
            let key = String(subject[..<eq])
            let value = String(subject[subject.index(after: eq)...])
            guard !value.isEmpty else { throw APIError(.badRequest, "subject: the value after = is empty") }
            // An identity key is stored as its pseudonym, so a value given as the agent sent it
            // (`enduser.id=alice@corp`) is matched on its pseudonym too; a value stored raw
            // (redaction off, or before the key was pseudonymised) still matches as given.
            var values = [value]
            if let redactor = api.policy.decoder.redaction?.redactor, redactor.policy.pseudonymKey != nil,
                redactor.policy.identityKeys.contains(key), !value.hasPrefix("hmac:")
            {
                values.append(redactor.pseudonym(value))
            }
            let scope: TenantScope = r.tenant.map { .only([$0]) } ?? .all
            var runs: [(String, String)] = []
            var seen: Set<[String]> = []
            for v in values {
                let hits = try await everyRun(
                    SpanFilter.compare(field: key, op: .eq, value: .string(v)), scope: scope, of: "the subject's runs")
                for hit in hits {
                    let ref = (hit.run.tenant ?? ResourceFacts.defaultTenant, hit.run.runID)
                    if seen.insert([ref.0, ref.1]).inserted { runs.append(ref) }
                }
            }
            guard !runs.isEmpty else { throw APIError(.notFound, "no stored span has this \(key)") }
            draft.kind = .subject
            draft.key = key
            draft.valueDigest = Erasure.digest("subject", key + "=" + values.last!)
            try await resolve(runs, into: &resolved)
        case (nil, nil):
            guard let tenant = r.tenant else {
                throw APIError(
                    .badRequest, "expected exactly one of run, tenant or subject (tenant may narrow a run or subject)")
            }
            draft.kind = .tenant
            draft.tenant = tenant
        default:
            throw APIError(
                .badRequest, "expected exactly one of run, tenant or subject (tenant may narrow a run or subject)")
        }
        if let hold = try await conflictingHold(draft, runs: resolved.runs) {
            throw APIError(
                .conflict, "legal hold \(hold.id) covers this data (\(hold.kind.rawValue) hold); nothing was erased")
        }
        draft.runs = resolved.runs.count
        draft.traces = resolved.traces.count
        draft.spans = resolved.spans
        draft.segments = resolved.segments.sorted()
        draft.hiddenTraces = resolved.traces.sorted { ($0.tenant, $0.trace) < ($1.tenant, $1.trace) }
        // A trace's spans count under its ID until a span names the run (an exemplar may name
        // one so): those IDs are hidden as runs too.
        draft.hiddenRuns =
            resolved.runs.map { Erasure.digest(tenant: $0.tenant, run: $0.run) }
            + resolved.traces.map { Erasure.digest(tenant: $0.tenant, run: $0.trace) }
        draft.runTenants = Set(resolved.runs.map(\.tenant)).sorted()
        if draft.kind == .tenant {
            let tenant = draft.tenant!
            let (segments, runs) = try await store.read { reader, _ in try reader.tenantExtent(tenant) }
            draft.segments = segments
            draft.runs = runs
        }
        let erasure = try store.recordErasure(draft)
        onErased(resolved.runs, erasure.kind == .tenant ? erasure.tenant : nil)
        api.logger.notice(
            "erasure recorded; its data is hidden",
            metadata: [
                "erasure": "\(erasure.id)", "kind": "\(erasure.kind.rawValue)", "runs": "\(erasure.runs)",
                "spans": "\(erasure.spans)", "by": "\(by)",
            ])
        return JSONResponse.make(.created, erasure)
    }

    /// Reads each run as the query API does, and notes its traces, spans and segments.
    func resolve(_ runs: [(tenant: String, run: String)], into resolved: inout Resolved) async throws {
        let store = api.store
        var start = 0
        while start < runs.count {
            let batch = Array(runs[start..<min(runs.count, start + 256)])
            start += batch.count
            let details = try await store.runs(batch)
            let extents = try await store.read { reader, _ in
                try batch.map { ref in
                    let traces = try reader.traces(ofRun: ref.run, tenant: ref.tenant)
                    return (traces, Set(try traces.flatMap { try reader.blocks(ofTrace: $0).map(\.segment) }))
                }
            }
            for (i, ref) in batch.enumerated() {
                resolved.runs.append(ref)
                var traces = Set(extents[i].0)
                if let d = details[i] {
                    resolved.spans += d.spans.count
                    for s in d.spans { traces.insert(s.traceID) }
                }
                for t in traces { resolved.traces.insert(.init(tenant: ref.tenant, trace: t.hex)) }
                resolved.segments.formUnion(extents[i].1)
            }
        }
    }

    /// Every run with a span `filter` matches, each run scanned if need be; 503 when they could
    /// not all be found (nothing is erased on a partial answer).
    func everyRun(_ filter: SpanFilter, scope: TenantScope, of what: String) async throws -> [SearchHit] {
        let store = api.store
        let result = try await store.search(
            narrow: filter.requiredEqualities(among: Set(store.configuration.indexedKeys.keys)), scope: scope,
            since: nil, until: nil, limit: 1_000_000, scanLimit: Int.max, filter: filter)
        guard result.complete else {
            throw APIError(
                .serviceUnavailable, "\(what) could not all be found; nothing was erased; retry later",
                retryAfterSeconds: 60)
        }
        return result.hits
    }

    /// The first legal hold in force that covers any of the erasure's data.
    func conflictingHold(_ e: Erasure, runs: [(tenant: String, run: String)]) async throws -> Hold? {
        let store = api.store
        let erasedTenant = e.kind == .tenant ? e.tenant : nil
        let runKeys = Set(runs.map { $0.tenant + "\u{1F}" + $0.run })
        let tenants = Set(runs.map(\.tenant))
        for hold in store.holds.all {
            switch hold.kind {
            case .tenant:
                if hold.value == erasedTenant || tenants.contains(hold.value) { return hold }
            case .run:
                if runs.contains(where: { $0.run == hold.value && (hold.tenant == nil || hold.tenant == $0.tenant) }) {
                    return hold
                }
                if let t = erasedTenant, hold.tenant == nil || hold.tenant == t {
                    let held = try await store.read { reader, _ in try reader.runs(hold.value, scope: .only([t])) }
                    if !held.isEmpty { return hold }
                }
            case .where:
                guard let filter = try? SpanFilter.parse(hold.value) else { continue }
                let hits = try await everyRun(
                    filter, scope: erasedTenant.map { .only([$0]) } ?? .only(tenants),
                    of: "the runs legal hold \(hold.id) covers")
                for hit in hits {
                    let t = hit.run.tenant ?? ResourceFacts.defaultTenant
                    if t == erasedTenant || runKeys.contains(t + "\u{1F}" + hit.run.runID) { return hold }
                }
            }
        }
        return nil
    }
}
