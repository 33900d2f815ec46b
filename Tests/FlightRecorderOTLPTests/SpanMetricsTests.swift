import FlightRecorderOTLP
import FlightRecorderTesting
import Testing

/// Ingest's half of the span families (`IndexFacts.extract`, `SpanMetrics`): which spans it
/// counts, and the tables and keys it counts them in. What the families count, and the
/// analyser's half, are `FlightRecorderAnalysisTests.SpanFamiliesTests`.
@Suite struct SpanMetricsTests {
    let run = ("agent.run.id", TestValue.string("run-1"))
    let resource: [(String, TestValue)] = [
        ("service.name", .string("it-agent")), ("service.version", .string("9.9.9")), ("tenant.id", .string("acme")),
    ]
    /// A span naming its own version and task type: counted at ingest.
    let own: [(String, TestValue)] = [("agent.version", .string("9.9.9")), ("agent.task.type", .string("triage"))]

    func metrics(_ spans: [TestSpan], rules: MetricRules = MetricRules()) -> MetricDeltas {
        let payload = RequestBuilder.request(resource: resource, spans: spans)
        return IndexFacts.extract(payload, runIdentity: RunIdentity(), indexedKeys: IndexedKeys(), metrics: rules)!
            .metrics.deltas
    }

    func span(
        _ n: UInt8, parent: UInt8? = 1, name: String = "step", seconds: Double = 0.5,
        _ attributes: [(String, TestValue)]
    ) -> TestSpan {
        TestSpan(
            trace: RequestBuilder.traceID(1), span: RequestBuilder.spanID(n),
            parent: parent.map { RequestBuilder.spanID($0) } ?? [], name: name, start: 1_000_000_000,
            end: 1_000_000_000 + UInt64(seconds * 1e9), attributes: [run] + attributes)
    }

    /// A span's families are counted at ingest only when their labels cannot depend on its
    /// run's root: it names its own agent version and, for a tool execution, its own task type
    /// (the configured keys, string values). Otherwise only its redactions, labelled by tenant
    /// and rule alone.
    @Test func onlySpansNamingTheirOwnLabelsAreCountedAtIngest() {
        let exec: [(String, TestValue)] = [("gen_ai.operation.name", .string("execute_tool"))]
        let chat: [(String, TestValue)] = [("gen_ai.operation.name", .string("chat"))]
        let redacted: [(String, TestValue)] = [("flightrec.redacted.rules", .array([.string("email")]))]
        let version: [(String, TestValue)] = [("gen_ai.agent.version", .string("v1"))]
        let task: [(String, TestValue)] = [("agent.task.type", .string("t"))]
        func families(_ attributes: [(String, TestValue)], rules: MetricRules = MetricRules()) -> Set<MetricFamily> {
            let d = metrics([span(2, attributes)], rules: rules)
            return Set(d.counters.keys.map(\.family) + d.histograms.keys.map(\.family))
        }
        #expect(families(exec + version + task) == [.toolCalls, .toolCallDuration])
        #expect(families(exec + version).isEmpty)
        #expect(families(exec + task).isEmpty)
        #expect(families(chat + version) == [.operationDuration])
        #expect(families(chat + task).isEmpty)
        // A version that is not a string, or empty, is not the span's own.
        #expect(families(chat + [("gen_ai.agent.version", .int(3))]).isEmpty)
        #expect(families(chat + [("gen_ai.agent.version", .string(""))]).isEmpty)
        // Redactions always.
        #expect(families(chat + redacted) == [.redactions])
        // The configured keys.
        let rules = MetricRules(versionKeys: ["deploy.rev"], taskTypeKeys: ["job"])
        #expect(families(exec + [("deploy.rev", .string("r")), ("job", .string("j"))], rules: rules).count == 2)
        #expect(families(exec + version + task, rules: rules).isEmpty)
    }

    /// A request's counts go back to a pool with their series when freed, and a later request
    /// counts into those tables: it must see only its own spans, whatever the tables held.
    @Test func recycledTablesCountOnlyTheirOwnRequest() {
        let tool: [(String, TestValue)] =
            [
                ("gen_ai.operation.name", .string("execute_tool")), ("gen_ai.tool.name", .string("open_ticket")),
                ("tool.risk_tier", .string("write")),
            ] + own
        let model: [(String, TestValue)] =
            [
                ("gen_ai.operation.name", .string("chat")), ("gen_ai.request.model", .string("m1")),
                ("gen_ai.usage.input_tokens", .int(100)),
            ] + own
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
                [("gen_ai.operation.name", .string("execute_tool")), ("gen_ai.tool.name", .string("tool-\(i)"))] + own)
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
            let calls = SeriesKey(.toolCalls, ["acme", "it-agent", "9.9.9", "triage", "tool-\(i)", "unknown", "ok"])
            #expect(d.counters[calls] == 1)
            #expect(d.counters.keys.first { $0 == calls }?.labels == calls.labels)
        }
        let again = later.deltas
        #expect(again.counters.count == 3)
        #expect(again.counters.keys.allSatisfy { $0.labels.count == MetricFamily.toolCalls.labels.count })
    }

    /// One request holding several runs' calls of one tool (an SDK's batch): each bucket they
    /// fall in keeps an exemplar naming a run observed in it, so a slow call's bucket names
    /// its own run even when a fast call of another run came first.
    @Test func eachBucketKeepsItsOwnRunsExemplar() {
        let tool: [(String, TestValue)] =
            [("gen_ai.operation.name", .string("execute_tool")), ("gen_ai.tool.name", .string("lookup"))] + own
        func call(_ n: UInt8, run: String, seconds: Double) -> TestSpan {
            TestSpan(
                trace: RequestBuilder.traceID(n), span: RequestBuilder.spanID(n), parent: [], name: "execute_tool",
                start: 1_000_000_000, end: 1_000_000_000 + UInt64(seconds * 1e9),
                attributes: [("agent.run.id", .string(run))] + tool)
        }
        let d = metrics([
            call(1, run: "run-fast", seconds: 0.004), call(2, run: "run-slow", seconds: 0.3),
            call(3, run: "run-fast-2", seconds: 0.004),
        ])
        let h = d.histograms[SeriesKey(.toolCallDuration, ["acme", "it-agent", "9.9.9", "lookup", "unknown"])]
        let bounds = MetricFamily.toolCallDuration.buckets!
        let byBucket = Dictionary(uniqueKeysWithValues: (h?.exemplars ?? []).map { ($0.bucket, $0.exemplar) })
        #expect(byBucket.count == 2)
        #expect(byBucket[bounds.firstIndex { 0.004 <= $0 }!]?.runID == "run-fast")
        #expect(byBucket[bounds.firstIndex { 0.3 <= $0 }!]?.runID == "run-slow")
        #expect(byBucket[bounds.firstIndex { 0.3 <= $0 }!]?.value == 0.3)

        // Merged with a later delta: a bucket it observes takes its run, the others keep theirs.
        var later = MetricDeltas()
        later.observe(
            .toolCallDuration, ["acme", "it-agent", "9.9.9", "lookup", "unknown"], 0.003,
            exemplar: .init(runID: "run-later", value: 0.003, time: 2))
        var merged = d
        merged.add(later)
        let m = merged.histograms[SeriesKey(.toolCallDuration, ["acme", "it-agent", "9.9.9", "lookup", "unknown"])]
        #expect(m?.count == 4)
        #expect(Set(m?.exemplars.map(\.exemplar.runID) ?? []) == ["run-later", "run-slow"])
    }
}
