import FlightRecorderConfig
import FlightRecorderIngest
import FlightRecorderOTLP
import FlightRecorderRedaction
import FlightRecorderTesting
import Foundation
import Testing

@Suite(.serialized) struct RedactionConfigTests {
    static let deployPolicy = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../Deploy/redaction-policy.yaml").standardized.path

    @Test func shippedPolicyLoadsAndDoesWhatTheReadmeSays() throws {
        setenv("FLIGHTREC_HMAC_KEY", "test-key-of-sufficient-length", 1)
        let config = try DaemonConfiguration.load(path: Self.deployPolicy)
        let redactor = try Redactor(policy: config.redaction)
        let decoder = ExportRequestDecoder(redaction: RequestRedactor(redactor: redactor))
        let body = RequestBuilder.request(spans: [
            TestSpan(
                trace: RequestBuilder.traceID(1), span: RequestBuilder.spanID(1), name: "refund for jane@example.com",
                attributes: [
                    ("gen_ai.tool.call.arguments", .string(#"{"card": "4111 1111 1111 1111", "amount": 40}"#)),
                    ("db.password", .string("hunter2")), ("enduser.id", .string("user-17")),
                ])
        ])
        let payload = try decoder.decode(body).payload
        let span = try #require(try payload.withUnsafeBytes { try TracesDataDecoder.decode($0) { _, _ in true } }.first)
        #expect(span.name == "refund for [REDACTED:email]")
        #expect(
            span.attributes["gen_ai.tool.call.arguments"]
                == .string(#"{"card": "[REDACTED:payment_card]", "amount": 40}"#))
        #expect(span.attributes["db.password"] == nil)
        if case .string(let h) = span.attributes["enduser.id"] {
            #expect(h.hasPrefix("hmac:k2026:"))
        } else {
            Issue.record("no hash")
        }
        #expect(span.attributes[RequestRedactor.countKey] == .int(4))
        #expect(
            span.attributes[RequestRedactor.rulesKey]
                == .array(
                    ["credentials", "email", "payment_card", "user-ids"].map { .string($0) }))
        #expect(config.redaction.scoped.first?.match?.value == "regulated-bank")
    }

    @Test(arguments: [
        (
            "redaction:\n  rules:\n    - name: r\n      keys: [a]\n      action: shred\n", "redaction.rules[0].action",
            5, "expected drop, mask"
        ),
        ("redaction:\n  detectors:\n    enable: [dna]\n", "redaction.detectors.enable", 3, "unknown detector \"dna\""),
        ("redaction:\n  mode: strict\n", "redaction.mode", 2, "expected detect or allowlist"),
        (
            "redaction:\n  hmac:\n    key_id: k\n    key_env: FLIGHTREC_NO_SUCH_VAR\n", "redaction.hmac.key_env", 4,
            "is not set"
        ),
        (
            "redaction:\n  rules:\n    - name: r\n      keys: [\"/(/\"]\n      action: mask\n", "redaction", 3,
            "key regular expression does not compile"
        ),
    ])
    func badPoliciesNameKeyAndLine(yaml: String, key: String, line: Int, reason: String) {
        #expect {
            _ = try DaemonConfiguration.parse(yaml: yaml)
        } throws: { error in
            guard let e = error as? ConfigError else { return false }
            return e.key == key && e.line == line && e.reason.contains(reason)
        }
    }
}
