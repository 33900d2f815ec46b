import FlightRecorderConfig
import FlightRecorderGuardPolicy
import FlightRecorderOTLP
import FlightRecorderRedaction
import Foundation
import Testing

@Suite struct GuardConfigurationTests {
    static let example = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Deploy/guard.yaml").path

    @Test func theExamplePolicyLoadsAndDecides() throws {
        let c = try GuardConfiguration.load(path: Self.example)
        #expect(c.listen == HostPort(host: "127.0.0.1", port: 4320))
        #expect(
            c.policy.tools.keys.sorted() == [
                "disable_managed_device", "enable_managed_device", "lookup_device", "lookup_employee",
            ])
        #expect(c.policy.budgets == Budgets(maxSteps: 50, maxDuplicateCalls: 0, maxTokens: 200_000, maxCostUSD: 10))
        #expect(c.policy.tools["lookup_employee"]?.resolves == Tool.EntityLookup(argument: "name", matches: "matches"))
        #expect(c.policy.tools["lookup_device"]?.recordsCaseState == ["device.corporate_managed": "managed"])
        #expect(c.redaction.defaultSet.rules.map(\.name) == ["credentials"])
        let engine = PolicyEngine(policy: c.policy)
        // The device must be corporate-managed, as a trusted lookup recorded in the case state.
        var managed = RunState()
        managed.caseState["device.corporate_managed"] = "true"
        let args = try JSONValue.parse(Data(#"{"device_id":"D-7","owner":"john","reason":"stolen"}"#.utf8))
        let call = ToolCall(runID: "r", actorID: "support-agent", tool: "disable_managed_device", arguments: args)
        #expect(engine.decide(call, state: RunState()).rule == "default-deny")
        let d = engine.decide(call, state: managed)
        #expect(d.outcome == .approvalRequired && d.rule == "privileged-needs-approval")
        let own = try JSONValue.parse(Data(#"{"device_id":"D-7","owner":"support-agent","reason":"x"}"#.utf8))
        let ownCall = ToolCall(runID: "r", actorID: "support-agent", tool: "disable_managed_device", arguments: own)
        #expect(engine.decide(ownCall, state: managed).rule == "default-deny")
    }

    @Test(arguments: [
        ("tools:\n  - name: t\n    tier: admin\n    backend: {url: \"http://x\"}\n", "tools[0].tier", 3),
        (
            "tools:\n  - name: t\n    tier: read\n    backend: {url: \"http://x\"}\n    arguments:\n      type: object\n      propertys: {}\n",
            "tools[0].arguments.propertys", 7
        ),
        (
            "tools:\n  - name: t\n    tier: read\n    backend: {url: \"http://x\"}\n    arguments:\n      type: string\n      pattern: \"([a-\"\n",
            "tools[0].arguments.pattern", 7
        ),
        ("rules:\n  - id: r\n    effect: allow\n    tools: [nope]\n", "rules", 4),
        ("rules:\n  - id: r\n    effect: maybe\n", "rules[0].effect", 3),
        ("tools:\n  - name: t\n    tier: read\n    backend: {url: \"ftp://x\"}\n", "tools[0].backend.url", 4),
        ("actors:\n  - {id: a, token_sha256: abc}\n", "actors[0].token_sha256", 2),
        (
            "tools:\n  - name: t\n    tier: read\n    backend: {url: \"http://x\"}\n    resolves: {argument: n}\n",
            "tools[0].resolves", 5
        ),
        ("redaction:\n  rules:\n    - {name: r, keys: [\"/([/\"], action: mask}\n", "redaction", 3),
    ])
    func errorsNameKeyAndLine(yaml: String, key: String, line: Int) {
        #expect {
            _ = try GuardConfiguration.parse(yaml: yaml)
        } throws: { error in
            guard let e = error as? ConfigError else { return false }
            return e.key == key && e.line == line
        }
    }
}
