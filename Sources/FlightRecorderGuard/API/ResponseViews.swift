import FlightRecorderGuardPolicy
import FlightRecorderOTLP
import Foundation

/// What the API answers: records shown with RFC 3339 times and snake_case keys, arguments
/// and results as JSON, never anything the redaction policy removed.
/// Timestamps as RFC 3339 with milliseconds.
func rfc3339(_ nanos: UInt64?) -> String? {
    guard let nanos else { return nil }
    let date = Date(timeIntervalSince1970: Double(nanos) / 1e9)
    return date.formatted(
        .iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted))
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
