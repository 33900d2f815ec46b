import FlightRecorderAnalysis
import FlightRecorderOTLP
import FlightRecorderTesting
import Testing

/// One rule says whether a tool call timed out, and the three places that count them agree
/// on it: the per-run aggregate `GET /api/v1/stats` and `stats compare` read, the
/// `flightrec_tool_calls_total{outcome}` counters, and the run's `uncertain_write` findings.
@Suite struct ToolOutcomeTests {
    static let tool: [(String, TestValue)] = [
        ("agent.run.id", .string("run-t")), ("gen_ai.operation.name", .string("execute_tool")),
        ("gen_ai.tool.name", .string("procure")), ("tool.risk_tier", .string("financial_write")),
    ]

    static func span(
        _ n: UInt8, status: UInt64 = 0, message: String = "", _ extra: [(String, TestValue)] = [],
        events: [(name: String, attributes: [(String, TestValue)])] = []
    )
        -> TestSpan
    {
        TestSpan(
            trace: RequestBuilder.traceID(1), span: RequestBuilder.spanID(n),
            parent: n == 1 ? [] : RequestBuilder.spanID(1), name: n == 1 ? "invoke_agent" : "execute_tool procure",
            start: 1_000_000_000 + UInt64(n) * 1_000_000, end: 1_000_000_000 + UInt64(n) * 1_000_000 + 500_000,
            // Each call its own idempotency key: distinct calls, none settling another.
            attributes: n == 1
                ? [("agent.run.id", .string("run-t"))]
                : tool + [("idempotency.key", .string("k-\(n)"))] + extra, statusCode: status,
            statusMessage: message, events: events)
    }

    @Test func timeoutsCountAlikeInStatsMetricsAndFindings() throws {
        let spans = [
            Self.span(1),
            Self.span(2),  // ok
            Self.span(3, status: 2, message: "HTTPError: 502 Bad Gateway"),  // error
            Self.span(4, [("tool.execution.status", .string("timed_out"))]),
            Self.span(5, status: 2, [("error.type", .string("ReadTimeout"))]),
            // An exception escaping the span in an OTel SDK: ERROR, "Type: text", no error.type.
            Self.span(6, status: 2, message: "TimeoutError: The read operation timed out"),
            Self.span(7, status: 2, message: "rpc error: code = DeadlineExceeded desc = context deadline exceeded"),
            Self.span(8, status: 1, message: "done well before the timeout"),  // ok: not an error
            // `record_exception` and an ERROR status with no message: the exception event says.
            Self.span(
                9, status: 2,
                events: [("exception", [("exception.type", .string("java.net.SocketTimeoutException"))])]),
            Self.span(
                10, status: 2,
                events: [
                    (
                        "exception",
                        [
                            ("exception.type", .string("*errors.errorString")),
                            ("exception.message", .string("context deadline exceeded")),
                        ]
                    )
                ]),
            // An exception event on a span that did not fail, or another event: not a timeout.
            Self.span(11, events: [("exception", [("exception.type", .string("TimeoutError"))])]),
            Self.span(12, status: 2, events: [("retry", [("exception.type", .string("TimeoutError"))])]),
        ]
        let body = RequestBuilder.request(resource: [("service.name", .string("buyer"))], spans: spans)
        let records = try body.withUnsafeBytes { try TracesDataDecoder.decode($0) { _, _ in true } }
        let a = RunAggregate(tenant: "", runID: "run-t", agent: "buyer", spans: records, rules: MetricRules())
        #expect(a.tools["procure"] == .init(calls: 11, errors: 2, timeouts: 6))
        #expect(a.uncertainWrites == 6)
        #expect(a.findings["uncertain_write"] == 6)

        let deltas = SpanFamiliesTests.all(
            [spans], resource: [("service.name", .string("buyer"))], tenant: "", runID: "run-t")
        var calls: [String: Double] = [:]
        for (key, n) in deltas.counters where key.family == .toolCalls { calls[key.labels.last!, default: 0] += n }
        #expect(calls == ["ok": 3, "error": 2, "timeout": 6])
        #expect(deltas.counters.filter { $0.key.family == .uncertainWrites }.map(\.value).reduce(0, +) == 6.0)
    }

