import FlightRecorderCore
import FlightRecorderGuardPolicy
import FlightRecorderOTLP
import FlightRecorderRedaction
import Foundation
import Logging

/// Approvals: grants and denials with separation of duties.
extension GuardService {
    /// Grants or denies a ticket. The approver must be a configured actor of the ticket's
    /// tenant holding an approver role, and never the requester (separation of duties).
    public func resolve(
        ticket: String, approverID: String, grant: Bool, note: String?, parent: SpanContext?
    ) throws(GuardError) -> ApprovalRecord {
        guard let approver = policy.actors[approverID] else {
            throw GuardError(.forbidden, "approver \(approverID) is not a configured actor")
        }
        guard var a = try fetch({ () throws in try store.approval(ticket) }), a.tenant == approver.tenant else {
            throw GuardError(.notFound, "no approval ticket \(ticket)")
        }
        guard approverID != a.requester else {
            throw GuardError(
                .forbidden, "separation of duties: \(approverID) requested this call and cannot approve it")
        }
        guard !approver.roles.isDisjoint(with: policy.approverRoles) else {
            throw GuardError(
                .forbidden,
                "actor \(approverID) does not hold an approver role (\(policy.approverRoles.sorted().joined(separator: ", ")))"
            )
        }
        switch a.status {
        case .pending: break
        case .granted, .consumed:
            if grant && a.approver == approverID { return a }
            throw GuardError(.conflict, "ticket \(ticket) was already granted by \(a.approver ?? "?")")
        case .denied:
            if !grant && a.approver == approverID { return a }
            throw GuardError(.conflict, "ticket \(ticket) was already denied by \(a.approver ?? "?")")
        }
        let decided = now()
        let (context, parentSpan) = newContext(under: parent)
        a.status = grant ? .granted : .denied
        a.approver = approverID
        a.note = note.map { redactText($0, tenant: a.tenant) }
        a.decidedNanos = decided
        a.decisionTraceID = context.traceID.hex
        a.decisionSpanID = context.spanID.hex
        let record = a
        var attributes: [(String, GuardSpan.Value)] = [
            (GuardSpans.runID, .string(a.runID)), (GuardSpans.tenant, .string(a.tenant)),
            (GuardSpans.approvalTicket, .string(ticket)), (GuardSpans.approver, .string(approverID)),
            (GuardSpans.approvalDecision, .string(grant ? "granted" : "denied")),
            (GuardSpans.toolName, .string(a.tool)),
            (GuardSpans.toolTier, .string(a.tier)), (GuardSpans.policyRule, .string(a.rule)),
            (GuardSpans.actor, .string(approverID)),
        ]
        if let n = a.note { attributes.append(("approval.note", .string(n))) }
        emit([
            GuardSpan(
                context: context, parentSpanID: parentSpan,
                name: grant ? GuardSpans.approvalGranted : GuardSpans.approvalDenied,
                startNanos: decided, endNanos: now(), tenant: a.tenant, attributes: attributes,
                links: [SpanContext(traceHex: a.requestTraceID, spanHex: a.requestSpanID)].compactMap { $0 })
        ])
        // The decision and its span, in one transaction, before the approver is answered.
        try save { () throws in try store.put(record) }
        return a
    }

    public func approval(_ ticket: String, tenants: Set<String>?) throws(GuardError) -> ApprovalRecord {
        guard let a = try fetch({ () throws in try store.approval(ticket) }), tenants?.contains(a.tenant) ?? true else {
            throw GuardError(.notFound, "no approval ticket \(ticket)")
        }
        return a
    }

    public func approvals(status: ApprovalRecord.Status?, tenants: Set<String>?) throws(GuardError) -> [ApprovalRecord]
    {
        try fetch { () throws in try store.approvals(status: status, tenants: tenants) }
    }
}
