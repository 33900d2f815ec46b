public import FlightRecorderOTLP

/// The facts that explain one step, read from its attributes (`AgentKeys`), as stored after
/// redaction. Absent facts are omitted from the JSON.
public struct StepFacts: Sendable, Codable, Equatable {
    public var operation: String?
    public var model: String?
    public var promptVersion: String?
    public var prompt: String?
    public var tool: String?
    public var tier: String?
    public var arguments: String?
    public var policyOutcome: String?
    public var policyRule: String?
    public var approvalTicket: String?
    public var approver: String?
    public var idempotencyKey: String?
    public var operationId: String?
    public var ticketId: String?
    public var status: String
    public var error: String?

    public init(_ s: SpanRecord) {
        // One pass over the attributes; the first of a repeated key wins.
        var responseModel: String?
        var inputMessages: String?
        for a in s.attributes {
            func set(_ field: inout String?) { if field == nil { field = a.value.displayString } }
            switch a.key {
            case AgentKeys.operationName: set(&operation)
            case AgentKeys.requestModel: set(&model)
            case AgentKeys.responseModel: set(&responseModel)
            case AgentKeys.promptVersion: set(&promptVersion)
            case AgentKeys.prompt: set(&prompt)
            case AgentKeys.inputMessages: set(&inputMessages)
            case AgentKeys.toolName: set(&tool)
            case AgentKeys.toolTier: set(&tier)
            case AgentKeys.toolArguments: set(&arguments)
            case AgentKeys.policyOutcome: set(&policyOutcome)
            case AgentKeys.policyRule: set(&policyRule)
            case AgentKeys.approvalTicket: set(&approvalTicket)
            case AgentKeys.approver: set(&approver)
            case AgentKeys.idempotencyKey: set(&idempotencyKey)
            case AgentKeys.operationID: set(&operationId)
            case AgentKeys.ticketID: set(&ticketId)
            default: continue
            }
        }
        model = model ?? responseModel
        prompt = prompt ?? inputMessages
        status = s.statusCode.name
        error = s.statusCode == .error ? (s.statusMessage.isEmpty ? "error" : s.statusMessage) : nil
    }
}

/// A span as the causal views show it: adjusted times and its facts.
public struct StepNode: Sendable, Codable {
    public var spanId: String
    public var traceId: String
    public var parentSpanId: String?
    public var name: String
    public var service: String?
    public var startTimeUnixNano: String
    public var endTimeUnixNano: String
    public var durationNanos: Int64
    /// Set when clock-skew correction moved this span.
    public var skewShiftNanos: Int64?
    public var facts: StepFacts

    init(_ g: RunGraph, _ i: Int) {
        let s = g.spans[i]
        spanId = s.spanID.hex
        traceId = s.traceID.hex
        parentSpanId = s.parentSpanID.flatMap { $0.isZero ? nil : $0.hex }
        name = s.name
        service = s.resource.attributes["service.name"]?.scalarString
        startTimeUnixNano = String(g.start[i])
        endTimeUnixNano = String(g.end[i])
        durationNanos = g.end[i] - g.start[i]
        let shift = g.start[i] - Int64(clamping: s.startNanos)
        skewShiftNanos = shift == 0 ? nil : shift
        facts = StepFacts(s)
    }
}

extension RunGraph {
    // MARK: Graph

    public struct Edge: Sendable, Codable, Equatable {
        /// `child_of` (parent → child), `precedes` (earlier sibling → later sibling),
        /// `linked` (linked span → the span whose link names it), `member` (run → trace root).
        public var type: String
        public var from: String
        public var to: String
    }

    public struct GraphView: Sendable, Codable {
        public var runId: String
        public var traces: [String]
        public var nodes: [StepNode]
        public var edges: [Edge]
        public var adjustments: [Adjustment]
        public var missingParents: [String]
    }

    public func graph() -> GraphView {
        var edges: [Edge] = []
        edges.reserveCapacity(spans.count * 3)
        let ids = spans.map(\.spanID.hex)
        let id = { (i: Int) in ids[i] }
        for r in roots { edges.append(Edge(type: "member", from: "run:" + runID, to: id(r))) }
        for (p, cs) in children.enumerated() {
            for c in cs.sorted(by: { (start[$0], $0) < (start[$1], $1) }) {
                edges.append(Edge(type: "child_of", from: id(p), to: id(c)))
            }
        }
        for group in [roots] + children where group.count > 1 {
            for (a, b) in precedes(group) { edges.append(Edge(type: "precedes", from: id(a), to: id(b))) }
        }
        for (i, targets) in linksTo.enumerated() {
            for t in targets { edges.append(Edge(type: "linked", from: id(t), to: id(i))) }
        }
        let order = spans.indices.sorted { (start[$0], $0) < (start[$1], $1) }
        var traces: [String] = []
        var seen: Set<TraceID> = []
        for i in order where seen.insert(spans[i].traceID).inserted { traces.append(spans[i].traceID.hex) }
        return GraphView(
            runId: runID, traces: traces, nodes: order.map { StepNode(self, $0) }, edges: edges,
            adjustments: adjustments, missingParents: missingParent.map(id))
    }

