import FlightRecorderCore
public import FlightRecorderOTLP
import Foundation

/// The direct answer to "why did this step happen?": one field per question an on-call
/// engineer asks after a wrong write (who proposed it, which lookup resolved the target, what
/// context fed it, which policy decision allowed it, who approved it, what executed), each
/// naming the span it comes from. Absent fields are omitted: the run recorded no such step.
///
/// **Which steps fed the target.** Only causal predecessors qualify (`causalPredecessors`:
/// ancestors, earlier siblings and their completed subtrees, and linked spans), and of those
/// only the ones data flows from, never timing alone:
/// 1. the target's parent chain, and every span a fed step links to (an approval's grant links
///    to its request, the request is a child of the policy check);
/// 2. a step sharing an identifier with a fed step: the tool call ID, the idempotency key or
///    the approval ticket;
/// 3. a policy check or approval of the *same tool* that shares an argument value with the
///    target (the same entity);
/// 4. a lookup (a read-tier tool) whose arguments or result share a value with the target's
///    arguments: it resolved the entity the target acts on;
/// 5. a memory or retrieval step whose values appear in the target's arguments or in the
///    proposing model call's input, or which ran inside that model call, or directly before it
///    under the same parent with no other model call between (the context window it filled).
///
/// Values are compared whole (a JSON argument's scalar leaves, at least 3 characters); masked
/// values (`[REDACTED:…]`) never match. So an approval of another tool, a lookup of another
/// entity, or a policy check of another call is left out even when it happened just before.
/// The model call that proposed the step is the one whose output names the target's tool call
/// ID, else a model call the target runs inside, else the last model call that completed
/// before the first fed decision or execution of this call began, among its causal predecessors.
public struct IncidentCard: Sendable, Codable, Equatable {
    public struct ProposedBy: Sendable, Codable, Equatable {
        public var spanId: String
        public var name: String
        public var model: String?
        public var promptVersion: String?
        public var agentVersion: String?
        /// How it was chosen: `tool_call_id`, `parent` or `preceding`.
        public var basis: String

        enum CodingKeys: String, CodingKey {
            case spanId = "span_id", name, model, promptVersion = "prompt_version", agentVersion = "agent_version",
                basis
        }
    }

    public struct EntityResolution: Sendable, Codable, Equatable {
        public var spanId: String
        public var tool: String
        /// As stored (after redaction).
        public var arguments: String?
        public var matchCount: Int?
        /// `unique`, `ambiguous` (matched more than one) or `none` (matched nothing); absent
        /// when the span does not say how many it matched.
        public var resolution: String?
        /// The values it shares with the target's arguments.
        public var sharedValues: [String]

        enum CodingKeys: String, CodingKey {
            case spanId = "span_id", tool, arguments, matchCount = "match_count", resolution,
                sharedValues = "shared_values"
        }
    }

    public struct ContextStep: Sendable, Codable, Equatable {
        public var spanId: String
        public var name: String
        /// `memory` or `retrieval`.
        public var kind: String
        public var source: String?
        /// How old the recalled data was when the step ran, where attributes say.
        public var ageSeconds: Int64?
        /// Why it counts as feeding the step: `shared_value`, `model_input`, `inside_model_call`
        /// or `before_model_call`.
        public var basis: String

        enum CodingKeys: String, CodingKey {
            case spanId = "span_id", name, kind, source, ageSeconds = "age_seconds", basis
        }
    }

    public struct Policy: Sendable, Codable, Equatable {
        public var spanId: String
        public var outcome: String
        public var rule: String?
        public var reason: String?
        public var tool: String?
        /// An earlier decision on the same call that required approval (span ID).
        public var approvalRequiredBy: String?

        enum CodingKeys: String, CodingKey {
            case spanId = "span_id", outcome, rule, reason, tool, approvalRequiredBy = "approval_required_by"
        }
    }

    public struct Approval: Sendable, Codable, Equatable {
        /// The decision's span (granted or denied), else the request's.
        public var spanId: String
        public var ticket: String?
        /// As stored: a pseudonym (`hmac:…`) under the default redaction.
        public var approver: String?
        /// `granted`, `denied` or `pending`.
        public var decision: String
        public var requestSpanId: String?
        public var requestedAt: String?
        /// When the approver answered (granted or denied).
        public var decidedAt: String?
        /// `decidedAt` when the answer was a grant.
        public var grantedAt: String?

