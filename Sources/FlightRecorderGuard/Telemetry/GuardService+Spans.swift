import FlightRecorderCore
import FlightRecorderGuardPolicy
import FlightRecorderOTLP
import FlightRecorderRedaction
import Foundation
import Logging

/// The spans every decision, approval and execution is recorded as (names in `GuardSpans`).
extension GuardService {
    func newContext(under parent: SpanContext?) -> (context: SpanContext, parent: SpanID?) {
        let (c, p) = GuardSpan.context(under: parent)
        return (c, p)
    }

    func commonAttributes(_ r: GuardRequest, tenant: String, tier: Tier?) -> [(String, GuardSpan.Value)] {
        var a: [(String, GuardSpan.Value)] = [
            (GuardSpans.runID, .string(r.runID)), (GuardSpans.tenant, .string(tenant)),
            (GuardSpans.actor, .string(r.actorID)),
            (GuardSpans.toolName, .string(r.tool)),
        ]
        if let tier { a.append((GuardSpans.toolTier, .string(tier.rawValue))) }
        if let id = r.toolCallID { a.append((GuardSpans.toolCallID, .string(id))) }
        if let key = r.idempotencyKey { a.append((GuardSpans.idempotencyKey, .string(key))) }
        let m = r.model
        if let v = m.requestModel { a.append((GuardSpans.requestModel, .string(v))) }
        if let v = m.responseModel { a.append((GuardSpans.responseModel, .string(v))) }
        if let v = m.promptVersion { a.append((GuardSpans.promptVersion, .string(v))) }
        if let v = m.agentVersion { a.append((GuardSpans.agentVersion, .string(v))) }
        return a
    }

    /// `arguments` is the call's arguments after redaction, computed once per request.
    func emitCheck(
        _ r: GuardRequest, tenant: String, tier: Tier?, decision d: Decision, started: UInt64, arguments: String,
        context: (context: SpanContext, parent: SpanID?)? = nil
    ) {
        let context = context ?? newContext(under: r.parent)
        var a = commonAttributes(r, tenant: tenant, tier: tier)
        a += [
            (GuardSpans.policyOutcome, .string(d.outcome.rawValue)), (GuardSpans.policyRule, .string(d.rule)),
            (GuardSpans.policyReason, .string(d.reason)), (GuardSpans.toolArguments, .string(arguments)),
        ]
        if let t = d.ticket { a.append((GuardSpans.approvalTicket, .string(t))) }
        if let p = r.model.prompt {
            a.append((GuardSpans.prompt, .string(redactText(p, tenant: tenant))))
        }
        emit([
            GuardSpan(
                context: context.context, parentSpanID: context.parent, name: GuardSpans.policyCheck,
                startNanos: started,
                endNanos: now(), tenant: tenant, attributes: a)
        ])
    }

    /// The reconciliation of an uncertain write: a span in the execution's trace that links to
    /// the execution, with the outcome the operator recorded (the findings read it).
    func emitReconciliation(_ e: ExecutionRecord, actorID: String) {
        let execution = SpanContext(traceHex: e.traceID, spanHex: e.spanID)
        let (context, _) = GuardSpan.context(under: execution)
        var a: [(String, GuardSpan.Value)] = [
            (GuardSpans.runID, .string(e.runID)), (GuardSpans.tenant, .string(e.tenant)),
            (GuardSpans.actor, .string(actorID)), (GuardSpans.toolName, .string(e.tool)),
            (GuardSpans.toolTier, .string(e.tier)), (GuardSpans.idempotencyKey, .string(e.idempotencyKey)),
            (GuardSpans.executionStatus, .string(e.status.rawValue)),
        ]
        if let id = e.operationID { a.append((GuardSpans.operationID, .string(id))) }
        let t = now()
        emit([
            GuardSpan(
                context: context, parentSpanID: nil, name: GuardSpans.toolReconciled, startNanos: t, endNanos: t,
                tenant: e.tenant, attributes: a, links: execution.map { [$0] } ?? [])
        ])
    }

    func emitExecution(
        _ r: GuardRequest, _ rec: ExecutionRecord, tool: Tool, tenant: String,
        context: (context: SpanContext, parent: SpanID?), started: UInt64, ended: UInt64, grant: SpanContext?,
        ticket: String?, arguments: String
    ) {
        var a = commonAttributes(r, tenant: tenant, tier: tool.tier)
        a += [
            (GuardSpans.operationName, .string("execute_tool")),
            (GuardSpans.executionStatus, .string(rec.status.rawValue)),
            (GuardSpans.toolArguments, .string(arguments)),
        ]
        if let id = rec.operationID { a.append((GuardSpans.operationID, .string(id))) }
        if let s = rec.backendStatus { a.append((GuardSpans.httpStatus, .int(Int64(s)))) }
        if let t = ticket { a.append((GuardSpans.approvalTicket, .string(t))) }
        emit([
            GuardSpan(
                context: context.context, parentSpanID: context.parent, name: GuardSpans.executeTool(tool.name),
                kind: .client,
                startNanos: started, endNanos: ended, tenant: tenant, attributes: a, links: grant.map { [$0] } ?? [],
                error: rec.status == .succeeded ? nil : "\(rec.status.rawValue): \(rec.reason)")
        ])
    }
}
