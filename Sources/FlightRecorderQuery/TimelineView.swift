public import FlightRecorderCore
public import FlightRecorderOTLP

/// A run laid out for the web run view: every span as one compact row in tree order (roots
/// by start, each span's children by start below it), times as offsets from the run's first
/// adjusted start, the critical path as segments of rows, and the decision lane (policy
/// checks, approvals, executions, reconciliations). Attributes stay out: the page asks for one
/// span's detail when it is selected, so a 50,000-span run is a few megabytes, not fifty.
public struct TimelineView: Sendable {
    public struct Row: Sendable {
        public var span: Int
        public var parentRow: Int
        public var depth: Int
    }

    public struct Decision: Sendable {
        public var row: Int
        /// `policy`, `approval`, `execution` or `reconciliation`.
        public var kind: String
        public var outcome: String?
        public var rule: String?
        public var tool: String?
        public var approver: String?
        public var ticket: String?
        public var operationId: String?
        public var idempotencyKey: String?
    }

    public var graph: RunGraph
    public var rows: [Row]
    public var t0: Int64
    public var traces: [TraceID]
    /// Index into `traces` per span.
    public var traceOf: [Int]
    public var services: [String]
    public var serviceOf: [Int]
    public var categories: [String]
    public var critical: [(row: Int, start: Int64, end: Int64)]
    public var decisions: [Decision]

    public init(_ g: RunGraph) {
        graph = g
        let n = g.spans.count
        var rows: [Row] = []
        rows.reserveCapacity(n)
        var rowOf = [Int](repeating: -1, count: n)
        let byStart = { (a: Int, b: Int) in (g.start[a], a) < (g.start[b], b) }
        var stack: [(span: Int, parentRow: Int, depth: Int)] = g.roots.sorted(by: byStart).reversed().map {
            ($0, -1, 0)
        }
        func drain() {
            while let (i, p, d) = stack.popLast() {
                guard rowOf[i] < 0 else { continue }
                rowOf[i] = rows.count
                rows.append(Row(span: i, parentRow: p, depth: d))
                let me = rows.count - 1
                for c in g.children[i].sorted(by: byStart).reversed() where rowOf[c] < 0 {
                    stack.append((c, me, d + 1))
                }
            }
        }
        drain()
        // Spans no root reaches (parent IDs forming a cycle) still get a row.
        for i in 0..<n where rowOf[i] < 0 {
            stack.append((i, -1, 0))
            drain()
        }
        self.rows = rows
        t0 = g.start.min() ?? 0
        var traceIndex: [TraceID: Int] = [:]
        var traces: [TraceID] = []
        for r in rows where traceIndex[g.spans[r.span].traceID] == nil {
            traceIndex[g.spans[r.span].traceID] = traces.count
            traces.append(g.spans[r.span].traceID)
        }
        self.traces = traces
        traceOf = g.spans.map { traceIndex[$0.traceID] ?? 0 }
        var serviceIndex: [String: Int] = [:]
        var services: [String] = []
        serviceOf = g.spans.map { s in
            let name = s.resource.attributes["service.name"]?.scalarString ?? ""
            if let i = serviceIndex[name] { return i }
            serviceIndex[name] = services.count
            services.append(name)
            return services.count - 1
        }
        self.services = services
        categories = g.spans.indices.map { g.category($0) }
        critical = []
        for path in g.criticalPathIndices() {
            for (i, s, e) in path { critical.append((rowOf[i], s - t0, e - t0)) }
        }
        decisions = []
        for r in rows.indices {
            let i = rows[r].span
            let kind: String
            switch categories[i] {
            case "policy": kind = "policy"
            case "approval": kind = "approval"
            case "write", "tool": kind = "execution"
            case "reconciliation": kind = "reconciliation"
            default: continue
            }
            decisions.append(
                Decision(
                    row: r, kind: kind,
                    outcome: kind == "policy"
                        ? g.policyOutcomes[i]
                        : kind == "approval"
                            ? (g.approvalDecisions[i]
                                ?? (g.spans[i].name.hasPrefix("approval.")
                                    ? String(g.spans[i].name.dropFirst(9)) : nil))
                            : g.outcome(of: i).rawValue,
                    rule: g.attr(i, AgentKeys.policyRule), tool: g.toolNames[i],
                    approver: g.attr(i, AgentKeys.approver), ticket: g.attr(i, AgentKeys.approvalTicket),
                    operationId: g.attr(i, AgentKeys.operationID), idempotencyKey: g.attr(i, AgentKeys.idempotencyKey)))
        }
    }
}

extension RunGraph {
    /// What a step is, for the timeline's colours and the decision lane: `agent`, `model`,
    /// `tool` (a read), `write`, `policy`, `approval`, `reconciliation`, `memory`,
    /// `retrieval` or `span`.
    public func category(_ i: Int) -> String {
        if policyOutcomes[i] != nil { return "policy" }
        let name = spans[i].name
        if name == Self.reconciledSpanName { return "reconciliation" }
        if name.hasPrefix("approval.") || approvalDecisions[i] != nil { return "approval" }
        if isExecution(i) { return isWrite(i) ? "write" : "tool" }
        if isModelCall(i) { return "model" }
        if let kind = contextKind(i) { return kind }
        if attr(i, AgentKeys.operationName) == "invoke_agent" || name.hasPrefix("invoke_agent") { return "agent" }
        return "span"
    }
}

extension TimelineView: JSONWritable {
    /// `spans`: one array per row, `[spanId, parentRow, depth, trace, service, name, start,
    /// end, status, category]` (start and end in nanoseconds after `t0`; status 0 unset, 1 ok,
    /// 2 error); `critical`: `[row, start, end]` segments.
    public func writeJSON(to w: inout JSONWriter) {
        let g = graph
        w.beginObject()
        w.member("adjustments", g.adjustments)
        w.key("critical")
        w.beginArray()
        for c in critical {
            w.beginArray()
            w.int(c.row)
            w.int(c.start)
            w.int(c.end)
            w.endArray()
        }
        w.endArray()
        w.key("decisions")
        w.beginArray()
        for d in decisions {
            w.beginObject()
            w.member("approver", d.approver)
            w.member("idempotencyKey", d.idempotencyKey)
            w.member("kind", d.kind)
            w.member("operationId", d.operationId)
            w.member("outcome", d.outcome)
            w.member("row", d.row)
            w.member("rule", d.rule)
            w.member("ticket", d.ticket)
            w.member("tool", d.tool)
            w.endObject()
        }
        w.endArray()
        w.member("missingParents", g.missingParent.map { g.spans[$0].spanID.hex })
        w.member("runId", g.runID)
        w.member("services", services)
        w.key("spans")
        w.beginArray()
        for r in rows {
            let i = r.span
            let s = g.spans[i]
            w.beginArray()
            w.string(s.spanID.hex)
            w.int(r.parentRow)
            w.int(r.depth)
            w.int(traceOf[i])
            w.int(serviceOf[i])
            w.string(s.name)
            w.int(g.start[i] - t0)
            w.int(g.end[i] - t0)
            w.int(s.statusCode == .error ? 2 : s.statusCode == .ok ? 1 : 0)
            w.string(categories[i])
            w.endArray()
        }
        w.endArray()
        w.member("t0", String(t0))
        w.member("traces", traces.map(\.hex))
        w.endObject()
    }
}
