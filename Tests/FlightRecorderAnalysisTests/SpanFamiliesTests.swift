import FlightRecorderAnalysis
import FlightRecorderOTLP
import FlightRecorderTesting
import Testing

/// The span families as the daemon counts them: at ingest (`IndexFacts.extract`) for spans
/// that name their own agent version (and, for a tool execution, task type), and by the run
/// analyser (`RunAggregate`) for the rest, whose labels come from their run's root. Each span
/// is counted once, by one of the two, with bounded labels.
@Suite struct SpanFamiliesTests {
    let run = ("agent.run.id", TestValue.string("run-1"))
    let resource: [(String, TestValue)] = [
        ("service.name", .string("it-agent")), ("service.version", .string("9.9.9")), ("tenant.id", .string("acme")),
    ]

    /// Both halves of the span families of `spans`, sent as one request per element of
    /// `requests` (all of them one request when nil), one run.
    static func counted(
        _ requests: [[TestSpan]], rules: MetricRules = MetricRules(), resource: [(String, TestValue)],
        tenant: String = "acme", runID: String = "run-1"
    ) -> (ingest: MetricDeltas, analyser: MetricDeltas) {
        var ingest = MetricDeltas()
        var records: [SpanRecord] = []
        for spans in requests {
            let payload = RequestBuilder.request(resource: resource, spans: spans)
            ingest.add(
                IndexFacts.extract(payload, runIdentity: RunIdentity(), indexedKeys: IndexedKeys(), metrics: rules)!
                    .metrics.deltas)
            records += try! payload.withUnsafeBytes { try TracesDataDecoder.decode($0) { _, _ in true } }
        }
        let a = RunAggregate(tenant: tenant, runID: runID, agent: nil, spans: records, rules: rules)
        var analyser = MetricDeltas()
        analyser.counters = a.spanCounters ?? SeriesMap()
        analyser.histograms = a.spanHistograms.value
        return (ingest, analyser)
    }

    static func all(
        _ requests: [[TestSpan]], rules: MetricRules = MetricRules(), resource: [(String, TestValue)],
        tenant: String = "acme", runID: String = "run-1"
    ) -> MetricDeltas {
        var (d, analyser) = counted(requests, rules: rules, resource: resource, tenant: tenant, runID: runID)
        d.add(analyser)
        return d
    }

    func metrics(
        _ spans: [TestSpan], rules: MetricRules = MetricRules(), resource: [(String, TestValue)]? = nil
    )
        -> MetricDeltas
    {
        Self.all([spans], rules: rules, resource: resource ?? self.resource)
    }

    func span(
        _ n: UInt8, parent: UInt8? = 1, name: String = "step", seconds: Double = 0.5, status: UInt64 = 0,
        message: String = "", _ attributes: [(String, TestValue)]
    ) -> TestSpan {
        TestSpan(
            trace: RequestBuilder.traceID(1), span: RequestBuilder.spanID(n),
            parent: parent.map { RequestBuilder.spanID($0) } ?? [], name: name, start: 1_000_000_000,
            end: 1_000_000_000 + UInt64(seconds * 1e9), attributes: [run] + attributes, statusCode: status,
            statusMessage: message)
    }