    /// The words are matched in any ASCII case, anywhere in the text, and only whole.
    @Test func timeoutAndWriteWordsMatchInAnyCase() {
        #expect(AgentKeys.namesTimeout("requests.exceptions.ReadTimeout"))
        #expect(AgentKeys.namesTimeout("Zeitüberschreitung: TIMED OUT"))
        #expect(AgentKeys.namesTimeout("rpc error: code = DeadlineExceeded"))
        #expect(AgentKeys.namesTimeout("timeout"))
        #expect(!AgentKeys.namesTimeout("timeou"))
        #expect(!AgentKeys.namesTimeout("time out of range"))
        #expect(!AgentKeys.namesTimeout(nil) && !AgentKeys.namesTimeout(""))
        #expect(AgentKeys.isWriteTier("Financial_WRITE") && AgentKeys.isWriteTier("write"))
        #expect(!AgentKeys.isWriteTier("read") && !AgentKeys.isWriteTier("wri") && !AgentKeys.isWriteTier(nil))
    }

    /// Token usage under the names before semconv 1.27 counts in the stats as in the metrics.
    @Test func legacyTokenNamesCount() throws {
        let chat: [(String, TestValue)] = [
            ("agent.run.id", .string("run-t")), ("gen_ai.operation.name", .string("chat")),
            ("gen_ai.usage.prompt_tokens", .int(120)), ("gen_ai.usage.completion_tokens", .int(30)),
        ]
        let spans = [
            Self.span(1),
            TestSpan(
                trace: RequestBuilder.traceID(1), span: RequestBuilder.spanID(2), parent: RequestBuilder.spanID(1),
                name: "chat", start: 1_000_000_000, end: 1_000_500_000, attributes: chat),
        ]
        let body = RequestBuilder.request(resource: [("service.name", .string("buyer"))], spans: spans)
        let records = try body.withUnsafeBytes { try TracesDataDecoder.decode($0) { _, _ in true } }
        let a = RunAggregate(tenant: "", runID: "run-t", agent: "buyer", spans: records, rules: MetricRules())
        #expect(a.tokensIn == 120 && a.tokensOut == 30 && a.steps == 1)
    }

    /// Spans without `gen_ai.operation.name`, named as the GenAI conventions name them: a
    /// tool execution (`execute_tool {tool}`, the tool from the name) and model calls (`chat
    /// {model}`, or token usage) count as steps alike in the stats and the metrics.
    @Test func spansNamedByTheConventionsWithoutAnOperation() throws {
        func span(_ n: UInt8, _ name: String, _ attributes: [(String, TestValue)] = []) -> TestSpan {
            TestSpan(
                trace: RequestBuilder.traceID(1), span: RequestBuilder.spanID(n),
                parent: n == 1 ? [] : RequestBuilder.spanID(1), name: name, start: 1_000_000_000,
                end: 1_000_500_000, attributes: [("agent.run.id", .string("run-n"))] + attributes)
        }
        let spans = [
            span(1, "invoke_agent buyer"),
            span(2, "execute_tool reset_password"),
            span(3, "execute_tool reset_password", [("gen_ai.tool.name", .string("unlock"))]),
            span(4, "chat gpt-4o"),
            span(5, "llm.call", [("gen_ai.usage.input_tokens", .int(10))]),
            span(6, "lookup"),  // neither
        ]
        let body = RequestBuilder.request(resource: [("service.name", .string("buyer"))], spans: spans)
        let records = try body.withUnsafeBytes { try TracesDataDecoder.decode($0) { _, _ in true } }
        let a = RunAggregate(tenant: "", runID: "run-n", agent: "buyer", spans: records, rules: MetricRules())
        #expect(a.toolCalls == 2 && a.steps == 4)
        #expect(a.tools["reset_password"]?.calls == 1 && a.tools["unlock"]?.calls == 1)

        let deltas = SpanFamiliesTests.all(
            [spans], resource: [("service.name", .string("buyer"))], tenant: "", runID: "run-n")
        var calls: [String: Double] = [:]
        for (key, n) in deltas.counters where key.family == .toolCalls { calls[key.labels[4], default: 0] += n }
        #expect(calls == ["reset_password": 1, "unlock": 1])
        let modelCalls = deltas.histograms.filter { $0.key.family == .operationDuration }.map(\.value.count)
        #expect(modelCalls.reduce(0, +) == 2)
    }
}
