import FlightRecorderOTLP
import FlightRecorderQuery
import FlightRecorderTesting
import Testing

/// Runs with a known causal structure, built from protobuf requests and decoded as the store does.
@Suite struct RunGraphTests {
    static func spans(service: String = "agent", _ list: [TestSpan]) throws -> [SpanRecord] {
        let body = RequestBuilder.request(resource: [("service.name", .string(service))], spans: list)
        // The request body is a TracesData fragment: field 1 (resource_spans) is shared.
        return try body.withUnsafeBytes { try TracesDataDecoder.decode($0) { _, _ in true } }
    }

    static let t1 = RequestBuilder.traceID(1)
    static let t2 = RequestBuilder.traceID(2)
    static func id(_ n: UInt8) -> [UInt8] { RequestBuilder.spanID(n) }
    static func hex(_ n: UInt8) -> String { "cd000000000000" + (n < 16 ? "0" : "") + String(n, radix: 16) }

    /// root(1) ─ chat(2) ─ lookup(3) ─ policy(4, approval_required) ─ exec(5, write, op-1)
    /// trace 2: approval.granted(6, links to 4) ─ exec(7, write, op-2)
    static func stolenLaptop(grant: Bool = true, withPolicy: Bool = true) throws -> RunGraph {
        var main = [
            TestSpan(trace: t1, span: id(1), name: "invoke_agent", start: 0, end: 1_000),
            TestSpan(
                trace: t1, span: id(2), parent: id(1), name: "chat gpt-4o", start: 10, end: 100,
                attributes: [
                    ("gen_ai.request.model", .string("gpt-4o")), ("gen_ai.prompt.version", .string("triage-v3")),
                ]),
            TestSpan(
                trace: t1, span: id(3), parent: id(1), name: "execute_tool lookup_employee", start: 110, end: 150,
                attributes: [("gen_ai.tool.name", .string("lookup_employee")), ("tool.risk_tier", .string("read"))]),
        ]
        if withPolicy {
            main.append(
                TestSpan(
                    trace: t1, span: id(4), parent: id(1), name: "policy.check", start: 160, end: 170,
                    attributes: [
                        ("policy.outcome", .string("approval_required")),
                        ("policy.rule", .string("privileged-needs-approval")),
                        ("gen_ai.tool.name", .string("disable_managed_device")), ("approval.ticket", .string("APR-1")),
                    ]))
        }
        let approval = [
            TestSpan(
                trace: t2, span: id(6), name: grant ? "approval.granted" : "approval.denied", start: 5_000, end: 5_010,
                attributes: [("approval.approver", .string("alice")), ("approval.ticket", .string("APR-1"))],
                links: grant ? [(t1, id(4))] : []),
            TestSpan(
                trace: t2, span: id(7), parent: id(6), name: "execute_tool disable_managed_device", start: 5_020,
                end: 5_100,
                attributes: [
                    ("gen_ai.operation.name", .string("execute_tool")),
                    ("gen_ai.tool.name", .string("disable_managed_device")),
                    ("tool.risk_tier", .string("privileged_write")), ("operation.id", .string("op-2")),
                    ("idempotency.key", .string("k-1")),
                ]),
        ]
        return RunGraph(runID: "run-1", spans: try spans(main) + spans(approval))
    }

