import FlightRecorderOTLP
import FlightRecorderQuery
import FlightRecorderTesting
import Testing

@Suite struct SpanFilterTests {
    let span: SpanRecord = {
        let body = RequestBuilder.request(
            resource: [
                ("service.name", .string("agent")), ("service.version", .string("2.1.0")),
                ("tenant.id", .string("acme")),
            ],
            spans: [
                TestSpan(
                    trace: RequestBuilder.traceID(1), span: RequestBuilder.spanID(1), name: "policy.check",
                    start: 1_000,
                    end: 5_001_000,
                    attributes: [
                        ("gen_ai.tool.name", .string("disable_managed_device")), ("policy.outcome", .string("blocked")),
                        ("gen_ai.usage.input_tokens", .int(1200)), ("retry", .bool(false)),
                    ], statusCode: 2)
            ])
        return try! body.withUnsafeBytes { try TracesDataDecoder.decode($0) { _, _ in true } }[0]
    }()

    @Test(arguments: [
        ("gen_ai.tool.name = \"disable_managed_device\" and policy.outcome = \"blocked\"", true),
        ("gen_ai.tool.name = \"disable_managed_device\" and policy.outcome = \"allowed\"", false),
        ("policy.outcome = 'allowed' or name = \"policy.check\"", true),
        ("not (policy.outcome = \"blocked\")", false),
        ("gen_ai.usage.input_tokens >= 1000 AND gen_ai.usage.input_tokens < 1201", true),
        ("duration > 4ms and duration <= 5ms", true),
        ("duration > 5ms", false),
        ("status = \"error\" and tenant = \"acme\" and agent.version = \"2.1.0\"", true),
        ("resource.service.name ~ \"age\"", true),
        ("gen_ai.tool.name ~ \"managed\"", true),
        ("approval.approver exists", false),
        ("not approval.approver exists and retry = false", true),
        ("approval.approver != \"bob\"", true),
        ("start >= 1000 and start < \"2001-01-01T00:00:00Z\"", true),
    ])
    func evaluatesPerSpan(expression: String, expected: Bool) throws {
        #expect(try SpanFilter.parse(expression).matches(span) == expected)
    }

    /// `agent.version` reads the agent metrics' rule: the span's version keys, then its run's
    /// root's version, then the resource's version keys, then `service.version`.
    @Test func agentVersionFollowsTheMetricsRule() throws {
        func span(_ attributes: [(String, TestValue)], resource: [(String, TestValue)]) -> SpanRecord {
            let body = RequestBuilder.request(
                resource: resource,
                spans: [
                    TestSpan(
                        trace: RequestBuilder.traceID(1), span: RequestBuilder.spanID(1), name: "step",
                        attributes: attributes)
                ])
            return try! body.withUnsafeBytes { try TracesDataDecoder.decode($0) { _, _ in true } }[0]
        }
        let is3 = try SpanFilter.parse("agent.version = \"3.0\"")
        let serviceOnly = span([], resource: [("service.version", .string("1.0"))])
        #expect(!is3.matches(serviceOnly))
        #expect(try SpanFilter.parse("agent.version = \"1.0\"").matches(serviceOnly))
        // The run's root names 3.0: it comes before the resource.
        #expect(is3.matches(serviceOnly, version: .init(runVersion: "3.0")))
        let onResource = span([], resource: [("service.version", .string("1.0")), ("agent.version", .string("3.0"))])
        #expect(is3.matches(onResource))
        // The span's own key wins over the root's.
        let own = span([("gen_ai.agent.version", .string("3.0"))], resource: [("service.version", .string("1.0"))])
        #expect(is3.matches(own, version: .init(runVersion: "2.0")))
        // The keys are the configured ones.
        let custom = span([("app.release", .string("3.0"))], resource: [])
        #expect(!is3.matches(custom))
        #expect(is3.matches(custom, version: .init(keys: ["app.release"])))
        let byName = try SpanFilter.parse("name = \"x\"")
        #expect(is3.readsAgentVersion && !byName.readsAgentVersion)
    }

    @Test(arguments: [
        ("policy.outcome = blocked", 17, "not a value"),
        ("policy.outcome == \"x\"", 16, "expected a value"),
        ("(name = \"a\"", 11, "expected \")\""),
        ("name = \"a\" nand x = 1", 11, "expected and, or or the end"),
        ("= 3", 0, "expected a field name"),
        ("name", 4, "expected an operator"),
        ("name = \"open", 7, "unterminated string"),
    ])
    func errorsPointAtThePosition(expression: String, position: Int, message: String) {
        #expect {
            _ = try SpanFilter.parse(expression)
        } throws: { error in
            guard let e = error as? SpanFilter.ParseError else { return false }
            return e.position == position && e.message.contains(message)
        }
    }

    @Test func indexedEqualitiesNarrowOnlyConjunctions() throws {
        let keys: Set<String> = ["gen_ai.tool.name", "policy.outcome"]
        let both = try SpanFilter.parse("gen_ai.tool.name = \"x\" and (policy.outcome = \"y\" and name = \"z\")")
        #expect(
            both.requiredEqualities(among: keys).map { "\($0.key)=\($0.value)" } == [
                "gen_ai.tool.name=x", "policy.outcome=y",
            ])
        #expect(
            try SpanFilter.parse("gen_ai.tool.name = \"x\" or policy.outcome = \"y\"").requiredEqualities(among: keys)
                .isEmpty)
        #expect(try SpanFilter.parse("not gen_ai.tool.name = \"x\"").requiredEqualities(among: keys).isEmpty)
    }

    /// Found by the FuzzWhere fuzzer: a time or number beyond Int64 nanoseconds trapped.
    @Test(arguments: [
        "start < \"2601-01-01T00:00:00Z\"", "duration > 1e300s", "duration > 99999999999999999h",
        "gen_ai.tool.name = 1e300",
    ])
    func valuesBeyondInt64AreRefusedOrIgnoredNeverATrap(expression: String) {
        let keys: Set<String> = ["gen_ai.tool.name"]
        if let filter = try? SpanFilter.parse(expression) {
            _ = filter.matches(span)
            #expect(filter.requiredEqualities(among: keys).isEmpty)
        }
    }
}
