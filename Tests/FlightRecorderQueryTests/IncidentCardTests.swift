import FlightRecorderOTLP
import FlightRecorderQuery
import FlightRecorderTesting
import Testing

private func s(_ v: String) -> TestValue { .string(v) }

/// The incident card and the finding kinds on runs with a known structure.
@Suite struct IncidentCardTests {
    static let t1 = RequestBuilder.traceID(1)
    static func id(_ n: UInt8) -> [UInt8] { RequestBuilder.spanID(n) }
    static func hex(_ n: UInt8) -> String { RunGraphTests.hex(n) }
    static func span(_ n: UInt8) -> SpanID { SpanID(hex: hex(n))! }

    static let disableArgs = #"{"device_id":"D-300","owner":"E-3003","reason":"laptop reported stolen"}"#

    /// The wrong-account disable: memory, a model call naming the tool call, an ambiguous
    /// lookup, a lookup of another person, another tool's approval, the disable's own policy
    /// check, request, grant and allowed check, a timed-out execution and its retry.
    static func wrongDisable() throws -> RunGraph {
        func exec(
            _ n: UInt8, start: UInt64, status: UInt64 = 0, message: String = "", _ extra: [(String, TestValue)]
        )
            -> TestSpan
        {
            TestSpan(
                trace: t1, span: id(n), parent: id(1), name: "execute_tool disable_managed_device", start: start,
                end: start + 50,
                attributes: [
                    ("gen_ai.operation.name", s("execute_tool")), ("gen_ai.tool.name", s("disable_managed_device")),
                    ("tool.risk_tier", s("privileged_write")), ("gen_ai.tool.call.id", s("call_9")),
                    ("idempotency.key", s("idem-1")), ("gen_ai.tool.call.arguments", s(disableArgs)),
                ] + extra, statusCode: status, statusMessage: message)
        }
        let list = [
            TestSpan(
                trace: t1, span: id(1), name: "invoke_agent support-agent", start: 0, end: 10_000,
                attributes: [("gen_ai.agent.version", s("3.1.0"))]),
            TestSpan(
                trace: t1, span: id(2), parent: id(1), name: "memory recall", start: 10, end: 20,
                attributes: [
                    ("memory.source", s("case-notes")), ("memory.age_seconds", .int(2_592_000)),
                    ("memory.content", s(#"{"case":"C-77","owner":"E-3003"}"#)),
                ]),
            TestSpan(
                trace: t1, span: id(3), parent: id(1), name: "chat gpt-4o", start: 30, end: 100,
                attributes: [
                    ("gen_ai.operation.name", s("chat")), ("gen_ai.request.model", s("gpt-4o")),
                    ("gen_ai.prompt.version", s("it-support-v7")),
                    (
                        "gen_ai.output.messages",
                        s(#"[{"tool_calls":[{"id":"call_9","name":"disable_managed_device"}]}]"#)
                    ),
                ]),
            TestSpan(
                trace: t1, span: id(4), parent: id(1), name: "execute_tool lookup_employee", start: 110, end: 150,
                attributes: [
                    ("gen_ai.tool.name", s("lookup_employee")), ("tool.risk_tier", s("read")),
                    ("gen_ai.tool.call.arguments", s(#"{"name":"John Smith"}"#)),
                    ("gen_ai.tool.call.result", s(#"{"matches":[{"id":"E-3003"},{"id":"E-4004"}]}"#)),
                ]),
            TestSpan(
                trace: t1, span: id(5), parent: id(1), name: "execute_tool lookup_employee", start: 160, end: 170,
                attributes: [
                    ("gen_ai.tool.name", s("lookup_employee")), ("tool.risk_tier", s("read")),
                    ("gen_ai.tool.call.arguments", s(#"{"name":"Jane Roe"}"#)),
                    ("gen_ai.tool.call.result", s(#"{"matches":[{"id":"E-5005"}]}"#)),
                ]),
            TestSpan(
                trace: t1, span: id(6), parent: id(1), name: "policy.check", start: 180, end: 190,
                attributes: [
                    ("policy.outcome", s("approval_required")), ("gen_ai.tool.name", s("create_ticket")),
                    ("approval.ticket", s("APR-9")),
                ]),
            TestSpan(
                trace: t1, span: id(7), parent: id(1), name: "approval.granted", start: 200, end: 210,
                attributes: [
                    ("approval.ticket", s("APR-9")), ("gen_ai.tool.name", s("create_ticket")),
                    ("approval.approver", s("hmac:pBOB")),
                ], links: [(t1, id(6))]),
            TestSpan(
                trace: t1, span: id(8), parent: id(1), name: "policy.check", start: 300, end: 310,
                attributes: [
                    ("policy.outcome", s("approval_required")), ("policy.rule", s("privileged-needs-approval")),
                    ("gen_ai.tool.name", s("disable_managed_device")), ("approval.ticket", s("APR-1")),
                    ("gen_ai.tool.call.id", s("call_9")), ("idempotency.key", s("idem-1")),
                    ("gen_ai.tool.call.arguments", s(disableArgs)),
                ]),
            TestSpan(
                trace: t1, span: id(9), parent: id(8), name: "approval.requested", start: 305, end: 306,
                attributes: [("approval.ticket", s("APR-1"))]),
            TestSpan(
                trace: t1, span: id(10), parent: id(1), name: "approval.granted", start: 2_000, end: 2_010,
                attributes: [
                    ("approval.ticket", s("APR-1")), ("approval.approver", s("hmac:pALICE")),
                    ("approval.decision", s("granted")), ("gen_ai.tool.name", s("disable_managed_device")),
                ], links: [(t1, id(9))]),
            TestSpan(
                trace: t1, span: id(11), parent: id(1), name: "policy.check", start: 3_000, end: 3_010,
                attributes: [
                    ("policy.outcome", s("allowed")), ("policy.rule", s("privileged-needs-approval")),
                    ("gen_ai.tool.name", s("disable_managed_device")), ("gen_ai.tool.call.id", s("call_9")),
                    ("idempotency.key", s("idem-1")), ("approval.ticket", s("APR-1")),
                ]),
            exec(12, start: 3_100, status: 2, message: "timed_out: backend timeout", []),
            exec(13, start: 4_000, [("operation.id", s("op-1"))]),
        ]
        return RunGraph(runID: "run-w", spans: try RunGraphTests.spans(list))
    }

    @Test func theCardAnswersEveryQuestionFromTheStepsThatFedTheTarget() throws {
        let g = try Self.wrongDisable()
        let card = g.answer(for: try #require(g.index(of: Self.span(13))))
        #expect(card.target == Self.hex(13))
        #expect(card.proposedBy?.spanId == Self.hex(3) && card.proposedBy?.basis == "tool_call_id")
        #expect(card.proposedBy?.model == "gpt-4o" && card.proposedBy?.promptVersion == "it-support-v7")
        #expect(card.proposedBy?.agentVersion == "3.1.0")
        let entity = try #require(card.entityResolution)
        #expect(entity.spanId == Self.hex(4) && entity.matchCount == 2 && entity.resolution == "ambiguous")
        #expect(entity.sharedValues == ["E-3003"] && entity.arguments == #"{"name":"John Smith"}"#)
        #expect(card.context.map(\.spanId) == [Self.hex(2)])
        #expect(card.context.first?.source == "case-notes" && card.context.first?.ageSeconds == 2_592_000)
        #expect(card.policy?.spanId == Self.hex(11) && card.policy?.outcome == "allowed")
        #expect(card.policy?.approvalRequiredBy == Self.hex(8))
        let approval = try #require(card.approval)
        #expect(approval.spanId == Self.hex(10) && approval.approver == "hmac:pALICE" && approval.ticket == "APR-1")
        #expect(approval.decision == "granted" && approval.requestSpanId == Self.hex(9))
        let x = try #require(card.execution)
        #expect(x.status == "succeeded" && x.operationId == "op-1" && x.idempotencyKey == "idem-1" && x.retries == 1)
        #expect(card.findings.map(\.kind) == ["repeated_call"])
        // Another tool's approval and the lookup of another person did not feed it.
        for other: UInt8 in [5, 6, 7] { #expect(!card.fedBy.contains(Self.hex(other))) }
        for fed: UInt8 in [1, 2, 3, 4, 8, 9, 10, 11, 12, 13] { #expect(card.fedBy.contains(Self.hex(fed))) }
    }

    @Test func theCardOfTheTimedOutAttemptIsUncertainAndOfAPolicyCheckNamesItsExecution() throws {
        let g = try Self.wrongDisable()
        let first = g.answer(for: try #require(g.index(of: Self.span(12))))
        #expect(first.execution?.status == "timed_out" && first.execution?.retries == 0)
        let check = g.answer(for: try #require(g.index(of: Self.span(8))))
        #expect(check.policy?.spanId == Self.hex(8) && check.policy?.outcome == "approval_required")
        #expect(check.execution?.spanId == Self.hex(12))
        #expect(check.proposedBy?.spanId == Self.hex(3))
    }

    // MARK: Finding kinds

    static func calls(
        root: UInt64 = 0, _ attempts: [(status: UInt64, message: String, attrs: [(String, TestValue)])]
    )
        throws -> RunGraph
    {
        var list = [TestSpan(trace: t1, span: id(1), name: "invoke_agent", start: 0, end: 100_000, statusCode: root)]
        list.append(
            TestSpan(
                trace: t1, span: id(2), parent: id(1), name: "policy.check", start: 10, end: 20,
                attributes: [("policy.outcome", s("allowed")), ("gen_ai.tool.name", s("open_ticket"))]))
        for (n, a) in attempts.enumerated() {
            list.append(
                TestSpan(
                    trace: t1, span: id(UInt8(10 + n)), parent: id(1), name: "execute_tool open_ticket",
                    start: UInt64(100 + n * 1_000), end: UInt64(200 + n * 1_000),
                    attributes: [
                        ("gen_ai.tool.name", s("open_ticket")), ("tool.risk_tier", s("low_write")),
                        ("gen_ai.tool.call.arguments", s(#"{"title":"stolen laptop"}"#)),
                    ] + a.attrs, statusCode: a.status, statusMessage: a.message))
        }
        return RunGraph(runID: "r", spans: try RunGraphTests.spans(list))
    }

    static func kinds(_ g: RunGraph, _ rules: FindingRules = .default) -> [String] {
        g.findings(rules: rules).map(\.kind)
    }

    @Test func retriesAndDeduplicatedRepeatsAreInfoNotDuplicates() throws {
        let key: (String, TestValue) = ("idempotency.key", s("k-1"))
        // Timed out, retried with the same key, succeeded.
        let retried = try Self.calls([
            (2, "backend timeout after 5000ms", [key]), (0, "", [key, ("operation.id", s("op-1"))]),
        ])
        #expect(Self.kinds(retried) == ["repeated_call"])
        #expect(retried.findings().first?.severity == "info")
        #expect(retried.findings().first?.message.contains("retried after a failure") == true)
        // Repeated, and the backend answered with the same operation.
        let same = try Self.calls([
            (0, "", [key, ("operation.id", s("op-1"))]), (0, "", [key, ("operation.id", s("op-1"))]),
        ])
        #expect(Self.kinds(same) == ["repeated_call"])
        #expect(same.findings().first?.message.contains("deduplicated") == true)
        // Two side effects under one key.
        let twice = try Self.calls([
            (0, "", [key, ("operation.id", s("op-1"))]), (0, "", [key, ("operation.id", s("op-2"))]),
        ])
        #expect(Self.kinds(twice) == ["duplicate_execution"])
        #expect(twice.findings().first?.severity == "high")
        // No key, the same arguments, two successes.
        let noKey = try Self.calls([(0, "", [("operation.id", s("op-1"))]), (0, "", [("operation.id", s("op-2"))])])
        #expect(Self.kinds(noKey) == ["duplicate_execution"])
        let noKeySameOp = try Self.calls([
            (0, "", [("operation.id", s("op-1"))]), (0, "", [("operation.id", s("op-1"))]),
        ])
        #expect(Self.kinds(noKeySameOp) == ["repeated_call"])
    }

    @Test func uncertainWritesAndSuccessThatWasNeverConfirmed() throws {
        let timedOut: [(UInt64, String, [(String, TestValue)])] = [
            (2, "", [("tool.execution.status", s("timed_out")), ("idempotency.key", s("k-1"))])
        ]
        // The root claims nothing: only the uncertain write.
        #expect(Self.kinds(try Self.calls(timedOut)) == ["uncertain_write"])
        // The root reports OK: the success is unconfirmed too.
        #expect(Self.kinds(try Self.calls(root: 1, timedOut)) == ["uncertain_write", "unconfirmed_success"])
        // No status on the root, but the last model call claims the task is done.
        func claiming(_ text: String) throws -> RunGraph {
            var spans = try Self.calls(timedOut).spans
            spans += try RunGraphTests.spans([
                TestSpan(
                    trace: Self.t1, span: Self.id(41), parent: Self.id(1), name: "chat gpt-4o", start: 60_000,
                    end: 61_000,
                    attributes: [
                        ("gen_ai.operation.name", s("chat")),
                        ("gen_ai.output.messages", s(#"[{"role":"assistant","content":"\#(text)"}]"#)),
                    ])
            ])
            return RunGraph(runID: "r", spans: spans)
        }
        #expect(Self.kinds(try claiming("The ticket has been opened.")) == ["uncertain_write", "unconfirmed_success"])
        #expect(Self.kinds(try claiming("I could not complete the request.")) == ["uncertain_write"])
        // A failed write under an OK root: unconfirmed, not uncertain.
        #expect(Self.kinds(try Self.calls(root: 1, [(2, "HTTP 500", [])])) == ["unconfirmed_success"])
        // Reconciled by an operator: neither.
        var spans = try Self.calls(root: 1, timedOut).spans
        spans += try RunGraphTests.spans([
            TestSpan(
                trace: Self.t1, span: Self.id(40), name: "tool.reconciled", start: 50_000, end: 50_000,
                attributes: [("idempotency.key", s("k-1")), ("tool.execution.status", s("succeeded"))],
                links: [(Self.t1, Self.id(10))])
        ])
        #expect(Self.kinds(RunGraph(runID: "r", spans: spans)) == [])
    }

    @Test func loopsBySameArgumentsAndByStepBudget() throws {
        let three = try Self.calls([(2, "HTTP 500", []), (2, "HTTP 500", []), (2, "HTTP 500", [])])
        #expect(Self.kinds(three) == ["repeated_call", "loop"])
        #expect(Self.kinds(three, FindingRules(loopRepeats: 4)) == ["repeated_call"])
        #expect(Self.kinds(three, FindingRules(loopRepeats: 4, stepBudget: 2)) == ["repeated_call", "loop"])
        #expect(
            three.findings(rules: FindingRules(loopRepeats: 4, stepBudget: 2)).last?.message.contains("3 steps") == true
        )
    }
}
