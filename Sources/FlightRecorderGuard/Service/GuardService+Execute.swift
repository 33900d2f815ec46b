import FlightRecorderCore
import FlightRecorderGuardPolicy
import FlightRecorderOTLP
import FlightRecorderRedaction
import Foundation
import Logging

/// Executing: the durable `executing` record, the backend call under its deadline, the outcome.
extension GuardService {
    public func execute(_ r: GuardRequest) async throws(GuardError) -> ExecuteAnswer {
        let started = now()
        guard let key = r.idempotencyKey, !key.isEmpty else {
            throw GuardError(.badRequest, "idempotency_key is required for execute")
        }
        let call = r.call
        guard let actor = policy.actors[r.actorID], let tool = policy.tools[r.tool] else {
            let d = engine.decide(call, state: RunState())
            emitCheck(
                r, tenant: ResourceFacts.defaultTenant, tier: nil, decision: d, started: started,
                arguments: shown(r, tenant: ResourceFacts.defaultTenant))
            let record = record(
                r, key: key, tenant: ResourceFacts.defaultTenant, tier: "", decision: d, status: .blocked)
            try flushSpans()
            return ExecuteAnswer(record, result: nil, replayed: false, violations: d.violations)
        }
        let tenant = actor.tenant
        let existing = try fetch { () throws in try store.execution(tenant: tenant, key: key) }
        if let e = existing {
            guard e.digest == call.digest, e.runID == r.runID, e.actor == r.actorID else {
                throw GuardError(
                    .conflict,
                    "idempotency_key \(key) was already used for a different call (run, actor, tool or arguments differ)"
                )
            }
            if e.status.isFinal { return ExecuteAnswer(e, result: Self.parse(e.result), replayed: true) }
            if e.status == .executing {
                throw GuardError(.conflict, "a call with idempotency_key \(key) is executing now", retryAfterSeconds: 1)
            }
        }
        let arguments = shown(r, tenant: tenant)
        var state = try load(tenant, r.runID)
        if let usage = r.usage { state.apply(usage) }
        var d = engine.decide(call, state: state)
        // A retry of a waiting or blocked key is the same step, not a new one.
        if existing == nil { state.steps += 1 }
        let check = newContext(under: r.parent)
        var approval: ApprovalRecord?
        if d.outcome == .approvalRequired, let ticket = d.ticket {
            approval = try approvalFor(ticket, r, tenant: tenant, decision: d, check: check, arguments: arguments)
            d = Self.applied(approval!, to: d)
        }
        var rec = record(r, key: key, tenant: tenant, tier: tool.tier.rawValue, decision: d, status: .blocked)
        rec.startedNanos = existing?.startedNanos ?? started
        switch d.outcome {
        case .blocked, .approvalRequired:
            rec.status = d.outcome == .blocked ? .blocked : .awaitingApproval
            emitCheck(
                r, tenant: tenant, tier: tool.tier, decision: d, started: started, arguments: arguments, context: check)
            try save { () throws in
                try store.put(rec)
                try store.put(state, tenant: tenant, run: r.runID)
            }
            return ExecuteAnswer(rec, result: nil, replayed: false, violations: d.violations)
        case .allowed:
            break
        }
        // Allowed: consume the grant (if any) and record the call as executing, durably,
        // before a byte goes to the backend.
        var grantLink: SpanContext?
        if var a = approval, a.status == .granted {
            a.status = .consumed
            a.consumedBy = key
            approval = a
            state.approvalsUsed[call.digest, default: 0] += 1
            grantLink = SpanContext(traceHex: a.decisionTraceID, spanHex: a.decisionSpanID)
        }
        state.calls[call.digest, default: 0] += 1
        rec.status = .executing
        let execContext = newContext(under: r.parent)
        rec.traceID = execContext.context.traceID.hex
        rec.spanID = execContext.context.spanID.hex
        emitCheck(
            r, tenant: tenant, tier: tool.tier, decision: d, started: started, arguments: arguments, context: check)
        try save { () throws in
            if let approval { try store.put(approval) }
            try store.put(rec)
            try store.put(state, tenant: tenant, run: r.runID)
        }

        let callStarted = now()
        let outcome = await backend.call(
            tool, arguments: r.arguments, idempotencyKey: key, traceparent: execContext.context.traceparent,
            runID: r.runID)
        let finished = now()
        var result: JSONValue?
        switch outcome {
        case .confirmed(let status, let body, let operationID):
            rec.status = .succeeded
            rec.backendStatus = status
            // The backend's identifier of the side effect, kept verbatim: reconciliation and
            // `flightrec why --operation-id` need the exact value.
            rec.operationID = operationID
            rec.reason = "the backend confirmed the call (\(status))"
            result = redact(body, tenant: tenant)
        case .failed(let status, let reason):
            rec.status = .failed
            rec.backendStatus = status
            rec.reason = reason
        case .timedOut(let reason):
            rec.status = .timedOut
            rec.reason = reason
        case .unknown(let status, let reason):
            rec.status = .unknown
            rec.backendStatus = status
            rec.reason = reason
        }
        rec.finishedNanos = finished
        rec.result = result.map(Self.text)
        // Run state may have moved while the backend answered: apply this call's facts to the
        // current state, not to the copy taken before the await.
        var now = try load(tenant, r.runID)
        if case .confirmed(_, let body, _) = outcome {
            Self.learn(from: body, tool: tool, arguments: r.arguments, into: &now)
        }
        emitExecution(
            r, rec, tool: tool, tenant: tenant, context: execContext, started: callStarted, ended: finished,
            grant: grantLink,
            ticket: d.ticket, arguments: arguments)
        try save { () throws in
            try store.put(rec)
            try store.put(now, tenant: tenant, run: r.runID)
        }
        if rec.status.isUncertain && tool.tier.isWrite {
            logger.warning(
                "uncertain write: reconcile it (GET /v1/uncertain)",
                metadata: ["tool": "\(tool.name)", "idempotency_key": "\(key)", "status": "\(rec.status.rawValue)"])
        }
        var answer = ExecuteAnswer(rec, result: result, replayed: false)
        answer.backendSeconds = Double(finished - callStarted) / 1e9
        return answer
    }

    /// A lookup's matches and the case facts a tool's result establishes.
    static func learn(from body: JSONValue, tool: Tool, arguments: JSONValue, into state: inout RunState) {
        if let lookup = tool.resolves, let name = arguments.value(at: lookup.argument)?.scalarText {
            let digest = RunState.entityDigest(name)
            let count: Int
            switch body.value(at: lookup.matches) {
            case .array(let a)?: count = a.count
            case .int(let n)?: count = Int(n)
            default: count = 0
            }
            if count > 1 {
                state.ambiguousEntities.insert(digest)
            } else if count == 1 {
                state.ambiguousEntities.remove(digest)
            }
        }
        for (key, path) in tool.recordsCaseState {
            if let v = body.value(at: path)?.scalarText { state.caseState[key] = v }
        }
    }
}

extension RunState {
    mutating func apply(_ usage: Usage) {
        tokens += max(0, usage.inputTokens) + max(0, usage.outputTokens)
        costUSD += max(0, usage.costUSD)
    }
}