    // MARK: Causal path

    public struct PathStep: Sendable, Codable {
        /// `ancestor` (on the chain from the root), `target`, or `preceding` (an earlier sibling
        /// of the next step on the chain that completed before it started).
        public var role: String
        public var depth: Int
        public var node: StepNode
        /// Spans linked to or from this step (approvals, the policy check an approval answers),
        /// each with its own path when it lies in another branch or trace.
        public var linked: [LinkedStep]
    }

    public struct LinkedStep: Sendable, Codable {
        /// `links_to` (this step's link names it) or `linked_by` (its link names this step).
        public var relation: String
        public var node: StepNode
        public var path: [PathStep]
    }

    public struct PathView: Sendable, Codable {
        public var runId: String
        public var target: String
        /// The incident card: the direct answers, each naming its span.
        public var answer: IncidentCard?
        public var steps: [PathStep]
        public var adjustments: [Adjustment]
    }

    /// The chain from the root to `target`; at each level, the earlier siblings that
    /// completed before the next step began, and the linked steps.
    public func path(
        to target: Int, rules: FindingRules = .default, versionKeys: [String] = MetricRules.defaultVersionKeys
    ) -> PathView {
        PathView(
            runId: runID, target: spans[target].spanID.hex,
            answer: answer(for: target, rules: rules, versionKeys: versionKeys),
            steps: steps(to: target, expandLinks: true), adjustments: adjustments)
    }

    func steps(to target: Int, expandLinks: Bool) -> [PathStep] {
        let chain = ancestry(of: target)
        let onChain = Set(chain)
        var out: [PathStep] = []
        func linked(_ i: Int) -> [LinkedStep] {
            guard expandLinks else { return [] }
            let to = linksTo[i].map { ("links_to", $0) }
            let by = linkedBy[i].map { ("linked_by", $0) }
            return (to + by).map { relation, j in
                LinkedStep(
                    relation: relation, node: StepNode(self, j),
                    path: onChain.contains(j) ? [] : steps(to: j, expandLinks: false))
            }
        }
        for (depth, node) in chain.enumerated() {
            // Earlier siblings first (oldest first), then the step itself.
            for e in earlierSiblings(of: node).reversed() {
                out.append(PathStep(role: "preceding", depth: depth, node: StepNode(self, e), linked: linked(e)))
            }
            out.append(
                PathStep(
                    role: node == target ? "target" : "ancestor", depth: depth, node: StepNode(self, node),
                    linked: linked(node)))
        }
        return out
    }

    // MARK: Critical path

    public struct CriticalSegment: Sendable, Codable, Equatable {
        public var spanId: String
        public var name: String
        public var startTimeUnixNano: String
        public var endTimeUnixNano: String
        public var durationNanos: Int64
    }

    public struct CriticalPathView: Sendable, Codable {
        public var runId: String
        /// One critical path per trace root, in time order.
        public var paths: [[CriticalSegment]]
        public var adjustments: [Adjustment]
    }

    /// Jaeger's critical path: walking back from a span's end, the last-finishing child that
    /// ended before the cursor is on the path (recursively), the cursor moves to that child's
    /// start, and the gaps between belong to the span itself. Children that overlap the one
    /// already chosen are off the path.
    public func criticalPath() -> CriticalPathView {
        let paths = criticalPathIndices().map { path in
            path.map { i, s, e in
                CriticalSegment(
                    spanId: spans[i].spanID.hex, name: spans[i].name, startTimeUnixNano: String(s),
                    endTimeUnixNano: String(e), durationNanos: e - s)
            }
        }
        return CriticalPathView(runId: runID, paths: paths, adjustments: adjustments)
    }

    /// The critical path per trace root as (span, start, end) segments in time order.
    public func criticalPathIndices() -> [[(Int, Int64, Int64)]] {
        roots.map { r in
            var segments: [(Int, Int64, Int64)] = []
            walk(r, cursor: end[r], into: &segments)
            return segments.reversed()
        }
    }

    /// Appends segments latest first. Children are first clipped to the parent (one that
    /// starts after the parent ends is off the path), as Jaeger sanitizes them.
    private func walk(_ i: Int, cursor limit: Int64, into segments: inout [(Int, Int64, Int64)]) {
        let spanEnd = min(end[i], limit)
        var cursor = spanEnd
        var first = true
        let kids = children[i].filter { start[$0] < spanEnd }
            .sorted { (min(end[$0], spanEnd), $0) > (min(end[$1], spanEnd), $1) }
        for c in kids {
            let childEnd = min(end[c], spanEnd)
            guard first || childEnd < cursor else { continue }
            first = false
            if childEnd < cursor { segments.append((i, childEnd, cursor)) }
            walk(c, cursor: childEnd, into: &segments)
            cursor = max(start[c], start[i])
            if cursor <= start[i] { break }
        }
        if start[i] < cursor { segments.append((i, start[i], cursor)) }
    }
}