        enum CodingKeys: String, CodingKey {
            case spanId = "span_id", ticket, approver, decision, requestSpanId = "request_span_id",
                requestedAt = "requested_at", decidedAt = "decided_at", grantedAt = "granted_at"
        }
    }

    public struct Execution: Sendable, Codable, Equatable {
        public var spanId: String
        public var tool: String
        /// `succeeded`, `failed`, `timed_out`, `unknown` or `not_run`.
        public var status: String
        public var operationId: String?
        public var idempotencyKey: String?
        /// Earlier executions of the same call (same idempotency key, or the same arguments).
        public var retries: Int
        public var attemptSpanIds: [String]

        enum CodingKeys: String, CodingKey {
            case spanId = "span_id", tool, status, operationId = "operation_id", idempotencyKey = "idempotency_key",
                retries, attemptSpanIds = "attempt_span_ids"
        }
    }

    public var target: String
    public var proposedBy: ProposedBy?
    public var entityResolution: EntityResolution?
    public var context: [ContextStep]
    public var policy: Policy?
    public var approval: Approval?
    public var execution: Execution?
    /// The run's findings that name a span of this card.
    public var findings: [Finding]
    /// Every span that fed the target, in time order (a page highlights them).
    public var fedBy: [String]

    enum CodingKeys: String, CodingKey {
        case target, proposedBy = "proposed_by", entityResolution = "entity_resolution", context, policy, approval,
            execution, findings, fedBy = "fed_by"
    }
}

extension RunGraph {
    static let matchCountKeys = [
        "lookup.match_count", "entity.match_count", "gen_ai.tool.result.count", "db.response.returned_rows",
    ]
    static let resultKeys = ["gen_ai.tool.call.result", "tool.result"]
    static let sourceKeys = [
        "gen_ai.data_source.id", "memory.source", "retrieval.source", "db.system.name", "db.system",
    ]
    static let ageKeys = ["memory.age_seconds", "retrieval.age_seconds", "memory.age", "context.age_seconds"]
    static let writtenAtKeys = ["memory.updated_at", "memory.created_at", "retrieval.document.updated_at"]