    @Test func toolCallsByOutcomeWithDurationAndUncertainWrites() {
        let tool: [(String, TestValue)] = [
            ("gen_ai.operation.name", .string("execute_tool")), ("gen_ai.tool.name", .string("disable_account")),
            ("tool.risk_tier", .string("privileged_write")),
        ]
        let d = metrics([
            span(1, parent: nil, name: "invoke_agent", [("gen_ai.agent.version", .string("v2"))]),
            span(2, seconds: 0.2, tool),
            span(3, seconds: 0.2, status: 2, tool),
            span(4, seconds: 30, tool + [("tool.execution.status", .string("timed_out"))]),
            span(5, tool + [("tool.execution.status", .string("unknown"))]),
            span(6, tool + [("tool.execution.status", .string("blocked"))]),
            span(7, tool + [("error.type", .string("TimeoutError"))]),
            // What an OTel SDK records for an exception escaping the span: status ERROR with the
            // exception's type and text, no error.type.
            span(8, status: 2, message: "TimeoutError: The read operation timed out", tool),
            span(9, status: 2, message: "rpc error: code = DeadlineExceeded", tool),
            // Only an ERROR span's message counts.
            span(10, status: 1, message: "finished before the timeout", tool),
            // An ERROR span with no message whose recorded exception names a timeout.
            TestSpan(
                trace: RequestBuilder.traceID(1), span: RequestBuilder.spanID(11), parent: RequestBuilder.spanID(1),
                start: 1_000_000_000, end: 1_500_000_000, attributes: [run] + tool, statusCode: 2,
                events: [("exception", [("exception.type", .string("requests.exceptions.ReadTimeout"))])]),
        ])
        let base = ["acme", "it-agent", "v2", MetricLabel.missing, "disable_account", "privileged_write"]
        #expect(d.counters[SeriesKey(.toolCalls, base + ["ok"])] == 2)
        #expect(d.counters[SeriesKey(.toolCalls, base + ["error"])] == 2)  // status error, and "unknown"
        // timed_out, TimeoutError, the two status messages and the exception event
        #expect(d.counters[SeriesKey(.toolCalls, base + ["timeout"])] == 5)
        // A blocked execution never ran.
        #expect(d.counters.filter { $0.key.family == .toolCalls }.map(\.value).reduce(0, +) == 9)
        let short = ["acme", "it-agent", "v2", "disable_account", "privileged_write"]
        #expect(d.counters[SeriesKey(.uncertainWrites, short)] == 6)
        let h = d.histograms[SeriesKey(.toolCallDuration, short)]
        #expect(h?.count == 9)
        #expect(h.map { abs($0.sum - (0.2 + 0.2 + 30 + 0.5 * 6)) < 1e-6 } == true)
        #expect(h.map { !$0.exemplars.isEmpty && $0.exemplars.allSatisfy { $0.exemplar.runID == "run-1" } } == true)
    }

    /// Both halves know every word of `AgentKeys.timeoutMarkers`, the list the stats and
    /// findings use, in any case: ingest's matcher over C strings (spans naming their own
    /// version and task type) and the analyser's (spans that do not); and a tier naming "write"
    /// in any case is a write.
    @Test func bothHalvesKnowEveryTimeoutMarker() {
        let markers = AgentKeys.timeoutMarkers
        for own in [true, false] {
            let tool: [(String, TestValue)] =
                [
                    ("gen_ai.operation.name", .string("execute_tool")), ("gen_ai.tool.name", .string("t")),
                    ("tool.risk_tier", .string("Financial_WRITE")),
                ] + (own ? [("agent.version", .string("v1")), ("agent.task.type", .string("triage"))] : [])
            let spans = markers.enumerated().map { n, word in
                span(UInt8(n + 2), status: 2, message: "x " + word.uppercased() + " y", tool)
            }
            let all = [span(1, parent: nil, name: "invoke_agent", [])] + spans + [span(40, status: 2, tool)]
            let (ingest, analyser) = Self.counted([all], resource: resource)
            // Each span counted by exactly one of them.
            #expect((own ? analyser : ingest).isEmpty)
            let d = own ? ingest : analyser
            var calls: [String: Double] = [:]
            for (key, n) in d.counters where key.family == .toolCalls { calls[key.labels.last!, default: 0] += n }
            #expect(calls == ["timeout": Double(markers.count), "error": 1])
            let uncertain = d.counters.filter { $0.key.family == .uncertainWrites }.map(\.value).reduce(0, +)
            #expect(uncertain == Double(markers.count))
        }
        #expect(markers.allSatisfy { AgentKeys.namesTimeout("x " + $0.uppercased()) })
    }

