import FlightRecorderOTLP
import FlightRecorderTesting
import Testing

/// The span families `IndexFacts.extract` derives: each from the attributes the README names,
/// with bounded labels.
@Suite struct SpanMetricsTests {
    let run = ("agent.run.id", TestValue.string("run-1"))
    let resource: [(String, TestValue)] = [
        ("service.name", .string("it-agent")), ("service.version", .string("9.9.9")), ("tenant.id", .string("acme")),
    ]

    func metrics(
        _ spans: [TestSpan], rules: MetricRules = MetricRules(), resource: [(String, TestValue)]? = nil
    )
        -> MetricDeltas
    {
        let payload = RequestBuilder.request(resource: resource ?? self.resource, spans: spans)
        return IndexFacts.extract(payload, runIdentity: RunIdentity(), indexedKeys: IndexedKeys(), metrics: rules)!
            .metrics.deltas
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
        #expect(h?.exemplar?.exemplar.runID == "run-1")
    }

    /// The ingest path's matcher (over C strings) knows every word of
    /// `AgentKeys.timeoutMarkers`, the list the stats and findings use, in any case; and a
    /// tier naming "write" in any case is a write.
    @Test func ingestKnowsEveryTimeoutMarker() {
        let tool: [(String, TestValue)] = [
            ("gen_ai.operation.name", .string("execute_tool")), ("gen_ai.tool.name", .string("t")),
            ("tool.risk_tier", .string("Financial_WRITE")),
        ]
        let markers = AgentKeys.timeoutMarkers
        let spans = markers.enumerated().map { n, word in
            span(UInt8(n + 2), status: 2, message: "x " + word.uppercased() + " y", tool)
        }
        let d = metrics([span(1, parent: nil, name: "invoke_agent", [])] + spans + [span(40, status: 2, tool)])
        var calls: [String: Double] = [:]
        for (key, n) in d.counters where key.family == .toolCalls { calls[key.labels.last!, default: 0] += n }
        #expect(calls == ["timeout": Double(markers.count), "error": 1])
        #expect(markers.allSatisfy { AgentKeys.namesTimeout("x " + $0.uppercased()) })
        let uncertain = d.counters.filter { $0.key.family == .uncertainWrites }.map(\.value).reduce(0, +)
        #expect(uncertain == Double(markers.count))
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

    /// A request's counts go back to a pool with their series when freed, and a later request
    /// counts into those tables: it must see only its own spans, whatever the tables held.
    @Test func recycledTablesCountOnlyTheirOwnRequest() {
        let tool: [(String, TestValue)] = [
            ("gen_ai.operation.name", .string("execute_tool")), ("gen_ai.tool.name", .string("open_ticket")),
            ("tool.risk_tier", .string("write")),
        ]
        let model: [(String, TestValue)] = [
            ("gen_ai.operation.name", .string("chat")), ("gen_ai.request.model", .string("m1")),
            ("gen_ai.usage.input_tokens", .int(100)),
        ]
        let small = [span(1, parent: nil, name: "invoke_agent", []), span(2, seconds: 1, tool)]
        let expected = metrics(small)
        for n in 0..<40 {
            // Heavier requests first: many series, several tools, so the pooled tables hold
            // series the small request never meets.
            let heavy = (2..<60).map { i in
                span(
                    UInt8(i), seconds: Double(i) / 10,
                    i % 2 == 0
                        ? tool + [("gen_ai.tool.name", .string("tool-\(i % 7)")), ("tenant.note", .int(Int64(n)))]
                        : model)
            }
            var held = (0..<3).map { _ in
                IndexFacts.extract(
                    RequestBuilder.request(resource: resource, spans: heavy), runIdentity: RunIdentity(),
                    indexedKeys: IndexedKeys(), metrics: MetricRules())!.metrics
            }
            #expect(held.allSatisfy { !$0.deltas.isEmpty })
            held.removeAll()  // back to the pool
            let again = metrics(small)
            #expect(again == expected)
            let key = SeriesKey(.toolCallDuration, ["acme", "it-agent", "9.9.9", "open_ticket", "write"])
            #expect(again.histograms[key]?.count == 1)
            #expect(again.counters.count == expected.counters.count)
        }
    }

    /// A request's counts name their series by id, and the indexer takes each key from the
    /// store of the thread that counted: counts still held when that thread has moved on to a
    /// new store (past `SeriesKeyCache.limit` keys) must still give every key its labels.
    @Test func countsKeepTheirKeysOnceTheirThreadsStoreIsReplaced() {
        let tools = (0..<9_000).map { i in
            span(
                UInt8(i % 250 + 2), seconds: 0.2,
                [("gen_ai.operation.name", .string("execute_tool")), ("gen_ai.tool.name", .string("tool-\(i)"))])
        }
        func extract(_ spans: [TestSpan]) -> SpanFamilyCounts {
            IndexFacts.extract(
                RequestBuilder.request(resource: resource, spans: spans), runIdentity: RunIdentity(),
                indexedKeys: IndexedKeys(), metrics: MetricRules())!.metrics
        }
        // 18,000 series (calls and durations): past the limit, so the next request on this
        // thread starts a new store.
        let held = extract(tools)
        let later = extract(Array(tools.prefix(3)))
        let d = held.deltas
        #expect(d.counters.count == 9_000)
        #expect(d.histograms.count == 9_000)
        for i in [0, 4_500, 8_999] {
            let calls = SeriesKey(.toolCalls, ["acme", "it-agent", "9.9.9", "unknown", "tool-\(i)", "unknown", "ok"])
            #expect(d.counters[calls] == 1)
            #expect(d.counters.keys.first { $0 == calls }?.labels == calls.labels)
        }
        let again = later.deltas
        #expect(again.counters.count == 3)
        #expect(again.counters.keys.allSatisfy { $0.labels.count == MetricFamily.toolCalls.labels.count })
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
