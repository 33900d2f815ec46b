public import FlightRecorderOTLP

/// One run's spans as a causal graph: parents and children, happens-before between siblings,
/// span links, and trace membership, with clock skew between services corrected.
///
/// Built once per query from the spans the store returns (already deduplicated). Every
/// analysis (path, critical path, findings) reads the adjusted times, so skew never produces
/// an impossible order anywhere.
public struct RunGraph: Sendable {
    public let runID: String
    public let spans: [SpanRecord]
    /// Adjusted start and end (nanoseconds) per span index.
    public private(set) var start: [Int64]
    public private(set) var end: [Int64]
    public let parent: [Int?]
    public let children: [[Int]]
    /// Spans with no parent in the run, sorted by adjusted start.
    public private(set) var roots: [Int]
    /// Index `i` links to these spans of the run (for example an approval to its policy check).
    public let linksTo: [[Int]]
    /// Spans of the run that link to index `i`.
    public let linkedBy: [[Int]]
    /// Spans whose parent ID is set but whose parent is not in the store.
    public let missingParent: [Int]
    public private(set) var adjustments: [Adjustment] = []
    let byID: [SpanKey: Int]
    /// Per span, the attributes the findings and the decision record ask of every span
    /// (`policy.outcome`, the tool's name, `approval.decision`, as `displayString`), and
    /// whether it is a tool execution: read once here instead of an attribute scan per question.
    public let policyOutcomes: [String?]
    public let toolNames: [String?]
    public let approvalDecisions: [String?]
    public let executes: [Bool]

    /// What `init` reads of every span: `policyOutcomes`, `toolNames`, `approvalDecisions`, and
    /// the operation name (for `executes`), in that order.
    static let perSpanKeys = AttributeKeys([
        AgentKeys.policyOutcome, AgentKeys.toolName, "approval.decision", AgentKeys.operationName,
    ])

    struct SpanKey: Hashable {
        var trace: TraceID
        var span: SpanID
    }

    /// A clock-skew correction: the span and its subtree were shifted by `shiftNanos`.
    public struct Adjustment: Sendable, Codable, Equatable {
        public var spanId: String
        public var shiftNanos: Int64
        public var reason: String
    }

    public init(runID: String, spans: [SpanRecord]) {
        self.runID = runID
        self.spans = spans
        var byID: [SpanKey: Int] = [:]
        byID.reserveCapacity(spans.count)
        // By index, the fields read in place: `enumerated()` copied each whole record.
        for i in spans.indices { byID[SpanKey(trace: spans[i].traceID, span: spans[i].spanID)] = i }
        self.byID = byID
        var parent = [Int?](repeating: nil, count: spans.count)
        var children = [[Int]](repeating: [], count: spans.count)
        var missing: [Int] = []
        for i in spans.indices {
            guard let p = spans[i].parentSpanID, !p.isZero else { continue }
            if let pi = byID[SpanKey(trace: spans[i].traceID, span: p)], pi != i {
                parent[i] = pi
                children[pi].append(i)
            } else {
                missing.append(i)
            }
        }
        var linksTo = [[Int]](repeating: [], count: spans.count)
        var linkedBy = [[Int]](repeating: [], count: spans.count)
        for i in spans.indices where !spans[i].links.isEmpty {
            for l in spans[i].links {
                guard let t = byID[SpanKey(trace: l.traceID, span: l.spanID)], t != i else { continue }
                linksTo[i].append(t)
                linkedBy[t].append(i)
            }
        }
        self.parent = parent
        self.children = children
        self.linksTo = linksTo
        self.linkedBy = linkedBy
        self.missingParent = missing
        var outcome: [String?] = []
        var tool: [String?] = []
        var decision: [String?] = []
        var execution: [Bool] = []
        outcome.reserveCapacity(spans.count)
        tool.reserveCapacity(spans.count)
        decision.reserveCapacity(spans.count)
        execution.reserveCapacity(spans.count)
        // One pass over each span's attributes for all four keys, not a scan per key.
        var found: [AttributeValue?] = []
        for i in spans.indices {
            spans[i].attributes.values(of: Self.perSpanKeys, into: &found)
            outcome.append(found[0]?.displayString)
            tool.append(found[1]?.displayString)
            decision.append(found[2]?.displayString)
            execution.append(found[3]?.displayString == "execute_tool" || spans[i].name.hasPrefix("execute_tool"))
        }
        policyOutcomes = outcome
        toolNames = tool
        approvalDecisions = decision
        executes = execution
        start = spans.map { Int64(clamping: $0.startNanos) }
        end = spans.map { Int64(clamping: max($0.endNanos, $0.startNanos)) }
        roots = spans.indices.filter { parent[$0] == nil }
        correctSkew()
        roots.sort { (start[$0], $0) < (start[$1], $1) }
    }

