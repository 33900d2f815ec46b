import FlightRecorderRedaction
import Testing

@Suite struct RedactorTests {
    func policy() -> RedactionPolicy {
        var p = RedactionPolicy()
        p.hmacKey = .init(id: "k1", key: Array("0123456789abcdef0123456789abcdef".utf8))
        p.defaultSet.rules = [
            .init(name: "tool-args", keys: [.exact("gen_ai.tool.call.arguments")], action: .mask),
            .init(name: "passwords", keys: [RedactionPolicy.KeyPattern("*.password")], action: .drop),
            .init(name: "user-hash", keys: [.exact("enduser.id")], action: .hash),
            .init(
                name: "short", keys: [RedactionPolicy.KeyPattern("/gen_ai\\.(input|output)\\.messages/")],
                action: .truncate(12)),
            .init(name: "keep-model", keys: [.exact("gen_ai.request.model")], action: .keep),
        ]
        return p
    }

    @Test func keyRulesApplyTheirAction() throws {
        let r = try Redactor(policy: policy())
        var hits = Hits()
        #expect(
            r.redactValue("{\"id\":1}", key: "gen_ai.tool.call.arguments", set: 0, hits: &hits)
                == "[REDACTED:tool-args]")
        #expect(r.redactValue("hunter2", key: "db.password", set: 0, hits: &hits) == nil)
        let h1 = r.redactValue("user-17", key: "enduser.id", set: 0, hits: &hits)
        let h2 = r.redactValue("user-17", key: "enduser.id", set: 0, hits: &hits)
        #expect(h1 == h2 && h1?.hasPrefix("hmac:k1:") == true && h1?.count == "hmac:k1:".count + 16)
        #expect(r.redactValue("user-18", key: "enduser.id", set: 0, hits: &hits) != h1)
        #expect(
            r.redactValue("hello jane@example.com and more", key: "gen_ai.output.messages", set: 0, hits: &hits)
                == "hello [REDAC…[TRUNCATED:short]")
        #expect(r.redactValue("bob@example.com", key: "gen_ai.request.model", set: 0, hits: &hits) == "bob@example.com")
        #expect(r.redactValue("mail bob@example.com", key: "other", set: 0, hits: &hits) == "mail [REDACTED:email]")
        #expect(hits.rules == ["email", "passwords", "short", "tool-args", "user-hash"])
    }

    @Test func allowlistModeMasksEverythingElse() throws {
        var p = RedactionPolicy()
        p.defaultSet.allowKeys = [.exact("service.name"), RedactionPolicy.KeyPattern("gen_ai.*")]
        let r = try Redactor(policy: p)
        var hits = Hits()
        #expect(r.redactValue("agent", key: "service.name", set: 0, hits: &hits) == "agent")
        #expect(r.redactValue("gpt-4o", key: "gen_ai.request.model", set: 0, hits: &hits) == "gpt-4o")
        #expect(r.redactValue("anything", key: "customer.note", set: 0, hits: &hits) == "[REDACTED:allowlist]")
    }

    @Test func scopedRuleSetsFollowTheResource() throws {
        var p = RedactionPolicy()
        var strict = RedactionPolicy.RuleSet(name: "acme", match: ("tenant.id", "acme"))
        strict.allowKeys = [.exact("service.name")]
        p.scoped = [strict]
        let r = try Redactor(policy: p)
        let acme = r.ruleSet { $0 == "tenant.id" ? "acme" : nil }
        let other = r.ruleSet { $0 == "tenant.id" ? "globex" : nil }
        #expect(acme == 0 && other == 1)
        var hits = Hits()
        #expect(r.redactValue("x", key: "note", set: acme, hits: &hits) == "[REDACTED:allowlist]")
        #expect(r.redactValue("x", key: "note", set: other, hits: &hits) == "x")
    }

    @Test func badPoliciesNameTheRule() {
        var p = RedactionPolicy()
        p.defaultSet.rules = [.init(name: "h", keys: [.exact("k")], action: .hash)]
        #expect(throws: RedactionError(rule: "h", reason: "action hash needs an HMAC key (redaction.hmac)")) {
            _ = try Redactor(policy: p)
        }
        p = RedactionPolicy()
        p.defaultSet.customDetectors = [.init(name: "emp", pattern: "E[0-9")]
        #expect { _ = try Redactor(policy: p) } throws: { ($0 as? RedactionError)?.rule == "emp" }
        p = RedactionPolicy()
        p.defaultSet.rules = [.init(name: "rx", keys: [.regex("(")], action: .mask)]
        #expect { _ = try Redactor(policy: p) } throws: { ($0 as? RedactionError)?.rule == "rx" }
    }

    @Test func customDetectorsMaskTheirMatches() throws {
        var p = RedactionPolicy()
        p.defaultSet.customDetectors = [.init(name: "employee-id", pattern: "E[0-9]{6}")]
        let r = try Redactor(policy: p)
        var hits = Hits()
        #expect(
            r.redactText("emp E123456 and jo@x.io", set: 0, hits: &hits)
                == "emp [REDACTED:employee-id] and [REDACTED:email]")
    }
}