    /// The incident card of step `target`.
    public func answer(
        for target: Int, rules: FindingRules = .default, versionKeys: [String] = MetricRules.defaultVersionKeys
    )
        -> IncidentCard
    {
        let before = causalPredecessors(of: target)
        let tool = toolNames[target]
        let targetValues = values(of: target, keys: [AgentKeys.toolArguments])

        // 1-3: the fed set, grown from the target.
        var fed: Set<Int> = [target]
        var queue = [target]
        for a in ancestry(of: target) where a != target && fed.insert(a).inserted { queue.append(a) }
        func identifiers(_ i: Int) -> [String] {
            [AgentKeys.toolCallID, AgentKeys.idempotencyKey, AgentKeys.approvalTicket].compactMap { k in
                attr(i, k).map { k + "\u{1F}" + $0 }
            }
        }
        // Who carries which identifier, among the predecessors: looked up as the fed set grows.
        var carriers: [String: [Int]] = [:]
        for c in before { for id in identifiers(c) { carriers[id, default: []].append(c) } }
        var ids: Set<String> = []
        while let j = queue.popLast() {
            for t in linksTo[j] where before.contains(t) && fed.insert(t).inserted { queue.append(t) }
            if let p = parent[j], before.contains(p), isDecision(p), fed.insert(p).inserted { queue.append(p) }
            for id in identifiers(j) where ids.insert(id).inserted {
                for c in carriers[id] ?? [] where fed.insert(c).inserted { queue.append(c) }
            }
        }
        for c in before where !fed.contains(c) && isDecision(c) && tool != nil && toolNames[c] == tool {
            if !values(of: c, keys: [AgentKeys.toolArguments]).isDisjoint(with: targetValues) { fed.insert(c) }
        }

        // 4: the lookup that resolved the entity.
        var entity: IncidentCard.EntityResolution?
        let lookups = before.filter { isLookup($0) }.sorted { (end[$0], $0) > (end[$1], $1) }
        for l in lookups {
            let shared = values(of: l, keys: [AgentKeys.toolArguments] + Self.resultKeys).intersection(targetValues)
            guard !shared.isEmpty else { continue }
            fed.insert(l)
            let count = matchCount(l)
            entity = .init(
                spanId: hex(l), tool: toolName(l), arguments: attr(l, AgentKeys.toolArguments), matchCount: count,
                resolution: count.map { $0 > 1 ? "ambiguous" : $0 == 1 ? "unique" : "none" },
                sharedValues: shared.sorted())
            break
        }

        // The model call that proposed it.
        let proposer = proposingModelCall(target, fed: fed, before: before)
        var proposedBy: IncidentCard.ProposedBy?
        if let (m, basis) = proposer {
            fed.insert(m)
            proposedBy = .init(
                spanId: hex(m), name: spans[m].name,
                model: attr(m, AgentKeys.responseModel) ?? attr(m, AgentKeys.requestModel),
                promptVersion: attr(m, AgentKeys.promptVersion),
                agentVersion: agentVersion(m, versionKeys: versionKeys),
                basis: basis)
        }

        // 5: memory and retrieval.
        var context: [IncidentCard.ContextStep] = []
        let modelInput = proposer.map { values(of: $0.0, keys: [AgentKeys.inputMessages, AgentKeys.prompt]) } ?? []
        let modelText = proposer.map { m in
            [AgentKeys.inputMessages, AgentKeys.prompt].compactMap { attr(m.0, $0) }.joined(separator: "\n")
        }
        let immediate = proposer.flatMap { m in
            earlierSiblings(of: m.0).prefix { !isModelCall($0) }.first { contextKind($0) != nil }
        }
        for c in before.sorted(by: { (start[$0], $0) < (start[$1], $1) }) {
            guard let kind = contextKind(c) else { continue }
            let own = values(of: c, keys: nil)
            var basis: String?
            if !own.isDisjoint(with: targetValues) {
                basis = "shared_value"
            } else if !own.isDisjoint(with: modelInput) || own.contains(where: { v in modelText?.contains(v) ?? false })
            {
                basis = "model_input"
            } else if let m = proposer?.0, ancestry(of: c).contains(m) {
                basis = "inside_model_call"
            } else if c == immediate {
                basis = "before_model_call"
            }
            guard let basis else { continue }
            fed.insert(c)
            context.append(
                .init(
                    spanId: hex(c), name: spans[c].name, kind: kind,
                    source: Self.sourceKeys.lazy.compactMap { self.attr(c, $0) }.first,
                    ageSeconds: age(c), basis: basis))
        }

        // Policy, approval and execution.
        let decisions = fed.filter { policyOutcomes[$0] != nil }
            .sorted { (start[$0], $0) < (start[$1], $1) }
        var policy: IncidentCard.Policy?
        if let d = decisions.last {
            let required = decisions.last { policyOutcomes[$0] == "approval_required" }
            policy = .init(
                spanId: hex(d), outcome: policyOutcomes[d] ?? "", rule: attr(d, AgentKeys.policyRule),
                reason: attr(d, "policy.reason"), tool: toolNames[d],
                approvalRequiredBy: required.flatMap { $0 == d ? nil : hex($0) })
        }
        let approval = approvalFacts(fed: fed, decisions: decisions)
        let execution = executionFacts(target, fed: &fed)

        let fedIDs = Set(fed.map(hex))
        let findings = findings(rules: rules).filter { !fedIDs.isDisjoint(with: $0.spanIds) }
        return IncidentCard(
            target: hex(target), proposedBy: proposedBy, entityResolution: entity, context: context, policy: policy,
            approval: approval, execution: execution, findings: findings,
            fedBy: fed.sorted { (start[$0], $0) < (start[$1], $1) }.map(hex))
    }

    func hex(_ i: Int) -> String { spans[i].spanID.hex }