    public func index(of span: SpanID) -> Int? {
        spans.indices.first { spans[$0].spanID == span }
    }

    /// Whether spans `i` and `j` come from the same service instance (name, instance ID and
    /// host): spans of one resource group share its record, so mostly no attribute is read.
    func sameService(_ i: Int, _ j: Int) -> Bool {
        let (a, b) = (spans[i].resource, spans[j].resource)
        if a === b { return true }
        for k in ["service.name", "service.instance.id", "host.name"]
        where a.attributes[k]?.scalarString != b.attributes[k]?.scalarString {
            return false
        }
        return true
    }

    /// Jaeger's rule: a child from another service that does not fit inside its parent was
    /// measured on another clock. It is moved (with its subtree) to the middle of its parent,
    /// or to its parent's start if it is longer. Same-service children are never moved: an
    /// asynchronous child may legitimately outlive its parent.
    private mutating func correctSkew() {
        var stack: [(Int, Int64)] = roots.map { ($0, 0) }
        while let (i, inherited) = stack.popLast() {
            start[i] += inherited
            end[i] += inherited
            var shift = inherited
            // The times first: most children fit, and comparing services reads attributes.
            if let p = parent[i], start[i] < start[p] || end[i] > end[p], !sameService(i, p) {
                let duration = end[i] - start[i]
                let room = end[p] - start[p]
                let target = duration <= room ? start[p] + (room - duration) / 2 : start[p]
                let delta = target - start[i]
                if delta != 0 {
                    start[i] += delta
                    end[i] += delta
                    shift += delta
                    adjustments.append(
                        Adjustment(
                            spanId: spans[i].spanID.hex, shiftNanos: delta,
                            reason: "child from another service did not fit inside its parent (clock skew)"))
                }
            }
            for c in children[i] { stack.append((c, shift)) }
        }
    }

    /// Siblings of `i`: children of its parent, or the run's roots.
    public func siblings(of i: Int) -> [Int] {
        if let p = parent[i] { return children[p] }
        return roots
    }

    /// The siblings that completed before `i` started, latest first.
    public func earlierSiblings(of i: Int) -> [Int] {
        siblings(of: i).filter { $0 != i && end[$0] <= start[i] }.sorted { (end[$0], $0) > (end[$1], $1) }
    }

    /// Happens-before edges among one group of siblings, transitively reduced: `a → b` when
    /// `a` ended before `b` started and no sibling fits between them.
    func precedes(_ group: [Int]) -> [(Int, Int)] {
        let sorted = group.sorted { (start[$0], $0) < (start[$1], $1) }
        var out: [(Int, Int)] = []
        for b in sorted {
            let before = sorted.filter { $0 != b && end[$0] <= start[b] }
            // `a` is redundant when another earlier sibling started after `a` ended; only the
            // two latest starts are needed to know.
            var latest: (Int64, Int) = (.min, -1)
            var second: Int64 = .min
            for c in before {
                if start[c] > latest.0 {
                    second = latest.0
                    latest = (start[c], c)
                } else if start[c] > second {
                    second = start[c]
                }
            }
            for a in before {
                let otherLatest = a == latest.1 ? second : latest.0
                if otherLatest < end[a] { out.append((a, b)) }
            }
        }
        return out
    }

    /// The chain from the root down to `i`, root first.
    public func ancestry(of i: Int) -> [Int] {
        var chain = [i]
        var seen: Set<Int> = [i]
        while let p = parent[chain[0]], seen.insert(p).inserted { chain.insert(p, at: 0) }
        return chain
    }
}