    /// The same spans counted at ingest (each naming its own version and task type) and by the
    /// analyser (the root naming them) give the same series, counts and sums.
    @Test func ingestAndAnalyserCountAlike() {
        let tool: [(String, TestValue)] = [
            ("gen_ai.operation.name", .string("execute_tool")), ("gen_ai.tool.name", .string("disable_account")),
            ("tool.risk_tier", .string("privileged_write")),
        ]
        let chat: [(String, TestValue)] = [
            ("gen_ai.operation.name", .string("chat")), ("gen_ai.request.model", .string("m-large")),
            ("gen_ai.usage.input_tokens", .int(1_200)), ("gen_ai.usage.output_tokens", .int(80)),
        ]
        let children: [(UInt8, Double, UInt64, String, [(String, TestValue)])] = [
            (2, 0.2, 0, "", tool), (3, 0.3, 2, "", tool),
            (4, 30, 0, "", tool + [("tool.execution.status", .string("timed_out"))]),
            (5, 1, 0, "", tool + [("tool.execution.status", .string("unknown"))]),
            (6, 1, 0, "", tool + [("tool.execution.status", .string("blocked"))]),
            (7, 2, 2, "TimeoutError: read timed out", tool),
            (
                8, 0.1, 0, "",
                [("policy.outcome", .string("approval_required")), ("policy.rule", .string("r-1"))] + tool
            ),
            (9, 0.1, 0, "", [("approval.decision", .string("granted")), ("gen_ai.tool.name", .string("wire"))]),
            (10, 1.5, 0, "", chat), (11, 0.5, 0, "", chat + [("gen_ai.usage.cost", .double(0.25))]),
            (12, 0.1, 0, "", [("flightrec.redacted.rules", .array([.string("email")]))]),
        ]
        let named: [(String, TestValue)] = [("agent.version", .string("v7")), ("agent.task.type", .string("triage"))]
        func spans(own: Bool) -> [TestSpan] {
            [span(1, parent: nil, name: "invoke_agent", own ? [] : named)]
                + children.map { n, seconds, status, message, attributes in
                    span(n, seconds: seconds, status: status, message: message, attributes + (own ? named : []))
                }
        }
        let rules = MetricRules(prices: ["m-large": .init(input: 3, output: 15)])
        let atIngest = Self.counted([spans(own: true)], rules: rules, resource: resource)
        let settled = Self.counted([spans(own: false)], rules: rules, resource: resource)
        // Only the redactions (labelled by tenant and rule alone) at ingest in the second case.
        #expect(atIngest.analyser.isEmpty)
        #expect(settled.ingest.counters.keys.allSatisfy { $0.family == .redactions })
        #expect(settled.ingest.histograms.isEmpty)
        let a = Self.all([spans(own: true)], rules: rules, resource: resource)
        let b = Self.all([spans(own: false)], rules: rules, resource: resource)
        #expect(a.counters.count == 8)
        #expect(Set(a.counters.keys) == Set(b.counters.keys))
        for (key, n) in a.counters { #expect(abs(n - (b.counters[key] ?? -1)) < 1e-9, "\(key.labels)") }
        #expect(Set(a.histograms.keys) == Set(b.histograms.keys))
        for (key, h) in a.histograms {
            #expect(h.counts == b.histograms[key]?.counts, "\(key.labels)")
            #expect(abs(h.sum - (b.histograms[key]?.sum ?? -1)) < 1e-9)
        }
    }

    /// A run observed again counts its span families with the root labels it was first
    /// counted with (stored with the aggregate), not with a root that arrived since: what was
    /// counted under the first cannot be taken back.
    @Test func aRunObservedAgainKeepsTheRootLabelsItWasCountedWith() throws {
        let tool: [(String, TestValue)] = [
            ("gen_ai.operation.name", .string("execute_tool")), ("gen_ai.tool.name", .string("procure")),
        ]
        let root = span(1, parent: nil, name: "invoke_agent", [("gen_ai.agent.version", .string("late-9"))])
        let payload = RequestBuilder.request(resource: resource, spans: [span(2, tool), span(3, tool), root])
        let records = try payload.withUnsafeBytes { try TracesDataDecoder.decode($0) { _, _ in true } }
        // First observed without its root: the resource's version.
        let first = RunAggregate(
            tenant: "acme", runID: "run-1", agent: nil, spans: Array(records.prefix(2)), rules: MetricRules())
        #expect(first.spanRoot == RunAggregate.SpanRoot())
        let again = RunAggregate(
            tenant: "acme", runID: "run-1", agent: nil, spans: records, rules: MetricRules(), spanRoot: first.spanRoot)
        let fresh = RunAggregate(tenant: "acme", runID: "run-1", agent: nil, spans: records, rules: MetricRules())
        func versions(_ a: RunAggregate) -> [String: Double] {
            var out: [String: Double] = [:]
            for (k, v) in a.spanCounters ?? SeriesMap() where k.family == .toolCalls {
                out[k.labels[2], default: 0] += v
            }
            return out
        }
        #expect(versions(first) == ["9.9.9": 2])
        #expect(versions(again) == ["9.9.9": 2])
        #expect(RunAggregate.counterIncrease(from: first, to: again).counters.isEmpty)
        // Unpinned, the root's version: what a run first observed with its root counts.
        #expect(versions(fresh) == ["late-9": 2] && fresh.spanRoot.version == "late-9")
    }

    /// What an OTel SDK's batch processor does: the root ends last and is exported in a later
    /// request than its children. The children's families still take the root's version and
    /// task type (counted once the run has settled), and are counted once.
    @Test func rootExportedAfterItsChildrenStillLabelsThem() {
        let tool: [(String, TestValue)] = [
            ("gen_ai.operation.name", .string("execute_tool")), ("gen_ai.tool.name", .string("procure")),
        ]
        let root = span(
            1, parent: nil, name: "invoke_agent",
            [("gen_ai.agent.version", .string("b-2")), ("agent.task.type", .string("purchase"))])
        let children = [span(2, tool), span(3, tool), span(4, tool + [("agent.version", .string("own-1"))])]
        let d = Self.all([children, [root]], resource: resource)
        let calls = d.counters.filter { $0.key.family == .toolCalls }
        #expect(
            d.counters[SeriesKey(.toolCalls, ["acme", "it-agent", "b-2", "purchase", "procure", "unknown", "ok"])] == 2)
        // A span's own version wins; its task type is still the root's.
        #expect(
            d.counters[SeriesKey(.toolCalls, ["acme", "it-agent", "own-1", "purchase", "procure", "unknown", "ok"])]
                == 1)
        #expect(calls.map(\.value).reduce(0, +) == 3)
        #expect(!calls.contains { $0.key.labels[2] == "9.9.9" })
    }

    @Test func versionFromSpanThenRootThenResource() {
        let op: [(String, TestValue)] = [("gen_ai.operation.name", .string("execute_tool"))]
        // No root in the request: the resource's service.version.
        var d = metrics([span(2, op)])
        #expect(d.counters.keys.first?.labels[2] == "9.9.9")
        // The run's root names one: its spans take it.
        d = metrics([span(1, parent: nil, [("agent.version", .string("r-3"))]), span(2, op)])
        #expect(d.counters.keys.first?.labels[2] == "r-3")
        // The span's own wins.
        d = metrics([
            span(1, parent: nil, [("agent.version", .string("r-3"))]),
            span(2, op + [("gen_ai.agent.version", .string("s-4"))]),
        ])
        #expect(d.counters.keys.first?.labels[2] == "s-4")
        // Configurable keys.
        d = metrics([span(2, op + [("deploy.rev", .string("abc"))])], rules: MetricRules(versionKeys: ["deploy.rev"]))
        #expect(d.counters.keys.first?.labels[2] == "abc")
    }

    /// Task type as the version: the span's, then its run's root's (where an agent names its
    /// task, `gen_ai.agent.name` on `invoke_agent`), then the resource's.
    @Test func taskTypeFromSpanThenRootThenResource() {
        let op: [(String, TestValue)] = [("gen_ai.operation.name", .string("execute_tool"))]
        func taskTypes(_ spans: [TestSpan], resource: [(String, TestValue)]? = nil) -> Set<String> {
            Set(
                metrics(spans, resource: resource).counters.keys.filter { $0.family == .toolCalls }.map { $0.labels[3] }
            )
        }
        #expect(taskTypes([span(2, op)]) == [MetricLabel.missing])
        #expect(
            taskTypes([span(2, op)], resource: resource + [("agent.task.type", .string("res-task"))]) == ["res-task"])
        let root = span(1, parent: nil, name: "invoke_agent", [("gen_ai.agent.name", .string("procurement"))])
        #expect(
            taskTypes([root, span(2, op)], resource: resource + [("agent.task.type", .string("r"))]) == ["procurement"])
        #expect(taskTypes([root, span(2, op + [("agent.task.type", .string("refund"))])]) == ["refund"])
    }

    @Test func policyDecisionsApprovalsAndRedactions() {
        let d = metrics([
            span(
                2,
                [
                    ("policy.outcome", .string("blocked")), ("policy.rule", .string("rule-7")),
                    ("gen_ai.tool.name", .string("wire")), ("tool.risk_tier", .string("privileged_write")),
                ]),
            span(3, [("approval.decision", .string("denied")), ("gen_ai.tool.name", .string("wire"))]),
            span(4, name: "approval.granted", [("gen_ai.tool.name", .string("wire"))]),
            span(5, [("flightrec.redacted.rules", .array([.string("email"), .string("payment_card")]))]),
        ])
        #expect(
            d.counters[
                SeriesKey(
                    .policyDecisions, ["acme", "it-agent", "9.9.9", "wire", "privileged_write", "blocked", "rule-7"])]
                == 1)
        #expect(d.counters[SeriesKey(.approvals, ["acme", "it-agent", "9.9.9", "wire", "denied"])] == 1)
        #expect(d.counters[SeriesKey(.approvals, ["acme", "it-agent", "9.9.9", "wire", "granted"])] == 1)
        #expect(d.counters[SeriesKey(.redactions, ["acme", "email"])] == 1)
        #expect(d.counters[SeriesKey(.redactions, ["acme", "payment_card"])] == 1)
    }

    @Test func modelCallsTokensDurationAndCost() {
        let chat: [(String, TestValue)] = [
            ("gen_ai.operation.name", .string("chat")), ("gen_ai.request.model", .string("m-large")),
            ("gen_ai.usage.input_tokens", .int(1_000_000)), ("gen_ai.usage.output_tokens", .int(2_000)),
        ]
        let rules = MetricRules(prices: ["m-large": .init(input: 3, output: 15)])
        let d = metrics(
            [span(2, seconds: 1.5, chat), span(3, chat + [("gen_ai.usage.cost", .double(0.25))])], rules: rules)
        let labels = ["acme", "it-agent", "9.9.9", "m-large"]
        #expect(d.histograms[SeriesKey(.tokenUsage, labels + ["input"])]?.count == 2)
        #expect(d.histograms[SeriesKey(.tokenUsage, labels + ["input"])]?.sum == 2_000_000)
        #expect(d.histograms[SeriesKey(.tokenUsage, labels + ["output"])]?.sum == 4_000)
        #expect(d.histograms[SeriesKey(.operationDuration, labels)]?.count == 2)
        // 3 $ per million input tokens and 15 per million output, then the span's own cost.
        let cost = d.counters[SeriesKey(.cost, labels)] ?? 0
        #expect(abs(cost - (3 + 0.03 + 0.25)) < 1e-9)

        // The names before semconv 1.27 (older instrumentations), read when the current ones
        // are absent, never added to them.
        let legacy: [(String, TestValue)] = [
            ("gen_ai.operation.name", .string("chat")), ("gen_ai.request.model", .string("m-large")),
            ("gen_ai.usage.prompt_tokens", .int(1_000_000)), ("gen_ai.usage.completion_tokens", .int(2_000)),
        ]
        let old = metrics([span(2, legacy), span(3, chat + legacy.dropFirst(2))], rules: rules)
        #expect(old.histograms[SeriesKey(.tokenUsage, labels + ["input"])]?.sum == 2_000_000)
        #expect(old.histograms[SeriesKey(.tokenUsage, labels + ["output"])]?.sum == 4_000)
        #expect(abs((old.counters[SeriesKey(.cost, labels)] ?? 0) - 2 * 3.03) < 1e-9)
    }

    @Test func labelValuesAreBoundedAndNeverFreeText() {
        #expect(MetricLabel.value("claude-sonnet-4") == "claude-sonnet-4")
        #expect(MetricLabel.value("bob@example.com") == MetricLabel.other)
        #expect(MetricLabel.value("[REDACTED:email]") == MetricLabel.other)
        #expect(MetricLabel.value("please disable the account of Bob") == MetricLabel.other)
        #expect(MetricLabel.value(String(repeating: "a", count: 65)) == MetricLabel.other)
        #expect(MetricLabel.value(nil) == MetricLabel.missing)
        let d = metrics([
            span(
                2, [("gen_ai.operation.name", .string("execute_tool")), ("gen_ai.tool.name", .string("rm -rf /home"))])
        ])
        #expect(d.counters.keys.first?.labels[4] == MetricLabel.other)
    }

    /// Every byte `MetricLabel` lets into a label value, against the rule it states: ASCII
    /// letters, digits and `._-:/+`, nothing else.
    @Test func labelValuesAdmitExactlyTheirCharacters() {
        let extra = Set("._-:/+".unicodeScalars)
        for byte in 1..<128 {
            let c = Unicode.Scalar(UInt8(byte))
            let ok = ("a"..."z").contains(c) || ("A"..."Z").contains(c) || ("0"..."9").contains(c) || extra.contains(c)
            let value = "x" + String(Character(c))
            #expect(MetricLabel.value(value) == (ok ? value : MetricLabel.other), "byte \(byte)")
        }
        #expect(MetricLabel.value("café") == MetricLabel.other)
    }

    @Test func histogramRoundTripsThroughItsStoredForm() {
        var h = HistogramDelta(buckets: 3)
        for v in [0.1, 0.7, 3.0, 99.0] { h.observe(v, bounds: [0.5, 1, 5], exemplar: nil) }
        #expect(h.counts == [1, 1, 1, 1])
        let back = HistogramDelta(serialized: h.serialized, buckets: 3)
        #expect(back?.counts == h.counts)
        #expect(back?.sum == h.sum)
        #expect(HistogramDelta(serialized: [1, 2, 3], buckets: 3) == nil)
    }
}