    func isDecision(_ i: Int) -> Bool {
        policyOutcomes[i] != nil || spans[i].name.hasPrefix("approval.")
            || approvalDecisions[i] != nil
    }

    /// A read-tier tool execution, or one whose name says it looks something up.
    func isLookup(_ i: Int) -> Bool {
        guard isExecution(i) else { return false }
        if let tier = attr(i, AgentKeys.toolTier) { return tier == "read" }
        let name = toolName(i).lowercased()
        return ["lookup", "search", "find", "resolve", "get_", "list_"].contains { name.contains($0) }
    }

    /// `memory` or `retrieval` for a step that recalls context, nil otherwise.
    func contextKind(_ i: Int) -> String? {
        let op = attr(i, AgentKeys.operationName)?.lowercased() ?? ""
        let name = spans[i].name.lowercased()
        if op.contains("memory") || name.hasPrefix("memory") || name.contains(" memory")
            || spans[i].attributes.contains(where: { $0.key.hasPrefix("memory.") })
        {
            return "memory"
        }
        if op == "retrieval" || name.hasPrefix("retrieval") || name.hasPrefix("retrieve")
            || attr(i, "gen_ai.data_source.id") != nil
        {
            return "retrieval"
        }
        return nil
    }

    /// The values a step carries, for data-flow matching: the scalar leaves of JSON values (or
    /// the whole string), at least 3 characters, never a masked value. `keys` nil: every
    /// attribute except the run's identity and span kinds.
    func values(of i: Int, keys: [String]?) -> Set<String> {
        var out: Set<String> = []
        func add(_ s: String) {
            let t = s.trimmingCharacters(in: .whitespaces)
            guard t.count >= 3, !t.hasPrefix("[REDACTED"), t != "true", t != "false", t != "null" else { return }
            out.insert(t)
        }
        for a in spans[i].attributes {
            if let keys {
                guard keys.contains(a.key) else { continue }
            } else if Self.ignoredValueKeys.contains(a.key) {
                continue
            }
            let text = a.value.scalarString ?? a.value.displayString
            if let first = text.first, first == "{" || first == "[", let json = try? JSONValue.parse(Data(text.utf8)) {
                json.forEachLeaf(add)
            } else {
                add(text)
            }
        }
        return out
    }

    static let ignoredValueKeys: Set<String> = [
        "agent.run.id", "tenant.id", AgentKeys.operationName, AgentKeys.toolTier, AgentKeys.policyOutcome,
        "gen_ai.system", "gen_ai.provider.name", RunGraph.executionStatusKey,
    ]

    func matchCount(_ i: Int) -> Int? {
        for k in Self.matchCountKeys { if let v = attr(i, k), let n = Int(v) { return n } }
        for k in Self.resultKeys {
            guard let text = attr(i, k), let json = try? JSONValue.parse(Data(text.utf8)) else { continue }
            if case .array(let items) = json { return items.count }
            if case .object(let members) = json {
                for (name, v) in members where ["matches", "results", "candidates", "items"].contains(name) {
                    if case .array(let items) = v { return items.count }
                }
            }
        }
        return nil
    }

    func age(_ i: Int) -> Int64? {
        for k in Self.ageKeys { if let v = attr(i, k), let d = Double(v), d.isFinite { return Int64(d) } }
        for k in Self.writtenAtKeys {
            guard let v = attr(i, k), let t = TimeBound.parse(v), t > 0, t <= start[i] else { continue }
            return (start[i] - t) / 1_000_000_000
        }
        return nil
    }

    func agentVersion(_ i: Int, versionKeys: [String]) -> String? {
        let root = ancestry(of: i).first ?? i
        return spans[i].attributes.firstScalar(of: versionKeys) ?? spans[root].attributes.firstScalar(of: versionKeys)
            ?? spans[i].resource.attributes.firstScalar(of: versionKeys + ["service.version"])
    }

