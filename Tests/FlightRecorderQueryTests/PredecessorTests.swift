import FlightRecorderOTLP
import FlightRecorderTesting
import Testing

@testable import FlightRecorderQuery

/// `Predecessors` answers exactly what `causalPredecessors` builds, on random run graphs with
/// nested spans, two traces, links in every direction and missing parents.
@Suite struct PredecessorTests {
    @Test func agreesWithTheSetOnRandomGraphs() throws {
        var rng = SplitMix64(seed: 7)
        func next(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
        for _ in 0..<300 {
            let count = 1 + next(24)
            var list: [TestSpan] = []
            for i in 0..<count {
                let trace = next(3) == 0 ? RequestBuilder.traceID(2) : RequestBuilder.traceID(1)
                var parent: [UInt8] = []
                if i > 0 && next(4) != 0 {
                    let p = list[next(i)]
                    if p.trace == trace { parent = p.span }
                } else if next(10) == 0 {
                    parent = RequestBuilder.spanID(200)  // never arrives
                }
                let start = UInt64(next(1_000))
                var links: [(trace: [UInt8], span: [UInt8])] = []
                if i > 0 && next(5) == 0 {
                    let t = list[next(i)]
                    links.append((t.trace, t.span))
                }
                list.append(
                    TestSpan(
                        trace: trace, span: RequestBuilder.spanID(UInt8(i + 1)), parent: parent, start: start,
                        end: start + UInt64(next(400)), links: links))
            }
            // Links to spans that come later in the list, too.
            for i in list.indices where next(8) == 0 {
                let t = list[next(list.count)]
                list[i].links.append((t.trace, t.span))
            }
            let g = RunGraph(runID: "r", spans: try RunGraphTests.spans(list))
            var order = Predecessors(g)
            for x in g.spans.indices {
                let set = g.causalPredecessors(of: x)
                order.prepare(x)
                for y in g.spans.indices {
                    #expect(order.precedes(y) == set.contains(y), "x \(x) y \(y) of \(count)")
                }
            }
        }
    }

    /// The write checks of `findings()` (which ask `Predecessors`, nearest decision first)
    /// agree with the same checks over `causalPredecessors`, on random runs of decisions,
    /// grants and writes.
    @Test func writeFindingsAgreeWithTheSetOnRandomRuns() throws {
        var rng = SplitMix64(seed: 11)
        func next(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
        let tools = ["disable", "ticket", "revoke"]
        var found = 0
        for _ in 0..<200 {
            let count = 2 + next(30)
            var list: [TestSpan] = [
                TestSpan(trace: RequestBuilder.traceID(1), span: RequestBuilder.spanID(1), start: 0, end: 5_000)
            ]
            for i in 1..<count {
                let parent = next(3) == 0 && i > 1 ? list[next(i)].span : list[0].span
                let start = UInt64(next(4_000))
                var attributes: [(String, TestValue)] = []
                var name = "step"
                var links: [(trace: [UInt8], span: [UInt8])] = []
                switch next(4) {
                case 0:
                    name = "policy.check"
                    attributes = [
                        ("policy.outcome", .string(["allowed", "blocked", "approval_required"][next(3)])),
                        ("approval.ticket", .string("T\(next(3))")),
                    ]
                    if next(4) != 0 { attributes.append(("gen_ai.tool.name", .string(tools[next(3)]))) }
                case 1:
                    name = "approval.granted"
                    attributes = [("approval.ticket", .string("T\(next(3))"))]
                    if i > 1 { links.append((RequestBuilder.traceID(1), list[1 + next(i - 1)].span)) }
                case 2:
                    name = "execute_tool x"
                    attributes = [("tool.risk_tier", .string("privileged_write")), ("operation.id", .string("op"))]
                    if next(5) != 0 { attributes.append(("gen_ai.tool.name", .string(tools[next(3)]))) }
                default: break
                }
                list.append(
                    TestSpan(
                        trace: RequestBuilder.traceID(1), span: RequestBuilder.spanID(UInt8(i + 1)), parent: parent,
                        name: name, start: start, end: start + UInt64(next(600)), attributes: attributes, links: links))
            }
            let g = RunGraph(runID: "r", spans: try RunGraphTests.spans(list))
            let kinds: Set<String> = ["unapproved_write", "approval_without_grant"]
            let fast = g.findings().filter { kinds.contains($0.kind) }
            #expect(fast == Self.referenceWriteFindings(g))
            found += fast.count
        }
        #expect(found > 100, "the random runs should exercise both checks")
    }

    /// The write checks as they were first written: every write's predecessor set, built.
    static func referenceWriteFindings(_ g: RunGraph) -> [Finding] {
        var out: [Finding] = []
        let hex = { (i: Int) in g.spans[i].spanID.hex }
        let executions = g.spans.indices.filter(g.isExecution).sorted { (g.start[$0], $0) < (g.start[$1], $1) }
        for x in executions where g.isWrite(x) && g.outcome(of: x) != .notRun {
            let tool = g.attr(x, AgentKeys.toolName)
            let decisions = g.causalPredecessors(of: x).filter { j in
                g.attr(j, AgentKeys.policyOutcome) != nil
                    && (tool == nil || g.attr(j, AgentKeys.toolName) == nil || g.attr(j, AgentKeys.toolName) == tool)
            }
            let allowed = decisions.filter { g.attr($0, AgentKeys.policyOutcome) == "allowed" }
            let needsApproval = decisions.filter { g.attr($0, AgentKeys.policyOutcome) == "approval_required" }
            if decisions.isEmpty || (allowed.isEmpty && needsApproval.isEmpty) {
                out.append(
                    Finding(
                        kind: "unapproved_write", severity: "critical",
                        message:
                            "write-tier tool \(tool ?? g.spans[x].name) executed with no causally preceding allowed policy decision",
                        spanIds: [hex(x)] + decisions.sorted().map(hex)))
            }
            for request in needsApproval.sorted() where allowed.isEmpty {
                let ticket = g.attr(request, AgentKeys.approvalTicket)
                let grants = g.spans.indices.filter { k in
                    let granted = g.spans[k].name == "approval.granted" || g.attr(k, "approval.decision") == "granted"
                    let answers =
                        g.linksTo[k].contains(request)
                        || (ticket != nil && g.attr(k, AgentKeys.approvalTicket) == ticket)
                    return granted && answers && g.start[k] <= g.start[x]
                }
                if grants.isEmpty {
                    out.append(
                        Finding(
                            kind: "approval_without_grant", severity: "critical",
                            message:
                                "\(tool ?? g.spans[x].name) executed after an approval_required decision with no linked grant",
                            spanIds: [hex(x), hex(request)]))
                }
            }
        }
        return out
    }
}
