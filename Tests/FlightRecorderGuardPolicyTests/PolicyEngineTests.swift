import FlightRecorderGuardPolicy
import FlightRecorderOTLP
import Foundation
import Testing

@Suite struct PolicyEngineTests {
    static let disableSchema = ArgumentSchema.object(
        properties: [
            "device_id": .string(minLength: 3, maxLength: 32, pattern: "^D-[0-9]+$", allowed: nil),
            "owner": .string(minLength: 1, maxLength: 100, pattern: nil, allowed: nil),
            "reason": .string(minLength: 1, maxLength: 500, pattern: nil, allowed: nil),
            "device": .object(properties: ["managed": .boolean], required: ["managed"], additional: false),
        ],
        required: ["device_id", "owner", "reason"], additional: false)

    static let policy = GuardPolicy(
        tools: [
            Tool(
                name: "lookup_employee",
                arguments: .object(
                    properties: ["name": .string(minLength: 1, maxLength: nil, pattern: nil, allowed: nil)],
                    required: ["name"],
                    additional: false),
                tier: .read, backendURL: "http://127.0.0.1:1/lookup"),
            Tool(
                name: "disable_managed_device", arguments: disableSchema, tier: .privilegedWrite,
                backendURL: "http://127.0.0.1:1/disable", reversible: true, compensatingTool: "enable_managed_device"),
        ],
        actors: [
            Actor(id: "agent-7", tenant: "acme", roles: ["support_agent"]),
            Actor(id: "intern", tenant: "acme", roles: ["viewer"]),
            Actor(id: "alice", tenant: "acme", roles: ["security_approver"]),
        ],
        rules: [
            Rule(id: "support-reads", effect: .allow, roles: ["support_agent", "viewer"], tiers: [.read]),
            Rule(
                id: "no-self-disable", effect: .deny, tools: ["disable_managed_device"],
                conditions: [.argumentEquals(path: "owner", value: .string("agent-7"))]),
            Rule(
                id: "privileged-needs-approval", effect: .requireApproval, tenants: ["acme"], roles: ["support_agent"],
                tiers: [.privilegedWrite], conditions: [.argumentEquals(path: "device.managed", value: .bool(true))]),
        ],
        approverRoles: ["security_approver"], budgets: Budgets(maxSteps: 50, maxDuplicateCalls: 1))

    let engine = PolicyEngine(policy: policy)

    static func args(_ json: String) -> JSONValue { try! JSONValue.parse(Data(json.utf8)) }

    func call(_ actor: String = "agent-7", _ tool: String = "disable_managed_device", json: String) -> ToolCall {
        ToolCall(runID: "run-1", actorID: actor, tool: tool, arguments: Self.args(json))
    }

    static let disable =
        #"{"device_id": "D-1001", "owner": "john.smith", "reason": "stolen", "device": {"managed": true}}"#

    @Test func denyByDefaultAndRolesComeFromConfiguration() {
        #expect(
            engine.decide(call("intern", "disable_managed_device", json: Self.disable), state: RunState()).rule
                == "default-deny")
        #expect(
            engine.decide(call("intern", "lookup_employee", json: #"{"name": "John Smith"}"#), state: RunState())
                .outcome == .allowed)
        #expect(
            engine.decide(call("mallory", "lookup_employee", json: #"{"name": "x"}"#), state: RunState()).rule
                == "unknown_actor")
        #expect(engine.decide(call("agent-7", "format_disk", json: "{}"), state: RunState()).rule == "unknown_tool")
    }

    @Test func privilegedWritesNeedApprovalWithAStableTicket() {
        let d = engine.decide(call(json: Self.disable), state: RunState())
        #expect(d.outcome == .approvalRequired && d.rule == "privileged-needs-approval")
        // The same call with its keys in another order gets the same ticket.
        let reordered =
            #"{"device": {"managed": true}, "reason": "stolen", "owner": "john.smith", "device_id": "D-1001"}"#
        #expect(engine.decide(call(json: reordered), state: RunState()).ticket == d.ticket)
        #expect(d.ticket?.hasPrefix("APR-") == true)
        // An unmanaged device matches no rule: blocked.
        let unmanaged =
            #"{"device_id": "D-1001", "owner": "john.smith", "reason": "stolen", "device": {"managed": false}}"#
        #expect(engine.decide(call(json: unmanaged), state: RunState()).rule == "default-deny")
        #expect(
            engine.decide(call(json: #"{"device_id": "D-1", "owner": "agent-7", "reason": "x"}"#), state: RunState())
                .rule == "no-self-disable")
    }

    @Test func argumentsAreValidatedAndUnknownFieldsRefusedWithoutEchoingValues() {
        let d = engine.decide(
            call(json: #"{"device_id": "laptop-of-john", "owner": "john.smith", "reason": "", "force": true}"#),
            state: RunState())
        #expect(d.outcome == .blocked && d.rule == "schema")
        #expect(
            d.violations == [
                "arguments.device_id: does not match the required pattern",
                "arguments.force: is not a known argument",
                "arguments.reason: shorter than 1 characters",
            ])
        #expect(!d.violations.joined().contains("laptop-of-john"))
    }

    @Test func ambiguousEntitiesBlockWritesNamingThem() {
        var state = RunState()
        state.ambiguousEntities = [RunState.entityDigest(" John.Smith ")]  // names compare trimmed, case-folded
        let d = engine.decide(call(json: Self.disable), state: state)
        #expect(d.outcome == .blocked && d.rule == "ambiguous_entity" && d.reason.hasPrefix("ambiguous_entity"))
        #expect(!d.reason.contains("john.smith"))
        // Reads are not writes: a lookup naming the same person is still allowed.
        #expect(
            engine.decide(call("agent-7", "lookup_employee", json: #"{"name": "john.smith"}"#), state: state).outcome
                == .allowed)
    }

    @Test func budgetsBlockWithTheLimitAsTheReason() {
        var state = RunState()
        state.steps = 50
        #expect(engine.decide(call(json: Self.disable), state: state).reason.hasPrefix("max_steps"))
        state = RunState()
        state.calls[call(json: Self.disable).digest] = 1  // one repeat is allowed
        #expect(engine.decide(call(json: Self.disable), state: state).reason.hasPrefix("max_duplicate_calls") == false)
        state.calls[call(json: Self.disable).digest] = 2
        #expect(engine.decide(call(json: Self.disable), state: state).reason.hasPrefix("max_duplicate_calls"))
        let spending = PolicyEngine(
            policy: GuardPolicy(
                tools: Array(engine.policy.tools.values), actors: Array(engine.policy.actors.values),
                rules: engine.policy.rules, approverRoles: engine.policy.approverRoles,
                budgets: Budgets(maxTokens: 1_000, maxCostUSD: 2)))
        state = RunState()
        state.tokens = 1_000
        #expect(spending.decide(call(json: Self.disable), state: state).reason.hasPrefix("max_tokens"))
        state.tokens = 10
        state.costUSD = 2.5
        #expect(spending.decide(call(json: Self.disable), state: state).reason.hasPrefix("max_cost"))
    }
}