    func proposingModelCall(_ target: Int, fed: Set<Int>, before: Set<Int>) -> (Int, String)? {
        let models = before.filter(isModelCall)
        if let call = attr(target, AgentKeys.toolCallID) {
            let named = models.filter { m in
                ["gen_ai.output.messages", "gen_ai.completion", "gen_ai.response.tool_calls"].contains {
                    attr(m, $0)?.contains(call) ?? false
                }
            }
            if let m = named.max(by: { (end[$0], $0) < (end[$1], $1) }) { return (m, "tool_call_id") }
        }
        let above = ancestry(of: target).dropLast()
        if let m = above.last(where: isModelCall) { return (m, "parent") }
        // The first fed step of this call: its earliest decision or execution, not above it.
        let aboveSet = Set(above)
        let anchor =
            fed.filter { $0 == target || ((isDecision($0) || isExecution($0)) && !aboveSet.contains($0)) }
            .min { (start[$0], $0) < (start[$1], $1) } ?? target
        let candidates = (anchor == target ? before : causalPredecessors(of: anchor)).filter(isModelCall)
            .filter { end[$0] <= start[anchor] }
        return candidates.max { (end[$0], $0) < (end[$1], $1) }.map { ($0, "preceding") }
    }

    func approvalFacts(fed: Set<Int>, decisions: [Int]) -> IncidentCard.Approval? {
        let answers = fed.filter {
            spans[$0].name == "approval.granted" || spans[$0].name == "approval.denied"
                || approvalDecisions[$0] != nil
        }.sorted { (start[$0], $0) < (start[$1], $1) }
        let requests = fed.filter { spans[$0].name == "approval.requested" }.sorted {
            (start[$0], $0) < (start[$1], $1)
        }
        let asked = decisions.last { policyOutcomes[$0] == "approval_required" }
        guard answers.last != nil || requests.last != nil || asked != nil else { return nil }
        let decision = answers.last
        let request = requests.last ?? asked
        let stamp = { (t: Int64) in Timestamp.rfc3339(UInt64(clamping: t)) }
        let answer =
            decision.map {
                approvalDecisions[$0] ?? (spans[$0].name == "approval.denied" ? "denied" : "granted")
            }
            ?? "pending"
        let decided = decision.map { stamp(start[$0]) }
        return .init(
            spanId: hex(decision ?? request!),
            ticket: decision.flatMap { attr($0, AgentKeys.approvalTicket) }
                ?? request.flatMap { attr($0, AgentKeys.approvalTicket) },
            approver: decision.flatMap { attr($0, AgentKeys.approver) }, decision: answer,
            requestSpanId: request.map(hex),
            requestedAt: request.map { stamp(requests.contains($0) ? start[$0] : end[$0]) },
            decidedAt: decided, grantedAt: answer == "granted" ? decided : nil)
    }

    func executionFacts(_ target: Int, fed: inout Set<Int>) -> IncidentCard.Execution? {
        var x = target
        if !isExecution(target) {
            // The execution this step led to: a later one sharing its call's identifiers.
            let mine = [AgentKeys.toolCallID, AgentKeys.idempotencyKey, AgentKeys.approvalTicket].compactMap { k in
                attr(target, k).map { (k, $0) }
            }
            guard
                let later = spans.indices.filter({ j in
                    isExecution(j) && start[j] >= start[target] && mine.contains { attr(j, $0.0) == $0.1 }
                }).min(by: { (start[$0], $0) < (start[$1], $1) })
            else { return nil }
            x = later
        }
        let group = repeatGroups().first { $0.calls.contains(x) }?.calls ?? [x]
        let earlier = group.filter { start[$0] < start[x] || (start[$0] == start[x] && $0 < x) }
        fed.formUnion(earlier)
        return .init(
            spanId: hex(x), tool: toolName(x), status: outcome(of: x).rawValue,
            operationId: attr(x, AgentKeys.operationID), idempotencyKey: attr(x, AgentKeys.idempotencyKey),
            retries: earlier.count, attemptSpanIds: group.map(hex))
    }
}

extension JSONValue {
    /// Calls `body` with every scalar leaf as text (numbers and strings; not null or booleans).
    func forEachLeaf(_ body: (String) -> Void) {
        switch self {
        case .array(let items): for v in items { v.forEachLeaf(body) }
        case .object(let members): for (_, v) in members { v.forEachLeaf(body) }
        case .null, .bool: break
        default: if let t = scalarText { body(t) }
        }
    }
}
