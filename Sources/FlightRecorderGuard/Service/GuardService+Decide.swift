import FlightRecorderCore
import FlightRecorderGuardPolicy
import FlightRecorderOTLP
import FlightRecorderRedaction
import Foundation
import Logging

/// Deciding: the policy answer for a call, and the approval it waits for.
extension GuardService {
    public func decide(_ r: GuardRequest) throws(GuardError) -> DecideAnswer {
        let started = now()
        let call = r.call
        guard let actor = policy.actors[r.actorID] else {
            let d = engine.decide(call, state: RunState())
            emitCheck(
                r, tenant: ResourceFacts.defaultTenant, tier: nil, decision: d, started: started,
                arguments: shown(r, tenant: ResourceFacts.defaultTenant))
            try flushSpans()
            return DecideAnswer(
                outcome: d.outcome, reason: d.reason, rule: d.rule, ticket: nil, approvalStatus: nil,
                violations: d.violations)
        }
        let tenant = actor.tenant
        let arguments = shown(r, tenant: tenant)
        var state = try load(tenant, r.runID)
        if let usage = r.usage {
            state.apply(usage)
            try save { () throws in try store.put(state, tenant: tenant, run: r.runID) }
        }
        var d = engine.decide(call, state: state)
        var approvalStatus: String?
        let check = newContext(under: r.parent)
        if d.outcome == .approvalRequired, let ticket = d.ticket {
            let approval = try approvalFor(ticket, r, tenant: tenant, decision: d, check: check, arguments: arguments)
            approvalStatus = approval.status.rawValue
            d = Self.applied(approval, to: d)
        }
        emitCheck(
            r, tenant: tenant, tier: policy.tools[r.tool]?.tier, decision: d, started: started, arguments: arguments,
            context: check)
        try flushSpans()
        return DecideAnswer(
            outcome: d.outcome, reason: d.reason, rule: d.rule, ticket: d.ticket, approvalStatus: approvalStatus,
            violations: d.violations)
    }

    func approvalFor(
        _ ticket: String, _ r: GuardRequest, tenant: String, decision: Decision,
        check: (context: SpanContext, parent: SpanID?),
        arguments: String
    ) throws(GuardError) -> ApprovalRecord {
        if let a = try fetch({ () throws in try store.approval(ticket) }) { return a }
        let now = now()
        let tier = policy.tools[r.tool]?.tier.rawValue ?? ""
        let requestContext = SpanContext(traceID: check.context.traceID, spanID: SpanContext.newSpanID())
        let a = ApprovalRecord(
            ticket: ticket, tenant: tenant, runID: r.runID, requester: r.actorID, tool: r.tool, tier: tier,
            digest: r.call.digest, arguments: arguments, rule: decision.rule,
            reason: decision.reason, status: .pending, approver: nil, note: nil, requestedNanos: now, decidedNanos: nil,
            requestTraceID: requestContext.traceID.hex, requestSpanID: requestContext.spanID.hex, decisionTraceID: nil,
            decisionSpanID: nil, consumedBy: nil)
        // A child of the policy check that asked for it; committed with the ticket.
        emit([
            GuardSpan(
                context: requestContext, parentSpanID: check.context.spanID, name: GuardSpans.approvalRequested,
                startNanos: now, endNanos: now + 1_000, tenant: tenant,
                attributes: [
                    (GuardSpans.runID, .string(r.runID)), (GuardSpans.tenant, .string(tenant)),
                    (GuardSpans.approvalTicket, .string(ticket)), (GuardSpans.actor, .string(r.actorID)),
                    (GuardSpans.toolName, .string(r.tool)), (GuardSpans.toolTier, .string(tier)),
                    (GuardSpans.policyRule, .string(decision.rule)),
                    (GuardSpans.policyReason, .string(decision.reason)),
                ])
        ])
        try save { () throws in try store.put(a) }
        logger.info(
            "approval requested", metadata: ["ticket": "\(ticket)", "tool": "\(r.tool)", "rule": "\(decision.rule)"])
        return a
    }

    /// What an approval's state does to an `approval_required` decision.
    static func applied(_ a: ApprovalRecord, to d: Decision) -> Decision {
        var d = d
        switch a.status {
        case .pending:
            d.reason += "; waiting for approval of \(a.ticket)"
        case .granted:
            d.outcome = .allowed
            d.reason = "approved by \(a.approver ?? "?") (\(d.rule))"
        case .denied:
            d.outcome = .blocked
            d.reason = "approval_denied: \(a.ticket) was denied by \(a.approver ?? "?")"
        case .consumed:
            d.outcome = .blocked
            d.reason = "approval \(a.ticket) was already used by another execution"
        }
        return d
    }
}
