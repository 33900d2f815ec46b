import FlightRecorderOTLP

/// Safety findings in one run: what an incident responder should look at first.
public struct Finding: Sendable, Codable, Equatable {
    /// `unapproved_write`, `approval_without_grant`, `duplicate_execution`,
    /// `success_without_operation_id`, `missing_parent`.
    public var kind: String
    public var severity: String
    public var message: String
    /// The spans involved, the offending one first.
    public var spanIds: [String]
}

extension RunGraph {
    static let writeTiers: Set<String> = ["low_write", "privileged_write"]

    func attr(_ i: Int, _ key: String) -> String? {
        spans[i].attributes.first { $0.key == key }?.value.displayString
    }

    /// A tool execution: `gen_ai.operation.name = execute_tool`, or a span named `execute_tool …`.
    func isExecution(_ i: Int) -> Bool {
        attr(i, AgentKeys.operationName) == "execute_tool" || spans[i].name.hasPrefix("execute_tool")
    }

    func isWrite(_ i: Int) -> Bool { attr(i, AgentKeys.toolTier).map(Self.writeTiers.contains) ?? false }

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

    /// The findings no single system reports, each naming its spans.
    public func findings() -> [Finding] {
        var out: [Finding] = []
        let executions = spans.indices.filter(isExecution).sorted { (start[$0], $0) < (start[$1], $1) }
        let hex = { (i: Int) in spans[i].spanID.hex }
        for x in executions where isWrite(x) {
            let tool = attr(x, AgentKeys.toolName)
            let before = causalPredecessors(of: x)
            let decisions = before.filter { j in
                attr(j, AgentKeys.policyOutcome) != nil
                    && (tool == nil || attr(j, AgentKeys.toolName) == nil || attr(j, AgentKeys.toolName) == tool)
            }
            let allowed = decisions.filter { attr($0, AgentKeys.policyOutcome) == "allowed" }
            let needsApproval = decisions.filter { attr($0, AgentKeys.policyOutcome) == "approval_required" }
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
                let grants = spans.indices.filter { g in
                    let granted = spans[g].name == "approval.granted" || attr(g, "approval.decision") == "granted"
                    let answers =
                        linksTo[g].contains(request) || (ticket != nil && attr(g, AgentKeys.approvalTicket) == ticket)
                    return granted && answers && start[g] <= start[x]
                }
                if grants.isEmpty {
                    out.append(
                        Finding(
                            kind: "approval_without_grant", severity: "critical",
                            message:
                                "\(tool ?? spans[x].name) executed after an approval_required decision with no linked grant",
                            spanIds: [hex(x), hex(request)]))
                }
            }
        }
        // The same tool with the same idempotency key, or the same arguments, executed twice.
        var seen: [String: [Int]] = [:]
        for x in executions {
            let tool = attr(x, AgentKeys.toolName) ?? spans[x].name
            if let key = attr(x, AgentKeys.idempotencyKey) {
                seen["\(tool)\u{1F}key\u{1F}\(key)", default: []].append(x)
            } else if let args = attr(x, AgentKeys.toolArguments) {
                seen["\(tool)\u{1F}args\u{1F}\(args)", default: []].append(x)
            }
        }
        for (key, xs) in seen.sorted(by: { $0.key < $1.key }) where xs.count > 1 {
            let parts = key.split(separator: "\u{1F}", maxSplits: 2).map(String.init)
            let by = parts[1] == "key" ? "idempotency key \(parts[2])" : "the same arguments"
            out.append(
                Finding(
                    kind: "duplicate_execution", severity: "high",
                    message: "\(parts[0]) executed \(xs.count) times with \(by)", spanIds: xs.map(hex)))
        }
        // Success reported with a write that never confirmed a downstream operation ID.
        let failed = roots.contains { spans[$0].statusCode == .error }
        if !failed {
            for x in executions where isWrite(x) && attr(x, AgentKeys.operationID) == nil {
                out.append(
                    Finding(
                        kind: "success_without_operation_id", severity: "high",
                        message:
                            "the run reported success but write \(attr(x, AgentKeys.toolName) ?? spans[x].name) has no confirmed operation ID",
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
}
