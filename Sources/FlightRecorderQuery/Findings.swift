import FlightRecorderCore
public import FlightRecorderOTLP

/// Safety findings in one run: what an incident responder should look at first.
public struct Finding: Sendable, Codable, Equatable {
    /// `unapproved_write`, `approval_without_grant`, `duplicate_execution`, `repeated_call`,
    /// `unconfirmed_success`, `uncertain_write`, `loop`, `success_without_operation_id`,
    /// `missing_parent`.
    public var kind: String
    /// `critical`, `high`, `medium` or `info`.
    public var severity: String
    /// One line: why this is a finding.
    public var message: String
    /// The spans involved, the offending one first.
    public var spanIds: [String]
}

/// How a tool execution ended, from the sidecar's `tool.execution.status` or else the span's
/// status (an error whose message or `error.type` says timeout is a timeout).
public enum ExecutionOutcome: String, Sendable {
    case succeeded, failed
    case timedOut = "timed_out"
    case unknown
    /// Blocked or waiting for an approval: the tool never ran.
    case notRun = "not_run"

    /// The write may or may not have happened.
    public var isUncertain: Bool { self == .timedOut || self == .unknown }
}

/// One group of executions of the same call: the same tool with the same idempotency key, or
/// (without a key) the same arguments. Executions that never ran are not in any group.
public struct RepeatGroup: Sendable {
    public var tool: String
    /// The shared idempotency key; nil when the group shares its arguments instead.
    public var idempotencyKey: String?
    /// Span indices in time order.
    public var calls: [Int]
}

/// A call's identity for grouping repeats: its tool and its idempotency key (`byKey`) or
/// its arguments. A struct, not the parts joined into one string, which copied each
/// execution's arguments into a new string (for the repeats, and again for the loops).
struct CallKey: Hashable {
    var tool: String
    var byKey: Bool
    var value: String
}

extension RunGraph {
    /// The span the sidecar records when an operator reconciles an uncertain write; it links
    /// to the execution and carries its idempotency key.
    public static let reconciledSpanName = "tool.reconciled"
    public static let executionStatusKey = "tool.execution.status"

    /// Span `i`'s attribute `key`, as `displayString` (what the findings and the audit
    /// bundle's decision record show).
    package func attr(_ i: Int, _ key: String) -> String? {
        spans[i].attributes[key]?.displayString
    }

    /// A tool execution: `gen_ai.operation.name = execute_tool`, or a span named `execute_tool …`.
    func isExecution(_ i: Int) -> Bool { executes[i] }

    func isWrite(_ i: Int) -> Bool { AgentKeys.isWriteTier(attr(i, AgentKeys.toolTier)) }

    /// A model call: a GenAI client operation, or without `gen_ai.operation.name` a span named
    /// `chat …` or one with token usage (the rule of the metrics and the stats).
    func isModelCall(_ i: Int) -> Bool {
        if let op = attr(i, AgentKeys.operationName) { return AgentKeys.modelOperations.contains(op) }
        if spans[i].name.hasPrefix("chat ") { return true }
        return AgentKeys.tokenUsageKeys.contains { attr(i, $0).flatMap(Double.init) != nil }
    }

    func toolName(_ i: Int) -> String {
        toolNames[i] ?? AgentKeys.executedTool(spanName: spans[i].name) ?? spans[i].name
    }

    public func outcome(of i: Int) -> ExecutionOutcome {
        switch attr(i, Self.executionStatusKey) {
        case "succeeded": return .succeeded
        case "failed": return .failed
        case "timed_out": return .timedOut
        case "unknown", "executing": return .unknown
        case "blocked", "awaiting_approval": return .notRun
        default: break
        }
        guard spans[i].statusCode == .error else { return .succeeded }
        let timeout = AgentKeys.namesTimeout(attr(i, "error.type")) || AgentKeys.failureNamesTimeout(spans[i])
        return timeout ? .timedOut : .failed
    }

    /// Every span that causally precedes `i`: its ancestors and the earlier siblings at each
    /// level, their completed subtrees, and every span they link to, with that span's own
    /// ancestors and earlier siblings (an approval brings the policy check it answers).
    func causalPredecessors(of i: Int) -> Set<Int> {
        var out: Set<Int> = []
        var queue: [Int] = []
        func add(_ j: Int) { if j != i, out.insert(j).inserted { queue.append(j) } }
        func addContext(of node: Int) {
            for a in ancestry(of: node) {
                if a != node { add(a) }
                for e in earlierSiblings(of: a) { add(e) }
            }
        }
        addContext(of: i)
        for t in linksTo[i] {
            add(t)
            addContext(of: t)
        }
        while let j = queue.popLast() {
            for c in children[j] where end[c] <= start[i] { add(c) }
            for t in linksTo[j] where !out.contains(t) {
                add(t)
                addContext(of: t)
            }
        }
        return out
    }

