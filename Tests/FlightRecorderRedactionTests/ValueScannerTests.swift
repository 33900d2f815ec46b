import FlightRecorderRedaction
import Foundation
import Testing

@Suite struct ValueScannerTests {
    let redactor = try! Redactor(policy: .secureDefault)

    func redact(_ s: String) -> String {
        var hits = Hits()
        return redactor.redactText(s, set: 0, hits: &hits)
    }

    @Test(arguments: [
        ("mail john.smith+it@example.co.uk now", "mail [REDACTED:email] now"),
        ("ssn 123-45-6789.", "ssn [REDACTED:us_ssn]."),
        ("card 4111 1111 1111 1111 ok", "card [REDACTED:payment_card] ok"),
        ("card 4111-1111-1111-1111", "card [REDACTED:payment_card]"),
        ("card 5500005555555559", "card [REDACTED:payment_card]"),
        (
            "call +1 415 555 2671 or (415) 555-2671 or 415-555-2671",
            "call [REDACTED:phone] or [REDACTED:phone] or [REDACTED:phone]"
        ),
        (
            "tok eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U end",
            "tok [REDACTED:jwt] end"
        ),
        ("Authorization: Bearer abcdef0123456789xyz", "Authorization: Bearer [REDACTED:auth_header]"),
        ("basic dXNlcjpwYXNzd29yZA==", "basic [REDACTED:auth_header]"),
        (
            "key sk-proj-ABCDEFGHIJKLMNOPQRSTUV123 and AKIAIOSFODNN7EXAMPLE",
            "key [REDACTED:api_key] and [REDACTED:api_key]"
        ),
        (
            "gh ghp_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghij slack xoxb-1234567890-abcdef",
            "gh [REDACTED:api_key] slack [REDACTED:api_key]"
        ),
        (
            "db postgres://admin:s3cret@db.internal:5432/x",
            "db postgres://[REDACTED:url_credentials]@db.internal:5432/x"
        ),
        ("GET /login?user=bob&password=hunter2&x=1", "GET /login?user=bob&password=[REDACTED:url_credentials]&x=1"),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY----- tail",
            "[REDACTED:private_key] tail"
        ),
    ])
    func detectsAndMasksOnlyTheMatch(input: String, expected: String) {
        #expect(redact(input) == expected)
    }

    @Test(arguments: [
        "trace 4bf92f3577b34da6a3ce929d0e0e4736 span 00f067aa0ba902b7",
        "uuid 123e4567-e89b-12d3-a456-426614174000",
        "at 2026-11-25T01:40:56.648Z or 1764034856648000000",
        "version 2.1.0 build 10.4.12-beta",
        "count 42, 1234567, -17, 3.14159",
        "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "date 2024-01-15 and 2024-01-15 10:00",
        "order 1234567890123 qty 4111111111111112",
        "ip 10.0.0.1 is off by default",
        "email-like user@localhost and a@b",
    ])
    func leavesOrdinaryValuesAlone(input: String) {
        #expect(redact(input) == input)
    }

    @Test func jsonStringsStayValidJSON() throws {
        let json =
            #"{"to":"jane@example.com","note":"call +44 20 7946 0958","key":"-----BEGIN PRIVATE KEY-----\nAAA\n-----END PRIVATE KEY-----"}"#
        let out = redact(json)
        #expect(!out.contains("jane@example.com") && !out.contains("7946") && !out.contains("AAA"))
        let parsed = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: String]
        #expect(parsed?["to"] == "[REDACTED:email]")
    }

    @Test func ipAddressesWhenEnabled() throws {
        var policy = RedactionPolicy()
        policy.defaultSet.detectors.insert(.ipAddress)
        let r = try Redactor(policy: policy)
        var hits = Hits()
        #expect(
            r.redactText("from 192.168.1.20 via 10.0.0.1", set: 0, hits: &hits)
                == "from [REDACTED:ip_address] via [REDACTED:ip_address]")
        #expect(r.redactText("version 1.2.3.4.5", set: 0, hits: &hits) == "version 1.2.3.4.5")
    }
}
