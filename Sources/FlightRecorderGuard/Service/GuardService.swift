public import FlightRecorderGuardPolicy
import FlightRecorderOTLP
public import FlightRecorderRedaction
import Foundation
public import Logging
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// The sidecar's core, behind the HTTP API:
///
///     request -> validate schema -> evaluate policy -> blocked | awaiting_approval
///             -> execute(idempotency key, timeout) -> confirmed result
///
/// An actor: decisions, approvals and run state change one request at a time. The backend
/// call is awaited outside that critical section; the `executing` record written before it
/// keeps a concurrent request with the same key from running the call again, and marks it
/// `unknown` if the sidecar dies mid-call.
///
/// The actor runs on a dedicated thread (`stateThread`), so its SQLite commits, which fsync,
/// never block a NIO event loop or the cooperative pool.
public actor GuardService {
    static let stateThread = MultiThreadedEventLoopGroup(numberOfThreads: 1).next()
    public nonisolated var unownedExecutor: UnownedSerialExecutor { Self.stateThread.executor.asUnownedSerialExecutor() }

    public let engine: PolicyEngine
    let store: GuardStore
    let backend: ToolBackend
    let exporter: SpanExporter
    let redactor: Redactor
    let logger: Logger

    public init(
        policy: GuardPolicy, dataDirectory: String, backend: ToolBackend, exporter: SpanExporter, redactor: Redactor,
        logger: Logger
    ) throws {
        self.engine = PolicyEngine(policy: policy)
        self.store = try GuardStore(directory: dataDirectory)
        self.backend = backend
        self.exporter = exporter
        self.redactor = redactor
        self.logger = logger
        let recovered = try store.recoverInFlight()
        if recovered > 0 {
            logger.warning(
                "executions were in flight when the sidecar stopped; marked unknown, see /v1/uncertain",
                metadata: ["count": "\(recovered)"])
        }
    }

    var policy: GuardPolicy { engine.policy }

    // MARK: decide

    public func decide(_ r: GuardRequest) throws(GuardError) -> DecideAnswer {
        let started = Self.now()
        let call = r.call
        guard let actor = policy.actors[r.actorID] else {
            let d = engine.decide(call, state: RunState())
            emitCheck(
                r, tenant: ResourceFacts.defaultTenant, tier: nil, decision: d, started: started,
                arguments: shown(r, tenant: ResourceFacts.defaultTenant))
            return DecideAnswer(
                outcome: d.outcome, reason: d.reason, rule: d.rule, ticket: nil, approvalStatus: nil, violations: d.violations)
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
        return DecideAnswer(
            outcome: d.outcome, reason: d.reason, rule: d.rule, ticket: d.ticket, approvalStatus: approvalStatus,
            violations: d.violations)
    }

    // MARK: execute

    public func execute(_ r: GuardRequest) async throws(GuardError) -> ExecuteAnswer {
        let started = Self.now()
        guard let key = r.idempotencyKey, !key.isEmpty else {
            throw GuardError(.badRequest, "idempotency_key is required for execute")
        }
        let call = r.call
        guard let actor = policy.actors[r.actorID], let tool = policy.tools[r.tool] else {
            let d = engine.decide(call, state: RunState())
            emitCheck(
                r, tenant: ResourceFacts.defaultTenant, tier: nil, decision: d, started: started,
                arguments: shown(r, tenant: ResourceFacts.defaultTenant))
            let record = record(r, key: key, tenant: ResourceFacts.defaultTenant, tier: "", decision: d, status: .blocked)
            return ExecuteAnswer(record, result: nil, replayed: false, violations: d.violations)
        }
        let tenant = actor.tenant
        let existing = try fetch { () throws in try store.execution(tenant: tenant, key: key) }
        if let e = existing {
            guard e.digest == call.digest, e.runID == r.runID, e.actor == r.actorID else {
                throw GuardError(
                    .conflict,
                    "idempotency_key \(key) was already used for a different call (run, actor, tool or arguments differ)")
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
            try save { () throws in
                try store.put(rec)
                try store.put(state, tenant: tenant, run: r.runID)
            }
            emitCheck(r, tenant: tenant, tier: tool.tier, decision: d, started: started, arguments: arguments, context: check)
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
        try save { () throws in
            if let approval { try store.put(approval) }
            try store.put(rec)
            try store.put(state, tenant: tenant, run: r.runID)
        }
        emitCheck(r, tenant: tenant, tier: tool.tier, decision: d, started: started, arguments: arguments, context: check)

        let callStarted = Self.now()
        let outcome = await backend.call(
            tool, arguments: r.arguments, idempotencyKey: key, traceparent: execContext.context.traceparent, runID: r.runID)
        let finished = Self.now()
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
        if case .confirmed(_, let body, _) = outcome { Self.learn(from: body, tool: tool, arguments: r.arguments, into: &now) }
        try save { () throws in
            try store.put(rec)
            try store.put(now, tenant: tenant, run: r.runID)
        }
        if rec.status.isUncertain && tool.tier.isWrite {
            logger.warning(
                "uncertain write: reconcile it (GET /v1/uncertain)",
                metadata: ["tool": "\(tool.name)", "idempotency_key": "\(key)", "status": "\(rec.status.rawValue)"])
        }
        emitExecution(
            r, rec, tool: tool, tenant: tenant, context: execContext, started: callStarted, ended: finished, grant: grantLink,
            ticket: d.ticket, arguments: arguments)
        var answer = ExecuteAnswer(rec, result: result, replayed: false)
        answer.backendSeconds = Double(finished - callStarted) / 1e9
        return answer
    }

    // MARK: approvals

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
            throw GuardError(.forbidden, "separation of duties: \(approverID) requested this call and cannot approve it")
        }
        guard !approver.roles.isDisjoint(with: policy.approverRoles) else {
            throw GuardError(
                .forbidden, "actor \(approverID) does not hold an approver role (\(policy.approverRoles.sorted().joined(separator: ", ")))")
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
        let decided = Self.now()
        let (context, parentSpan) = newContext(under: parent)
        a.status = grant ? .granted : .denied
        a.approver = approverID
        a.note = note.map { redactText($0, tenant: a.tenant) }
        a.decidedNanos = decided
        a.decisionTraceID = context.traceID.hex
        a.decisionSpanID = context.spanID.hex
        let record = a
        try save { () throws in try store.put(record) }
        var attributes: [(String, GuardSpan.Value)] = [
            (GuardSpans.runID, .string(a.runID)), (GuardSpans.tenant, .string(a.tenant)),
            (GuardSpans.approvalTicket, .string(ticket)), (GuardSpans.approver, .string(approverID)),
            (GuardSpans.approvalDecision, .string(grant ? "granted" : "denied")), (GuardSpans.toolName, .string(a.tool)),
            (GuardSpans.toolTier, .string(a.tier)), (GuardSpans.policyRule, .string(a.rule)),
            (GuardSpans.actor, .string(approverID)),
        ]
        if let n = a.note { attributes.append(("approval.note", .string(n))) }
        exporter.emit([
            GuardSpan(
                context: context, parentSpanID: parentSpan, name: grant ? GuardSpans.approvalGranted : GuardSpans.approvalDenied,
                startNanos: decided, endNanos: Self.now(), tenant: a.tenant, attributes: attributes,
                links: [SpanContext(traceHex: a.requestTraceID, spanHex: a.requestSpanID)].compactMap { $0 })
        ])
        return a
    }

    public func approval(_ ticket: String, tenants: Set<String>?) throws(GuardError) -> ApprovalRecord {
        guard let a = try fetch({ () throws in try store.approval(ticket) }), tenants?.contains(a.tenant) ?? true else {
            throw GuardError(.notFound, "no approval ticket \(ticket)")
        }
        return a
    }

    public func approvals(status: ApprovalRecord.Status?, tenants: Set<String>?) throws(GuardError) -> [ApprovalRecord] {
        try fetch { () throws in try store.approvals(status: status, tenants: tenants) }
    }

    // MARK: executions

    public func execution(key: String, tenant: String) throws(GuardError) -> ExecuteAnswer {
        guard let e = try fetch({ () throws in try store.execution(tenant: tenant, key: key) }) else {
            throw GuardError(.notFound, "no execution with idempotency_key \(key)")
        }
        return ExecuteAnswer(e, result: Self.parse(e.result), replayed: true)
    }

    public func uncertain(tenants: Set<String>?) throws(GuardError) -> [ExecutionRecord] {
        try fetch { () throws in try store.uncertain(tenants: tenants) }
    }

    /// Records the real outcome of an uncertain write, found out of band by an operator with
    /// an approver role. It leaves `/v1/uncertain`; the key keeps answering with this outcome.
    public func reconcile(
        key: String, actorID: String, succeeded: Bool, operationID: String?, note: String?
    ) throws(GuardError) -> ExecuteAnswer {
        guard let actor = policy.actors[actorID], !actor.roles.isDisjoint(with: policy.approverRoles) else {
            throw GuardError(.forbidden, "reconciling needs a configured actor with an approver role")
        }
        guard var e = try fetch({ () throws in try store.execution(tenant: actor.tenant, key: key) }) else {
            throw GuardError(.notFound, "no execution with idempotency_key \(key)")
        }
        guard e.status.isUncertain else {
            throw GuardError(.conflict, "execution \(key) is \(e.status.rawValue), not uncertain")
        }
        e.status = succeeded ? .succeeded : .failed
        if let operationID { e.operationID = operationID }
        e.reconciledBy = actorID
        e.reason = "reconciled by \(actorID)" + (note.map { ": " + redactText($0, tenant: actor.tenant) } ?? "")
        let record = e
        try save { () throws in try store.put(record) }
        return ExecuteAnswer(e, result: Self.parse(e.result), replayed: true)
    }

    public func runState(tenant: String, run: String) throws(GuardError) -> RunState { try load(tenant, run) }

    /// Span export and redaction counters (never values), for monitoring the sidecar.
    public struct Stats: Sendable, Encodable {
        public var spansExported: Int
        public var spansDropped: Int
        public var spansQueued: Int
        public var exportFailures: Int
        public var redactions: [String: Int]

        enum CodingKeys: String, CodingKey {
            case spansExported = "spans_exported"
            case spansDropped = "spans_dropped"
            case spansQueued = "spans_queued"
            case exportFailures = "export_failures"
            case redactions
        }
    }

    public func stats() -> Stats {
        let c = exporter.counters
        return Stats(
            spansExported: c.exported, spansDropped: c.dropped, spansQueued: c.queued, exportFailures: c.failedAttempts,
            redactions: redactor.ruleCounts)
    }

    // MARK: helpers

    /// Free text (a prompt, an approver's note) through the detectors, hits counted.
    func redactText(_ text: String, tenant: String) -> String {
        var hits = Hits()
        let out = redactor.redactText(text, set: ruleSet(tenant), hits: &hits)
        redactor.record(hits)
        return out
    }

    func ruleSet(_ tenant: String) -> Int {
        redactor.ruleSet { key in
            key == "service.name" ? GuardSpanEncoder.serviceName : (key == GuardSpans.tenant ? tenant : nil)
        }
    }

    /// Every string in a tool result (and every number a key rule names) goes through the
    /// collector's redaction engine under its dotted JSON path, e.g. `user.recovery_code`.
    func redact(_ value: JSONValue, tenant: String) -> JSONValue {
        var hits = Hits()
        let set = ruleSet(tenant)
        func walk(_ v: JSONValue, _ path: String) -> JSONValue? {
            switch v {
            case .object(let o):
                var out: [String: JSONValue] = [:]
                for (k, child) in o {
                    if let r = walk(child, path.isEmpty ? k : path + "." + k) { out[k] = r }
                }
                return .object(out)
            case .array(let a): return .array(a.compactMap { walk($0, path) })
            case .string(let s): return redactor.redactValue(s, key: path, set: set, hits: &hits).map(JSONValue.string)
            case .int, .uint, .double:
                let text = v.scalarText ?? ""
                guard let r = redactor.redactValue(text, key: path, set: set, hits: &hits) else { return nil }
                return r == text ? v : .string(r)
            case .null, .bool: return v
            }
        }
        let out = walk(value, "") ?? .null
        redactor.record(hits)
        return out
    }

    /// The call's arguments after redaction, as JSON text: what spans and approval records
    /// show. Computed once per request, so each redaction hit is counted once.
    func shown(_ r: GuardRequest, tenant: String) -> String { Self.text(redact(r.arguments, tenant: tenant)) }

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
            if count > 1 { state.ambiguousEntities.insert(digest) } else if count == 1 { state.ambiguousEntities.remove(digest) }
        }
        for (key, path) in tool.recordsCaseState {
            if let v = body.value(at: path)?.scalarText { state.caseState[key] = v }
        }
    }

    func approvalFor(
        _ ticket: String, _ r: GuardRequest, tenant: String, decision: Decision, check: (context: SpanContext, parent: SpanID?),
        arguments: String
    ) throws(GuardError) -> ApprovalRecord {
        if let a = try fetch({ () throws in try store.approval(ticket) }) { return a }
        let now = Self.now()
        let tier = policy.tools[r.tool]?.tier.rawValue ?? ""
        let requestContext = SpanContext(traceID: check.context.traceID, spanID: SpanContext.newSpanID())
        let a = ApprovalRecord(
            ticket: ticket, tenant: tenant, runID: r.runID, requester: r.actorID, tool: r.tool, tier: tier,
            digest: r.call.digest, arguments: arguments, rule: decision.rule,
            reason: decision.reason, status: .pending, approver: nil, note: nil, requestedNanos: now, decidedNanos: nil,
            requestTraceID: requestContext.traceID.hex, requestSpanID: requestContext.spanID.hex, decisionTraceID: nil,
            decisionSpanID: nil, consumedBy: nil)
        try save { () throws in try store.put(a) }
        // A child of the policy check that asked for it.
        exporter.emit([
            GuardSpan(
                context: requestContext, parentSpanID: check.context.spanID, name: GuardSpans.approvalRequested,
                startNanos: now, endNanos: now + 1_000, tenant: tenant,
                attributes: [
                    (GuardSpans.runID, .string(r.runID)), (GuardSpans.tenant, .string(tenant)),
                    (GuardSpans.approvalTicket, .string(ticket)), (GuardSpans.actor, .string(r.actorID)),
                    (GuardSpans.toolName, .string(r.tool)), (GuardSpans.toolTier, .string(tier)),
                    (GuardSpans.policyRule, .string(decision.rule)), (GuardSpans.policyReason, .string(decision.reason)),
                ])
        ])
        logger.info("approval requested", metadata: ["ticket": "\(ticket)", "tool": "\(r.tool)", "rule": "\(decision.rule)"])
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

    func record(
        _ r: GuardRequest, key: String, tenant: String, tier: String, decision d: Decision, status: ExecutionRecord.Status
    ) -> ExecutionRecord {
        ExecutionRecord(
            tenant: tenant, idempotencyKey: key, runID: r.runID, actor: r.actorID, tool: r.tool, tier: tier,
            digest: r.call.digest, status: status, reason: d.reason, rule: d.rule, ticket: d.ticket, operationID: nil,
            backendStatus: nil, result: nil, startedNanos: Self.now(), finishedNanos: nil, traceID: nil, spanID: nil,
            reconciledBy: nil)
    }

    func load(_ tenant: String, _ run: String) throws(GuardError) -> RunState {
        try fetch { () throws in try store.runState(tenant: tenant, run: run) }
    }

    /// A durable write; a failure is a 503 (the answer it would back is never sent).
    func save(_ body: () throws -> Void) throws(GuardError) {
        do {
            try store.transaction(body)
        } catch {
            logger.error("cannot write the sidecar store", metadata: ["error": "\(error)"])
            throw GuardError(.unavailable, "the sidecar cannot write its store; nothing was executed", retryAfterSeconds: 1)
        }
    }

    func fetch<T>(_ body: () throws -> T) throws(GuardError) -> T {
        do {
            return try body()
        } catch {
            logger.error("cannot read the sidecar store", metadata: ["error": "\(error)"])
            throw GuardError(.unavailable, "the sidecar cannot read its store", retryAfterSeconds: 1)
        }
    }

    func newContext(under parent: SpanContext?) -> (context: SpanContext, parent: SpanID?) {
        let (c, p) = GuardSpan.context(under: parent)
        return (c, p)
    }

    // MARK: spans

    func commonAttributes(_ r: GuardRequest, tenant: String, tier: Tier?) -> [(String, GuardSpan.Value)] {
        var a: [(String, GuardSpan.Value)] = [
            (GuardSpans.runID, .string(r.runID)), (GuardSpans.tenant, .string(tenant)), (GuardSpans.actor, .string(r.actorID)),
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
        exporter.emit([
            GuardSpan(
                context: context.context, parentSpanID: context.parent, name: GuardSpans.policyCheck, startNanos: started,
                endNanos: Self.now(), tenant: tenant, attributes: a)
        ])
    }

    func emitExecution(
        _ r: GuardRequest, _ rec: ExecutionRecord, tool: Tool, tenant: String,
        context: (context: SpanContext, parent: SpanID?), started: UInt64, ended: UInt64, grant: SpanContext?,
        ticket: String?, arguments: String
    ) {
        var a = commonAttributes(r, tenant: tenant, tier: tool.tier)
        a += [
            (GuardSpans.operationName, .string("execute_tool")), (GuardSpans.executionStatus, .string(rec.status.rawValue)),
            (GuardSpans.toolArguments, .string(arguments)),
        ]
        if let id = rec.operationID { a.append((GuardSpans.operationID, .string(id))) }
        if let s = rec.backendStatus { a.append((GuardSpans.httpStatus, .int(Int64(s)))) }
        if let t = ticket { a.append((GuardSpans.approvalTicket, .string(t))) }
        exporter.emit([
            GuardSpan(
                context: context.context, parentSpanID: context.parent, name: GuardSpans.executeTool(tool.name), kind: .client,
                startNanos: started, endNanos: ended, tenant: tenant, attributes: a, links: grant.map { [$0] } ?? [],
                error: rec.status == .succeeded ? nil : "\(rec.status.rawValue): \(rec.reason)")
        ])
    }

    static func text(_ v: JSONValue) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(v)).map { String(decoding: $0, as: UTF8.self) } ?? "null"
    }

    static func parse(_ text: String?) -> JSONValue? {
        text.flatMap { try? JSONValue.parse(Data($0.utf8)) }
    }

    /// Wall-clock nanoseconds, as OTLP timestamps are.
    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

extension RunState {
    mutating func apply(_ usage: Usage) {
        tokens += max(0, usage.inputTokens) + max(0, usage.outputTokens)
        costUSD += max(0, usage.costUSD)
    }
}