    @Test func graphHasTypedEdgesAcrossTwoTraces() throws {
        let g = try Self.stolenLaptop().graph()
        func edges(_ type: String) -> Set<String> {
            Set(g.edges.filter { $0.type == type }.map { "\($0.from)>\($0.to)" })
        }
        #expect(
            g.traces == [
                "ab" + String(repeating: "0", count: 28) + "01", "ab" + String(repeating: "0", count: 28) + "02",
            ])
        #expect(edges("child_of") == Set(["1>2", "1>3", "1>4", "6>7"].map(Self.edge)))
        // Siblings in order, transitively reduced: chat → lookup → policy, never chat → policy.
        #expect(edges("precedes") == Set(["2>3", "3>4", "1>6"].map(Self.edge)))
        #expect(edges("linked") == Set(["4>6"].map(Self.edge)))
        #expect(edges("member") == Set(["run:run-1>\(Self.hex(1))", "run:run-1>\(Self.hex(6))"]))
        #expect(g.adjustments.isEmpty && g.missingParents.isEmpty)
    }

    static func edge(_ s: String) -> String {
        let p = s.split(separator: ">").map { UInt8($0)! }
        return "\(hex(p[0]))>\(hex(p[1]))"
    }

    @Test func pathToTheExecutionShowsTheApprovalAndThePolicyCheckItAnswers() throws {
        let g = try Self.stolenLaptop()
        let path = g.path(to: try #require(g.index(of: SpanID(hex: Self.hex(7))!)))
        #expect(
            path.steps.map(\.node.name) == ["invoke_agent", "approval.granted", "execute_tool disable_managed_device"])
        #expect(path.steps.map(\.role) == ["preceding", "ancestor", "target"])
        let grant = path.steps[1]
        #expect(grant.node.facts.approver == "alice")
        let policy = try #require(grant.linked.first)
        #expect(policy.relation == "links_to" && policy.node.facts.policyOutcome == "approval_required")
        // The policy check's own path: the model call and the lookup that came before it.
        #expect(
            policy.path.map(\.node.name) == [
                "invoke_agent", "chat gpt-4o", "execute_tool lookup_employee", "policy.check",
            ])
        #expect(policy.path.map(\.role) == ["ancestor", "preceding", "preceding", "target"])
        #expect(policy.path.first { $0.node.name == "chat gpt-4o" }?.node.facts.model == "gpt-4o")
        #expect(path.steps[2].node.facts.operationId == "op-2")
    }

    @Test func aChildFromAnotherServiceIsPlacedInsideItsParentAndReported() throws {
        let parent = try Self.spans(
            service: "agent", [TestSpan(trace: Self.t1, span: Self.id(1), name: "call tool", start: 1_000, end: 2_000)])
        // The tool service's clock runs 5 µs behind: its span starts before its parent.
        let child = try Self.spans(
            service: "tool-api",
            [
                TestSpan(trace: Self.t1, span: Self.id(2), parent: Self.id(1), name: "handle", start: 400, end: 600),
                TestSpan(trace: Self.t1, span: Self.id(3), parent: Self.id(2), name: "db", start: 450, end: 550),
            ])
        let g = RunGraph(runID: "r", spans: parent + child)
        let handle = try #require(g.index(of: SpanID(hex: Self.hex(2))!))
        let db = try #require(g.index(of: SpanID(hex: Self.hex(3))!))
        #expect(g.start[handle] >= g.start[0] && g.end[handle] <= g.end[0])
        #expect(g.adjustments.count == 1 && g.adjustments[0].spanId == Self.hex(2))
        // Its subtree moved with it, so the grandchild stays inside the child.
        #expect(g.start[handle] == 1_400 && g.adjustments[0].shiftNanos == 1_000)
        #expect(g.start[db] - g.start[handle] == 50)
        #expect(g.graph().nodes.first { $0.spanId == Self.hex(2) }?.skewShiftNanos == g.adjustments[0].shiftNanos)
    }

    @Test func criticalPathFollowsJaeger() throws {
        // root 0-100: a 10-40, b 30-90 (overlaps a), c 92-95. Critical: root 95-100, c, root 90-92, b, root 0-30... a overlaps b.
        let g = RunGraph(
            runID: "r",
            spans: try Self.spans([
                TestSpan(trace: Self.t1, span: Self.id(1), name: "root", start: 0, end: 100),
                TestSpan(trace: Self.t1, span: Self.id(2), parent: Self.id(1), name: "a", start: 10, end: 40),
                TestSpan(trace: Self.t1, span: Self.id(3), parent: Self.id(1), name: "b", start: 30, end: 90),
                TestSpan(trace: Self.t1, span: Self.id(4), parent: Self.id(1), name: "c", start: 92, end: 95),
            ]))
        let path = g.criticalPath().paths[0].map { "\($0.name) \($0.startTimeUnixNano)-\($0.endTimeUnixNano)" }
        #expect(path == ["root 0-30", "b 30-90", "root 90-92", "c 92-95", "root 95-100"])
    }

    @Test func findingsForUnapprovedWritesMissingGrantsDuplicatesAndMissingParents() throws {
        #expect(try Self.stolenLaptop().findings().isEmpty)

        let noGrant = try Self.stolenLaptop(grant: false).findings()
        #expect(noGrant.map(\.kind) == ["approval_without_grant"])

        let noPolicy = try Self.stolenLaptop(grant: false, withPolicy: false).findings()
        #expect(noPolicy.map(\.kind).contains("unapproved_write"))
        #expect(noPolicy.first { $0.kind == "unapproved_write" }?.spanIds.first == Self.hex(7))

        var spans = try Self.stolenLaptop().spans
        // The same execution retried with the same idempotency key, and a span whose parent never arrived.
        spans += try Self.spans([
            TestSpan(
                trace: Self.t2, span: Self.id(8), parent: Self.id(6), name: "execute_tool disable_managed_device",
                start: 5_200, end: 5_300,
                attributes: [
                    ("gen_ai.tool.name", .string("disable_managed_device")),
                    ("tool.risk_tier", .string("privileged_write")),
                    ("operation.id", .string("op-3")), ("idempotency.key", .string("k-1")),
                ]),
            TestSpan(trace: Self.t1, span: Self.id(9), parent: Self.id(99), name: "orphan", start: 200, end: 210),
        ])
        let findings = RunGraph(runID: "run-1", spans: spans).findings()
        let duplicate = try #require(findings.first { $0.kind == "duplicate_execution" })
        #expect(
            Set(duplicate.spanIds) == [Self.hex(7), Self.hex(8)] && duplicate.message.contains("idempotency key k-1"))
        #expect(findings.first { $0.kind == "missing_parent" }?.spanIds == [Self.hex(9)])
    }

    @Test func successWithoutAnOperationIDIsAFinding() throws {
        let spans = try Self.spans([
            TestSpan(trace: Self.t1, span: Self.id(1), name: "invoke_agent", start: 0, end: 100, statusCode: 1),
            TestSpan(
                trace: Self.t1, span: Self.id(2), parent: Self.id(1), name: "policy.check", start: 10, end: 20,
                attributes: [("policy.outcome", .string("allowed")), ("gen_ai.tool.name", .string("open_ticket"))]),
            TestSpan(
                trace: Self.t1, span: Self.id(3), parent: Self.id(1), name: "execute_tool open_ticket", start: 30,
                end: 40,
                attributes: [("gen_ai.tool.name", .string("open_ticket")), ("tool.risk_tier", .string("low_write"))]),
        ])
        #expect(RunGraph(runID: "r", spans: spans).findings().map(\.kind) == ["success_without_operation_id"])
    }

    /// Several keys read in one pass give what `attr` gives for each: the first attribute of
    /// the name, keys of one length told apart, absent keys nil, a non-string as its display
    /// string; and the scratch array is reset between spans.
    @Test func attributeValuesReadInOnePassAsAttrDoes() throws {
        let g = RunGraph(
            runID: "run-1",
            spans: try Self.spans([
                TestSpan(
                    trace: Self.t1, span: Self.id(1), name: "a", start: 0, end: 10,
                    attributes: [
                        ("policy.rule", .string("first")), ("policy.rulf", .string("other")),
                        ("policy.rule", .string("second")), ("retries", .int(3)),
                    ]),
                TestSpan(trace: Self.t1, span: Self.id(2), name: "b", start: 0, end: 10, attributes: []),
            ]))
        let keys = AttributeKeys(["policy.rulf", "missing", "policy.rule", "retries"])
        var values: [AttributeValue?] = []
        for i in g.spans.indices {
            g.spans[i].attributes.values(of: keys, into: &values)
            #expect(
                values.map { $0?.displayString }
                    == ["policy.rulf", "missing", "policy.rule", "retries"].map { g.attr(i, $0) })
        }
        g.spans[0].attributes.values(of: keys, into: &values)
        #expect(values.map { $0?.displayString } == ["other", nil, "first", "3"])
    }
}