    /// The tool executions that ran, in time order.
    func executionsRun() -> [Int] {
        var run: [Int] = []
        for i in spans.indices where isExecution(i) && outcome(of: i) != .notRun { run.append(i) }
        // `start` as a local: a closure naming a member captures a copy of the whole graph.
        let start = self.start
        return run.sorted { (start[$0], $0) < (start[$1], $1) }
    }

    /// Executions of the same call more than once (see `RepeatGroup`), by first call.
    public func repeatGroups() -> [RepeatGroup] { repeatGroups(executionsRun()) }

    /// A group's place, through `found[key, default: next]`: a key new to `found` is added
    /// with `next` in the same lookup, so each call's key is hashed once.
    @inline(__always)
    static func place(_ slot: inout Int) -> Int { slot }

    /// `repeatGroups()` over `run`, the executions that ran (`executionsRun()`).
    func repeatGroups(_ run: [Int]) -> [RepeatGroup] {
        guard run.count > 1 else { return [] }  // a group repeats a call
        // Each call's key hashed once: groups in first-call order, found by their key (a
        // lookup, then an insert, then a lookup to append hashed every call's arguments three
        // times: `perf` of an audit verification).
        var groups: [RepeatGroup] = []
        var found: [CallKey: Int] = [:]
        found.reserveCapacity(run.count)
        for x in run {
            let tool = toolName(x)
            let key = attr(x, AgentKeys.idempotencyKey)
            let id: CallKey
            if let key {
                id = CallKey(tool: tool, byKey: true, value: key)
            } else if let args = attr(x, AgentKeys.toolArguments) {
                id = CallKey(tool: tool, byKey: false, value: args)
            } else {
                continue
            }
            let g = Self.place(&found[id, default: groups.count])
            if g == groups.count { groups.append(RepeatGroup(tool: tool, idempotencyKey: key, calls: [])) }
            groups[g].calls.append(x)
        }
        return groups.filter { $0.calls.count > 1 }
    }

    /// Executions whose uncertain or failed outcome was settled afterwards: a later execution
    /// of the same call that succeeded or failed for certain, or a reconciliation that links to
    /// it or names its idempotency key.
    func settledExecutions(_ groups: [RepeatGroup]) -> Set<Int> {
        var settled: Set<Int> = []
        for g in groups {
            for (n, x) in g.calls.enumerated() {
                let later = g.calls[(n + 1)...]
                if later.contains(where: { [.succeeded, .failed].contains(outcome(of: $0)) }) { settled.insert(x) }
            }
        }
        for r in spans.indices where spans[r].name == Self.reconciledSpanName {
            settled.formUnion(linksTo[r])
            if let key = attr(r, AgentKeys.idempotencyKey) {
                for x in spans.indices where isExecution(x) && attr(x, AgentKeys.idempotencyKey) == key {
                    settled.insert(x)
                }
            }
        }
        return settled
    }

    /// Words by which a final message claims the task is done (`unconfirmed_success`); not
    /// "complete", which "could not complete" also says.
    static let completionClaims = [
        "done", "completed", "successfully", "succeeded", "finished", "has been", "have been",
    ]

    /// The run reports success: a root ended OK, or no root failed and the root or the last
    /// model call's output message claims completion.
    func reportsSuccess() -> Bool {
        if roots.contains(where: { spans[$0].statusCode == .ok }) { return true }
        if roots.contains(where: { spans[$0].statusCode == .error }) { return false }
        let lastModel = spans.indices.filter(isModelCall).max { (end[$0], $0) < (end[$1], $1) }
        for i in roots + (lastModel.map { [$0] } ?? []) {
            for key in ["gen_ai.output.messages", "gen_ai.completion"] {
                guard let text = attr(i, key)?.lowercased() else { continue }
                let words = text.split { !$0.isLetter }
                let joined = " " + words.joined(separator: " ") + " "
                if Self.completionClaims.contains(where: { joined.containsBytes(" " + $0 + " ") }) { return true }
            }
        }
        return false
    }

