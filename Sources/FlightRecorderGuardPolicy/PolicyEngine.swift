import Crypto
import FlightRecorderCore
public import FlightRecorderOTLP
import Foundation

/// What the sidecar knows about one run so far, from the calls it has decided and executed.
/// Persisted per run (tenant and run ID) in the sidecar's SQLite store.
public struct RunState: Sendable, Equatable, Codable {
    /// Execute requests decided for the run (blocked ones included: a loop of refused calls
    /// is exactly what a step budget stops). `decide` is a dry run and does not count.
    public var steps = 0
    /// Executions per call digest (tool and canonical arguments).
    public var calls: [String: Int] = [:]
    public var tokens = 0
    public var costUSD = 0.0
    /// Digests of entity names a lookup resolved to more than one match (names themselves
    /// never reach the store); a write naming one is blocked.
    public var ambiguousEntities: Set<String> = []
    /// Facts recorded for the case from trusted tool results (for example
    /// `device.corporate_managed = true`); never from the model.
    public var caseState: [String: String] = [:]
    /// Approvals consumed per call digest: the next identical call needs a new ticket.
    public var approvalsUsed: [String: Int] = [:]

    public init() {}

    /// How an entity name is compared: trimmed, case-folded, hashed.
    public static func entityDigest(_ name: String) -> String {
        let normalized = name.trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
        return hexDigest(normalized, bytes: 12)
    }
}

/// The first `bytes` bytes of the SHA-256 of `text`, in hex: entity digests, call digests
/// and approval tickets.
func hexDigest(_ text: String, bytes: Int) -> String {
    Hex.encode(SHA256.hash(data: Array(text.utf8)).prefix(bytes))
}

/// A proposed tool call, as the agent sends it.
public struct ToolCall: Sendable {
    public var runID: String
    public var actorID: String
    public var tool: String
    public var arguments: JSONValue
    /// A risk score the caller attaches (0...1); rules may require approval above a threshold.
    public var riskScore: Double?

    public init(runID: String, actorID: String, tool: String, arguments: JSONValue, riskScore: Double? = nil) {
        self.runID = runID
        self.actorID = actorID
        self.tool = tool
        self.arguments = arguments
        self.riskScore = riskScore
    }

    /// Tool and arguments in canonical JSON (sorted keys), hashed: the same call always has
    /// the same digest, whatever the key order the model produced.
    public var digest: String {
        let canonical = tool + "\u{0}" + Self.canonical(arguments)
        return hexDigest(canonical, bytes: 16)
    }

    static func canonical(_ v: JSONValue) -> String {
        switch v {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .int(let i): return String(i)
        case .uint(let u): return String(u)
        case .double(let d): return d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : String(d)
        case .string(let s):
            let data = (try? JSONSerialization.data(withJSONObject: [s], options: [.withoutEscapingSlashes])) ?? Data()
            return String(decoding: data.dropFirst().dropLast(), as: UTF8.self)
        case .array(let a): return "[" + a.map(canonical).joined(separator: ",") + "]"
        case .object(let o):
            return "{" + o.keys.sorted().map { canonical(.string($0)) + ":" + canonical(o[$0]!) }.joined(separator: ",")
                + "}"
        }
    }
}

/// The answer to `decide`: allowed, blocked or approval_required, with the reason and the
/// rule that decided, and a stable approval ticket when approval is needed.
public struct Decision: Sendable, Equatable, Encodable {
    public enum Outcome: String, Sendable, Encodable {
        case allowed, blocked
        case approvalRequired = "approval_required"
    }

    public var outcome: Outcome
    public var reason: String
    /// The rule that decided: a configured rule ID, or `default-deny`, `schema`, `budget`,
    /// `ambiguous_entity`, `unknown_tool`, `unknown_actor`.
    public var rule: String
    public var ticket: String?
    /// Argument problems, by path (never values).
    public var violations: [String]

    static func blocked(_ rule: String, _ reason: String, violations: [String] = []) -> Decision {
        Decision(outcome: .blocked, reason: reason, rule: rule, ticket: nil, violations: violations)
    }
}

/// Evaluates one call against the policy and the run's state. Pure: the same inputs always
/// give the same decision, so it can be tested without a server and replayed in audits.
public struct PolicyEngine: Sendable {
    public let policy: GuardPolicy

