import FlightRecorderIngest
import FlightRecorderOTLP
import FlightRecorderRedaction
import FlightRecorderTesting
import Testing

@Suite struct RequestRedactorTests {
    static let corpus = [
        "jane.doe@example.com", "123-45-6789", "4111 1111 1111 1111", "+1 415 555 2671",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "sk-proj-ABCDEFGHIJKLMNOPQRSTUV123", "AKIAIOSFODNN7EXAMPLE", "hunter2pass",
    ]

    func contains(_ haystack: [UInt8], _ needle: String) -> Bool {
        let n = Array(needle.utf8)
        guard n.count <= haystack.count else { return false }
        for i in 0...(haystack.count - n.count) where haystack[i] == n[0] && Array(haystack[i..<(i + n.count)]) == n {
            return true
        }
        return false
    }

    @Test func everyPositionIsRedactedBeforeStorage() throws {
        var policy = RedactionPolicy()
        policy.defaultSet.rules = [
            .init(name: "passwords", keys: [RedactionPolicy.KeyPattern("*.password")], action: .drop)
        ]
        let decoder = ExportRequestDecoder(redaction: RequestRedactor(redactor: try Redactor(policy: policy)))
        let c = Self.corpus
        let trace = RequestBuilder.traceID(1)
        let body = RequestBuilder.request(
            resource: [("service.name", .string("agent")), ("owner", .string("owner \(c[0])"))],
            scope: [("scope.contact", .string("scope \(c[3])"))],
            spans: [
                TestSpan(
                    trace: trace, span: RequestBuilder.spanID(1), name: "email \(c[0])",
                    attributes: [
                        ("agent.run.id", .string("run-1")),
                        ("gen_ai.tool.call.arguments", .string(#"{"ssn":"\#(c[1])","card":"\#(c[2])"}"#)),
                        ("nested", .array([.string("call \(c[3])"), .kvlist([("jwt", .string(c[4]))])])),
                        ("kv", .kvlist([("db.password", .string(c[7])), ("key", .string("use \(c[5])"))])),
                        ("trace.ref", .string("4bf92f3577b34da6a3ce929d0e0e4736")),
                        ("when", .string("2026-11-25T01:40:56Z")),
                    ],
                    statusCode: 2, statusMessage: "auth failed for \(c[6])",
                    links: [(trace: RequestBuilder.traceID(2), span: RequestBuilder.spanID(2))]),
                TestSpan(trace: trace, span: RequestBuilder.spanID(2), name: "clean", attributes: [("n", .int(4))]),
            ])
        let redactor = try #require(decoder.redaction?.redactor)
        let batch = try decoder.decode(body)
        // Counters count each redaction once: 8 in the span, 1 resource, 1 scope.
        #expect(redactor.ruleCounts.values.reduce(0, +) == 10)
        for secret in c { #expect(!contains(batch.payload, secret), "\(secret) reached the payload") }
        #expect(batch.spans.first?.explicitRunID == "run-1")
        let spans = try batch.payload.withUnsafeBytes { try TracesDataDecoder.decode($0) { _, _ in true } }
        let first = try #require(spans.first)
        #expect(first.name == "email [REDACTED:email]")
        #expect(first.statusMessage == "auth failed for [REDACTED:api_key]")
        #expect(first.attributes["trace.ref"] == .string("4bf92f3577b34da6a3ce929d0e0e4736"))
        #expect(first.attributes["when"] == .string("2026-11-25T01:40:56Z"))
        #expect(
            first.attributes["gen_ai.tool.call.arguments"]
                == .string(#"{"ssn":"[REDACTED:us_ssn]","card":"[REDACTED:payment_card]"}"#))
        #expect(first.attributes["kv"] == .kvlist([Attribute("key", .string("use [REDACTED:api_key]"))]))
        // 8 in the span, 1 in its resource, 1 in its scope.
        #expect(first.attributes[RequestRedactor.countKey] == .int(10))
        #expect(
            first.attributes[RequestRedactor.rulesKey]
                == .array(
                    ["api_key", "email", "jwt", "passwords", "payment_card", "phone", "us_ssn"].map { .string($0) }))
        #expect(first.resource.attributes["owner"] == .string("owner [REDACTED:email]"))
        let clean = spans[1]
        #expect(clean.attributes[RequestRedactor.countKey] == .int(2))  // its resource and scope were redacted
    }

    @Test func cleanRequestsKeepTheirBytesAndCarryNoEvidence() throws {
        let decoder = ExportRequestDecoder(redaction: RequestRedactor(redactor: try Redactor(policy: .secureDefault)))
        let body = RequestBuilder.request(spans: [
            TestSpan(
                trace: RequestBuilder.traceID(1), span: RequestBuilder.spanID(1), attributes: [("v", .string("2.1.0"))])
        ])
        #expect(try decoder.decode(body).payload == body)
    }

    @Test func forgedEvidenceIsReplaced() throws {
        let decoder = ExportRequestDecoder(redaction: RequestRedactor(redactor: try Redactor(policy: .secureDefault)))
        let body = RequestBuilder.request(spans: [
            TestSpan(
                trace: RequestBuilder.traceID(1), span: RequestBuilder.spanID(1),
                attributes: [(RequestRedactor.countKey, .int(0)), ("m", .string("a@example.com"))])
        ])
        let payload = try decoder.decode(body).payload
        let span = try #require(try payload.withUnsafeBytes { try TracesDataDecoder.decode($0) { _, _ in true } }.first)
        #expect(span.attributes.filter { $0.key == RequestRedactor.countKey }.map(\.value) == [.int(1)])
    }
}

/// Identities are pseudonymised, never masked: `flightrec why` can say who approved.
@Suite struct IdentityPseudonymTests {
    static let key = RedactionPolicy.HMACKey(id: "ptest0001", key: Array(repeating: 7, count: 32))

    func stored(
        _ policy: RedactionPolicy, _ attributes: [(String, TestValue)], name: String = "approval.granted"
    )
        throws -> [UInt8]
    {
        let decoder = ExportRequestDecoder(redaction: RequestRedactor(redactor: try Redactor(policy: policy)))
        let body = RequestBuilder.request(spans: [
            TestSpan(
                trace: RequestBuilder.traceID(1), span: RequestBuilder.spanID(1), name: name, attributes: attributes)
        ])
        return try decoder.decode(body).payload
    }

    func contains(_ haystack: [UInt8], _ needle: String) -> Bool {
        RequestRedactorTests().contains(haystack, needle)
    }

    @Test func approversAndEndUsersBecomeStablePseudonyms() throws {
        var policy = RedactionPolicy()
        policy.pseudonymKey = Self.key
        let redactor = try Redactor(policy: policy)
        let alice = redactor.pseudonym("alice@corp.example")
        #expect(alice.hasPrefix("hmac:ptest0001:") && alice.count == "hmac:ptest0001:".count + 16)
        #expect(alice == redactor.pseudonym("alice@corp.example"))
        #expect(alice != redactor.pseudonym("bob@corp.example"))
        let payload = try stored(
            policy,
            [
                ("approval.approver", .string("alice@corp.example")), ("enduser.id", .int(4242)),
                ("note", .string("asked by alice@corp.example")),
            ], name: "approval.granted for alice@corp.example")
        #expect(contains(payload, alice))
        #expect(contains(payload, redactor.pseudonym("4242")))
        // Free text keeps its masking; the address itself is stored nowhere.
        #expect(contains(payload, "[REDACTED:email]"))
        #expect(!contains(payload, "alice@corp.example"))
        #expect(contains(payload, "identity"))  // flightrec.redacted.rules names the rule
    }

    @Test func allowlistModeStillPseudonymisesAndARuleWins() throws {
        var policy = RedactionPolicy()
        policy.pseudonymKey = Self.key
        policy.defaultSet.allowKeys = [.exact("other")]
        let redactor = try Redactor(policy: policy)
        let payload = try stored(policy, [("approval.approver", .string("alice@corp.example"))])
        #expect(contains(payload, redactor.pseudonym("alice@corp.example")))
        policy.defaultSet.allowKeys = nil
        policy.defaultSet.rules = [.init(name: "no-users", keys: [.exact("enduser.id")], action: .drop)]
        let dropped = try stored(policy, [("enduser.id", .string("u-17")), ("approval.approver", .string("bob"))])
        #expect(!contains(dropped, "u-17") && !contains(dropped, "enduser.id"))
        #expect(contains(dropped, try Redactor(policy: policy).pseudonym("bob")))
        // Without a pseudonym key the identity rule is off; the detectors still mask emails.
        let unkeyed = try stored(RedactionPolicy(), [("approval.approver", .string("alice@corp.example"))])
        #expect(contains(unkeyed, "[REDACTED:email]"))
    }
}
