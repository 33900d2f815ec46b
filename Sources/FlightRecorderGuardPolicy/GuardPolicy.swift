public import FlightRecorderOTLP

/// How much harm a tool can do; rules and approvals key on it.
public enum Tier: String, Sendable, CaseIterable {
    case read
    case lowWrite = "low_write"
    case privilegedWrite = "privileged_write"

    public var isWrite: Bool { self != .read }
}

/// One tool the sidecar may execute on an agent's behalf.
public struct Tool: Sendable {
    public var name: String
    public var arguments: ArgumentSchema
    public var tier: Tier
    /// The real tool API: `url` and HTTP `method`; arguments are sent as the JSON body.
    public var backendURL: String
    public var backendMethod: String
    public var timeoutSeconds: Double
    public var reversible: Bool
    public var compensatingTool: String?
    /// Where the backend's operation ID is in its JSON answer (a dotted path); the
    /// `Operation-Id` response header is used when the path finds nothing.
    public var operationIDPath = "operation_id"
    /// For lookups: the argument that names the entity, and the result path listing the
    /// matches. More than one match makes the entity ambiguous for the rest of the run.
    public var resolves: EntityLookup?
    /// Case-state keys recorded from this tool's result: key -> result path.
    public var recordsCaseState: [String: String] = [:]

    public struct EntityLookup: Sendable, Equatable {
        public var argument: String
        public var matches: String

        public init(argument: String, matches: String) {
            self.argument = argument
            self.matches = matches
        }
    }

    public init(
        name: String, arguments: ArgumentSchema, tier: Tier, backendURL: String, backendMethod: String = "POST",
        timeoutSeconds: Double = 10, reversible: Bool = false, compensatingTool: String? = nil
    ) {
        self.name = name
        self.arguments = arguments
        self.tier = tier
        self.backendURL = backendURL
        self.backendMethod = backendMethod
        self.timeoutSeconds = timeoutSeconds
        self.reversible = reversible
        self.compensatingTool = compensatingTool
    }
}

/// Who acts. Identities and roles come from the sidecar's configuration, never from the
/// model or the request: a request names an actor ID, and the sidecar looks up the rest.
public struct Actor: Sendable, Equatable {
    public var id: String
    public var tenant: String
    public var roles: Set<String>

    public init(id: String, tenant: String, roles: Set<String>) {
        self.id = id
        self.tenant = tenant
        self.roles = roles
    }
}

/// A condition on the call's arguments (JSON paths such as `device.managed`) or on the case
/// state the sidecar has recorded for the run.
public enum Condition: Sendable, Equatable {
    /// The argument equals the value.
    case argumentEquals(path: String, value: JSONValue)
    /// The argument differs from the acting actor's ID (the requester is not the target).
    case argumentIsNotActor(path: String)
    /// The run's case state has `key` set to `value` (for example `device.corporate_managed`).
    case caseState(key: String, value: String)
}

/// One policy rule. A rule applies when every set it names contains the call's tenant, one
/// of the actor's roles, the tool and its tier, and all its conditions hold. Rules are tried
/// in order; the first that applies decides. No rule: blocked (deny by default).
public struct Rule: Sendable {
    public enum Effect: String, Sendable {
        case allow
        case deny
        case requireApproval = "require_approval"
    }

    public var id: String
    public var effect: Effect
    public var tenants: Set<String>?
    public var roles: Set<String>?
    public var tools: Set<String>?
    public var tiers: Set<Tier>?
    public var conditions: [Condition]
    /// With `require_approval`: only when the call's risk score is at least this.
    public var minimumRiskScore: Double?

    public init(
        id: String, effect: Effect, tenants: Set<String>? = nil, roles: Set<String>? = nil, tools: Set<String>? = nil,
        tiers: Set<Tier>? = nil, conditions: [Condition] = [], minimumRiskScore: Double? = nil
    ) {
        self.id = id
        self.effect = effect
        self.tenants = tenants
        self.roles = roles
        self.tools = tools
        self.tiers = tiers
        self.conditions = conditions
        self.minimumRiskScore = minimumRiskScore
    }
}

/// Per-run limits; a call beyond one is blocked with the limit's name as the reason.
public struct Budgets: Sendable, Equatable {
    public var maxSteps: Int?
    /// How many times the same tool with the same arguments may run again in one run
    /// (0: never twice). A retry with the same idempotency key is a replay, not a repeat.
    public var maxDuplicateCalls: Int?
    public var maxTokens: Int?
    public var maxCostUSD: Double?

    public init(maxSteps: Int? = nil, maxDuplicateCalls: Int? = nil, maxTokens: Int? = nil, maxCostUSD: Double? = nil) {
        self.maxSteps = maxSteps
        self.maxDuplicateCalls = maxDuplicateCalls
        self.maxTokens = maxTokens
        self.maxCostUSD = maxCostUSD
    }
}

/// The whole policy: catalog, actors, rules, approvals and budgets.
public struct GuardPolicy: Sendable {
    public var tools: [String: Tool]
    public var actors: [String: Actor]
    public var rules: [Rule]
    /// Roles allowed to grant or deny approvals (never the requester itself).
    public var approverRoles: Set<String>
    public var budgets: Budgets

    public init(
        tools: [Tool], actors: [Actor], rules: [Rule], approverRoles: Set<String>, budgets: Budgets = Budgets()
    ) {
        self.tools = Dictionary(tools.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        self.actors = Dictionary(actors.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        self.rules = rules
        self.approverRoles = approverRoles
        self.budgets = budgets
    }
}