    public init(policy: GuardPolicy) { self.policy = policy }

    public func decide(_ call: ToolCall, state: RunState) -> Decision {
        guard let tool = policy.tools[call.tool] else {
            return .blocked("unknown_tool", "no tool named \(call.tool) is in the catalog")
        }
        guard let actor = policy.actors[call.actorID] else {
            return .blocked("unknown_actor", "actor \(call.actorID) is not configured")
        }
        let violations = tool.arguments.violations(call.arguments)
        if !violations.isEmpty {
            return .blocked(
                "schema", "arguments do not match the schema of \(tool.name)", violations: violations.map(\.description)
            )
        }
        if let reason = budgetExceeded(call, state: state) { return .blocked("budget", reason) }
        if tool.tier.isWrite, !state.ambiguousEntities.isEmpty,
            Self.strings(in: call.arguments).contains(where: {
                state.ambiguousEntities.contains(RunState.entityDigest($0))
            })
        {
            // The entity is never echoed: it may name a person.
            return .blocked(
                "ambiguous_entity",
                "ambiguous_entity: an argument names an entity a lookup matched more than once; resolve it first")
        }
        for rule in policy.rules where applies(rule, call: call, tool: tool, actor: actor, state: state) {
            switch rule.effect {
            case .allow:
                return Decision(
                    outcome: .allowed, reason: "allowed by \(rule.id)", rule: rule.id, ticket: nil, violations: [])
            case .deny: return .blocked(rule.id, "denied by \(rule.id)")
            case .requireApproval:
                return Decision(
                    outcome: .approvalRequired, reason: "\(tool.tier.rawValue) call needs approval (\(rule.id))",
                    rule: rule.id, ticket: ticket(call, state: state), violations: [])
            }
        }
        return .blocked("default-deny", "no rule allows \(actor.id) to use \(tool.name) (deny by default)")
    }

    /// Stable across retries: run, actor, tool, canonical arguments, and how many approvals
    /// this exact call has already used in the run (a grant lets one execution through).
    public func ticket(_ call: ToolCall, state: RunState) -> String {
        let used = state.approvalsUsed[call.digest] ?? 0
        let material = [call.runID, call.actorID, call.digest, String(used)].joined(separator: "\u{0}")
        return "APR-" + hexDigest(material, bytes: 6)
    }

    func budgetExceeded(_ call: ToolCall, state: RunState) -> String? {
        let b = policy.budgets
        if let max = b.maxSteps, state.steps >= max {
            return "max_steps: the run has taken \(state.steps) of \(max) steps"
        }
        if let max = b.maxDuplicateCalls, (state.calls[call.digest] ?? 0) > max {
            return
                "max_duplicate_calls: this exact call already ran \(state.calls[call.digest] ?? 0) times (\(max) repeats allowed)"
        }
        if let max = b.maxTokens, state.tokens >= max { return "max_tokens: \(state.tokens) of \(max) tokens used" }
        if let max = b.maxCostUSD, state.costUSD >= max {
            return String(format: "max_cost: %.2f of %.2f USD spent", state.costUSD, max)
        }
        return nil
    }

    func applies(_ rule: Rule, call: ToolCall, tool: Tool, actor: Actor, state: RunState) -> Bool {
        if let t = rule.tenants, !t.contains(actor.tenant) { return false }
        if let r = rule.roles, r.isDisjoint(with: actor.roles) { return false }
        if let t = rule.tools, !t.contains(tool.name) { return false }
        if let t = rule.tiers, !t.contains(tool.tier) { return false }
        if let min = rule.minimumRiskScore, (call.riskScore ?? 0) < min { return false }
        for c in rule.conditions {
            switch c {
            case .argumentEquals(let path, let value):
                guard call.arguments.value(at: path) == value else { return false }
            case .argumentIsNotActor(let path):
                guard case .string(let s)? = call.arguments.value(at: path), s != actor.id else { return false }
            case .caseState(let key, let value):
                guard state.caseState[key] == value else { return false }
            }
        }
        return true
    }

    static func strings(in v: JSONValue) -> [String] {
        switch v {
        case .string(let s): [s]
        case .array(let a): a.flatMap(strings)
        case .object(let o): o.keys.sorted().flatMap { strings(in: o[$0]!) }
        default: []
        }
    }
}