    /// The findings no single system reports, each naming its spans and why.
    public func findings(rules: FindingRules = .default) -> [Finding] {
        // The arrays the closures below read, as locals: a closure naming a member captures a
        // copy of the whole graph (some twenty arrays, each retained and released), which
        // `perf` showed at 2 % of an audit verification.
        let (spans, start, end, executes) = (self.spans, self.start, self.end, self.executes)
        let (policyOutcomes, toolNames, approvalDecisions) = (
            self.policyOutcomes, self.toolNames, self.approvalDecisions
        )
        var out: [Finding] = []
        let executions = spans.indices.filter { executes[$0] }.sorted { (start[$0], $0) < (start[$1], $1) }
        let hex = { (i: Int) in spans[i].spanID.hex }
        // Asked per write of every decision, so without building each write's predecessor set,
        // nearest decision first: one preceding `allowed` decision settles both checks.
        var order = Predecessors(self)
        var byTool: [String: [Int]] = [:]
        var anyTool: [Int] = []
        for j in spans.indices where policyOutcomes[j] != nil {
            if let t = toolNames[j] { byTool[t, default: []].append(j) } else { anyTool.append(j) }
        }
        let latestFirst = { (a: Int, b: Int) in (end[a], a) > (end[b], b) }
        let everyDecision = (byTool.values.flatMap { $0 } + anyTool).sorted(by: latestFirst)
        let candidatesByTool = byTool.mapValues { ($0 + anyTool).sorted(by: latestFirst) }
        let anyToolLatestFirst = anyTool.sorted(by: latestFirst)
        let grantSpans = spans.indices.filter {
            spans[$0].name == "approval.granted" || approvalDecisions[$0] == "granted"
        }
        for x in executions where isWrite(x) && outcome(of: x) != .notRun {
            let tool = toolNames[x]
            order.prepare(x)
            var decisions: Set<Int> = []
            var allowedFound = false
            let candidates = tool.map({ candidatesByTool[$0] ?? anyToolLatestFirst }) ?? everyDecision
            // Only chain nodes can precede `x` and end after `order.bound`.
            let chain = order.chain.filter { d in
                end[d] > order.bound && policyOutcomes[d] != nil
                    && (tool == nil || toolNames[d] == nil || toolNames[d] == tool)
            }
            var lo = 0
            var hi = candidates.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if end[candidates[mid]] > order.bound { lo = mid + 1 } else { hi = mid }
            }
            for d in chain.sorted() + candidates[lo...] where order.precedes(d) {
                decisions.insert(d)
                if policyOutcomes[d] == "allowed" {
                    allowedFound = true
                    break
                }
            }
            if allowedFound { continue }
            let allowed = decisions.filter { policyOutcomes[$0] == "allowed" }
            let needsApproval = decisions.filter { policyOutcomes[$0] == "approval_required" }
            if decisions.isEmpty || (allowed.isEmpty && needsApproval.isEmpty) {
                out.append(
                    Finding(
                        kind: "unapproved_write", severity: "critical",
                        message:
                            "write-tier tool \(tool ?? spans[x].name) executed with no causally preceding allowed policy decision",
                        spanIds: [hex(x)] + decisions.sorted().map(hex)))
            }
            for request in needsApproval.sorted() where allowed.isEmpty {
                let ticket = attr(request, AgentKeys.approvalTicket)
                var granted = false
                for g in grantSpans where start[g] <= start[x] {
                    if linksTo[g].contains(request) || (ticket != nil && attr(g, AgentKeys.approvalTicket) == ticket) {
                        granted = true
                        break
                    }
                }
                if !granted {
                    out.append(
                        Finding(
                            kind: "approval_without_grant", severity: "critical",
                            message:
                                "\(tool ?? spans[x].name) executed after an approval_required decision with no linked grant",
                            spanIds: [hex(x), hex(request)]))
                }
            }
        }
        let run = executions.filter { outcome(of: $0) != .notRun }
        let groups = repeatGroups(run)
        out += repeatFindings(groups, hex: hex)
        out += writeOutcomeFindings(groups, run: run, hex: hex)
        out += loopFindings(rules, run: run, hex: hex)
        // Success reported with a write that never confirmed a downstream operation ID.
        let failed = roots.contains { spans[$0].statusCode == .error }
        if !failed {
            for x in executions
            where isWrite(x) && outcome(of: x) == .succeeded && attr(x, AgentKeys.operationID) == nil {
                out.append(
                    Finding(
                        kind: "success_without_operation_id", severity: "high",
                        message:
                            "the run reported success but write \(toolNames[x] ?? spans[x].name) has no confirmed operation ID",
                        spanIds: [hex(x)] + roots.map(hex)))
            }
        }
        for m in missingParent {
            out.append(
                Finding(
                    kind: "missing_parent", severity: "medium",
                    message: "parent span \(spans[m].parentSpanID?.hex ?? "?") of \(spans[m].name) never arrived",
                    spanIds: [hex(m)]))
        }
        return out
    }

    /// `duplicate_execution` when a write produced more than one side effect: it succeeded
    /// more than once with one idempotency key but different operation IDs, or with no key and
    /// the same arguments (unless every success carries the same operation ID: the backend
    /// deduplicated). Any other repeat is a `repeated_call`: deduplicated, or retried after a
    /// failure, as the safe patterns do.
    func repeatFindings(_ groups: [RepeatGroup], hex: (Int) -> String) -> [Finding] {
        var out: [Finding] = []
        for g in groups {
            let successes = g.calls.filter { outcome(of: $0) == .succeeded }
            let ops = successes.map { attr($0, AgentKeys.operationID) }
            let distinct = Set(ops.compactMap { $0 })
            let oneOperation = distinct.count == 1 && !ops.contains(nil)
            let write = g.calls.contains(where: isWrite)
            let by = g.idempotencyKey.map { "idempotency key \($0)" } ?? "no idempotency key and the same arguments"
            if write && successes.count > 1 && (g.idempotencyKey != nil ? distinct.count > 1 : !oneOperation) {
                let which =
                    distinct.isEmpty ? "" : " (operation IDs \(distinct.sorted().joined(separator: ", ")))"
                out.append(
                    Finding(
                        kind: "duplicate_execution", severity: "high",
                        message: "\(g.tool) took effect \(successes.count) times with \(by)\(which)",
                        spanIds: successes.map(hex) + g.calls.filter { !successes.contains($0) }.map(hex)))
                continue
            }
            let retried = g.calls.dropLast().contains { outcome(of: $0) != .succeeded }
            let deduplicated = successes.count > 1 && (oneOperation || g.idempotencyKey != nil)
            let how =
                retried
                ? "retried after a failure"
                : deduplicated ? "deduplicated: one operation" + (distinct.first.map { " (\($0))" } ?? "") : "repeated"
            out.append(
                Finding(
                    kind: "repeated_call", severity: "info",
                    message: "\(g.tool) called \(g.calls.count) times with \(by); \(how)", spanIds: g.calls.map(hex)))
        }
        return out
    }

    /// `uncertain_write` for a write that timed out or ended unknown and was never settled;
    /// `unconfirmed_success` when the run nevertheless reports success with a write that is
    /// timed out, unknown or failed and never settled.
    func writeOutcomeFindings(_ groups: [RepeatGroup], run: [Int], hex: (Int) -> String) -> [Finding] {
        var out: [Finding] = []
        let settled = settledExecutions(groups)
        let open = run.filter { isWrite($0) && !settled.contains($0) }
        for x in open where outcome(of: x).isUncertain {
            out.append(
                Finding(
                    kind: "uncertain_write", severity: "medium",
                    message:
                        "write \(toolName(x)) ended \(outcome(of: x).rawValue) and was never reconciled: it may or may not have happened",
                    spanIds: [hex(x)]))
        }
        let unconfirmed = open.filter { outcome(of: $0) != .succeeded }
        if !unconfirmed.isEmpty && reportsSuccess() {
            for x in unconfirmed {
                out.append(
                    Finding(
                        kind: "unconfirmed_success", severity: "high",
                        message:
                            "the run reports success but write \(toolName(x)) ended \(outcome(of: x).rawValue), with no later success or reconciliation",
                        spanIds: [hex(x)] + roots.map(hex)))
            }
        }
        return out
    }

    /// `loop`: the same tool with the same arguments `loopRepeats` times or more, or more
    /// steps (model and tool calls) than `stepBudget`.
    func loopFindings(_ rules: FindingRules, run: [Int], hex: (Int) -> String) -> [Finding] {
        var out: [Finding] = []
        // Calls by tool and arguments, in first-call order (each key hashed once, as above).
        var same: [[Int]] = []
        // Fewer executions than the limit cannot repeat up to it: no keys made.
        if rules.loopRepeats > 1 && run.count >= rules.loopRepeats {
            var found: [CallKey: Int] = [:]
            found.reserveCapacity(run.count)
            for x in run {
                guard let args = attr(x, AgentKeys.toolArguments) else { continue }
                let g = Self.place(&found[CallKey(tool: toolName(x), byKey: false, value: args), default: same.count])
                if g == same.count { same.append([]) }
                same[g].append(x)
            }
        }
        for xs in same {
            guard xs.count >= rules.loopRepeats else { continue }
            out.append(
                Finding(
                    kind: "loop", severity: "medium",
                    message:
                        "\(toolName(xs[0])) called \(xs.count) times with the same arguments (the limit is \(rules.loopRepeats))",
                    spanIds: xs.map(hex)))
        }
        // Model calls are counted only when a budget is set (the default has none).
        if rules.stepBudget > 0, case let steps = run.count + spans.indices.filter(isModelCall).count,
            steps > rules.stepBudget
        {
            out.append(
                Finding(
                    kind: "loop", severity: "medium",
                    message: "the run took \(steps) steps, beyond its budget of \(rules.stepBudget)",
                    spanIds: roots.map(hex)))
        }
        return out
    }
}
